"""Controller events to chat notifications (contracts.md section 6): who hears what, and how often.

Routing: alerts (`controller.events.ALERT_TYPES`) go to the DevOps channel of this adapter's
platform; everything else about a cluster goes to its requester (the event's `requester`, else the
cluster's `rayops.io/requester` annotation), on this adapter's platform only. The console is one
person's terminal: it receives everything.

Noise control, so a flapping metric or a busy cluster cannot flood a channel:
- an alert with a recovery pair (metrics, policy, failure) is posted once per (kind, cluster) and
  then suppressed until its recovery, which is posted with how long it lasted and how many repeats
  were swallowed; a recovery with no open alert is dropped;
- an alert without a recovery (conflict, limit clamped) is posted at most once per `alert_repeat`;
- "scaled" events: at most one message per cluster per `scaled_interval`; the ones in between are
  summarized into one message when the interval ends;
- "stuck" is posted once per (cluster, cause) until the cluster is ready or gone; `Held` is never
  posted (that is what `why` is for).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bot.adapters.base import (
    Button,
    ButtonStyle,
    Destination,
    Notification,
    NotificationSink,
    Platform,
    Reply,
    ReplyField,
    ReplyStatus,
)
from bot.authz import AccessView, Identity
from bot.commands.views import connect_fields
from controller.backends.base import BackendError, ClusterBackend, ConnectInfo
from controller.domain import ClusterRef
from controller.events import Event, EventSource, EventType
from controller.policy.durations import format_duration

log = logging.getLogger("rayops.bot.notify")

# alert type -> (family, opens an incident?) ; None: no recovery pair (rate-limited instead)
_ALERT_FAMILY: dict[EventType, tuple[str, bool | None]] = {
    EventType.METRICS_UNAVAILABLE: ("metrics", True),
    EventType.METRICS_RECOVERED: ("metrics", False),
    EventType.POLICY_INVALID: ("policy", True),
    EventType.POLICY_RECOVERED: ("policy", False),
    EventType.FAILURE: ("failure", True),
    EventType.RECOVERED: ("failure", False),
    EventType.CONFLICT: ("conflict", None),
    EventType.LIMIT_CLAMPED: ("limit", None),
}


@dataclass
class _Incident:
    since: datetime
    first: Event
    repeats: int = 0


@dataclass
class _Scaling:
    last_sent: datetime | None = None
    held: list[Event] = field(default_factory=list)
    requester: str | None = None


def _round(td: timedelta) -> str:
    return format_duration(timedelta(minutes=max(1, round(td.total_seconds() / 60))))


class Notifier:
    def __init__(
        self,
        source: EventSource,
        sink: NotificationSink,
        access: Callable[[], AccessView],
        platform: Platform,
        *,
        backend: ClusterBackend | None = None,
        scaled_interval: timedelta = timedelta(minutes=5),
        alert_repeat: timedelta = timedelta(minutes=30),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.source = source
        self.sink = sink
        self.access = access
        self.platform = platform
        self.backend = backend
        self.scaled_interval = scaled_interval
        self.alert_repeat = alert_repeat
        self.clock = clock
        self._incidents: dict[tuple[str, str], _Incident] = {}
        self._last_once: dict[tuple[str, str], datetime] = {}
        self._scaling: dict[ClusterRef, _Scaling] = {}
        self._stuck: dict[ClusterRef, set[str]] = {}
        self.suppressed = 0  # alerts and events swallowed by deduplication (for tests and metrics)

    # --- loop -----------------------------------------------------------------------------------

    def pump(self) -> list[Notification]:
        """Read new events and return what to post now (including summaries that fell due)."""
        now = self.clock()
        return self.route(self.source.poll(), now) + self.flush(now)

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        while not stop.is_set():
            notes = await asyncio.to_thread(self.pump)
            for n in notes:
                try:
                    await self.sink.post_notification(n)
                except Exception:  # one failed post must not stop the others
                    log.exception("posting a notification to %s failed", n.to)
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass

    # --- routing --------------------------------------------------------------------------------

    def route(self, events: Sequence[Event], now: datetime) -> list[Notification]:
        out: list[Notification] = []
        for e in events:
            try:
                out.extend(self._route_one(e, now))
            except BackendError as err:  # looking up a requester failed: skip this one event
                log.warning("cannot route event %s for %s: %s", e.type, e.cluster, err)
        return out

    def _route_one(self, e: Event, now: datetime) -> list[Notification]:
        if e.is_alert:
            return self._alert(e)
        if e.cluster is None:
            return []
        ref = e.cluster
        if e.type is EventType.HELD:
            return []
        if e.type in (EventType.SCALED_UP, EventType.SCALED_DOWN):
            return self._scaled(e, ref, now)
        if e.type is EventType.CLUSTER_READY:
            self._stuck.pop(ref, None)
            return self._to_requester(e, self._ready_reply(e, ref))
        if e.type is EventType.CLUSTER_STUCK:
            cause = str(e.data.get("cause") or e.message)
            seen = self._stuck.setdefault(ref, set())
            if cause in seen:
                self.suppressed += 1
                return []
            seen.add(cause)
            minutes = e.data.get("minutes")
            since = f" for {minutes} minutes" if isinstance(minutes, int | float) else ""
            return self._to_requester(
                e,
                Reply(
                    f"{ref.name} has been stuck{since}: {e.message}",
                    ReplyStatus.ERROR,
                    fields=(ReplyField("Cause", cause),),
                    buttons=(Button("Status", f"status {ref}"),),
                ),
            )
        if e.type is EventType.EXPIRING:
            return self._to_requester(
                e,
                Reply(
                    f"{ref.name} expires soon: {e.message}",
                    buttons=(
                        Button("Extend 4h", f"extend {ref} 4h", ButtonStyle.PRIMARY),
                        Button("Extend 1d", f"extend {ref} 1d"),
                    ),
                ),
            )
        if e.type in (EventType.EXPIRED, EventType.DELETED):
            self._stuck.pop(ref, None)
            scaling = self._scaling.pop(ref, None)
            if scaling is not None:
                self.suppressed += len(scaling.held)
            return self._to_requester(e, Reply(f"{ref.name} was deleted: {e.message}"))
        return []

    def _alert(self, e: Event) -> list[Notification]:
        family, opens = _ALERT_FAMILY.get(e.type, (str(e.type), None))
        scope = str(e.cluster) if e.cluster else "global"
        key = (family, scope)
        where = f" ({e.cluster})" if e.cluster else ""
        if opens is None:
            last = self._last_once.get(key)
            if last is not None and e.at - last < self.alert_repeat:
                self.suppressed += 1
                return []
            self._last_once[key] = e.at
            return self._to_devops(key, Reply(f"{e.type}{where}: {e.message}", ReplyStatus.ERROR))
        if opens:
            incident = self._incidents.get(key)
            if incident is not None:
                incident.repeats += 1
                self.suppressed += 1
                return []
            self._incidents[key] = _Incident(e.at, e)
            return self._to_devops(key, Reply(f"{e.type}{where}: {e.message}", ReplyStatus.ERROR))
        incident = self._incidents.pop(key, None)
        if incident is None:
            return []  # a recovery nobody was told about the start of
        repeats = f", {incident.repeats} repeats suppressed" if incident.repeats else ""
        return self._to_devops(
            key,
            Reply(f"{e.type}{where}: {e.message} (after {_round(e.at - incident.since)}{repeats})"),
        )

    def _scaled(self, e: Event, ref: ClusterRef, now: datetime) -> list[Notification]:
        st = self._scaling.setdefault(ref, _Scaling())
        st.requester = e.requester or st.requester
        if st.last_sent is None or now - st.last_sent >= self.scaled_interval:
            st.last_sent = now
            return self._to_requester(e, Reply(f"{ref.name}: {e.message}"))
        st.held.append(e)
        return []

    def flush(self, now: datetime) -> list[Notification]:
        """Summaries of "scaled" events held back, for clusters whose interval has passed."""
        out: list[Notification] = []
        for ref, st in list(self._scaling.items()):
            if not st.held or st.last_sent is None or now - st.last_sent < self.scaled_interval:
                continue
            held, st.held, st.last_sent = st.held, [], now
            last = held[-1]
            first_from = held[0].data.get("current")
            last_to = last.data.get("target")
            change = (
                f" ({first_from} → {last_to} workers)"
                if first_from is not None and last_to is not None
                else ""
            )
            text = (
                f"{ref.name} scaled {len(held)} more times in the last {_round(self.scaled_interval)}"
                f"{change}. Latest: {last.message}"
            )
            out.extend(self._to_requester(last, Reply(text)))
        return out

    # --- destinations ---------------------------------------------------------------------------

    def _to_devops(self, key: tuple[str, str], reply: Reply) -> list[Notification]:
        if self.platform is Platform.CONSOLE:
            dest = Destination.channel(Platform.CONSOLE, "devops")
        else:
            channel = self.access().devops_channel(self.platform)
            if channel is None:
                log.warning("no DevOps channel for %s in the access policy; dropping an alert", self.platform)
                return []
            dest = Destination.channel(self.platform, channel)
        return [Notification(dest, reply, key=f"alert:{key[0]}:{key[1]}")]

    def _requester_of(self, e: Event) -> str | None:
        if e.requester:
            return e.requester
        if self.backend is not None and e.cluster is not None:
            try:
                return self.backend.get(e.cluster).requester
            except BackendError:
                return None
        return None

    def _to_requester(self, e: Event, reply: Reply) -> list[Notification]:
        key = self._requester_of(e)
        who = Identity.from_key(key) if key else None
        if who is None:
            log.debug("event %s for %s has no requester I can reach", e.type, e.cluster)
            return []
        if self.platform is not Platform.CONSOLE and who.platform is not self.platform:
            return []  # the adapter of the requester's platform posts it
        return [Notification(Destination.user(who.platform, who.user_id), reply, key=f"{e.type}:{e.cluster}")]

    def _ready_reply(self, e: Event, ref: ClusterRef) -> Reply:
        connect: ConnectInfo | None = None
        addr, dash = e.data.get("client_address"), e.data.get("dashboard_url")
        if isinstance(addr, str) or isinstance(dash, str):
            connect = ConnectInfo(
                addr if isinstance(addr, str) else None, dash if isinstance(dash, str) else None, None
            )
        elif self.backend is not None:
            try:
                connect = self.backend.get(ref).connect
            except BackendError:
                connect = None
        return Reply(f"{ref.name} is ready.", fields=tuple(connect_fields(connect)))
