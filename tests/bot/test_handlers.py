"""Every command against the in-memory backend, through the whole bot pipeline."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from bot.adapters.base import DestinationKind, Platform, ReplyStatus
from bot.chart import EventHistory
from bot.commands.views import connect_fields
from bot.render import to_text
from controller import keys
from controller.backends.base import BackendUnavailable, ClusterState, ConnectInfo, GroupStatus
from controller.backends.memory import decode_pin, decode_time
from controller.domain import Action, ClusterRef, Decision, GroupRef, Reason, ReasonCode
from controller.events import Event, EventType, MemoryEvents
from tests.bot.conftest import ALICE, APPROVER, BOB, OPS, T0, Harness, make_harness

NLP_DEMO = ClusterRef("ray-nlp", "demo")


def created(h: Harness, who=ALICE, text: str = "create demo") -> None:  # type: ignore[no-untyped-def]
    out = h.run(who, text)
    assert out.reply.status is ReplyStatus.OK, out.reply.text


def test_create_uses_the_first_allowed_namespace_and_profile(h: Harness) -> None:
    out = h.run(ALICE, "create demo")
    assert out.reply.status is ReplyStatus.OK
    assert "Creating demo in ray-nlp (profile small, 1 worker, expires in 8h)" in out.reply.text
    s = h.backend.get(NLP_DEMO)
    assert s.requester == "slack:U0ALICE"
    assert s.profile == "small"
    assert s.expires_at == T0 + timedelta(hours=8)
    assert [(g.name, g.desired) for g in s.groups] == [("workers", 1)]
    assert any(f.label == "Ray client" for f in out.reply.fields)


def test_create_with_options(h: Harness) -> None:
    out = h.run(ALICE, "create train profile=gpu gpus=1 workers=1 ttl=2h namespace=ray-gpu")
    assert out.reply.status is ReplyStatus.OK, out.reply.text
    s = h.backend.get(ClusterRef("ray-gpu", "train"))
    assert {g.name: g.desired for g in s.groups} == {"workers": 1, "gpu": 1}
    assert s.expires_at == T0 + timedelta(hours=2)


@pytest.mark.parametrize(
    "text, says",
    [
        ("create x profile=nope", "no profile named nope"),
        ("create x profile=smal", "Did you mean `small`?"),
        ("create x workers=9", "takes 0 to 8 workers (asked for 9)"),
        ("create x gpus=1", "profile small has no GPU workers (profiles with GPUs: gpu)"),
        ("create x ttl=3d", "at most 2d"),
    ],
)
def test_create_outside_the_profile_is_an_error(h: Harness, text: str, says: str) -> None:
    out = h.run(OPS if "nope" in text or "smal" in text else ALICE, text)
    assert out.reply.status in (ReplyStatus.ERROR, ReplyStatus.REFUSED), out.reply.text
    assert says in out.reply.text
    assert h.backend.snapshot() == {}


def test_duplicate_create_creates_nothing_twice(h: Harness) -> None:
    created(h)
    before = h.backend.snapshot()
    out = h.run(ALICE, "create demo")
    assert out.reply.status is ReplyStatus.ERROR
    assert "already exists in ray-nlp (requested by slack:U0ALICE" in out.reply.text
    out = h.run(BOB, "create demo")
    assert "already exists" in out.reply.text
    assert h.backend.snapshot() == before
    assert [c for c in h.backend.calls if c[0] == "create"] == [("create", "ray-nlp/demo")]


def test_list_shows_visible_clusters(h: Harness) -> None:
    assert "No clusters" in h.run(ALICE, "list").reply.text
    created(h)
    created(h, OPS, "create other namespace=elsewhere")
    out = h.run(ALICE, "list")
    assert out.reply.table is not None
    assert [r[0] for r in out.reply.table.rows] == ["demo"]  # "elsewhere" is not Alice's namespace
    assert "1 clusters (1 yours)" in out.reply.text
    names = [r[0] for r in h.run(OPS, "list").reply.table.rows]  # type: ignore[union-attr]
    assert names == ["other", "demo"] or sorted(names) == ["demo", "other"]


def test_status_shows_state_workers_decision_time_left_and_connect(h: Harness) -> None:
    created(h)
    h.backend.make_ready(NLP_DEMO)
    decision = Decision(
        GroupRef("ray-nlp", "demo", "workers"),
        "cpu-default",
        "owner",
        1,
        3,
        Action.UP,
        (
            Reason(
                ReasonCode.SIGNAL_PROPOSAL,
                "pending-cpu: 5 CPUs wait for a node -> 3",
                {"signal": "pending-cpu", "type": "pendingDemand", "value": 5.0, "proposal": 3},
            ),
            Reason(
                ReasonCode.SIGNAL_PROPOSAL,
                "cpu-util: 93% of 70% -> 2",
                {"signal": "cpu-util", "type": "utilization", "value": 93.0, "proposal": 2},
            ),
        ),
        at=T0,
    )
    h.backend.set_annotations(NLP_DEMO, {keys.ANN_DECISION: decision.to_json()})
    h.clock.advance(hours=1)
    out = h.run(ALICE, "status demo")
    text = to_text(out.reply)
    assert out.reply.status is ReplyStatus.OK
    for expected in (
        "READY",
        "workers 1/1",
        "CPU 2 of 2",
        "Pending demand         pending-cpu 5",
        "Utilization            cpu-util 93%",
        "workers: 1 → 3 by cpu-default: SIGNAL_PROPOSAL: pending-cpu: 5 CPUs wait for a node -> 3",
        "in 7h",
        'ray.init("ray://demo-head-svc.ray-nlp.svc:10001")',
    ):
        assert expected in text, (expected, text)
    assert out.reply.table is not None and out.reply.table.rows[0][0] == "workers"
    assert out.reply.image is None  # no history, and Slack only gets a chart when there is one


def test_status_on_slack_attaches_a_chart_from_history(tmp_path) -> None:  # type: ignore[no-untyped-def]
    events = MemoryEvents()
    history = EventHistory(lambda ref: [e for e in events.events if e.cluster == ref])
    h = make_harness(tmp_path, history=history)
    created(h)
    for i, (cur, target, pending) in enumerate([(1, 2, 3), (2, 4, 6), (4, 4, 0)]):
        events.publish(
            Event(
                EventType.SCALED_UP,
                "up",
                T0 + timedelta(minutes=10 * i),
                NLP_DEMO,
                data={"group": "workers", "current": cur, "target": target, "ready": cur, "pending": pending},
            )
        )
    h.clock.advance(minutes=40)
    out = h.run(ALICE, "status demo")
    assert out.reply.image is not None
    assert out.reply.image.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.reply.image.name == "demo-workers.png"
    why = h.run(ALICE, "why demo").reply.text
    assert why.count("ScaledUp: up") == 3


def test_stuck_cluster_shows_the_cause(h: Harness) -> None:
    created(h)
    h.backend.set_state(NLP_DEMO, ClusterState.QUEUED, "Unschedulable: 0/3 nodes have 2 free CPUs")
    assert "QUEUED (Unschedulable: 0/3 nodes have 2 free CPUs)" in to_text(h.run(ALICE, "status demo").reply)


def test_scale_writes_a_pin_annotation_never_replicas(h: Harness) -> None:
    created(h)
    out = h.run(ALICE, "scale demo 3")
    assert out.reply.status is ReplyStatus.OK, out.reply.text
    s = h.backend.get(NLP_DEMO)
    pin = decode_pin(s.annotations[keys.ANN_MANUAL_REPLICAS])
    assert pin is not None
    assert (pin.group, pin.replicas, pin.by) == ("workers", 3, "slack:U0ALICE")
    assert pin.until == T0 + timedelta(hours=8)  # the cluster's expiry comes before the default 24h
    assert [g.desired for g in s.groups] == [1]  # the controller moves replicas, not the bot
    raw = json.loads(s.annotations[keys.ANN_MANUAL_REPLICAS])
    assert set(raw) == {"group", "replicas", "until", "by"}


def test_scale_with_group_and_duration(h: Harness) -> None:
    created(h, ALICE, "create train profile=gpu namespace=ray-gpu")
    out = h.run(ALICE, "scale train 1 group=gpu for=30m")
    assert out.reply.status is ReplyStatus.OK, out.reply.text
    pin = h.backend.get(ClusterRef("ray-gpu", "train")).pin
    assert pin is not None and (pin.group, pin.replicas, pin.until) == ("gpu", 1, T0 + timedelta(minutes=30))


@pytest.mark.parametrize(
    "text, says",
    [
        ("scale demo 2 group=gpus", "no worker group gpus (groups: workers)"),
        ("scale demo 2 group=worker", "did you mean `workers`?"),
        ("scale demo 9", "allows at most 8 workers (asked for 9)"),
    ],
)
def test_scale_errors(h: Harness, text: str, says: str) -> None:
    created(h)
    before = h.backend.snapshot()
    out = h.run(ALICE, text)
    assert out.reply.status is ReplyStatus.ERROR and says in out.reply.text
    assert h.backend.snapshot() == before


def test_scale_to_zero_asks_for_confirmation_first(h: Harness) -> None:
    created(h)
    before = h.backend.snapshot()
    out = h.run(ALICE, "scale demo 0")
    assert out.reply.status is ReplyStatus.CONFIRM
    assert h.backend.snapshot() == before
    assert h.run(ALICE, "confirm").reply.status is ReplyStatus.OK
    assert h.backend.get(NLP_DEMO).pin.replicas == 0  # type: ignore[union-attr]


def test_extend_moves_the_expiry(h: Harness) -> None:
    created(h)
    out = h.run(ALICE, "extend demo 4h")
    assert out.reply.status is ReplyStatus.OK
    assert h.backend.get(NLP_DEMO).expires_at == T0 + timedelta(hours=12)
    assert "in 12h" in out.reply.text


def test_extend_past_expiry_counts_from_now(h: Harness) -> None:
    created(h, ALICE, "create demo ttl=1h")
    h.clock.advance(hours=2)
    h.run(ALICE, "extend demo 1h")
    assert h.backend.get(NLP_DEMO).expires_at == h.clock.now + timedelta(hours=1)


def test_extend_beyond_the_profile_maximum_says_how_much_fits(h: Harness) -> None:
    created(h)
    out = h.run(OPS, "extend demo 2d")
    assert out.reply.status is ReplyStatus.ERROR
    assert "allows at most 2d ahead" in out.reply.text and "up to 1d16h" in out.reply.text


def test_why_explains_pause_pin_and_last_decision(h: Harness) -> None:
    created(h)
    assert "No decisions recorded yet" in h.run(ALICE, "why demo").reply.text
    h.run(ALICE, "pause demo")
    h.run(ALICE, "scale demo 2")
    h.run(OPS, "pause-all")
    text = h.run(ALICE, "why demo").reply.text
    assert "paused globally" in text and "This cluster is paused" in text and "workers at 2" in text


def test_pause_and_resume(h: Harness) -> None:
    created(h)
    assert h.run(ALICE, "pause demo").reply.status is ReplyStatus.OK
    assert h.backend.get(NLP_DEMO).paused
    assert "already paused" in h.run(ALICE, "pause demo").reply.text
    h.run(ALICE, "scale demo 2")
    out = h.run(ALICE, "resume demo")
    assert "ended its pause and pin" in out.reply.text
    s = h.backend.get(NLP_DEMO)
    assert not s.paused and s.pin is None
    assert keys.ANN_PAUSED not in s.annotations and keys.ANN_MANUAL_REPLICAS not in s.annotations
    assert "already autoscaled" in h.run(ALICE, "resume demo").reply.text


def test_policy_names_the_scaling_policy_and_its_numbers(h: Harness) -> None:
    created(h)
    out = h.run(ALICE, "policy demo")
    text = to_text(out.reply)
    assert "cpu-default: mode owner, 0 to 8 workers" in text
    assert "signal pending-cpu: pendingDemand CPU" in text
    assert "scale-down window 300s" in text


def test_connect(h: Harness) -> None:
    created(h)
    out = h.run(ALICE, "connect demo")
    assert "it is STARTING" in out.reply.text
    assert [f.label for f in out.reply.fields] == ["Ray client", "Dashboard"]
    h.backend.make_ready(NLP_DEMO)
    assert "STARTING" not in h.run(ALICE, "connect demo").reply.text


def test_connect_fields_of_a_local_cluster_give_the_driver_address() -> None:
    local = ConnectInfo(None, "http://127.0.0.1:8265", "http://127.0.0.1:8265", "127.0.0.1:6379")
    fields = connect_fields(local)
    assert [f.label for f in fields] == ["Ray driver (this machine)", "Dashboard"]
    assert 'ray.init("127.0.0.1:6379")' in fields[0].value
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in fields[0].value


def test_delete_with_confirmation(h: Harness) -> None:
    created(h)
    out = h.run(ALICE, "delete demo")
    assert out.reply.status is ReplyStatus.CONFIRM
    assert [b.command.split()[0] for b in out.reply.buttons] == ["confirm", "cancel"]
    assert h.backend.exists(NLP_DEMO)
    press = out.reply.buttons[0].command
    assert h.run(ALICE, press).reply.text == "Deleted demo in ray-nlp."
    assert not h.backend.exists(NLP_DEMO)
    again = h.run(ALICE, press)
    assert again.reply.status is ReplyStatus.ERROR and "already confirmed" in again.reply.text


def test_cancel_drops_the_confirmation(h: Harness) -> None:
    created(h)
    out = h.run(ALICE, "delete demo")
    cid = out.reply.buttons[1].command.split()[1]
    assert "nothing was changed" in h.run(ALICE, f"cancel {cid}").reply.text
    assert "already cancelled" in h.run(ALICE, f"confirm {cid}").reply.text
    assert h.backend.exists(NLP_DEMO)


def test_confirmation_expires(h: Harness) -> None:
    created(h)
    h.run(ALICE, "delete demo")
    h.clock.advance(minutes=6)
    out = h.run(ALICE, "confirm")
    assert out.reply.status is ReplyStatus.ERROR
    assert "nothing of yours is waiting" in out.reply.text.lower()
    assert h.backend.exists(NLP_DEMO)


def test_release_with_confirmation_by_devops(h: Harness) -> None:
    created(h)
    assert h.run(OPS, "release demo").reply.status is ReplyStatus.CONFIRM
    out = h.run(OPS, "confirm")
    assert out.reply.status is ReplyStatus.OK, out.reply.text
    assert h.backend.exists(NLP_DEMO)  # still running, no longer managed
    assert "not managed by rayops" in h.run(OPS, "status ray-nlp/demo").reply.text


def test_approve_and_deny(h: Harness) -> None:
    out = h.run(ALICE, "create big workers=6")
    assert out.reply.status is ReplyStatus.PENDING
    rid = out.notifications[0].reply.buttons[0].command.split()[1]
    assert out.notifications[0].to.id == "C0DEVOPS"
    approved = h.run(APPROVER, f"approve {rid}")
    assert approved.reply.status is ReplyStatus.OK, approved.reply.text
    assert h.backend.get(ClusterRef("ray-nlp", "big")).requester == "slack:U0ALICE"
    to_alice = approved.notifications[0]
    assert (to_alice.to.kind, to_alice.to.id) == (DestinationKind.USER, "U0ALICE")
    assert "approved by Boss (slack:U0APPROVER)" in to_alice.reply.text
    assert to_alice.thread_channel == "C0CHAN"

    rid2 = h.run(ALICE, "create huge workers=8").notifications[0].reply.buttons[1].command.split()[1]
    denied = h.run(APPROVER, f"deny {rid2} not this week")
    assert denied.reply.status is ReplyStatus.OK
    assert "denied by Boss (slack:U0APPROVER): not this week" in denied.notifications[0].reply.text
    assert not h.backend.exists(ClusterRef("ray-nlp", "huge"))


def test_pending_lists_requests(h: Harness) -> None:
    assert "No requests" in h.run(ALICE, "pending").reply.text
    h.run(ALICE, "create big workers=6")
    h.run(BOB, "create bob-big workers=7")
    assert len(h.run(APPROVER, "pending").reply.table.rows) == 2  # type: ignore[union-attr]
    mine = h.run(ALICE, "pending").reply.table
    assert mine is not None and [r[1] for r in mine.rows] == ["slack:U0ALICE"]


def test_pause_all_and_resume_all(h: Harness) -> None:
    assert h.run(OPS, "pause-all").reply.status is ReplyStatus.OK
    assert h.switch.get().paused and h.switch.get().by == "slack:U0OPS"
    assert "already paused" in h.run(OPS, "pause-all").reply.text
    created(h)
    assert "paused globally" in to_text(h.run(ALICE, "status demo").reply)
    assert h.run(OPS, "resume-all").reply.status is ReplyStatus.OK
    assert not h.switch.get().paused
    assert "already on" in h.run(OPS, "resume-all").reply.text


def test_help_and_whoami(h: Harness) -> None:
    out = h.run(ALICE, "help")
    assert out.reply.table is not None and len(out.reply.table.rows) >= 21
    one = h.run(ALICE, "help extend").reply.text
    assert "Usage: extend NAME DURATION [namespace=NS]" in one and "`extend demo 4h`" in one
    me = h.run(ALICE, "whoami").reply.text
    assert "You are Alice (slack:U0ALICE)" in me and "namespaces ray-nlp; profiles small" in me


def test_cluster_names_are_resolved_across_visible_namespaces(h: Harness) -> None:
    created(h, OPS, "create twin namespace=ray-nlp")
    created(h, OPS, "create twin namespace=elsewhere")
    amb = h.run(OPS, "status twin")
    assert (
        amb.reply.status is ReplyStatus.ERROR and "say which, e.g. `status elsewhere/twin`" in amb.reply.text
    )
    assert h.run(OPS, "status ray-nlp/twin").reply.status is ReplyStatus.OK
    only = h.run(ALICE, "status twin")  # she cannot see "elsewhere", so the name is not ambiguous for her
    assert only.reply.status is ReplyStatus.OK and "twin in ray-nlp" in only.reply.text


def test_unknown_cluster_gets_a_near_miss(h: Harness) -> None:
    created(h)
    out = h.run(ALICE, "status dmeo")
    assert out.reply.status is ReplyStatus.ERROR
    assert "no cluster named dmeo that you can see. Did you mean `demo`?" in out.reply.text
    assert "Did you mean `demo`?" in h.run(ALICE, "status dmeo namespace=ray-nlp").reply.text


def test_backend_failures_become_answers(h: Harness) -> None:
    created(h)
    h.backend.fail_next("set_annotations", BackendUnavailable("API server timed out"))
    out = h.run(ALICE, "pause demo")
    assert out.reply.status is ReplyStatus.ERROR
    assert "cannot do that right now: API server timed out" in out.reply.text
    assert h.audit.records[-1]["result"] == "error"


def test_an_unexpected_exception_becomes_an_answer_with_a_reference(h: Harness, caplog) -> None:  # type: ignore[no-untyped-def]
    created(h)
    h.backend.fail_next("list", RuntimeError("boom"))  # type: ignore[arg-type]
    out = h.run(ALICE, "list")
    assert out.reply.status is ReplyStatus.ERROR and "reference" in out.reply.text
    assert any("command failed" in r.getMessage() and r.exc_text for r in caplog.records)


def test_adopted_cluster_is_devops_only_to_change(h: Harness) -> None:
    h.backend.add_cluster(
        ClusterRef("ray-nlp", "legacy"),
        (GroupStatus("workers", 2, 2, 0, 4, {"CPU": 1.0}),),
        labels={keys.LABEL_MANAGED: keys.MANAGED_VALUE},
    )
    out = h.run(ALICE, "pause legacy")
    assert out.reply.status is ReplyStatus.REFUSED
    assert "only its requester, nobody (it was not requested through rayops), or DevOps" in out.reply.text
    assert h.run(OPS, "pause legacy").reply.status is ReplyStatus.OK
    assert h.run(ALICE, "status legacy").reply.status is ReplyStatus.OK


def test_audit_records_every_change_and_nothing_else(h: Harness) -> None:
    created(h)
    h.run(ALICE, "status demo")
    h.run(ALICE, "list")
    h.run(ALICE, "scale demo 2")
    h.run(ALICE, "delete demo")
    h.run(ALICE, "confirm")
    rows = [(r["who"], r["command"], r["result"], r["target"], r["via"]) for r in h.audit.records]
    assert rows == [
        ("slack:U0ALICE", "create demo", "ok", "ray-nlp/demo", None),
        ("slack:U0ALICE", "scale demo 2", "ok", "ray-nlp/demo", None),
        ("slack:U0ALICE", "delete demo", "confirm-asked", "ray-nlp/demo", None),
        ("slack:U0ALICE", "delete demo", "ok", "ray-nlp/demo", rows[3][4]),
    ]
    assert rows[3][4].startswith("confirmation ")
    assert all(r["at"].startswith("2026-06-01T12:00:00") for r in h.audit.records)


def test_requester_identity_key_is_what_annotations_keep(h: Harness) -> None:
    from tests.bot.conftest import MATRIX_ALICE

    created(h, MATRIX_ALICE, "create mx")
    assert h.backend.get(ClusterRef("ray-nlp", "mx")).requester == "matrix:@alice:example.org"
    assert decode_time(h.backend.get(ClusterRef("ray-nlp", "mx")).annotations[keys.ANN_EXPIRES_AT])
    assert MATRIX_ALICE.platform is Platform.MATRIX


def test_workers_per_cluster_counts_every_group_as_the_controller_does(h: Harness) -> None:
    # Alice's ray-gpu rule: workersPerCluster 2, gpusPerCluster 1 (controller/limits.py counts alike).
    out = h.run(ALICE, "create train profile=gpu workers=2 gpus=1 namespace=ray-gpu")
    assert out.reply.status is ReplyStatus.PENDING and "workers 3 > 2" in out.reply.text
    created(h, ALICE, "create small-train profile=gpu workers=1 gpus=1 namespace=ray-gpu")
    pin = h.run(ALICE, "scale small-train 2 group=gpu")
    assert pin.reply.status is ReplyStatus.PENDING
    assert "workers 3 > 2" in pin.reply.text and "GPUs 2 > 1" in pin.reply.text
