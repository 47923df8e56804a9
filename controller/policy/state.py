"""What the decision function remembers between ticks, as one small serializable value.

The controller stores it on the RayCluster (`rayops.io/state`, keys.ANN_STATE) so a restart loses
nothing, and the simulator threads it from tick to tick. It must stay small whatever happens, so:

- times are integer milliseconds since the epoch, stored relative to the last tick in JSON;
- the stabilization history is two monotone queues (rolling min for scale-up, rolling max for
  scale-down) instead of every recommendation: that is exact for a rolling min/max and usually holds
  a handful of entries;
- scale events are signed replica changes (HPA only ever needs `added - deleted` over a period);
- budget use is kept in coarse buckets (at least one hour, at most ~48 buckets per window), in
  whole worker-seconds and GPU-seconds;
- every list has a hard cap; past it the two oldest entries are merged in the direction that keeps
  the function conservative (see `_merge_oldest`). With the caps below the JSON stays under 4 KB.

Integers everywhere make `from_json(to_json(s)) == s` exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

# Hard caps on list lengths: they keep the annotation below 4 KB in the worst case.
MAX_HISTORY = 40
MAX_EVENTS = 40
MAX_BUCKETS = 50

Entry = tuple[int, int]  # (time in ms since the epoch, replicas or signed replica change)
Bucket = tuple[int, int, int]  # (bucket index, worker-seconds, GPU-seconds)

_FORMAT_VERSION = 2


@dataclass(frozen=True)
class GroupState:
    """The decision function's memory for one group; immutable, returned anew each tick.

    `at_ms` is the last tick's time (0: never ticked). `up_history` holds recommendations for
    scale-up stabilization, increasing in value; `down_history` those for scale-down, decreasing in
    value. `events` are the replica changes rayops decided (positive up, negative down) for the
    rate policies. `failures` counts consecutive ticks with a required signal unavailable.
    `bucket_ms` and `buckets` account worker- and GPU-time for budgets.
    """

    at_ms: int = 0
    up_history: tuple[Entry, ...] = ()
    down_history: tuple[Entry, ...] = ()
    events: tuple[Entry, ...] = ()
    failures: int = 0
    bucket_ms: int = 0
    buckets: tuple[Bucket, ...] = field(default=())

    @staticmethod
    def empty() -> GroupState:
        return GroupState()

    def with_changes(self, **changes: Any) -> GroupState:
        return replace(self, **changes)

    # --- JSON ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        base = self.at_ms
        d: dict[str, Any] = {"v": _FORMAT_VERSION, "t": base}
        if self.up_history:
            d["u"] = [[t - base, r] for t, r in self.up_history]
        if self.down_history:
            d["d"] = [[t - base, r] for t, r in self.down_history]
        if self.events:
            d["e"] = [[t - base, c] for t, c in self.events]
        if self.failures:
            d["f"] = self.failures
        if self.buckets or self.bucket_ms:
            last = self.buckets[-1][0] if self.buckets else 0
            d["b"] = [self.bucket_ms, last, [[i - last, w, g] for i, w, g in self.buckets]]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @staticmethod
    def from_dict(d: dict[str, Any]) -> GroupState:
        """Parse what `to_dict` wrote; anything unreadable becomes an empty state.

        A lost state only makes the next decisions less smooth (no stabilization history, budget
        counted from now), so refusing to decide over a damaged annotation would be worse.
        """
        try:
            if d.get("v") != _FORMAT_VERSION:
                return GroupState.empty()
            base = int(d["t"])

            def entries(key: str) -> tuple[Entry, ...]:
                return tuple((base + int(t), int(r)) for t, r in d.get(key, ()))

            bucket_ms, last, buckets = d.get("b", [0, 0, []])
            return GroupState(
                at_ms=base,
                up_history=entries("u"),
                down_history=entries("d"),
                events=entries("e"),
                failures=int(d.get("f", 0)),
                bucket_ms=int(bucket_ms),
                buckets=tuple((int(last) + int(i), int(w), int(g)) for i, w, g in buckets),
            )
        except (KeyError, TypeError, ValueError):
            return GroupState.empty()

    @staticmethod
    def from_json(text: str | None) -> GroupState:
        if not text:
            return GroupState.empty()
        try:
            d = json.loads(text)
        except ValueError:
            return GroupState.empty()
        return GroupState.from_dict(d) if isinstance(d, dict) else GroupState.empty()


def push_monotone(history: tuple[Entry, ...], at_ms: int, value: int, keep_max: bool) -> tuple[Entry, ...]:
    """Append to a monotone queue for a rolling max (`keep_max`) or min.

    Entries that the new one dominates (no better value, expiring earlier) can never be the answer
    again, so they are dropped; what remains is exactly what a rolling max/min needs.
    """
    kept = [e for e in history if (e[1] > value if keep_max else e[1] < value)]
    kept.append((at_ms, value))
    return _cap(tuple(kept), MAX_HISTORY, keep_max)


def prune(history: tuple[Entry, ...], cutoff_ms: int) -> tuple[Entry, ...]:
    """Drop entries at or before `cutoff_ms` (HPA counts only samples strictly after the cutoff)."""
    return tuple(e for e in history if e[0] > cutoff_ms)


def add_event(events: tuple[Entry, ...], at_ms: int, change: int) -> tuple[Entry, ...]:
    if change == 0:
        return events
    if events and events[-1][0] == at_ms:
        merged = events[-1][1] + change
        events = events[:-1] + (((at_ms, merged),) if merged else ())
        return events
    return _cap((*events, (at_ms, change)), MAX_EVENTS, None)


def _cap(entries: tuple[Entry, ...], limit: int, keep_max: bool | None) -> tuple[Entry, ...]:
    while len(entries) > limit:
        entries = _merge_oldest(entries, keep_max)
    return entries


def _merge_oldest(entries: tuple[Entry, ...], keep_max: bool | None) -> tuple[Entry, ...]:
    """Merge the two oldest entries into one at the later time.

    For a stabilization queue the older value is kept (it is the larger in a max queue, the smaller
    in a min queue), so it is remembered a little longer: stabilization can only get stronger. For
    events the changes are summed, so the rate limit still sees all of them.
    """
    (_, v0), (t1, v1) = entries[0], entries[1]
    merged = (t1, v0) if keep_max is not None else (t1, v0 + v1)
    return (merged, *entries[2:])
