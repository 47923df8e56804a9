"""One moment of a cluster as the status indicator shows it, and its two renderings.

A `Snapshot` is built from what the bot's `status` shows (`ClusterStatus`: state, groups, the last
decision from the `rayops.io/decision` annotation, expiry, stuck cause, connect info) plus, when the
dashboard answers, live usage (`bot.notebook.usage`). It is a plain frozen value, so the indicator
keeps every rendered one in `history` and tests (and the example notebook) can assert on them
without screen-scraping. Wording reuses `bot.commands.views`, so the indicator and chat describe a
cluster the same way.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from bot.commands.context import until
from bot.commands.views import resources_summary, signal_values
from bot.notebook.usage import Usage
from controller.backends.base import ClusterStatus
from controller.domain import Decision

DELETED = "DELETED"
STUCK_LINE_CHARS = 160  # a stuck cause may carry a log tail: the line shows its first line, cut
"""The indicator's last state once the cluster is gone (not a backend state: nothing to read)."""


@dataclass(frozen=True)
class GroupView:
    name: str
    ready: int
    desired: int
    min_replicas: int
    max_replicas: int


@dataclass(frozen=True)
class Snapshot:
    """What the indicator rendered at `at`. `error` is set when this refresh could not read the
    cluster (the other fields then repeat the last good reading, so a blip does not look like a
    scale-down)."""

    at: datetime
    cluster: str
    state: str
    groups: tuple[GroupView, ...] = ()
    pending: str | None = None
    usage: str | None = None
    action: str | None = None
    decision: str | None = None
    reason: str | None = None
    decided_at: datetime | None = None
    time_left: str | None = None
    dashboard: str | None = None
    stuck: str | None = None
    control: str | None = None
    error: str | None = None

    @property
    def ready(self) -> int:
        return sum(g.ready for g in self.groups)

    @property
    def desired(self) -> int:
        return sum(g.desired for g in self.groups)

    def same_view(self, other: Snapshot | None) -> bool:
        """Equal apart from the time taken (and the time left, which moves every minute)."""
        if other is None:
            return False
        a, b = asdict(self), asdict(other)
        for k in ("at", "time_left"):
            a.pop(k)
            b.pop(k)
        return a == b

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["at"] = self.at.isoformat()
        d["decided_at"] = self.decided_at.isoformat() if self.decided_at else None
        d["ready"] = self.ready
        d["desired"] = self.desired
        return d

    # --- renderings ---------------------------------------------------------------------------

    def parts(self) -> list[str]:
        """The pieces of the one-line form, most important first (a narrow terminal cuts the tail)."""
        out = [f"{self.cluster} {self.state}"]
        if self.stuck:
            out.append(f"stuck: {first_line(self.stuck, STUCK_LINE_CHARS)}")
        if self.groups:
            out.append("workers " + ", ".join(f"{g.name} {g.ready}/{g.desired}" for g in self.groups))
        if self.pending is not None:
            out.append(f"pending {self.pending}")
        if self.usage:
            out.append(self.usage)
        if self.decision:
            out.append(f"last: {self.decision}" + (f" ({self.reason})" if self.reason else ""))
        if self.control:
            out.append(self.control)
        if self.time_left:
            out.append(self.time_left)
        if self.dashboard:
            out.append(self.dashboard)
        if self.error:
            out.append(f"(not refreshed: {self.error})")
        return out

    def line(self, width: int | None = None) -> str:
        text = " | ".join(self.parts())
        if width is not None and len(text) > width:
            text = text[: max(0, width - 1)] + "…"
        return text

    def html(self) -> str:
        e = html.escape
        colour = {"READY": "#2e7d32", "FAILED": "#c62828", DELETED: "#616161"}.get(self.state, "#ef6c00")
        rows: list[tuple[str, str]] = []
        if self.stuck:
            head, _, rest = self.stuck.partition("\n")
            more = f'<details><summary>more</summary><pre style="font-size:11px">{e(rest)}</pre></details>'
            rows.append(("Stuck", e(head) + (more if rest.strip() else "")))
        for g in self.groups:
            rows.append(
                (
                    f"Workers {e(g.name)}",
                    f"{g.ready} ready / {g.desired} desired (min {g.min_replicas}, max {g.max_replicas})",
                )
            )
        if self.pending is not None:
            rows.append(("Pending demand", e(self.pending)))
        if self.usage:
            rows.append(("In use", e(self.usage)))
        if self.decision:
            when = f" at {self.decided_at:%H:%M:%S}" if self.decided_at else ""
            rows.append(("Last decision", e(self.decision + when)))
        if self.reason:
            rows.append(("Why", e(self.reason)))
        if self.control:
            rows.append(("Autoscaling", e(self.control)))
        if self.time_left:
            rows.append(("Time left", e(self.time_left)))
        if self.dashboard:
            url = e(self.dashboard)
            rows.append(("Dashboard", f'<a href="{url}" target="_blank">{url}</a>'))
        if self.error:
            rows.append(("Not refreshed", e(self.error)))
        body = "".join(
            f'<tr><td style="padding:0 1em 0 0;color:#555">{k}</td><td>{v}</td></tr>' for k, v in rows
        )
        return (
            '<div style="font-family:sans-serif;font-size:13px;border-left:4px solid '
            f'{colour};padding:4px 8px">'
            f"<b>{e(self.cluster)}</b> "
            f'<span style="color:{colour};font-weight:bold">{e(self.state)}</span>'
            f' <span style="color:#888">{self.at:%H:%M:%S}</span>'
            f"<table>{body}</table></div>"
        )


