"""reconcile_once(now) over the in-memory backend and a table metrics source: the loop's contract."""

from __future__ import annotations

import json
from dataclasses import replace

from controller import keys, records
from controller.backends.base import ConflictError, PersistentConflict
from controller.backends.memory import decode_decision
from controller.domain import Action, GroupRef, ReasonCode, SignalType
from controller.events import EventType
from controller.pause import FilePause
from tests.controller.conftest import Loop, write_policy

PENDING = SignalType.PENDING_DEMAND


def cpu(loop: Loop, name: str) -> GroupRef:
    return GroupRef("team-a", name, "cpu")


def test_burst_scales_up_in_one_tick_with_reasons_and_records(loop: Loop) -> None:
    ref = loop.backend.add("demo")
    loop.metrics.set(cpu(loop, "demo"), PENDING, 3)
    report = loop.tick()
    d = report.decision("cpu")
    assert (d.action, d.current, d.target) == (Action.UP, 0, 3)
    assert loop.backend.replicas(ref) == 3
    [up] = loop.of_type(EventType.SCALED_UP)
    assert up.cluster == ref and "0 -> 3" in up.message and "3 CPU pending" in up.message
    ann = loop.backend.get(ref).annotations
    assert decode_decision(ann[keys.ANN_DECISION]) == d  # the bot's reader gets the same decision back
    assert records.decode_states(ann[keys.ANN_STATE])["cpu"].at_ms > 0  # the state round-trips
    assert report.writes == 1 and report.annotation_writes == 1


def test_an_unchanged_decision_writes_nothing(loop: Loop) -> None:
    ref = loop.backend.add("demo")
    loop.metrics.set(cpu(loop, "demo"), PENDING, 2)
    loop.tick()
    loop.tick()  # now current == target: the hold is a new decision, recorded once
    before = list(loop.writes())
    for _ in range(10):
        report = loop.tick()
        assert report.decision("cpu").target == 2
        assert report.writes == 0 and report.annotation_writes == 0
    assert loop.writes() == before
    assert loop.backend.replicas(ref) == 2


def test_scale_down_after_the_window_removes_idle_workers_only(loop: Loop) -> None:
    ref = loop.backend.add("demo")
    g = cpu(loop, "demo")
    loop.metrics.set(g, PENDING, 3)
    loop.tick()
    busy = loop.backend.workers[g][0]
    loop.backend.busy.add(busy)  # one worker took a long task; pending demand is gone
    loop.metrics.set(g, PENDING, 0)
    first = loop.tick()
    assert first.decision("cpu").target == 3 and ReasonCode.STABILIZATION in first.decision("cpu").codes
    loop.tick(10)
    assert loop.backend.replicas(ref) == 3  # inside the 20 s window
    report = loop.tick(11)
    d = report.decision("cpu")
    assert d.target == 1 and busy not in d.remove and len(d.remove) == 2
    assert loop.backend.replicas(ref) == 1
    [down] = loop.of_type(EventType.SCALED_DOWN)
    assert "3 -> 1" in down.message


def test_missing_data_holds_with_one_alert_and_one_recovery(loop: Loop) -> None:
    ref = loop.backend.add("demo", replicas=2)
    g = cpu(loop, "demo")
    loop.metrics.set(g, PENDING, 0)
    loop.metrics.down = "connection refused"
    for _ in range(40):  # well past the 20 s window: without data, never scale down
        report = loop.tick()
        assert report.decision("cpu").target == 2
    assert ReasonCode.METRICS_UNAVAILABLE in report.decision("cpu").codes
    assert loop.backend.replicas(ref) == 2
    [alert] = loop.of_type(EventType.METRICS_UNAVAILABLE)
    assert alert.cluster == ref and "connection refused" in alert.message and alert.is_alert
    assert loop.reconciler.telemetry.metrics_available.labels("table")._value.get() == 0
    loop.metrics.down = None
    for _ in range(3):
        loop.tick()
    [recovered] = loop.of_type(EventType.METRICS_RECOVERED)
    assert recovered.cluster == ref
    assert len(loop.of_type(EventType.METRICS_UNAVAILABLE)) == 1
    assert loop.reconciler.telemetry.metrics_available.labels("table")._value.get() == 1
    loop.tick(25)
    assert loop.backend.replicas(ref) == 0  # data back: the policy decides again


