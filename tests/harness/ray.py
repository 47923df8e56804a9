"""Real Ray clusters on loopback for tests: one shared head per session, fresh heads on request.

A head costs ~7-12 s and ~1.5 GiB; a worker ~5 s and ~430 MiB; CI has 2 cores. So one head is
shared by the session (`ray_cluster`, 1 CPU, so a task runs without any worker), and a test that
counts nodes or demand takes a private head from `fresh_ray_head`. Workers a test adds are stopped
when that test ends (pass or fail), so they never leak into the next test's node counts.

Drivers run as subprocesses (`run_driver`): a `ray.init` in the pytest process would tie it to one
cluster for good and leave a driver attached. Everything is stopped by pid and process group
through `controller.localray`; the session's process guard then checks nothing survived.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller import localray
from controller.localray import LocalHead, LocalWorker, StopReport
from tests.harness.tcpproxy import Mode, TcpProxy

# Keep node temp dirs (logs) after the session, for a post-mortem.
KEEP_TEMP_ENV = "RAYOPS_TEST_KEEP_RAY_TMP"

# Nodes started by this process and not yet stopped; the atexit hook stops them if pytest dies
# before fixture teardown (an internal error, a second Ctrl-C).
_LIVE: dict[int, LocalHead | LocalWorker] = {}
_LIVE_LOCK = threading.Lock()


def _register(node: LocalHead | LocalWorker) -> None:
    with _LIVE_LOCK:
        _LIVE[node.pid] = node


def _unregister(node: LocalHead | LocalWorker) -> None:
    with _LIVE_LOCK:
        _LIVE.pop(node.pid, None)


@atexit.register
def _stop_leftovers() -> None:
    with _LIVE_LOCK:
        nodes = list(_LIVE.values())
    for node in sorted(nodes, key=lambda n: isinstance(n, LocalHead)):  # workers first
        if isinstance(node, LocalHead):
            localray.stop_head(node, timeout_s=10)
        else:
            localray.stop_worker(node, timeout_s=10)


def _remove_temp_dir(path: Path) -> None:
    if not os.environ.get(KEEP_TEMP_ENV):
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class DriverResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The last stdout line as JSON (drivers print their result as one JSON line)."""
        return json.loads(self.stdout.strip().splitlines()[-1])


