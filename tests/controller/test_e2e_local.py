"""End to end in laptop mode on real Ray: a local cluster of its own per test, the controller with the
local backend, real driver processes submitting real tasks, and (for the fault) a real Prometheus.

Policies have short windows (scale-down after 5-8 s) and caps of 2 one-CPU workers, so each test takes
about a minute on a loaded 2-core machine. Every cluster is purged at the end; the session's process
guard checks that no Ray process survived.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controller import localray
from controller.backends.base import ClusterRequest
from controller.backends.local import LocalBackend
from controller.daemon import Controller, build_controller
from controller.domain import Action, ClusterRef, ReasonCode
from controller.events import Event, EventType, JournalSource, MemoryEvents
from controller.reconcile import TickReport
from controller.settings import ControllerSettings, LoopSettings, PrometheusSettings, ServeSettings
from tests.backends.driver_local import TEST_CAPS, node_processes
from tests.harness.prometheus import PrometheusServer

pytestmark = pytest.mark.slow

POLICY = """\
apiVersion: rayops.io/v1alpha1
kind: ScalingPolicy
metadata: {name: e2e}
spec:
  selector: {namespaces: ["*"]}
  minReplicas: 0
  maxReplicas: 2
  signals:
    - {name: pending-cpu, type: pendingDemand, resource: CPU}
SIGNALS  behavior:
    scaleUp: {stabilizationWindowSeconds: 0, policies: [{type: Pods, value: 4, periodSeconds: 1}]}
    scaleDown: {stabilizationWindowSeconds: WINDOW, policies: [{type: Percent, value: 100, periodSeconds: 1}]}
---
apiVersion: rayops.io/v1alpha1
kind: ClusterProfile
metadata: {name: small}
spec:
  scalingPolicy: e2e
  workerGroups:
    - {name: cpu, cpu: "1", memory: 1Gi, minWorkers: 0, defaultWorkers: 0, maxWorkers: 2}
"""
UTILIZATION = "    - {name: cpu-util, type: utilization, resource: CPU, target: {averageUtilization: 70}}\n"

DRIVER = """
import json, sys, time
import ray
n, secs = int(sys.argv[1]), float(sys.argv[2])
ray.init(logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=1, max_retries=0)
def work(i):
    time.sleep(secs)
    return i

refs = [work.remote(i) for i in range(n)]
print(json.dumps({"submitted": n, "at": time.time()}), flush=True)
print(json.dumps({"done": len(ray.get(refs)), "at": time.time()}), flush=True)
"""


def policies(tmp: Path, window: int, utilization: bool = False) -> Path:
    d = tmp / "policies"
    d.mkdir(exist_ok=True)
    text = POLICY.replace("WINDOW", str(window)).replace("SIGNALS", UTILIZATION if utilization else "")
    (d / "e2e.yaml").write_text(text)
    return d


@dataclass
class Driver:
    """A Ray driver process (its own session) submitting `n` one-CPU tasks of `seconds`."""

    proc: subprocess.Popen[str]
    lines: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def start(address: str, n: int, seconds: float) -> Driver:
        env = dict(os.environ) | localray.DRIVER_ENV | {"RAY_ADDRESS": address}
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(DRIVER), str(n), str(seconds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        d = Driver(proc)
        threading.Thread(target=d._read, daemon=True).start()
        return d

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))

    def finished_at(self) -> float | None:
        return next((m["at"] for m in self.lines if "done" in m), None)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, state: Callable[[], object] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            seen = f"; state: {state()}" if state is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{seen}")
        time.sleep(0.25)


def tasks(dashboard: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{dashboard}/api/v0/tasks?detail=true&limit=10000", timeout=10) as r:
        body = json.load(r)
    result: list[dict[str, Any]] = body["data"]["result"]["result"]
    return [t for t in result if t.get("name", "").endswith("work")]


class Local:
    """One test's state directory, its cluster and whatever controllers run on it; purged at the end."""

    def __init__(self, tmp: Path, window: int, utilization: bool = False) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.policy_dir = policies(tmp, window, utilization)
        self.name = f"e2e-{uuid.uuid4().hex[:6]}"
        self.ref = ClusterRef("local", self.name)
        self.backend = LocalBackend(self._profiles(), state_dir=self.state, caps=TEST_CAPS)
        self.controllers: list[Controller] = []
        self.events = MemoryEvents()
        self.ticks: list[TickReport] = []

    def _profiles(self) -> Any:
        from controller.policy.loader import load_policy_set

        return load_policy_set(str(self.policy_dir))

    def create(self, workers: int = 0) -> None:
        self.backend.create(ClusterRequest(self.name, "local", "small", "console:e2e", workers=workers))

    @property
    def address(self) -> str:
        rec = self.backend.store.read(self.name)
        assert rec is not None and rec.head is not None
        return rec.head.gcs_address

    @property
    def dashboard(self) -> str:
        rec = self.backend.store.read(self.name)
        assert rec is not None and rec.head is not None
        return rec.head.dashboard_url

    def controller(self, prometheus_url: str | None = None, tick: float = 1.0) -> Controller:
        settings = ControllerSettings(
            backend="local",
            policy_dir=self.policy_dir,
            state_dir=self.state,
            loop=LoopSettings(tick_seconds=tick, removals_seconds=1.0),
            serve=ServeSettings(port=None),
            prometheus=PrometheusSettings(url=prometheus_url),
        )
        c = build_controller(settings, extra_sinks=[self.events], on_tick=self.ticks.append)
        self.controllers.append(c)
        return c

    def replicas(self) -> int:
        rec = self.backend.store.read(self.name)
        assert rec is not None
        return rec.groups[0].replicas

    def live_workers(self) -> int:
        return len([p for p in node_processes(self.name) if not p.head])

    def of_type(self, kind: EventType) -> list[Event]:
        return self.events.of_type(kind)

    def describe(self) -> str:
        """The record's groups and workers and the last events, for a failing wait."""
        rec = self.backend.store.read(self.name)
        groups = [(g.name, g.replicas, g.pending_deletes, g.last_error) for g in rec.groups] if rec else None
        workers = [(w.name, str(w.phase)) for w in rec.workers] if rec else None
        last = [f"{e.type}: {e.message}" for e in self.events.events[-4:]]
        return f"groups {groups}, workers {workers}, live {self.live_workers()}, events {last}"

    def close(self) -> None:
        for c in self.controllers:
            c.stop()
        with contextlib.suppress(Exception):
            self.backend.purge(self.ref)
        self.backend.close()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Callable[..., Local]]:
    made: list[Local] = []

    def make(window: int, utilization: bool = False) -> Local:
        lo = Local(tmp_path, window, utilization)
        made.append(lo)
        return lo

    try:
        yield make
    finally:
        for lo in made:
            lo.close()