def test_one_outage_over_many_clusters_is_one_alert(loop: Loop) -> None:
    for name in ("a", "b", "c"):
        loop.backend.add(name, replicas=1)
        loop.metrics.set(cpu(loop, name), PENDING, 0)
    loop.metrics.down = "timeout"
    for _ in range(5):
        loop.tick()
    [alert] = loop.of_type(EventType.METRICS_UNAVAILABLE)
    assert alert.cluster is None and alert.data["clusters"] == 3


def test_valid_policy_change_applies_at_the_next_tick(loop: Loop) -> None:
    ref = loop.backend.add("demo")
    loop.metrics.set(cpu(loop, "demo"), PENDING, 8)
    assert loop.tick().decision("cpu").target == 6
    write_policy(loop.policy_dir, max_replicas=2)
    report = loop.tick(30)
    assert report.decision("cpu").target == 2 and loop.backend.replicas(ref) == 2


def test_invalid_policy_set_keeps_the_last_good_one_with_one_alert(loop: Loop) -> None:
    loop.backend.add("demo")
    loop.metrics.set(cpu(loop, "demo"), PENDING, 8)
    loop.tick()
    (loop.policy_dir / "broken.yaml").write_text("kind: ScalingPolicy\nspec: {maxReplicas: -1\n")
    for _ in range(5):
        report = loop.tick()
        assert report.outcome == "success" and report.decision("cpu").policy == "test"
    [alert] = loop.of_type(EventType.POLICY_INVALID)
    assert "broken.yaml" in alert.message and "stays in force" in alert.message
    assert loop.reconciler.telemetry.policy_set_valid._value.get() == 0
    (loop.policy_dir / "broken.yaml").unlink()
    loop.tick()
    loop.tick()
    assert len(loop.of_type(EventType.POLICY_RECOVERED)) == 1
    assert len(loop.of_type(EventType.POLICY_INVALID)) == 1
    assert loop.reconciler.telemetry.policy_set_valid._value.get() == 1


def test_a_signal_no_source_gives_is_refused_like_an_invalid_set(loop: Loop) -> None:
    (loop.policy_dir / "queue.yaml").write_text(
        "apiVersion: rayops.io/v1alpha1\nkind: ScalingPolicy\nmetadata: {name: queue}\nspec:\n"
        "  selector: {namespaces: [queues]}\n  priority: 5\n  maxReplicas: 4\n  signals:\n"
        "    - {name: q, type: promql, query: 'sum by (namespace, ray_io_cluster, ray_io_group) (x)',"
        " target: {averageValue: 1}}\n"
    )
    report = loop.tick()
    assert report.outcome == "no-policies"
    [alert] = loop.of_type(EventType.POLICY_INVALID)
    assert "no configured metrics source can give it" in alert.message


def test_dry_run_decides_and_reports_but_writes_nothing(loop: Loop) -> None:
    loop.settings = replace(loop.settings, dry_run=True)
    loop.new_reconciler()
    ref = loop.backend.add("demo")
    loop.metrics.set(cpu(loop, "demo"), PENDING, 3)
    for _ in range(3):
        report = loop.tick()
    d = report.decision("cpu")
    assert d.target == 3 and d.dry_run and ReasonCode.DRY_RUN in d.codes
    assert loop.writes() == [] and loop.backend.replicas(ref) == 0
    [held] = loop.of_type(EventType.HELD)  # announced once, not every tick
    assert held.message.startswith("dry run")
    assert not loop.of_type(EventType.SCALED_UP)


