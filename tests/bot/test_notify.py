"""Notifications: requester events vs DevOps alerts, dedupe until recovery, scaled summaries."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.adapters.base import DestinationKind, Notification, Platform, ReplyStatus
from bot.authz import AccessView
from bot.notify import Notifier
from controller.backends.memory import MemoryBackend
from controller.domain import ClusterRef
from controller.events import ALERT_TYPES, Event, EventType, MemoryEvents
from tests.bot.conftest import T0, Clock, fixture_policy_set

DEMO = ClusterRef("ray-nlp", "demo")


class Sink:
    def __init__(self) -> None:
        self.posted: list[Notification] = []

    async def post_notification(self, notification: Notification) -> None:
        self.posted.append(notification)


def notifier(
    platform: Platform = Platform.SLACK, backend: MemoryBackend | None = None
) -> tuple[Notifier, MemoryEvents, Clock]:
    events, clock = MemoryEvents(), Clock()
    view = AccessView.of(fixture_policy_set().access_policies.values())
    n = Notifier(events, Sink(), lambda: view, platform, backend=backend, clock=clock)
    return n, events, clock


def ev(
    t: EventType,
    at: float = 0,
    cluster: ClusterRef | None = DEMO,
    requester: str | None = "slack:U0ALICE",
    **data: object,
) -> Event:
    return Event(t, f"{t} message", T0 + timedelta(minutes=at), cluster, requester, data=data)  # type: ignore[arg-type]


def test_alerts_go_to_the_devops_channel_once_until_recovery() -> None:
    n, events, _ = notifier()
    for i in range(5):
        events.publish(ev(EventType.METRICS_UNAVAILABLE, i, requester=None))
    first = n.pump()
    assert len(first) == 1
    assert (first[0].to.kind, first[0].to.id) == (DestinationKind.CHANNEL, "C0DEVOPS")
    assert first[0].reply.status is ReplyStatus.ERROR
    assert n.suppressed == 4
    events.publish(ev(EventType.METRICS_RECOVERED, 12, requester=None))
    rec = n.pump()
    assert len(rec) == 1 and "after 12m, 4 repeats suppressed" in rec[0].reply.text
    assert rec[0].key == first[0].key == "alert:metrics:ray-nlp/demo"
    events.publish(ev(EventType.METRICS_RECOVERED, 13, requester=None))
    assert n.pump() == []  # a second recovery has nothing to recover from
    events.publish(ev(EventType.METRICS_UNAVAILABLE, 14, requester=None))
    assert len(n.pump()) == 1  # a new incident


def test_alerts_are_deduplicated_per_cluster_and_kind() -> None:
    n, events, _ = notifier()
    other = ClusterRef("ray-nlp", "other")
    events.publish(ev(EventType.METRICS_UNAVAILABLE))
    events.publish(ev(EventType.METRICS_UNAVAILABLE, cluster=other))
    events.publish(ev(EventType.FAILURE))
    events.publish(ev(EventType.POLICY_INVALID, cluster=None))
    events.publish(ev(EventType.POLICY_INVALID, 1, cluster=None))
    assert len(n.pump()) == 4


def test_alerts_without_recovery_repeat_at_most_every_half_hour() -> None:
    n, events, _ = notifier()
    for m in (0, 10, 29, 31, 45, 62):
        events.publish(ev(EventType.CONFLICT, m))
    assert [x.reply.text.split(":")[0] for x in n.pump()] == ["Conflict (ray-nlp/demo)"] * 3


def test_every_alert_type_reaches_devops_and_nothing_else_does() -> None:
    n, events, _ = notifier()
    for t in ALERT_TYPES:
        events.publish(ev(t, requester=None))
    posted = n.pump()
    assert posted and all(p.to == posted[0].to for p in posted)
    assert all(p.to.kind is DestinationKind.CHANNEL for p in posted)


def test_cluster_ready_goes_to_the_requester_with_connect_info() -> None:
    n, events, _ = notifier()
    events.publish(
        ev(EventType.CLUSTER_READY, client_address="ray://demo:10001", dashboard_url="http://d:8265")
    )
    (note,) = n.pump()
    assert (note.to.kind, note.to.platform, note.to.id) == (DestinationKind.USER, Platform.SLACK, "U0ALICE")
    assert "demo is ready" in note.reply.text
    assert [(f.label, f.value) for f in note.reply.fields] == [
        ("Ray client", 'ray.init("ray://demo:10001")'),
        ("Dashboard", "http://d:8265"),
    ]


def test_the_requester_comes_from_the_cluster_when_the_event_lacks_it() -> None:
    ps = fixture_policy_set()
    backend = MemoryBackend(ps.cluster_profiles)
    from controller.backends.base import ClusterRequest

    backend.create(ClusterRequest("demo", "ray-nlp", "small", "slack:U0BOB"))
    n, events, _ = notifier(backend=backend)
    events.publish(ev(EventType.CLUSTER_READY, requester=None))
    (note,) = n.pump()
    assert note.to.id == "U0BOB"
    assert "demo-head-svc" in note.reply.fields[0].value  # connect info from the backend


def test_stuck_is_posted_once_per_cause_until_ready() -> None:
    n, events, _ = notifier()
    for m in range(3):
        events.publish(ev(EventType.CLUSTER_STUCK, m, cause="Unschedulable", minutes=10 + m))
    events.publish(ev(EventType.CLUSTER_STUCK, 4, cause="ImagePullBackOff"))
    posted = n.pump()
    assert [p.reply.fields[0].value for p in posted] == ["Unschedulable", "ImagePullBackOff"]
    assert "stuck for 10 minutes" in posted[0].reply.text
    events.publish(ev(EventType.CLUSTER_READY, 5))
    events.publish(ev(EventType.CLUSTER_STUCK, 6, cause="Unschedulable"))
    assert len(n.pump()) == 2


def test_scaled_events_are_summarized_per_cluster() -> None:
    n, events, clock = notifier()
    events.publish(ev(EventType.SCALED_UP, 0, current=1, target=2))
    assert len(n.pump()) == 1  # the first one at once
    for i in range(1, 5):
        clock.advance(seconds=30)
        events.publish(ev(EventType.SCALED_UP, i, current=i + 1, target=i + 2))
        assert n.pump() == []
    events.publish(ev(EventType.SCALED_UP, 0, cluster=ClusterRef("ray-nlp", "other"), current=0, target=1))
    assert len(n.pump()) == 1  # another cluster has its own interval
    clock.advance(minutes=3)
    (summary,) = n.pump()
    assert "demo scaled 4 more times in the last 5m (2 → 6 workers)" in summary.reply.text
    assert n.pump() == []


def test_held_events_are_not_posted() -> None:
    n, events, _ = notifier()
    events.publish(ev(EventType.HELD))
    assert n.pump() == []


def test_expiring_offers_extend_buttons_and_deleted_is_told() -> None:
    n, events, _ = notifier()
    events.publish(ev(EventType.EXPIRING))
    events.publish(ev(EventType.DELETED, 1))
    expiring, deleted = n.pump()
    assert [b.command for b in expiring.reply.buttons] == ["extend ray-nlp/demo 4h", "extend ray-nlp/demo 1d"]
    assert "demo was deleted" in deleted.reply.text


def test_a_slack_bot_leaves_matrix_requesters_to_the_matrix_bot() -> None:
    n, events, _ = notifier(Platform.SLACK)
    events.publish(ev(EventType.CLUSTER_READY, requester="matrix:@alice:example.org"))
    assert n.pump() == []
    m, mevents, _ = notifier(Platform.MATRIX)
    mevents.publish(ev(EventType.CLUSTER_READY, requester="matrix:@alice:example.org"))
    mevents.publish(ev(EventType.FAILURE, requester=None))
    ready, alert = m.pump()
    assert ready.to.id == "@alice:example.org" and alert.to.id == "!ops:example.org"


def test_the_console_gets_everything() -> None:
    n, events, _ = notifier(Platform.CONSOLE)
    events.publish(ev(EventType.CLUSTER_READY, requester="kubernetes:alice"))
    events.publish(ev(EventType.FAILURE, requester=None))
    ready, alert = n.pump()
    assert ready.to.id == "alice" and alert.to == alert.to.channel(Platform.CONSOLE, "devops")


def test_no_devops_channel_drops_alerts_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    events = MemoryEvents()
    n = Notifier(events, Sink(), lambda: AccessView(), Platform.SLACK, clock=Clock())
    events.publish(ev(EventType.FAILURE))
    assert n.pump() == []
    assert "no DevOps channel" in caplog.text


def test_unknown_requester_is_skipped() -> None:
    n, events, _ = notifier()
    events.publish(ev(EventType.CLUSTER_READY, requester=None))
    events.publish(ev(EventType.CLUSTER_READY, requester="nonsense"))
    assert n.pump() == []


async def test_run_loop_posts_to_the_sink() -> None:
    import asyncio

    n, events, _ = notifier()
    events.publish(ev(EventType.FAILURE))
    stop = asyncio.Event()
    task = asyncio.create_task(n.run(stop, 0.01))
    for _ in range(100):
        if n.sink.posted:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert len(n.sink.posted) == 1  # type: ignore[attr-defined]
