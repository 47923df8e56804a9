"""rayops' typed events through Kubernetes Events: what the controller publishes, the bot reads back."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from controller import keys
from controller.backends.kube_api import KubeApi, RetryPolicy
from controller.backends.kuberay_events import EVENT_ANNOTATION, MAX_MESSAGE, KubeEventSink, KubeEventSource
from controller.domain import ClusterRef
from controller.events import Event, EventType
from tests.harness.kube import BOT_TOKEN, CONTROLLER_TOKEN
from tests.standins.kube_api import KubeApiServer

NS = "team-a"
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def apis(kube_api: KubeApiServer) -> Iterator[tuple[KubeApi, KubeApi]]:
    """The controller's and the bot's clients: separate identities, as separate pods would have."""
    fast = RetryPolicy(attempts=2, base_delay_s=0.001)
    yield (
        KubeApi(kube_api.client(CONTROLLER_TOKEN), fast, sleep=lambda _: None),
        KubeApi(kube_api.client(BOT_TOKEN), fast, sleep=lambda _: None),
    )


def source_for(api: KubeApi, namespaces: list[str] | None) -> KubeEventSource:
    """A source started at NOW whose clock stays near NOW (the events here are dated around it)."""
    return KubeEventSource(api, namespaces, since=NOW, clock=lambda: NOW + timedelta(minutes=2))


def scaled_down(at: datetime, cluster: str = "demo", ns: str = NS) -> Event:
    return Event(
        EventType.SCALED_DOWN,
        "cpu: 4 -> 2, removing 2 idle workers",
        at=at,
        cluster=ClusterRef(ns, cluster),
        requester="slack:U1",
        severity="info",
        data={"from": 4, "to": 2, "group": "cpu"},
    )


def test_published_events_come_back_whole_once(
    kube_api: KubeApiServer, apis: tuple[KubeApi, KubeApi]
) -> None:
    controller, bot = apis
    source = source_for(bot, [NS])
    sink = KubeEventSink(controller, NS, pod_name="rayops-controller-7d9f")
    first = scaled_down(NOW + timedelta(seconds=1))
    alert = Event(EventType.POLICY_INVALID, "policies/cpu.yaml: maxReplicas missing", NOW, severity="warning")
    sink.publish(first)
    sink.publish(alert)
    assert source.poll() == [alert, first]  # oldest first
    assert source.poll() == []
    later = scaled_down(NOW + timedelta(seconds=30), cluster="other")
    sink.publish(later)
    assert source.poll() == [later]


def test_the_kubernetes_event_reads_well_in_oc_describe(
    kube_api: KubeApiServer, apis: tuple[KubeApi, KubeApi]
) -> None:
    controller, _ = apis
    KubeEventSink(controller, NS, pod_name="rayops-controller-7d9f").publish(scaled_down(NOW))
    (obj,) = kube_api.list_objs("events", NS)
    assert obj["involvedObject"] == {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "name": "demo",
        "namespace": NS,
    }
    assert (obj["reason"], obj["type"], obj["message"]) == (
        "ScaledDown",
        "Normal",
        "cpu: 4 -> 2, removing 2 idle workers",
    )
    assert obj["reportingComponent"] == obj["source"]["component"] == keys.EVENT_REPORTING_COMPONENT
    assert obj["reportingInstance"] == "rayops-controller-7d9f"
    stamps = {obj["firstTimestamp"], obj["lastTimestamp"]}
    assert {datetime.fromisoformat(t.replace("Z", "+00:00")) for t in stamps} == {NOW}
    assert obj["metadata"]["name"].startswith("demo.") and EVENT_ANNOTATION in obj["metadata"]["annotations"]


def test_cluster_less_events_are_filed_on_the_controller_pod(
    kube_api: KubeApiServer, apis: tuple[KubeApi, KubeApi]
) -> None:
    controller, _ = apis
    event = Event(EventType.METRICS_UNAVAILABLE, "Prometheus did not answer", NOW, severity="warning")
    KubeEventSink(controller, "rayops", pod_name="rayops-controller-7d9f").publish(event)
    (obj,) = kube_api.list_objs("events", "rayops")
    assert obj["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "rayops-controller-7d9f",
        "namespace": "rayops",
    }
    assert obj["type"] == "Warning"


def test_a_source_over_all_namespaces_sees_each_event_once(apis: tuple[KubeApi, KubeApi]) -> None:
    controller, bot = apis
    source = source_for(bot, None)
    sink = KubeEventSink(controller, "rayops")
    events = [scaled_down(NOW, ns="team-a"), scaled_down(NOW + timedelta(seconds=2), ns="team-b")]
    for e in events:
        sink.publish(e)
    assert source.poll() == events


def test_events_from_before_the_source_started_are_not_replayed(apis: tuple[KubeApi, KubeApi]) -> None:
    controller, bot = apis
    sink = KubeEventSink(controller, NS)
    sink.publish(scaled_down(NOW - timedelta(minutes=5)))
    fresh = scaled_down(NOW + timedelta(seconds=1))
    sink.publish(fresh)
    assert source_for(bot, [NS]).poll() == [fresh]


def test_an_event_written_without_the_payload_is_still_understood(
    kube_api: KubeApiServer, apis: tuple[KubeApi, KubeApi]
) -> None:
    _, bot = apis
    source = source_for(bot, [NS])
    kube_api.put(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "demo.1", "namespace": NS},
            "involvedObject": {
                "apiVersion": "ray.io/v1",
                "kind": "RayCluster",
                "name": "demo",
                "namespace": NS,
            },
            "reason": "ClusterStuck",
            "message": "pod demo-cpu-worker-x: Pending, unschedulable",
            "type": "Warning",
            "reportingComponent": keys.EVENT_REPORTING_COMPONENT,
            "lastTimestamp": "2026-03-02T09:31:00Z",
        }
    )
    kube_api.put(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "demo.2", "namespace": NS},
            "involvedObject": {"kind": "RayCluster", "name": "demo", "namespace": NS},
            "reason": "SomethingElse",
            "message": "not one of rayops' event types",
            "reportingComponent": keys.EVENT_REPORTING_COMPONENT,
            "lastTimestamp": "2026-03-02T09:31:00Z",
        }
    )
    (event,) = source.poll()
    assert (event.type, event.cluster, event.severity) == (
        EventType.CLUSTER_STUCK,
        ClusterRef(NS, "demo"),
        "warning",
    )
    assert event.at == NOW + timedelta(minutes=1)


def test_delivery_failures_never_raise_and_a_failed_poll_catches_up_later(
    kube_api: KubeApiServer, apis: tuple[KubeApi, KubeApi], caplog: pytest.LogCaptureFixture
) -> None:
    controller, bot = apis
    sink, source = KubeEventSink(controller, NS), source_for(bot, [NS])
    kube_api.inject_faults(500, count=1, verbs={"create"}, resource="events", commit=True)
    kube_api.inject_faults(500, count=1, verbs={"create"}, resource="events")
    first = scaled_down(NOW)
    sink.publish(first)  # stored, answer lost; sent again: AlreadyExists, so delivered once
    assert "could not publish" not in caplog.text
    kube_api.inject_faults(500, count=3, verbs={"create"}, resource="events")
    sink.publish(scaled_down(NOW))  # lost, and said so
    assert "could not publish event ScaledDown about team-a/demo" in caplog.text
    kept = scaled_down(NOW + timedelta(seconds=1))
    sink.publish(kept)
    kube_api.inject_faults(503, count=2, verbs={"list"}, resource="events")
    with caplog.at_level(logging.WARNING):
        assert source.poll() == []
    assert "cannot read rayops events" in caplog.text
    assert source.poll() == [first, kept]


def test_long_messages_are_cut_to_what_the_api_accepts(
    kube_api: KubeApiServer, apis: tuple[KubeApi, KubeApi]
) -> None:
    controller, bot = apis
    event = Event(EventType.HELD, "x" * 5000, NOW, cluster=ClusterRef(NS, "demo"))
    KubeEventSink(controller, NS).publish(event)
    (obj,) = kube_api.list_objs("events", NS)
    assert len(obj["message"]) == MAX_MESSAGE and obj["message"].endswith("…")
    assert source_for(bot, [NS]).poll() == [event]  # the payload keeps the whole text
