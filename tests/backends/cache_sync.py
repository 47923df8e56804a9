"""Waiting until a KubeRay backend's informer cache has caught up with the Kubernetes API stand-in.

A cache is behind the server by design (events take a moment to arrive); tests that change objects
behind the controller's back and then tick wait here first, instead of sleeping, so what they assert
does not depend on how fast the watch threads ran.
"""

from __future__ import annotations

import time

from controller.backends.kuberay import KubeRayBackend
from tests.standins.kube_api import KubeApiServer


def cache_current(backend: KubeRayBackend, server: KubeApiServer) -> bool:
    """Every informer holds exactly the objects (and resourceVersions) the server has for it."""
    cache = backend.cache
    if cache is None or not cache.ready():
        return False
    for informer in cache.informers:
        want = {
            (o["metadata"]["namespace"], o["metadata"]["name"]): o["metadata"]["resourceVersion"]
            for o in server.list_objs(informer.resource)
            if informer.matches(o)
        }
        if informer.versions() != want:
            return False
    return True


def wait_cache_current(backend: KubeRayBackend, server: KubeApiServer, timeout_s: float = 10.0) -> None:
    """Start the cache if it is not, then poll until it is current (no-op for a backend without one)."""
    if backend.cache is None:
        return
    backend.cache.start()
    deadline = time.monotonic() + timeout_s
    while not cache_current(backend, server):
        assert time.monotonic() < deadline, "the informer cache did not catch up with the server in time"
        time.sleep(0.02)
