"""rayops' typed events as Kubernetes Events, and reading them back (contracts.md section 6).

`KubeEventSink` writes each `controller.events.Event` as a core/v1 Event on the RayCluster it is about
(reason = the event type, e.g. `ScaledDown`; reporting component `rayops-controller`), so `oc describe
raycluster` shows rayops' decisions next to the operator's. The full typed event rides along as JSON in
one annotation, so `KubeEventSource` (the bot, possibly another pod) gets back exactly what was published:
requester, severity and data included. Events about no cluster (a policy set refused, a global alert)
are filed on the controller's own pod.

All calls go through `KubeApi`; the sink never raises for a failed delivery (it logs), so reporting never
stops the reconcile loop.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from controller import keys
from controller.backends.base import AlreadyExists, BackendError, BackendUnavailable
from controller.backends.kube_api import JSON, KubeApi
from controller.domain import ClusterRef
from controller.events import Event, EventType

log = logging.getLogger("rayops.kube.events")

EVENT_ANNOTATION = keys.EVENT_ANNOTATION  # re-exported: older callers import it from here
PUBLISH_ATTEMPTS = 3
MAX_MESSAGE = 1024  # the API server refuses longer Event messages
SEEN_FOR = timedelta(hours=3)  # remembered this long; older Events are ignored (the server keeps 1 h)


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeEventSink:
    """`EventSink` writing Kubernetes Events. `namespace` and `pod_name` place cluster-less events on the
    controller's pod (its HOSTNAME in a pod)."""

    def __init__(self, api: KubeApi, namespace: str, pod_name: str | None = None) -> None:
        self.api = api
        self.namespace = namespace
        self.instance = pod_name or os.environ.get("HOSTNAME") or "rayops-controller"

    def event_body(self, event: Event) -> JSON:
        if event.cluster is not None:
            namespace = event.cluster.namespace
            regarding = {
                "apiVersion": "ray.io/v1",
                "kind": "RayCluster",
                "name": event.cluster.name,
                "namespace": namespace,
            }
        else:
            namespace = self.namespace
            regarding = {"apiVersion": "v1", "kind": "Pod", "name": self.instance, "namespace": namespace}
        payload = json.dumps(event.to_dict(), sort_keys=True, separators=(",", ":"))
        if len(payload.encode()) > keys.MAX_ANNOTATION_BYTES:
            payload = json.dumps({**event.to_dict(), "data": {}}, sort_keys=True, separators=(",", ":"))
        message = (
            event.message if len(event.message) <= MAX_MESSAGE else event.message[: MAX_MESSAGE - 1] + "…"
        )
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{regarding['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": namespace,
                "labels": {keys.LABEL_MANAGED_BY: keys.MANAGED_BY_VALUE},
                "annotations": {keys.EVENT_ANNOTATION: payload},
            },
            "involvedObject": regarding,
            "reason": str(event.type),
            "message": message,
            "type": "Warning" if event.severity == "warning" else "Normal",
            "reportingComponent": keys.EVENT_REPORTING_COMPONENT,
            "reportingInstance": self.instance,
            "source": {"component": keys.EVENT_REPORTING_COMPONENT},
            "firstTimestamp": _stamp(event.at),
            "lastTimestamp": _stamp(event.at),
            "count": 1,
        }

    def publish(self, event: Event) -> None:
        """Create the Event; its name is unique, so after an ambiguous failure it is simply sent again
        (AlreadyExists then means the first one arrived)."""
        body = self.event_body(event)
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                self.api.create_event(body["metadata"]["namespace"], body)
                return
            except AlreadyExists:
                return
            except BackendUnavailable as e:
                if attempt == PUBLISH_ATTEMPTS:
                    self._lost(event, e)
            except BackendError as e:
                self._lost(event, e)
                return

    @staticmethod
    def _lost(event: Event, error: BackendError) -> None:
        log.warning("could not publish event %s about %s: %s", event.type, event.cluster or "rayops", error)


def event_from_kube(obj: Mapping[str, Any]) -> Event | None:
    """The typed event back from a Kubernetes Event: from the annotation, else from reason and message
    (an Event written by someone else under our reporting component); None when it is not one of ours."""
    meta = obj.get("metadata") or {}
    raw = (meta.get("annotations") or {}).get(keys.EVENT_ANNOTATION)
    if raw:
        try:
            return Event.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError) as e:
            log.warning("skipping event %s with an unreadable payload: %s", meta.get("name"), e)
            return None
    try:
        kind = EventType(str(obj.get("reason")))
    except ValueError:
        return None
    at = _parse(obj.get("lastTimestamp") or obj.get("firstTimestamp") or meta.get("creationTimestamp"))
    regarding = obj.get("involvedObject") or {}
    cluster = (
        ClusterRef(str(regarding.get("namespace")), str(regarding.get("name")))
        if regarding.get("kind") == "RayCluster"
        else None
    )
    return Event(
        type=kind,
        message=str(obj.get("message") or ""),
        at=at or datetime.now(UTC),
        cluster=cluster,
        severity="warning" if obj.get("type") == "Warning" else "info",
    )


def _parse(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def cluster_events(api: KubeApi, ref: ClusterRef) -> list[Event]:
    """One cluster's rayops Events still kept by the API server (about an hour), oldest first: the
    history behind `why` and the status chart when the bot runs on Kubernetes. A failed read is an
    empty history (the answer then says no decisions are recorded), never an error for a chat answer."""
    selector = f"reportingComponent={keys.EVENT_REPORTING_COMPONENT}"
    try:
        items = api.list_events(ref.namespace, field_selector=selector)
    except BackendError as e:
        log.info("cannot read rayops events in %s: %s", ref.namespace, e)
        return []
    events = [ev for obj in items if (ev := event_from_kube(obj)) is not None and ev.cluster == ref]
    return sorted(events, key=lambda e: e.at)


class KubeEventSource:
    """`EventSource` over Kubernetes Events with rayops' reporting component.

    Each `poll` lists them (a field selector, so only ours travel) and returns the ones not returned
    before and not older than the source (like tailing a journal from now), oldest first. A failed list
    returns nothing and is retried by the next poll, which then returns what was missed.
    """

    def __init__(
        self,
        api: KubeApi,
        namespaces: Sequence[str] | None = None,
        since: datetime | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.namespaces: Sequence[str | None] = list(namespaces) if namespaces is not None else [None]
        self._clock = clock
        start = since or clock()
        self.since = start.replace(microsecond=0)  # Event timestamps have whole seconds
        self._seen: dict[tuple[str, str], datetime] = {}
        self._failing = False

    def poll(self) -> list[Event]:
        selector = f"reportingComponent={keys.EVENT_REPORTING_COMPONENT}"
        items: list[JSON] = []
        try:
            for ns in self.namespaces:
                items += self.api.list_events(ns, field_selector=selector)
        except BackendError as e:
            if not self._failing:
                log.warning("cannot read rayops events: %s", e)
            self._failing = True
            return []
        if self._failing:
            log.info("reading rayops events works again")
            self._failing = False
        horizon = max(self.since, self._clock() - SEEN_FOR)
        fresh: list[Event] = []
        for obj in items:
            meta = obj.get("metadata") or {}
            key = (str(meta.get("namespace")), str(meta.get("name")))
            if key in self._seen:
                continue
            event = event_from_kube(obj)
            at = event.at if event is not None else horizon
            self._seen[key] = at
            if event is not None and at >= horizon:
                fresh.append(event)
        self._seen = {k: at for k, at in self._seen.items() if at >= horizon}
        return sorted(fresh, key=lambda e: e.at)
