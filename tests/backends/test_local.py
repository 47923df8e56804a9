"""The local backend on real Ray, beyond the shared contract: what only laptop mode has.

Real heads and `ray start --block` workers on loopback, few and short-lived (a head costs ~7 s idle and
up to a minute on a loaded 2-core machine). Each test has its own state directory and a short temp
parent for its nodes; at teardown every cluster in the state directory is purged and any process left
with that temp parent fails the test (the session's process guard checks again).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller import keys, localray
from controller.backends.base import (
    AlreadyExists,
    BackendUnavailable,
    CapacityExceeded,
    ClusterRequest,
    ClusterState,
    InvalidProfile,
    UnsafeRemoval,
)
from controller.backends.local import LocalBackend
from controller.backends.local_caps import GIB, LocalCaps, Usage
from controller.backends.local_procs import NodeSettings
from controller.backends.local_state import ClusterPhase, StateStore
from controller.domain import Activity, ClusterRef, NodeActivity
from controller.metrics.base import ClusterActivity
from tests.backends.contract import find, owner_decision
from tests.backends.driver_local import TEST_CAPS, node_processes
from tests.backends.drivers import CONTRACT_PROFILE, GROUP, REQUESTER
from tests.backends.profiles import profile

REPO = Path(__file__).resolve().parents[2]
GPU_LOCAL = profile(
    "gpu-local",
    workerGroups=[
        {"name": "cpu", "cpu": "1", "memory": "1Gi", "defaultWorkers": 2, "maxWorkers": 4},
        {
            "name": "gpu",
            "cpu": "1",
            "memory": "1Gi",
            "gpu": 1,
            "defaultWorkers": 1,
            "maxWorkers": 2,
            "rayResources": {"accel": 1},
        },
    ],
)
HALF_CPU = profile("half-cpu", workerGroups=[{"name": "cpu", "cpu": "500m", "defaultWorkers": 1}])
PROFILES = {p.name: p for p in (CONTRACT_PROFILE, GPU_LOCAL, HALF_CPU)}


def request(name: str, profile_name: str = CONTRACT_PROFILE.name, **kw: Any) -> ClusterRequest:
    return ClusterRequest(name, keys.LOCAL_NAMESPACE, profile_name, REQUESTER, **kw)


def marked_processes(parent: Path) -> list[int]:
    """Live processes of nodes whose temp dir is under `parent` (by the marker localray sets)."""
    prefix = f"{localray.NODE_ENV_MARKER}={parent}/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if stat.rsplit(b")", 1)[1].split()[0] != b"Z" and any(e.startswith(prefix) for e in env.split(b"\0")):
            found.append(int(entry.name))
    return found


@pytest.fixture
def node_parent() -> Iterator[Path]:
    """A short parent for node temp dirs (Unix socket paths under them must stay short)."""
    path = Path(tempfile.mkdtemp(prefix="rol-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def backends(tmp_path: Path, node_parent: Path) -> Iterator[Callable[..., LocalBackend]]:
    """Factory for backends over one state directory; everything they started is stopped at teardown."""
    made: list[LocalBackend] = []
    state_dir = tmp_path / "state"

    def make(**kw: Any) -> LocalBackend:
        kw.setdefault("state_dir", state_dir)
        kw.setdefault("caps", TEST_CAPS)
        kw.setdefault("settings", settings_for(node_parent))
        backend = LocalBackend(PROFILES, **kw)
        made.append(backend)
        return backend

    try:
        yield make
    finally:
        for b in made:
            b.close()
        cleaner = LocalBackend(PROFILES, state_dir=state_dir, caps=TEST_CAPS)
        for name in cleaner.store.names():
            cleaner.purge(ClusterRef(keys.LOCAL_NAMESPACE, name))
        left = marked_processes(node_parent)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"node processes survived the purge: {left}"


def settings_for(node_parent: Path, **kw: Any) -> NodeSettings:
    """Patient starts and quick retries: a loaded 2-core machine misses Ray's 30 s registration."""
    return NodeSettings(
        temp_parent=node_parent, start_timeout_s=240.0, retry_base_s=2.0, retry_max_s=10.0, **kw
    )