def test_global_switch_from_the_bot_file_stops_all_scaling(loop: Loop, tmp_path) -> None:  # type: ignore[no-untyped-def]
    switch = tmp_path / "global-pause.json"
    loop.pause = FilePause(switch)
    loop.new_reconciler()
    ref = loop.backend.add("demo")
    loop.metrics.set(cpu(loop, "demo"), PENDING, 3)
    switch.write_text(json.dumps({"paused": True, "by": "slack:U1", "at": "2026-11-26T12:00:00+00:00"}))
    report = loop.tick()
    assert ReasonCode.GLOBAL_PAUSE in report.decision("cpu").codes and loop.backend.replicas(ref) == 0
    assert loop.metrics.fetches == []  # a held group needs no signal
    switch.write_text(json.dumps({"paused": False, "by": "slack:U1", "at": "2026-11-26T12:01:00+00:00"}))
    assert loop.tick().decision("cpu").target == 3 and loop.backend.replicas(ref) == 3


def test_a_lost_race_holds_and_only_a_repeated_one_alerts(loop: Loop) -> None:
    ref = loop.backend.add("demo")
    loop.metrics.set(cpu(loop, "demo"), PENDING, 3)
    loop.backend.fail_next("apply", ConflictError("changed since read"))
    report = loop.tick()
    assert report.errors == {"conflict": 1} and loop.backend.replicas(ref) == 0
    assert not loop.of_type(EventType.CONFLICT, EventType.SCALED_UP)
    assert loop.tick().writes == 1 and loop.backend.replicas(ref) == 3
    loop.metrics.set(cpu(loop, "demo"), PENDING, 5)
    for _ in range(4):
        loop.backend.fail_next("apply", ConflictError("changed since read"))
        loop.tick()
    assert len(loop.of_type(EventType.CONFLICT)) == 1


def test_a_persistent_conflict_is_one_alert_at_once(loop: Loop) -> None:
    loop.backend.add("demo")
    loop.metrics.set(cpu(loop, "demo"), PENDING, 3)
    loop.backend.fail_next("apply", PersistentConflict("a notebook keeps setting replicas", ("replicas",)))
    loop.tick()
    [conflict] = loop.of_type(EventType.CONFLICT)
    assert "notebook" in conflict.message and conflict.severity == "warning"


def test_a_replica_that_is_not_leader_writes_nothing(loop: Loop) -> None:
    ref = loop.backend.add("demo")
    loop.metrics.set(cpu(loop, "demo"), PENDING, 3)
    loop.leader = False
    report = loop.tick()
    assert loop.writes() == [] and loop.backend.replicas(ref) == 0
    assert report.applied[ref].status == "not_leader" and not loop.of_type(EventType.SCALED_UP)


def test_state_continues_in_a_new_controller_without_a_jump(loop: Loop) -> None:
    """Demand drops; the controller is replaced mid-window; the new one still waits out the window."""
    ref = loop.backend.add("demo")
    g = cpu(loop, "demo")
    loop.metrics.set(g, PENDING, 4)
    loop.tick()
    loop.tick()
    loop.metrics.set(g, PENDING, 0)
    loop.tick(5)  # t = 7: demand gone, the 20 s window holds 4
    loop.new_reconciler()
    held = loop.tick(10).decision("cpu")  # t = 17: a controller without the saved state would say 0
    assert held.target == 4 and ReasonCode.STABILIZATION in held.codes
    report = loop.tick(6)  # t = 23: the last high (t = 2) left the 20 s window
    assert report.decision("cpu").target == 0 and loop.backend.replicas(ref) == 0


def test_new_controller_does_not_announce_again_what_was_announced(loop: Loop) -> None:
    loop.backend.add("demo")
    loop.metrics.set(cpu(loop, "demo"), PENDING, 3)
    loop.tick()
    loop.tick()
    loop.new_reconciler()
    report = loop.tick()
    assert report.annotation_writes == 0 and report.writes == 0
    assert len(loop.of_type(EventType.SCALED_UP)) == 1