@pytest.mark.timeout(480)
def test_burst_scales_up_within_two_ticks_finishes_and_scales_back_without_retries(
    local: Callable[..., Local],
) -> None:
    lo = local(window=5)
    lo.create(workers=0)
    lo.controller().start()
    driver = Driver.start(lo.address, n=4, seconds=4)
    try:
        wait_for(lambda: bool(lo.of_type(EventType.SCALED_UP)), 60, "a scale-up")
        wait_for(lambda: driver.proc.poll() is not None, 200, "the tasks", lo.describe)
        assert driver.proc.returncode == 0, driver.proc.stderr.read() if driver.proc.stderr else ""
        finished = driver.finished_at()
        wait_for(lambda: lo.replicas() == 0 and lo.live_workers() == 0, 150, "workers removed", lo.describe)
    finally:
        driver.stop()
    # Scale-up within two ticks of the demand being visible to the controller.
    seen = next(
        i
        for i, t in enumerate(lo.ticks)
        for d in t.decisions
        for r in d.reasons
        if r.code is ReasonCode.SIGNAL_PROPOSAL and float(r.data.get("value") or 0) > 0
    )
    up = next(i for i, t in enumerate(lo.ticks) if any(d.action is Action.UP for d in t.decisions))
    assert up - seen <= 1
    assert lo.ticks[up].decisions[0].target == 2  # capped at the policy's 2
    # Removal only after the stabilization window, once the work was done.
    downs = lo.of_type(EventType.SCALED_DOWN)  # 2 -> 0, or 2 -> 1 -> 0 if one worker was still busy
    assert downs and finished is not None and downs[0].at.timestamp() >= finished + 5 - 1.5
    assert downs[-1].message.split(":")[1].strip().endswith("-> 0 workers")
    # No task failed or was retried because of a removal.
    done = tasks(lo.dashboard)
    assert len(done) == 4
    assert {t["state"] for t in done} == {"FINISHED"}
    assert {t["attempt_number"] for t in done} == {0}


