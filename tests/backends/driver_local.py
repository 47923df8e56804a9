"""The contract suite's driver for the local backend: real Ray heads and `ray start --block` workers.

The platform here is the machine itself, so the driver looks at it directly, never through the
backend: a node is a live `ray start` process carrying the cluster's and group's Ray node labels on
its command line, and a worker's name is its `RAY_CLOUD_INSTANCE_ID` (what KubeRay sets to the pod
name). The state directory's record is the stored object (annotations are read from it, as from the
API server). A worker is made busy by a real long task pinned to its node by a driver subprocess,
and "as Ray will report it next" is waited for through Ray's own dashboard.

Every case gets its own state directory; at teardown every cluster in it is purged and the machine
is checked for any process of the case's clusters (the session's process guard checks again).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_timeout

from controller import keys, localray
from controller.backends.base import ClusterRequest
from controller.backends.local import LocalBackend
from controller.backends.local_caps import GIB, LocalCaps
from controller.backends.local_procs import INSTANCE_ID_ENV, LABEL_CLUSTER, LABEL_GROUP, NodeSettings
from controller.domain import Activity, ClusterRef
from controller.metrics.http import HttpSettings
from controller.metrics.ray_dashboard import RayDashboardSource
from tests.backends.drivers import CONTRACT_PROFILE, REQUESTER

# A local case starts a head (7 s idle, up to a minute on a loaded 2-core machine) and workers.
CASE_TIMEOUT_S = 900.0
SETTLE_TIMEOUT_S = 300.0
ACTIVITY_TIMEOUT_S = 90.0
# Enough for the suite's largest case on any machine that runs it; the caps have their own tests.
TEST_CAPS = LocalCaps(memory_bytes=16 * GIB, cpus=16, basis="contract-suite caps", check_available=False)


@dataclass(frozen=True)
class NodeProcess:
    """One live `ray start` of a local node, as the machine shows it."""

    pid: int
    cluster: str
    group: str
    head: bool
    worker_name: str | None
    temp_dir: Path | None
    args: tuple[str, ...]

    def arg(self, flag: str) -> str | None:
        prefix = f"--{flag}="
        return next((a[len(prefix) :] for a in self.args if a.startswith(prefix)), None)


def _read(pid: int, name: str) -> bytes | None:
    try:
        return (Path("/proc") / str(pid) / name).read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def node_processes(cluster: str | None = None) -> list[NodeProcess]:
    """Every live `ray start` process labelled for a local cluster (`cluster`, or any)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        cmd, stat = _read(pid, "cmdline"), _read(pid, "stat")
        if not cmd or not stat or stat.rsplit(b")", 1)[1].split()[0] == b"Z":
            continue
        args = tuple(a.decode(errors="replace") for a in cmd.split(b"\0") if a)
        if len(args) < 4 or args[1] != "-c" or args[3] != "start":
            continue
        labels_arg = next((a for a in args if a.startswith("--labels=")), None)
        if labels_arg is None:
            continue
        labels = dict(p.split("=", 1) for p in labels_arg[len("--labels=") :].split(",") if "=" in p)
        if LABEL_CLUSTER not in labels or (cluster is not None and labels[LABEL_CLUSTER] != cluster):
            continue
        environ = (_read(pid, "environ") or b"").split(b"\0")
        env = dict(e.decode(errors="replace").split("=", 1) for e in environ if b"=" in e)
        temp = next((a[len("--temp-dir=") :] for a in args if a.startswith("--temp-dir=")), None)
        out.append(
            NodeProcess(
                pid=pid,
                cluster=labels[LABEL_CLUSTER],
                group=labels.get(LABEL_GROUP, ""),
                head="--head" in args,
                worker_name=env.get(INSTANCE_ID_ENV),
                temp_dir=Path(temp) if temp else None,
                args=args,
            )
        )
    return out


