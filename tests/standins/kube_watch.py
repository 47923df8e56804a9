"""Watch: replay of a resource's change history from a resourceVersion, then live events until a timeout.

Selector transitions follow the server: an object modified into a watch's selector arrives as ADDED, one
modified out of it as DELETED. A resourceVersion older than the retained history gets an ERROR event with a
410 Expired Status (the client raises ApiException 410), which tests can force with `Store.compact()`.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.standins.kube_codec import Stored, encode
from tests.standins.kube_resources import ApiError, ResourceType
from tests.standins.kube_selectors import FieldRequirement, Requirement, fields_match, labels_match

if TYPE_CHECKING:
    from tests.standins.kube_store import Store


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    stored: Stored
    old: dict[str, Any] | None  # the previous state of a MODIFIED object, for selector transitions


@dataclass
class History:
    """Watch events of one resource type, in resourceVersion order, trimmed from the front."""

    rvs: list[int] = field(default_factory=list)
    events: list[WatchEvent] = field(default_factory=list)
    compacted_rv: int = 0

    def after(self, rv: int) -> list[WatchEvent]:
        return self.events[bisect.bisect_right(self.rvs, rv) :]


def watch_events(
    store: Store,
    rt: ResourceType,
    namespace: str | None,
    labels: tuple[Requirement, ...],
    fields: tuple[FieldRequirement, ...],
    since: int | None,
    timeout: float,
    alive: Callable[[], bool],
) -> Iterator[tuple[str, bytes]]:
    """Yields (event type, object JSON); `since=None` starts with ADDED for every current object."""
    deadline = time.monotonic() + timeout
    extract = store.field_extractor(rt)

    def matches(obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        ns_ok = namespace is None or obj["metadata"].get("namespace") == namespace
        return ns_ok and labels_match(labels, obj) and fields_match(fields, obj, extract)

    with store.lock:
        hist = store.history(rt)
        if since is not None and since < hist.compacted_rv:
            expired = ApiError(410, f"too old resource version: {since} ({hist.compacted_rv})", "Expired")
            yield "ERROR", encode(expired.status())
            return
        cursor = store.resource_version if since is None else since
        initial = [] if since is not None else store.snapshot(rt)
    for stored in sorted(initial, key=lambda s: (s.namespace, s.name)):
        if matches(stored.obj):
            yield "ADDED", stored.raw
    while True:
        with store.lock:
            if since is not None and cursor < hist.compacted_rv:
                expired = ApiError(
                    410, f"too old resource version: {cursor} ({hist.compacted_rv})", "Expired"
                )
                yield "ERROR", encode(expired.status())
                return
            pending = hist.after(cursor)
            if not pending and not store.closed:
                store.changed.wait(min(0.2, max(0.0, deadline - time.monotonic())))
                pending = hist.after(cursor)
        for ev in pending:
            cursor = ev.rv
            now_in, was_in = matches(ev.stored.obj), matches(ev.old)
            if ev.type == "MODIFIED":
                kind = {(True, True): "MODIFIED", (True, False): "ADDED", (False, True): "DELETED"}.get(
                    (now_in, was_in)
                )
            else:
                kind = ev.type if now_in else None
            if kind is not None:
                yield kind, ev.stored.raw
        since = cursor
        if store.closed or time.monotonic() >= deadline or not alive():
            return