def test_listing_failures_skip_the_tick_and_alert_only_when_they_persist(loop: Loop) -> None:
    from controller.backends.base import BackendUnavailable

    loop.backend.add("demo")
    loop.metrics.set(cpu(loop, "demo"), PENDING, 1)
    original = loop.backend.list_clusters

    def failing() -> list:  # type: ignore[type-arg]
        raise BackendUnavailable("API server timed out")

    loop.backend.list_clusters = failing  # type: ignore[method-assign]
    outcomes = [loop.tick().outcome for _ in range(4)]
    assert outcomes == ["failure"] * 4
    [failure] = loop.of_type(EventType.FAILURE)
    assert "timed out" in failure.message
    loop.backend.list_clusters = original  # type: ignore[method-assign]
    assert loop.tick().outcome == "success"
    assert len(loop.of_type(EventType.RECOVERED)) == 1
    assert loop.reconciler.telemetry.ticks.labels("failure")._value.get() == 4


def test_a_bug_in_one_group_does_not_stop_the_others(loop: Loop, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import controller.deciding as deciding

    real = deciding.decide
    loop.backend.add("good")
    loop.backend.add("bad")
    for name in ("good", "bad"):
        loop.metrics.set(cpu(loop, name), PENDING, 2)

    def flaky(policy, obs, state, now):  # type: ignore[no-untyped-def]
        if obs.ref.cluster == "bad":
            raise ZeroDivisionError("a bug")
        return real(policy, obs, state, now)

    monkeypatch.setattr(deciding, "decide", flaky)
    report = loop.tick()
    assert report.decision("cpu", "good").target == 2
    assert report.errors == {"internal": 1}
    assert loop.reconciler.telemetry.errors.labels("internal")._value.get() == 1


def test_paused_cluster_and_pin_are_honoured(loop: Loop) -> None:
    paused = loop.backend.add("paused", annotations={keys.ANN_PAUSED: "true"})
    pinned = loop.backend.add(
        "pinned", annotations={keys.ANN_MANUAL_REPLICAS: json.dumps({"group": "cpu", "replicas": 2})}
    )
    for name in ("paused", "pinned"):
        loop.metrics.set(cpu(loop, name), PENDING, 5)
    report = loop.tick()
    assert ReasonCode.PAUSED in report.decision("cpu", "paused").codes and loop.backend.replicas(paused) == 0
    assert report.decision("cpu", "pinned").target == 2 and loop.backend.replicas(pinned) == 2
    [held] = loop.of_type(EventType.HELD)
    assert held.cluster == paused


def test_without_the_saved_state_a_new_controller_would_jump(loop: Loop) -> None:
    """The counterpart of the test above: the annotation is what carries the window across."""
    loop.backend.add("demo")
    g = cpu(loop, "demo")
    loop.metrics.set(g, PENDING, 4)
    loop.tick()
    loop.tick()
    loop.metrics.set(g, PENDING, 0)
    loop.tick(5)
    loop.backend.set_annotations(g.cluster_ref, {keys.ANN_STATE: None})
    loop.new_reconciler()
    assert loop.tick(10).decision("cpu").target == 0


ACCESS = """\
apiVersion: rayops.io/v1alpha1
kind: AccessPolicy
metadata: {name: team}
spec:
  rules:
    - subjects: [{slackUser: U1}]
      namespaces: ["team-a"]
      profiles: ["*"]
      limits: {workersPerCluster: 2}
---
apiVersion: rayops.io/v1alpha1
kind: ClusterProfile
metadata: {name: small}
spec: {scalingPolicy: test}
"""


def test_access_limits_clamp_any_cluster_with_one_alert(loop: Loop) -> None:
    (loop.policy_dir / "access.yaml").write_text(ACCESS)
    over = loop.backend.add("notebook", annotations={keys.ANN_REQUESTER: "slack:U1"})
    loop.metrics.set(cpu(loop, "notebook"), PENDING, 5)
    capped = loop.tick().decision("cpu")
    assert capped.target == 2 and any("access limit" in r.message for r in capped.reasons)
    assert not loop.of_type(EventType.LIMIT_CLAMPED)  # capped, not beyond its limit
    # Someone sets 5 workers by hand (a notebook's apply): the cluster is now beyond its limit.
    loop.backend.add("handmade", replicas=5, annotations={keys.ANN_REQUESTER: "slack:U1"})
    loop.metrics.set(cpu(loop, "handmade"), PENDING, 5)  # demand wants even more
    report = loop.tick()
    d = report.decision("cpu", "handmade")
    assert d.target == 2 and len(d.remove) == 3
    loop.tick()
    loop.tick()
    [clamped] = loop.of_type(EventType.LIMIT_CLAMPED)
    assert clamped.cluster is not None and clamped.cluster.name == "handmade" and clamped.is_alert
    assert "workersPerCluster 2" in clamped.message
    assert loop.backend.replicas(over) == 2
    other = loop.backend.add("someone-else", annotations={keys.ANN_REQUESTER: "slack:U2"})
    loop.metrics.set(cpu(loop, "someone-else"), PENDING, 5)
    assert loop.tick().decision("cpu", "someone-else").target == 5  # no rule names U2: policy max
    assert loop.backend.replicas(other) == 5


def test_a_write_that_failed_is_not_remembered_as_a_scale(loop: Loop) -> None:
    """The rate limit counts changes rayops made; a decision the backend refused was not one."""
    (loop.policy_dir / "test.yaml").write_text(
        (loop.policy_dir / "test.yaml")
        .read_text()
        .replace("{type: Pods, value: 10, periodSeconds: 1}", "{type: Pods, value: 2, periodSeconds: 600}")
    )
    ref = loop.backend.add("demo")
    loop.metrics.set(cpu(loop, "demo"), PENDING, 5)
    loop.backend.fail_next("apply", ConflictError("changed since read"))
    assert loop.tick().decision("cpu").target == 2 and loop.backend.replicas(ref) == 0
    assert loop.tick().decision("cpu").target == 2 and loop.backend.replicas(ref) == 2
    held = loop.tick().decision("cpu")  # now the 2 made count: no more in this period
    assert held.target == 2 and ReasonCode.RATE_LIMITED in held.codes


def test_new_workers_without_series_yet_are_not_an_outage(loop: Loop) -> None:
    """A node's utilization appears only after its first scrapes: new workers' gap raises no alert."""
    (loop.policy_dir / "test.yaml").write_text(
        (loop.policy_dir / "test.yaml")
        .read_text()
        .replace(
            "    - {name: pending-cpu, type: pendingDemand, resource: CPU}\n",
            "    - {name: pending-cpu, type: pendingDemand, resource: CPU}\n"
            "    - {name: util, type: utilization, resource: CPU, target: {averageUtilization: 70}}\n",
        )
    )
    loop.backend.add("demo", replicas=2)
    loop.metrics.set(cpu(loop, "demo"), PENDING, 0)  # utilization: no series yet
    for _ in range(10):
        assert loop.tick(5).decision("cpu").target == 2  # held all the same
    assert not loop.of_type(EventType.METRICS_UNAVAILABLE)
    for _ in range(8):  # ready for more than 2 minutes: the series should exist by now
        loop.tick(15)
    [alert] = loop.of_type(EventType.METRICS_UNAVAILABLE)
    assert "no series" in alert.message


def test_a_released_cluster_is_left_alone(loop: Loop) -> None:
    ref = loop.backend.add("demo")
    loop.metrics.set(cpu(loop, "demo"), PENDING, 2)
    loop.tick()
    loop.backend.release(ref)  # `rayops release demo`: no rayops label or annotation any more
    before = list(loop.writes())
    for _ in range(3):
        report = loop.tick()
        assert report.clusters == 0 and report.decisions == ()
    assert loop.writes() == before and loop.backend.replicas(ref) == 2


def test_the_controller_never_imports_the_bot() -> None:
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "controller"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(root)}: {n}" for n in names if n == "bot" or n.startswith("bot.")
            ]
    assert offenders == []