def first_line(text: str, limit: int) -> str:
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def decision_parts(d: Decision | None) -> tuple[str | None, str | None, str | None]:
    """(action, change, reason) of a decision: `up`, `cpu 1 → 3`, `BACKLOG_PENDING: 2 tasks wait`."""
    if d is None:
        return None, None, None
    change = f"{d.ref.group} {d.current} → {d.target}" if d.target != d.current else f"{d.ref.group} hold"
    if d.dry_run:
        change += " (dry run)"
    reason = f"{d.reasons[0].code}: {d.reasons[0].message}" if d.reasons else None
    return str(d.action), change, reason


def snapshot_of(status: ClusterStatus, now: datetime, usage: Usage | None = None) -> Snapshot:
    action, change, reason = decision_parts(status.last_decision)
    control = []
    if status.paused:
        control.append("paused")
    if status.pin is not None:
        control.append(f"pinned {status.pin.group} at {status.pin.replicas}")
    pending = signal_values(status.last_decision, "pendingDemand")
    if usage is not None and usage.pending is not None:
        pending = usage.pending
    in_use = usage.in_use if usage is not None else None
    if in_use is None:
        utilization = signal_values(status.last_decision, "utilization")
        in_use = f"utilization {utilization}" if utilization else None
    if in_use is None and usage is not None and usage.problem:
        in_use = f"usage unavailable: {usage.problem}"
    if in_use is None and status.groups:
        capacity = resources_summary(status.groups)
        in_use = None if capacity == "unknown" else f"capacity {capacity}"
    return Snapshot(
        at=now,
        cluster=str(status.ref),
        state=str(status.state),
        groups=tuple(
            GroupView(g.name, g.ready, g.desired, g.min_replicas, g.max_replicas) for g in status.groups
        ),
        pending=pending,
        usage=in_use,
        action=action,
        decision=change,
        reason=reason,
        decided_at=status.last_decision.at if status.last_decision else None,
        time_left=f"expires {until(status.expires_at, now)}" if status.expires_at else None,
        dashboard=status.connect.dashboard_url if status.connect else None,
        stuck=status.stuck_cause,
        control="; ".join(control) or None,
    )


def summarize(history: list[Snapshot]) -> dict[str, Any]:
    """What happened over a run of snapshots: peaks, whether the desired count rose and later fell,
    and the decisions seen. The example notebook writes this; its test asserts on it."""
    live = [s for s in history if s.state != DELETED and s.error is None]
    desired = [s.desired for s in live]
    ups = [i for i in range(1, len(desired)) if desired[i] > desired[i - 1]]
    downs = [i for i in range(1, len(desired)) if desired[i] < desired[i - 1]]
    return {
        "snapshots": len(history),
        "states": list(dict.fromkeys(s.state for s in history)),
        "peak_desired": max(desired, default=0),
        "peak_ready": max((s.ready for s in live), default=0),
        "scaled_up": bool(ups),
        "scaled_down": bool(downs) and bool(ups) and downs[-1] > ups[0],
        "actions": sorted({s.action for s in live if s.action}),
        "decisions": list(dict.fromkeys(f"{s.decision} ({s.reason})" for s in live if s.decision)),
        "deleted": bool(history) and history[-1].state == DELETED,
    }