def converge(backend: LocalBackend, ref: ClusterRef, timeout_s: float = 300.0) -> None:
    """Reconcile until every group has as many ready workers as it asks for (starts may need a retry)."""

    def ready() -> bool:
        backend.reconcile(ref)
        return all(g.ready == g.desired for g in backend.get(ref).groups)

    wait_for(f"{ref} to have all its workers", ready, timeout_s)


def driver_env(gcs_address: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(localray.DRIVER_ENV)
    env["RAY_ADDRESS"] = gcs_address
    return env


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


def tasks_named(dashboard_url: str, name: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode(
        [
            ("detail", "true"),
            ("limit", 1000),
            ("filter_keys", "name"),
            ("filter_predicates", "="),
            ("filter_values", name),
        ]
    )
    with urllib.request.urlopen(f"{dashboard_url}/api/v0/tasks?{query}", timeout=10) as resp:
        body = json.loads(resp.read())
    rows: list[dict[str, Any]] = body["data"]["result"]["result"]
    return rows


class AllIdle:
    """An activity source that calls every alive node idle: the controller's view a moment before a
    task landed on a worker (the race the drain check closes)."""

    def activity(
        self, clusters: Mapping[ClusterRef, str | None], now: datetime
    ) -> dict[ClusterRef, ClusterActivity]:
        out = {}
        for ref, url in clusters.items():
            nodes = [n for n in localray.list_nodes(url or "", timeout_s=20) if n["state"] == "ALIVE"]
            out[ref] = ClusterActivity(
                ref,
                tuple(NodeActivity(str(n["node_id"]), str(n["node_ip"]), Activity.IDLE) for n in nodes),
                now,
            )
        return out


# Long tasks pinned to the given nodes; they finish when the release file appears.
LONG_TASKS = """
    import json, os, sys, time, ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    ray.init(logging_level="ERROR")
    release, nodes = sys.argv[1], sys.argv[2:]

    @ray.remote(num_cpus=1, max_retries=0)
    def long_task(release):
        while not os.path.exists(release):
            time.sleep(0.2)
        return ray.get_runtime_context().get_node_id()

    pinned = [NodeAffinitySchedulingStrategy(n, soft=False) for n in nodes]
    print(json.dumps(ray.get([long_task.options(scheduling_strategy=p).remote(release) for p in pinned])))
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_scale_down_never_removes_a_busy_worker(
    backends: Callable[..., LocalBackend], tmp_path: Path
) -> None:
    backend = backends()
    ref = backend.create(request("busy", workers=3)).ref
    converge(backend, ref)
    cluster = find(backend, ref)
    workers = sorted(cluster.group(GROUP).workers, key=lambda w: w.name)
    assert len(workers) == 3 and all(w.ready for w in workers)
    busy, idle = workers[:2], workers[2]
    head = backend.store.read("busy").head  # type: ignore[union-attr]
    assert head is not None

    release = tmp_path / "release"
    driver = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(LONG_TASKS), str(release), *(str(w.node_id) for w in busy)],
        env=driver_env(head.gcs_address),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:

        def activity() -> dict[str, Activity]:
            return {w.name: w.activity for w in find(backend, ref).group(GROUP).workers}

        want = {busy[0].name: Activity.BUSY, busy[1].name: Activity.BUSY, idle.name: Activity.IDLE}
        wait_for("the long tasks to run", lambda: activity() == want)

        # Naming busy workers is refused before anything is written.
        group = find(backend, ref).group(GROUP)
        with pytest.raises(UnsafeRemoval, match=busy[0].name):
            backend.apply(find(backend, ref), [owner_decision(group, 0, tuple(w.name for w in workers))])
        assert find(backend, ref).group(GROUP).replicas == 3

        # A controller whose view is a moment old (it saw everything idle) names a busy worker: the
        # check passes, but Ray refuses the idle drain, so the worker stays and the count goes back.
        stale = backends(activity=AllIdle())
        result = stale.apply(find(stale, ref), [owner_decision(group, 2, (busy[0].name,))])
        assert result.written and busy[0].name in result.detail and "kept" in result.detail, result
        after = find(backend, ref).group(GROUP)
        assert (after.replicas, after.pending_deletes) == (3, ())
        assert {w.name for w in after.workers} == {w.name for w in workers}

        # The idle worker goes; the busy ones keep running their tasks.
        result = backend.apply(find(backend, ref), [owner_decision(after, 2, (idle.name,))])
        assert result.written and f"stopped {idle.name}" in result.detail, result
        assert {p.worker_name for p in node_processes("busy") if not p.head} == {w.name for w in busy}
        assert backend.finish_removals(find(backend, ref)).written
        assert find(backend, ref).group(GROUP).pending_deletes == ()

        release.touch()
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert driver.returncode == 0, err.decode()[-3000:]
    assert json.loads(out.decode().strip().splitlines()[-1]) == [w.node_id for w in busy]

    # Ray's task events reach the state API a moment after the result: wait for both to show.
    def attempts() -> list[tuple[str, int]]:
        return sorted((t["state"], t["attempt_number"]) for t in tasks_named(head.dashboard_url, "long_task"))

    wait_for("the task events", lambda: all(state != "RUNNING" for state, _ in attempts()), timeout_s=60)
    assert attempts() == [("FINISHED", 0), ("FINISHED", 0)]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_restart_adopts_workers_and_replaces_one_that_died(backends: Callable[..., LocalBackend]) -> None:
    first, rival = backends(), backends()
    outcomes: list[object] = []

    def create(b: LocalBackend) -> None:
        try:
            outcomes.append(b.create(request("adopt", GPU_LOCAL.name)))
        except AlreadyExists as e:
            outcomes.append(e)

    threads = [threading.Thread(target=create, args=(b,)) for b in (first, rival)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(type(o).__name__ for o in outcomes) == ["AlreadyExists", "ClusterStatus"]
    ref = ClusterRef(keys.LOCAL_NAMESPACE, "adopt")
    converge(first, ref)
    status = first.get(ref)
    assert status.state == ClusterState.READY, status
    assert [(g.name, g.ready, g.desired) for g in status.groups] == [("cpu", 2, 2), ("gpu", 1, 1)]
    assert status.connect is not None and status.connect.dashboard_url is not None
    rec = first.store.read("adopt")
    assert rec is not None and rec.head is not None
    assert status.connect.driver_address == rec.head.gcs_address
    assert status.connect.client_address is None  # Ray Client cannot reach a loopback head

    # A GPU-shaped group on a machine without a GPU: Ray schedules GPU work there.
    seen = find(first, ref)
    gpu_worker = seen.group("gpu").workers[0]
    assert seen.group("gpu").worker_resources == {"CPU": 1.0, "GPU": 1.0, "accel": 1.0}
    ran = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ray; ray.init(logging_level='ERROR'); "
            "f = ray.remote(num_gpus=1)(lambda: ray.get_runtime_context().get_node_id()); "
            "print(ray.get(f.remote()))",
        ],
        env=driver_env(status.connect.driver_address),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.strip().splitlines()[-1] == gpu_worker.node_id

    # file_sd: every node's metrics port with the three mapping labels.
    def file_sd() -> dict[int, tuple[str, str, str]]:
        entries = json.loads(first.file_sd_path.read_text())
        return {
            int(e["targets"][0].rsplit(":", 1)[1]): tuple(e["labels"][k] for k in keys.METRIC_MAPPING_LABELS)
            for e in entries
        }

    ports = {rec.head.metrics_port: ("local", "adopt", "headgroup")}
    ports |= {w.node.metrics_port: ("local", "adopt", w.group) for w in rec.workers if w.node}
    assert file_sd() == ports and len(ports) == 4

    # A new backend (a restarted controller, with its operator thread) adopts the same processes.
    second = backends(background=True, resync_s=1.0)
    adopted = find(second, ref)
    assert {(w.name, w.node_id) for g in adopted.groups for w in g.workers} == {
        (w.name, w.node_id) for g in seen.groups for w in g.workers
    }
    assert second.get(ref).state == ClusterState.READY

    # A worker killed outright is noticed, its leftovers are stopped, and the operator replaces it.
    dead = next(w for w in rec.workers if w.group == "cpu")
    assert dead.node is not None
    os.kill(dead.node.pid, signal.SIGKILL)

    def replaced() -> bool:
        group = find(second, ref).group("cpu")
        return dead.name not in {w.name for w in group.workers} and group.ready == 2

    wait_for("the dead worker to be replaced", replaced, timeout_s=300)
    assert localray.node_processes(dead.node) == []
    assert f"worker {dead.name} (cpu): its ray start process (pid {dead.node.pid}) exited on its own" in (
        second.get(ref).stuck_cause or ""
    )
    assert dead.node.metrics_port not in file_sd() and len(file_sd()) == 4

    second.delete(ref)
    assert node_processes("adopt") == []
    assert second.store.names() == [] and json.loads(second.file_sd_path.read_text()) == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_head_that_fails_to_start_leaves_nothing(
    backends: Callable[..., LocalBackend], node_parent: Path
) -> None:
    # Ray refuses an object store this small and `ray start` exits: a real failed start.
    broken = backends(settings=settings_for(node_parent, object_store_memory=1))
    with pytest.raises(BackendUnavailable, match="nothing was created"):
        broken.create(request("broken"))
    assert broken.store.names() == [] and broken.list() == []
    assert list(node_parent.iterdir()) == []
    assert marked_processes(node_parent) == [] and node_processes("broken") == []


CREATE_AND_HANG = """
    import sys
    from pathlib import Path
    from controller.backends.local import LocalBackend
    from controller.backends.local_procs import NodeSettings
    from controller.backends.base import ClusterRequest
    from tests.backends.driver_local import TEST_CAPS
    from tests.backends.drivers import CONTRACT_PROFILE
    backend = LocalBackend(
        {CONTRACT_PROFILE.name: CONTRACT_PROFILE},
        state_dir=Path(sys.argv[1]),
        caps=TEST_CAPS,
        settings=NodeSettings(temp_parent=Path(sys.argv[2]), start_timeout_s=300),
    )
    backend.create(ClusterRequest("orphan", "local", CONTRACT_PROFILE.name, "me"))
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_create_whose_process_died_is_cleaned_up_by_the_next(
    backends: Callable[..., LocalBackend], tmp_path: Path, node_parent: Path
) -> None:
    creator = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CREATE_AND_HANG), str(tmp_path / "state"), str(node_parent)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    store = StateStore(tmp_path / "state")
    try:

        def head_starting() -> bool:
            rec = store.read("orphan")
            return (
                rec is not None and rec.phase == ClusterPhase.CREATING and bool(marked_processes(node_parent))
            )

        wait_for("the creator to start the head", head_starting)
    finally:
        creator.kill()  # its `ray start` lives on in its own session, as after a crash
        creator.wait()
    assert marked_processes(node_parent)

    reports = backends().reconcile_all()
    assert [o for r in reports for o in r.orphans] == ["cluster orphan (a create left unfinished)"]
    assert store.names() == [] and list(node_parent.iterdir()) == []
    wait_for("the half-started head to be gone", lambda: not marked_processes(node_parent), timeout_s=30)


# --- without Ray ---------------------------------------------------------------------------------


def test_caps_refuse_before_anything_starts(backends: Callable[..., LocalBackend], node_parent: Path) -> None:
    small = LocalCaps(memory_bytes=2 * GIB, cpus=8, basis="a 2 GiB test cap", check_available=False)
    backend = backends(caps=small)
    with pytest.raises(CapacityExceeded, match=r"2\.4 GiB .* over the cap of 2\.0 GiB \(a 2 GiB test cap\)"):
        backend.create(request("big", workers=2))
    few = backends(caps=LocalCaps(memory_bytes=64 * GIB, cpus=2, check_available=False, max_clusters=0))
    with pytest.raises(CapacityExceeded, match="at most 0 local clusters"):
        few.create(request("none"))
    assert backend.store.names() == [] and list(node_parent.iterdir()) == []


def test_caps_from_the_machine_and_memory_available_now() -> None:
    meminfo = {"MemTotal": 8 * GIB, "MemAvailable": 1 * GIB}
    caps = LocalCaps.from_machine(memory_fraction=0.5, cpu_factor=2, meminfo=meminfo, cpu_count=2)
    assert (caps.memory_bytes, caps.cpus) == (4 * GIB, 4)
    caps.check(Usage(), Usage(clusters=1, workers=5, worker_cpus=4))  # 1.5 + 2.25 GiB, 4 CPUs: fits
    with pytest.raises(CapacityExceeded, match="over the cap of 4 "):
        caps.check(Usage(clusters=1, workers=1, worker_cpus=4), Usage(workers=1, worker_cpus=1))
    with pytest.raises(CapacityExceeded, match=r"50% of this machine.s 8\.0 GiB"):
        caps.check(Usage(clusters=2), Usage(clusters=1))
    caps.check(Usage(clusters=9, workers=9), Usage())  # nothing added: nothing refused
    with pytest.raises(BackendUnavailable, match=r"only 1\.0 GiB of memory is available now"):
        caps.check_now(Usage(workers=2), meminfo=meminfo)
    caps.check_now(Usage(workers=1), meminfo={"MemAvailable": 2 * GIB})


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (ClusterRequest("ok-name", "team-a", CONTRACT_PROFILE.name, REQUESTER), "namespace local"),
        (request("frac", "half-cpu"), "whole CPUs"),
        (request("nogpu", gpus=1), "no GPU worker group"),
    ],
    ids=["other-namespace", "fractional-cpu", "gpus-without-gpu-group"],
)
def test_requests_local_ray_cannot_run_create_nothing(
    backends: Callable[..., LocalBackend], node_parent: Path, req: ClusterRequest, message: str
) -> None:
    backend = backends()
    with pytest.raises(InvalidProfile, match=message):
        backend.create(req)
    assert backend.store.names() == [] and list(node_parent.iterdir()) == []


def test_the_state_lock_excludes_other_processes(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from controller.backends.local_state import StateStore\n"
            "with StateStore(Path(sys.argv[1])).lock():\n"
            "    print('held', flush=True); time.sleep(1.5)",
            str(tmp_path),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        store = StateStore(tmp_path)
        with store.lock(), store.lock():  # reentrant within a thread
            waited = time.monotonic() - started
    finally:
        holder.wait(timeout=30)
    assert waited >= 0.8, waited


def test_the_planned_record_carries_expiry_and_shapes(backends: Callable[..., LocalBackend]) -> None:
    backend = backends()
    before = datetime.now(UTC)
    rec = backend._plan(request("ttl", ttl_seconds=3600))
    expires = datetime.fromisoformat(rec.annotations[keys.ANN_EXPIRES_AT])
    assert 3595 <= (expires - before).total_seconds() <= 3605
    assert [(g.name, g.replicas, g.num_cpus, g.shape) for g in rec.groups] == [("cpu", 1, 1, {"CPU": 1.0})]