@pytest.mark.timeout(480)
def test_prometheus_outage_holds_with_one_alert_and_recovers_once(
    local: Callable[..., Local], prometheus_factory: Callable[..., PrometheusServer]
) -> None:
    """Two workers busy with long tasks; Prometheus stops; the tasks end. Pending demand alone now says
    0 workers, but utilization is missing: the group holds at 2 past the window, with one alert. Then
    Prometheus comes back: one recovery, and decisions use utilization again."""
    lo = local(window=6, utilization=True)
    lo.create(workers=2)
    wait_for(lambda: lo.live_workers() == 2, 120, "two workers")
    prometheus = prometheus_factory([lo.backend.file_sd_path])
    driver = Driver.start(lo.address, n=2, seconds=300)
    try:
        wait_for(
            lambda: bool(prometheus.query('ray_node_cpu_utilization{ray_io_group="cpu"}')), 60, "samples"
        )
        lo.controller(prometheus_url=prometheus.url).start()

        def util_used() -> bool:
            last = lo.ticks[-1] if lo.ticks else None
            return last is not None and any(
                r.code is ReasonCode.SIGNAL_PROPOSAL and r.data.get("signal") == "cpu-util"
                for d in last.decisions
                for r in d.reasons
            )

        wait_for(util_used, 60, "a decision using utilization")
        assert lo.replicas() == 2  # both workers run a task: pending demand alone keeps 2
        prometheus.stop()
        wait_for(lambda: bool(lo.of_type(EventType.METRICS_UNAVAILABLE)), 30, "the alert")
        driver.stop()  # the tasks end: both workers go idle
        idle = time.monotonic()
        wait_for(lambda: time.monotonic() - idle > 15, 20, "more than two scale-down windows")
        [alert] = lo.of_type(EventType.METRICS_UNAVAILABLE)
        assert alert.data["source"] == "prometheus" and alert.cluster == lo.ref
        held = lo.ticks[-1].decisions[0]
        hold = [r for r in held.reasons if r.code is ReasonCode.METRICS_UNAVAILABLE and "before" in r.data]
        assert held.target == 2 and hold and hold[0].data["before"] == 0  # without the hold: 2 -> 0
        assert lo.replicas() == 2 and not lo.of_type(EventType.SCALED_DOWN)
        prometheus.start()
        wait_for(lambda: bool(lo.of_type(EventType.METRICS_RECOVERED)), 60, "the recovery")
        wait_for(util_used, 30, "utilization used again")
        time.sleep(3)
        assert len(lo.of_type(EventType.METRICS_UNAVAILABLE)) == 1
        assert len(lo.of_type(EventType.METRICS_RECOVERED)) == 1
        assert not any(r.code is ReasonCode.METRICS_UNAVAILABLE for r in lo.ticks[-1].decisions[0].reasons)
    finally:
        driver.stop()


@pytest.mark.timeout(480)
def test_controller_sigkilled_mid_scale_restarts_without_duplicates_or_orphans(
    local: Callable[..., Local],
) -> None:
    lo = local(window=5)
    lo.create(workers=0)
    journal = lo.state / "events.jsonl"
    log = (lo.tmp / "controller.log").open("wb")
    command = [sys.executable, "-m", "bot", "controller", "run", "--backend", "local"]
    command += ["--state-dir", str(lo.state), "--policies", str(lo.policy_dir), "--tick", "1"]
    command += ["--http-port", "off"]

    def start() -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAYOPS_")}
        return subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)

    def scaled_up() -> list[Event]:
        return [e for e in JournalSource(journal, from_start=True).poll() if e.type is EventType.SCALED_UP]

    first = start()
    second: subprocess.Popen[bytes] | None = None
    driver = Driver.start(lo.address, n=2, seconds=15)
    most = 0
    try:
        wait_for(lambda: bool(scaled_up()), 90, "the scale-up")
        os.kill(first.pid, signal.SIGKILL)  # while its operator thread starts the workers
        first.wait()
        second = start()

        def workers_match_the_record() -> bool:
            nonlocal most
            live = {p.worker_name for p in node_processes(lo.name) if not p.head}
            most = max(most, len(live))
            rec = lo.backend.store.read(lo.name)
            return rec is not None and len(rec.workers) == 2 and live == {w.name for w in rec.workers}

        wait_for(workers_match_the_record, 120, "the two recorded workers, and only them, running")

        def tasks_done() -> bool:
            nonlocal most
            most = max(most, lo.live_workers())
            return driver.proc.poll() is not None

        wait_for(tasks_done, 180, "the tasks")
        assert driver.proc.returncode == 0, driver.proc.stderr.read() if driver.proc.stderr else ""
        wait_for(lambda: lo.replicas() == 0 and lo.live_workers() == 0, 150, "workers removed", lo.describe)
    finally:
        driver.stop()
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        log.close()
    assert most <= 2  # never a duplicate worker
    assert len(scaled_up()) == 1  # the new controller continued; it did not decide (or announce) again
    assert [p for p in node_processes(lo.name) if not p.head] == []  # no orphan left behind
    done = tasks(lo.dashboard)
    assert len(done) == 2 and {t["attempt_number"] for t in done} == {0}
