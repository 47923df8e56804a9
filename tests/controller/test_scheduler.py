"""The scheduler: ticks never pile up behind a slow one, only the leader acts, and the probes' answers."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime

from controller.domain import SignalType
from controller.events import EventType
from controller.housekeeping import Housekeeper
from controller.leader import AlwaysLeader
from controller.reconcile import TickReport
from controller.scheduler import ControllerScheduler
from controller.settings import LoopSettings
from tests.controller.conftest import Loop


class SwitchableLeader(AlwaysLeader):
    def __init__(self) -> None:
        self.leading = True

    def is_leader(self) -> bool:
        return self.leading


def test_a_tick_that_overruns_is_neither_run_twice_nor_queued(loop: Loop) -> None:
    """A 0.1 s interval with ticks of 0.45 s: at most one runs at a time, skipped runs are not replayed."""
    running = 0
    overlap = False
    started: list[float] = []
    lock = threading.Lock()
    real = loop.reconciler.reconcile_once

    def slow(now: datetime) -> TickReport:
        nonlocal running, overlap
        with lock:
            running += 1
            overlap = overlap or running > 1
            started.append(time.monotonic())
        time.sleep(0.45)
        with lock:
            running -= 1
        return real(now)

    loop.reconciler.reconcile_once = slow  # type: ignore[method-assign]
    sched = ControllerScheduler(loop.reconciler, AlwaysLeader(), LoopSettings(tick_seconds=0.1))
    sched.start()
    time.sleep(2.0)
    sched.stop(wait=True)
    assert not overlap
    assert 3 <= len(started) <= 5  # 2 s of 0.45 s ticks back to back; 20 at the nominal interval
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert min(gaps) >= 0.44  # the next tick starts only after the slow one ended
    assert loop.reconciler.telemetry.tick_overruns._value.get() >= 5


def test_a_standby_replica_ticks_for_health_but_acts_on_nothing(loop: Loop) -> None:
    ref = loop.backend.add("demo")
    loop.metrics.set(ref_group(loop), SignalType.PENDING_DEMAND, 3)
    leader = SwitchableLeader()
    leader.leading = False
    sched = ControllerScheduler(loop.reconciler, leader, loop.settings, clock=loop.clock)
    assert sched.run_tick() is None
    assert loop.writes() == [] and loop.metrics.fetches == []
    assert loop.reconciler.telemetry.leader._value.get() == 0
    assert sched.health()[0] and sched.ready()[0] and "standby" in sched.ready()[1]
    leader.leading = True
    report = sched.run_tick()
    assert report is not None and report.writes == 1 and loop.backend.replicas(ref) == 3
    assert loop.reconciler.telemetry.leader._value.get() == 1


def ref_group(loop: Loop):  # type: ignore[no-untyped-def]
    from controller.domain import GroupRef

    return GroupRef("team-a", "demo", "cpu")


def test_health_fails_when_ticks_stop_and_ready_needs_policies(loop: Loop, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sched = ControllerScheduler(loop.reconciler, AlwaysLeader(), LoopSettings(tick_seconds=0.01))
    assert not sched.ready()[0]  # nothing loaded yet
    sched.run_tick()
    assert sched.ready()[0]
    sched._beat = time.monotonic() - 120  # the scheduler wedged two minutes ago
    ok, reason = sched.health()
    assert not ok and "no tick for" in reason


def test_removals_job_clears_finished_removals_only_when_some_are_pending(loop: Loop) -> None:
    g = ref_group(loop)
    loop.backend.add("demo")
    loop.metrics.set(g, SignalType.PENDING_DEMAND, 3)
    loop.tick()
    sched = ControllerScheduler(loop.reconciler, AlwaysLeader(), loop.settings, clock=loop.clock)
    loop.metrics.set(g, SignalType.PENDING_DEMAND, 0)
    for _ in range(25):  # past the 20 s window: the three idle workers are named for removal
        loop.tick()
    assert loop.backend.replicas(g.cluster_ref) == 0
    assert len(loop.backend.list_clusters()[0].groups[0].pending_deletes) == 3
    assert sched.run_removals() == 1
    assert loop.backend.list_clusters()[0].groups[0].pending_deletes == ()
    loop.tick()
    lists = 0
    real_list = loop.backend.list_clusters

    def counting() -> list:  # type: ignore[type-arg]
        nonlocal lists
        lists += 1
        return real_list()

    loop.backend.list_clusters = counting  # type: ignore[method-assign]
    assert sched.run_removals() == 0 and lists == 0  # nothing pending: not even a list


def test_expiry_warns_once_then_deletes_and_stuck_clusters_are_reported_once(loop: Loop) -> None:
    from datetime import timedelta

    from controller import keys
    from controller.backends.base import ClusterState
    from controller.backends.memory import encode_time

    now = loop.clock()
    ends = encode_time(now + timedelta(minutes=10))
    soon = loop.backend.add("soon", annotations={keys.ANN_EXPIRES_AT: ends})
    stuck = loop.backend.add("stuck", replicas=2)
    loop.backend.set_state(stuck, ClusterState.STARTING, "pod stuck-w0: ImagePullBackOff (image not found)")
    keeper = Housekeeper(
        loop.backend, loop.events, loop.reconciler.telemetry, LoopSettings(stuck_after=timedelta(minutes=5))
    )
    for _ in range(3):
        keeper.run(loop.clock.advance(60))
    [warning] = loop.of_type(EventType.EXPIRING)
    assert warning.cluster == soon and "expires in" in warning.message
    assert not loop.of_type(EventType.CLUSTER_STUCK)
    for _ in range(5):
        keeper.run(loop.clock.advance(60))
    [stuck_event] = loop.of_type(EventType.CLUSTER_STUCK)
    assert "ImagePullBackOff" in stuck_event.message and stuck_event.cluster == stuck
    keeper.run(loop.clock.advance(120))  # past 12:10
    [expired] = loop.of_type(EventType.EXPIRED)
    assert expired.cluster == soon and not loop.backend.exists(soon)
    loop.backend.make_ready(stuck)
    keeper.run(loop.clock.advance(30))
    assert len(loop.of_type(EventType.CLUSTER_READY)) == 1
    assert len(loop.of_type(EventType.CLUSTER_STUCK)) == 1 and len(loop.of_type(EventType.EXPIRING)) == 1


def test_dry_run_never_deletes_an_expired_cluster(loop: Loop) -> None:
    from datetime import timedelta

    from controller import keys
    from controller.backends.memory import encode_time

    ended = encode_time(loop.clock() - timedelta(hours=1))
    gone = loop.backend.add("old", annotations={keys.ANN_EXPIRES_AT: ended})
    keeper = Housekeeper(loop.backend, loop.events, loop.reconciler.telemetry, LoopSettings(dry_run=True))
    keeper.run(loop.clock.advance(1))
    keeper.run(loop.clock.advance(1))
    assert loop.backend.exists(gone)
    [announced] = loop.of_type(EventType.EXPIRED)
    assert announced.message.startswith("dry run")


def test_scheduler_time_comes_from_the_clock(loop: Loop) -> None:
    seen: list[datetime] = []
    sched = ControllerScheduler(
        loop.reconciler, AlwaysLeader(), loop.settings, clock=lambda: datetime(2030, 1, 1, tzinfo=UTC)
    )
    sched.on_tick = lambda r: seen.append(r.at)
    sched.run_tick()
    assert seen == [datetime(2030, 1, 1, tzinfo=UTC)]
