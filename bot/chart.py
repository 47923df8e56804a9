"""Recent history of a cluster (for `why` and the status chart) and the chart itself.

`History` is the small seam: the bot asks for a cluster's recent scaling events and for points of
(time, ready workers, desired workers, pending demand). `EventHistory` derives both from the
controller's events (the laptop journal, or the in-memory events of `rayops up`); a Prometheus
implementation (rayops' own `/metrics` and Ray's) can replace it on Kubernetes.

Scaling events (`ScaledUp`, `ScaledDown`, `Held`) are read with these `data` keys, all optional:
`group`, `current`, `target`, `ready`, `pending` (pending demand in the group's resource units),
`codes` (reason codes, comma-separated).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from controller.domain import ClusterRef
from controller.events import Event, EventType

SCALING_EVENTS = (EventType.SCALED_UP, EventType.SCALED_DOWN, EventType.HELD)


@dataclass(frozen=True)
class HistoryPoint:
    at: datetime
    ready: float
    desired: float
    pending: float


class History(Protocol):
    def events(self, ref: ClusterRef, limit: int) -> list[Event]:
        """The cluster's recent scaling events, oldest first."""
        ...

    def points(self, ref: ClusterRef, since: datetime) -> list[HistoryPoint]:
        """Cluster totals (all groups summed) at each known moment since `since`, oldest first."""
        ...


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


class EventHistory:
    def __init__(self, fetch: Callable[[ClusterRef], Sequence[Event]]) -> None:
        self._fetch = fetch

    def events(self, ref: ClusterRef, limit: int) -> list[Event]:
        return [e for e in self._fetch(ref) if e.type in SCALING_EVENTS][-limit:]

    def points(self, ref: ClusterRef, since: datetime) -> list[HistoryPoint]:
        per_group: dict[str, tuple[float, float, float]] = {}
        out: list[HistoryPoint] = []
        for e in self._fetch(ref):
            if e.type not in SCALING_EVENTS:
                continue
            group = str(e.data.get("group", ""))
            ready, desired, pending = per_group.get(group, (0.0, 0.0, 0.0))
            target = _num(e.data.get("target"))
            desired = target if target is not None else desired
            r = _num(e.data.get("ready"))
            ready = r if r is not None else ready
            p = _num(e.data.get("pending"))
            pending = p if p is not None else pending
            per_group[group] = (ready, desired, pending)
            if e.at >= since:
                vals = per_group.values()
                out.append(
                    HistoryPoint(
                        e.at, sum(v[0] for v in vals), sum(v[1] for v in vals), sum(v[2] for v in vals)
                    )
                )
        return out


class NoHistory:
    def events(self, ref: ClusterRef, limit: int) -> list[Event]:
        return []

    def points(self, ref: ClusterRef, since: datetime) -> list[HistoryPoint]:
        return []


def render_chart(points: Sequence[HistoryPoint], title: str, now: datetime, window: timedelta) -> bytes:
    """A small PNG (about 600x250) of ready and desired workers and pending demand as steps.

    Uses matplotlib's object API with the Agg canvas directly: no pyplot, no global backend switch,
    so it is safe in a process that also draws elsewhere, and from any thread.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 2.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = [(p.at - now).total_seconds() / 60 for p in points] + [0.0]
    last = points[-1] if points else HistoryPoint(now, 0, 0, 0)
    series = (
        ("desired", [p.desired for p in points] + [last.desired], "tab:blue", "-"),
        ("ready", [p.ready for p in points] + [last.ready], "tab:green", "-"),
        ("pending demand", [p.pending for p in points] + [last.pending], "tab:orange", "--"),
    )
    for label, ys, color, style in series:
        ax.step(xs, ys, where="post", label=label, color=color, linestyle=style, linewidth=1.5)
    ax.set_xlim(-window.total_seconds() / 60, 0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("minutes ago")
    ax.set_ylabel("workers")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