class RayTestCluster:
    """A real head on loopback plus the workers a test adds; see `controller.localray` for the nodes."""

    def __init__(self, head: LocalHead) -> None:
        self.head = head
        self.dashboard_proxy = TcpProxy(head.ports.dashboard)
        self._workers: dict[int, LocalWorker] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ addresses

    @property
    def gcs_address(self) -> str:
        return self.head.gcs_address

    @property
    def dashboard_url(self) -> str:
        return self.head.dashboard_url

    @property
    def temp_dir(self) -> Path:
        return self.head.temp_dir

    @property
    def sd_file(self) -> Path:
        """The head's Prometheus file_sd file, listing every node's metrics port."""
        return self.head.sd_file

    @property
    def metrics_port(self) -> int:
        return self.head.metrics_port

    @property
    def node_id(self) -> str:
        return self.head.node_id

    @property
    def workers(self) -> list[LocalWorker]:
        with self._lock:
            return list(self._workers.values())

    # ------------------------------------------------------------------ workers

    def add_worker(
        self,
        num_cpus: int = 1,
        num_gpus: int = 0,
        resources: Mapping[str, float] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> LocalWorker:
        """Start a worker and return once it is ALIVE. Safe to call from several threads at once."""
        worker = localray.start_worker(
            self.head, num_cpus=num_cpus, num_gpus=num_gpus, resources=resources, env=env
        )
        _register(worker)
        with self._lock:
            self._workers[worker.pid] = worker
        return worker

    def stop_worker(self, worker: LocalWorker, timeout_s: float = 45.0) -> StopReport:
        """Graceful stop (SIGTERM to its `ray start --block`; Ray drains the node first)."""
        try:
            return localray.stop_worker(worker, timeout_s=timeout_s)
        finally:
            with self._lock:
                self._workers.pop(worker.pid, None)
            _unregister(worker)
            _remove_temp_dir(worker.temp_dir)

    def stop_all_workers(self) -> None:
        workers = self.workers
        threads = [threading.Thread(target=self.stop_worker, args=(w,)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    # ------------------------------------------------------------------ observation

    def nodes(self, state: str | None = None) -> list[dict[str, Any]]:
        """Nodes as the dashboard's `/api/v0/nodes` lists them (DEAD ones included unless filtered)."""
        nodes = localray.list_nodes(self.dashboard_url)
        return [n for n in nodes if state is None or n.get("state") == state]

    def node(self, node_id: str) -> dict[str, Any]:
        for n in localray.list_nodes(self.dashboard_url):
            if n["node_id"] == node_id:
                return n
        raise KeyError(f"node {node_id} unknown to the dashboard")

    def driver_env(self) -> dict[str, str]:
        """Environment for a driver process: loopback-safe (`localray.DRIVER_ENV`), RAY_ADDRESS set."""
        env = dict(os.environ)
        env.update(localray.DRIVER_ENV)
        env["RAY_ADDRESS"] = self.gcs_address
        return env

    def run_driver(self, script: str, timeout_s: float = 90.0) -> DriverResult:
        """Run `script` as a Ray driver in a fresh interpreter; `ray.init()` there joins this cluster.

        The driver runs in its own process group and is killed with it on timeout.
        """
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.driver_env(),
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(
                f"driver timed out after {timeout_s} s\nstdout:\n{out}\nstderr:\n{err[-4000:]}"
            ) from None
        return DriverResult(proc.returncode, out, err)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop workers, then the head; idempotent."""
        self.dashboard_proxy.close()
        self.stop_all_workers()
        try:
            localray.stop_head(self.head)
        finally:
            _unregister(self.head)
            _remove_temp_dir(self.head.temp_dir)


def start_cluster(
    num_cpus: int = 1, num_gpus: int = 0, resources: Mapping[str, float] | None = None
) -> RayTestCluster:
    head = localray.start_head(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources)
    _register(head)
    return RayTestCluster(head)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayTestCluster]:
    """The session's shared head (1 CPU): run tasks, add and stop workers, scrape its metrics."""
    cluster = start_cluster(num_cpus=1)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(autouse=True)
def _ray_cluster_test_scope(request: pytest.FixtureRequest) -> Iterator[None]:
    """Undo what a test did to the shared cluster: stop its workers, put the dashboard proxy back."""
    if "ray_cluster" not in request.fixturenames:
        yield
        return
    cluster: RayTestCluster = request.getfixturevalue("ray_cluster")
    before = {w.pid for w in cluster.workers}
    try:
        yield
    finally:
        cluster.dashboard_proxy.set_mode(Mode.PASS)
        for w in cluster.workers:
            if w.pid not in before:
                cluster.stop_worker(w)


@pytest.fixture
def dashboard_proxy(ray_cluster: RayTestCluster) -> TcpProxy:
    """The shared head's dashboard behind a switchable proxy (`.url`, `.refuse()`, `.hang()`, ...)."""
    return ray_cluster.dashboard_proxy


@pytest.fixture
def fresh_ray_head() -> Iterator[Callable[..., RayTestCluster]]:
    """Factory for private heads (default 0 CPUs, as on KubeRay): `fresh_ray_head(num_cpus=0, ...)`.

    For tests that count nodes or pending demand. Each costs a head start (~10 s); all are stopped,
    workers first, when the test ends.
    """
    clusters: list[RayTestCluster] = []

    def make(
        num_cpus: int = 0, num_gpus: int = 0, resources: Mapping[str, float] | None = None
    ) -> RayTestCluster:
        cluster = start_cluster(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources)
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for c in clusters:
            c.close()
