"""The contract suite's driver for the in-memory backend (controller/backends/memory.py).

The memory backend keeps counts, not workers, so this is a `BackendDriver` only: the worker-level cases
(idle-only scale-down, finished removals, refusing a busy victim) do not apply to it. Its platform is the
backend itself: a second `MemoryBackend` would start empty, so a "restart" hands back the same one (what
a restart over a persistent platform looks like), and another writer goes through its store.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controller.backends.base import ClusterRequest
from controller.backends.memory import MemoryBackend
from controller.domain import ClusterRef
from tests.backends.drivers import CONTRACT_PROFILE, REQUESTER

NAMESPACE = "team-a"


class MemoryDriver:
    name = "memory"
    namespace = NAMESPACE

    def __init__(self) -> None:
        self._backend = MemoryBackend({CONTRACT_PROFILE.name: CONTRACT_PROFILE})

    @property
    def backend(self) -> MemoryBackend:
        return self._backend

    def request(
        self, name: str, workers: int | None = None, ttl_seconds: int | None = None
    ) -> ClusterRequest:
        return ClusterRequest(
            name, NAMESPACE, CONTRACT_PROFILE.name, REQUESTER, workers=workers, ttl_seconds=ttl_seconds
        )

    def settle(self, ref: ClusterRef) -> None:
        if self._backend.exists(ref):
            self._backend.make_ready(ref)

    def live_count(self, ref: ClusterRef, group: str) -> int:
        if not self._backend.exists(ref):
            return 0
        return self._backend._find(ref).groups[group].ready

    def exists(self, ref: ClusterRef) -> bool:
        return self._backend.exists(ref)

    def annotations(self, ref: ClusterRef) -> dict[str, str]:
        return dict(self._backend._find(ref).annotations)

    def concurrent_count(self, ref: ClusterRef, group: str, replicas: int) -> None:
        # No public hook for "another writer" in MemoryBackend yet: write the store as one would.
        with self._backend._lock:
            cluster = self._backend._find(ref)
            cluster.groups[group].replicas = replicas
            cluster.version += 1

    def concurrent_annotation(self, ref: ClusterRef, key: str, value: str) -> None:
        with self._backend._lock:
            cluster = self._backend._find(ref)
            cluster.annotations[key] = value
            cluster.version += 1

    def restart(self) -> MemoryBackend:
        return self._backend


def memory_driver(request: pytest.FixtureRequest) -> Iterator[MemoryDriver]:
    yield MemoryDriver()