def extend_timeout(item: pytest.Item, seconds: float) -> None:
    """Give a local case more time than the suite's default (set before any fixture ran).

    pytest-timeout's own hooks cancel and re-arm the timer; its end-of-test cancel still applies.
    """
    settings = pytest_timeout._get_item_settings(item)
    if settings.timeout is not None and 0 < settings.timeout < seconds:
        hooks = item.config.pluginmanager.hook
        hooks.pytest_timeout_cancel_timer(item=item)
        hooks.pytest_timeout_set_timer(item=item, settings=settings._replace(timeout=seconds))


class LocalDriver:
    name = "local"
    namespace = keys.LOCAL_NAMESPACE

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.dashboard = RayDashboardSource(http=HttpSettings(timeout_s=20.0, retries=2))
        self._backend = self._make()
        self._busy: dict[str, subprocess.Popen[bytes]] = {}  # worker name -> driver holding it
        self.clusters: set[str] = set()

    def _make(self) -> LocalBackend:
        return LocalBackend(
            {CONTRACT_PROFILE.name: CONTRACT_PROFILE},
            state_dir=self.state_dir,
            caps=TEST_CAPS,
            settings=NodeSettings(start_timeout_s=240.0, retry_base_s=2.0, retry_max_s=10.0),
        )

    @property
    def backend(self) -> LocalBackend:
        return self._backend

    def request(
        self, name: str, workers: int | None = None, ttl_seconds: int | None = None
    ) -> ClusterRequest:
        self.clusters.add(name)
        return ClusterRequest(
            name,
            keys.LOCAL_NAMESPACE,
            CONTRACT_PROFILE.name,
            REQUESTER,
            workers=workers,
            ttl_seconds=ttl_seconds,
        )

    # ------------------------------------------------------------------ the platform's view

    def _record(self, ref: ClusterRef) -> dict[str, object] | None:
        path = self.state_dir / "clusters" / ref.name / "cluster.json"
        try:
            data: dict[str, object] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return data

    def _workers(self, ref: ClusterRef, group: str) -> list[NodeProcess]:
        return [p for p in node_processes(ref.name) if not p.head and p.group == group]

    def live_count(self, ref: ClusterRef, group: str) -> int:
        return len(self._workers(ref, group))

    def live_workers(self, ref: ClusterRef, group: str) -> set[str]:
        return {p.worker_name or f"pid {p.pid}" for p in self._workers(ref, group)}

    def exists(self, ref: ClusterRef) -> bool:
        return self._record(ref) is not None or bool(node_processes(ref.name))

    def annotations(self, ref: ClusterRef) -> dict[str, str]:
        rec = self._record(ref)
        assert rec is not None, f"{ref} has no record in {self.state_dir}"
        annotations = rec["annotations"]
        assert isinstance(annotations, dict)
        return {str(k): str(v) for k, v in annotations.items()}

    def settle(self, ref: ClusterRef) -> None:
        """Reconcile (the local operator's job) until each group's live workers match its replicas; a
        cluster without a record must have no process left."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            if self._record(ref) is not None:
                self.backend.reconcile(ref)  # again after a failed start, as the operator would
            rec = self._record(ref)
            if rec is None:
                wanted: dict[str, int] = {}
                live = {p.pid for p in node_processes(ref.name)}
            else:
                groups = rec["groups"]
                assert isinstance(groups, list)
                wanted = {g["name"]: g["replicas"] for g in groups}
                live = set()
            have = {g: self.live_count(ref, g) for g in wanted}
            if have == wanted and not live:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{ref} did not settle: want {wanted}, have {have}, stray pids {live}")
            time.sleep(0.5)

    # ------------------------------------------------------------------ other writers, restarts

    def concurrent_count(self, ref: ClusterRef, group: str, replicas: int) -> None:
        """A second backend over the same state directory (a notebook's) applies its own count."""
        from tests.backends.contract import owner_decision

        other = self._make()
        cluster = next(c for c in other.list_clusters() if c.ref == ref)
        other.apply(cluster, [owner_decision(cluster.group(group), replicas)])

    def concurrent_annotation(self, ref: ClusterRef, key: str, value: str) -> None:
        self._make().set_annotations(ref, {key: value})

    def restart(self) -> LocalBackend:
        self._backend.close()
        self._backend = self._make()
        return self._backend

    # ------------------------------------------------------------------ activity

    def _head(self, ref: ClusterRef) -> NodeProcess:
        heads = [p for p in node_processes(ref.name) if p.head]
        assert len(heads) == 1, f"{ref}: {len(heads)} head processes"
        return heads[0]

    def _node_id(self, ref: ClusterRef, worker: str) -> tuple[str, str]:
        """(dashboard URL, node id) of a worker, from its process and the cluster's dashboard."""
        head = self._head(ref)
        url = f"http://{localray.LOCALHOST}:{head.arg('dashboard-port')}"
        proc = next((p for p in node_processes(ref.name) if p.worker_name == worker), None)
        assert proc is not None and proc.temp_dir is not None, f"no process for worker {worker}"
        node = localray.find_node(url, proc.temp_dir.name)
        assert node is not None, f"worker {worker} is not known to the dashboard"
        return url, str(node["node_id"])

    def set_busy(self, ref: ClusterRef, worker: str, busy: bool) -> None:
        url, node_id = self._node_id(ref, worker)
        if busy and worker not in self._busy:
            env = dict(os.environ)
            env.update(localray.DRIVER_ENV)
            env["RAY_ADDRESS"] = f"{localray.LOCALHOST}:{self._head(ref).arg('port')}"
            self._busy[worker] = subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(HOLD_SCRIPT), node_id],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        elif not busy and worker in self._busy:
            stop_driver(self._busy.pop(worker))
        self._wait_activity(ref, url, node_id, Activity.BUSY if busy else Activity.IDLE)

    def _wait_activity(self, ref: ClusterRef, url: str, node_id: str, want: Activity) -> None:
        deadline = time.monotonic() + ACTIVITY_TIMEOUT_S
        seen: object = None
        while time.monotonic() < deadline:
            got = self.dashboard.activity({ref: url}, datetime.now(UTC))[ref].by_node_id(node_id)
            seen = got
            if got is not None and got.activity == want:
                return
            time.sleep(0.5)
        raise AssertionError(f"node {node_id} not {want} after {ACTIVITY_TIMEOUT_S} s (last seen: {seen})")

    # ------------------------------------------------------------------ teardown

    def close(self) -> list[NodeProcess]:
        """Stop the busy drivers, purge every cluster, and return any node process still alive."""
        for proc in self._busy.values():
            stop_driver(proc)
        self._busy.clear()
        self._backend.close()
        cleaner = self._make()
        for name in cleaner.store.names():
            cleaner.purge(ClusterRef(keys.LOCAL_NAMESPACE, name))
        self.dashboard.close()
        return [p for p in node_processes() if p.cluster in self.clusters]


# Holds one CPU of the given node until killed: a real task, pinned with a hard node affinity.
HOLD_SCRIPT = """
    import sys, time, ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    ray.init(logging_level="ERROR")
    @ray.remote(num_cpus=1, max_retries=0)
    def hold():
        time.sleep(3600)
    pinned = NodeAffinitySchedulingStrategy(sys.argv[1], soft=False)
    ray.get(hold.options(scheduling_strategy=pinned).remote())
"""


def stop_driver(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def local_driver(request: pytest.FixtureRequest) -> Iterator[LocalDriver]:
    extend_timeout(request.node, CASE_TIMEOUT_S)
    tmp: Path = request.getfixturevalue("tmp_path")
    driver = LocalDriver(tmp / "state")
    try:
        yield driver
    finally:
        left = driver.close()
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        assert not left, f"processes of the case's local clusters survived the purge: {left}"
