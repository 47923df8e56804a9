"""A loop under test: the reconciler over `WorkerBackend` and `TableMetrics`, a policy directory of its
own with short windows, in-memory events and a hand-moved clock (no sleeps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from controller.events import Event, EventType, MemoryEvents
from controller.pause import PauseSource
from controller.policy.loader import PolicyStore
from controller.reconcile import Reconciler, TickReport
from controller.settings import LoopSettings
from controller.telemetry import ControllerMetrics
from tests.controller.fakes import Clock, TableMetrics, WorkerBackend

TEST_POLICY = """\
apiVersion: rayops.io/v1alpha1
kind: ScalingPolicy
metadata: {name: test}
spec:
  selector: {namespaces: ["*"]}
  workerGroups: ["*"]
  minReplicas: 0
  maxReplicas: MAX
  signals:
    - {name: pending-cpu, type: pendingDemand, resource: CPU}
  behavior:
    scaleUp: {stabilizationWindowSeconds: 0, policies: [{type: Pods, value: 10, periodSeconds: 1}]}
    scaleDown: {stabilizationWindowSeconds: 20, policies: [{type: Percent, value: 100, periodSeconds: 1}]}
"""


def write_policy(directory: Path, max_replicas: int = 6, extra: str = "") -> None:
    (directory / "test.yaml").write_text(TEST_POLICY.replace("MAX", str(max_replicas)) + extra)


@dataclass
class Loop:
    backend: WorkerBackend
    metrics: TableMetrics
    events: MemoryEvents
    store: PolicyStore
    clock: Clock
    policy_dir: Path
    settings: LoopSettings = field(default_factory=LoopSettings)
    pause: PauseSource | None = None
    leader: bool = True
    reconciler: Reconciler = field(init=False)

    def __post_init__(self) -> None:
        self.reconciler = self.new_reconciler()

    def new_reconciler(self) -> Reconciler:
        """A fresh controller over the same cluster state (a restart, or a newly elected leader)."""
        self.reconciler = Reconciler(
            self.backend,
            self.metrics,
            self.store,
            self.events,
            settings=self.settings,
            pause=self.pause,
            telemetry=ControllerMetrics(),
            may_act=lambda: self.leader,
        )
        return self.reconciler

    def tick(self, seconds: float = 1.0) -> TickReport:
        """Move the clock, then run one tick."""
        return self.reconciler.reconcile_once(self.clock.advance(seconds))

    def of_type(self, *types: EventType) -> list[Event]:
        return self.events.of_type(*types)

    def writes(self) -> list[tuple[str, str]]:
        return [c for c in self.backend.calls if c[0] in ("apply", "set_annotations")]


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    write_policy(d)
    return d


@pytest.fixture
def loop(policy_dir: Path) -> Loop:
    return Loop(
        WorkerBackend({}),
        TableMetrics(),
        MemoryEvents(),
        PolicyStore(str(policy_dir)),
        Clock(),
        policy_dir,
    )
