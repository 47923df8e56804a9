"""How clusters, decisions and policies read in chat: `ClusterStatus` and friends to `Reply` parts.

Kept apart from the handlers so the notifier (cluster ready: connect info) and `rayops up` show
clusters the same way, and so wording is tested in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.adapters.base import ReplyField, Table
from bot.commands.context import clock_time, until
from controller.backends.base import ClusterStatus, ConnectInfo, GroupStatus
from controller.domain import Decision
from controller.events import Event
from controller.policy.model import ScalingPolicy


def workers_summary(groups: Sequence[GroupStatus]) -> str:
    if not groups:
        return "no worker groups"
    return ", ".join(f"{g.name} {g.ready}/{g.desired}" for g in groups)


def _fmt_amount(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


def resources_summary(groups: Sequence[GroupStatus]) -> str:
    """Capacity of the ready workers against what is asked for, per resource (CPU, GPU)."""
    ready: dict[str, float] = {}
    desired: dict[str, float] = {}
    for g in groups:
        for name, amount in g.resources.items():
            if name in ("CPU", "GPU"):
                ready[name] = ready.get(name, 0.0) + amount * g.ready
                desired[name] = desired.get(name, 0.0) + amount * g.desired
    if not desired:
        return "unknown"
    return ", ".join(f"{k} {_fmt_amount(ready[k])} of {_fmt_amount(desired[k])}" for k in sorted(desired))


def decision_line(d: Decision) -> str:
    reasons = "; ".join(f"{r.code}: {r.message}" for r in d.reasons) or "no reason recorded"
    when = f"{d.at:%H:%M:%S} " if d.at else ""
    change = f"{d.current} → {d.target}" if d.target != d.current else f"hold at {d.current}"
    dry = " (dry run)" if d.dry_run else ""
    return f"{when}{d.ref.group}: {change}{dry} by {d.policy}: {reasons}"


def event_line(e: Event) -> str:
    group = e.data.get("group")
    prefix = f"{e.at:%H:%M:%S} " + (f"{group}: " if group else "")
    return f"{prefix}{e.type}: {e.message}"


def signal_values(d: Decision | None, signal_type: str) -> str | None:
    """The last decision's readings of one signal type, as `name value` pairs (`pending-cpu 3`).

    Reasons of the decision function carry `{"signal", "type", "value"}` for every signal it read
    (controller/policy/signals.py), so pending demand and utilization come from there.
    """
    if d is None:
        return None
    out = []
    for r in d.reasons:
        v = r.data.get("value")
        if r.data.get("type") == signal_type and isinstance(v, int | float) and not isinstance(v, bool):
            suffix = "%" if signal_type == "utilization" else ""
            out.append(f"{r.data.get('signal', signal_type)} {_fmt_amount(float(v))}{suffix}")
    return ", ".join(dict.fromkeys(out)) or None


def connect_fields(c: ConnectInfo | None) -> list[ReplyField]:
    if c is None:
        return [ReplyField("Connect", "not known yet")]
    out = []
    if c.client_address:
        out.append(ReplyField("Ray client", f'ray.init("{c.client_address}")'))
    if c.driver_address:
        # The one variable of controller.localray.DRIVER_ENV a driver cannot do without.
        out.append(
            ReplyField(
                "Ray driver (this machine)",
                f'RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, then ray.init("{c.driver_address}")',
            )
        )
    if c.dashboard_url:
        out.append(ReplyField("Dashboard", c.dashboard_url))
    if c.job_submission_url and c.job_submission_url != c.dashboard_url:
        out.append(ReplyField("Jobs", c.job_submission_url))
    return out or [ReplyField("Connect", "not known yet")]


def status_fields(s: ClusterStatus, now: datetime) -> list[ReplyField]:
    state = str(s.state)
    if s.stuck_cause:
        state += f" ({s.stuck_cause})"
    control = []
    if s.paused:
        control.append("paused")
    if s.pin is not None:
        pin_until = f" until {clock_time(s.pin.until)}" if s.pin.until else ""
        control.append(f"pinned: {s.pin.group} at {s.pin.replicas}{pin_until}")
    fields = [
        ReplyField("State", state),
        ReplyField("Workers ready/desired", workers_summary(s.groups)),
        ReplyField("Resources", resources_summary(s.groups)),
    ]
    for label, kind in (("Pending demand", "pendingDemand"), ("Utilization", "utilization")):
        reading = signal_values(s.last_decision, kind)
        if reading is not None:
            fields.append(ReplyField(label, reading))
    if s.last_decision is not None:
        fields.append(ReplyField("Last decision", decision_line(s.last_decision)))
    else:
        fields.append(ReplyField("Last decision", "none recorded yet"))
    if control:
        fields.append(ReplyField("Autoscaling", "; ".join(control)))
    fields.append(ReplyField("Time left", until(s.expires_at, now) if s.expires_at else "no expiry"))
    fields.append(ReplyField("Requested by", s.requester or "not through rayops"))
    if s.profile:
        fields.append(ReplyField("Profile", s.profile))
    return fields + connect_fields(s.connect)


def groups_table(groups: Sequence[GroupStatus]) -> Table:
    return Table(
        ("GROUP", "READY", "DESIRED", "MIN", "MAX"),
        tuple(
            (g.name, str(g.ready), str(g.desired), str(g.min_replicas), str(g.max_replicas)) for g in groups
        ),
    )


def clusters_table(clusters: Sequence[ClusterStatus], now: datetime) -> Table:
    return Table(
        ("NAME", "NAMESPACE", "STATE", "WORKERS", "REQUESTER", "EXPIRES"),
        tuple(
            (
                c.ref.name,
                c.ref.namespace,
                str(c.state) + (" paused" if c.paused else "") + (" pinned" if c.pin else ""),
                f"{sum(g.ready for g in c.groups)}/{sum(g.desired for g in c.groups)}",
                c.requester or "-",
                until(c.expires_at, now) if c.expires_at else "-",
            )
            for c in clusters
        ),
    )


def policy_lines(p: ScalingPolicy) -> list[str]:
    """The numbers people ask about: bounds, signals, how fast it moves, budget, schedules."""
    s = p.spec
    lines = [
        f"mode {s.mode}, {s.min_replicas} to {s.max_replicas} workers"
        + (", dry run" if s.dry_run else "")
        + (", paused" if s.paused else "")
    ]
    for sig in s.signals:
        target = getattr(sig, "target", None)
        goal = ""
        if target is not None:
            if target.average_utilization is not None:
                goal = f" target {target.average_utilization:g}% utilization"
            elif target.average_value is not None:
                goal = f" target {target.average_value:g} per worker"
            elif target.value is not None:
                goal = f" target {target.value:g}"
        resource = getattr(sig, "resource", "")
        lines.append(f"signal {sig.name}: {sig.type} {resource}{goal}".rstrip())
    down = s.behavior.scale_down
    up = s.behavior.scale_up
    lines.append(
        f"scale-up window {up.stabilization_window_seconds}s, "
        f"scale-down window {down.stabilization_window_seconds}s"
    )
    if s.budget is not None:
        parts = []
        if s.budget.worker_hours:
            parts.append(f"{s.budget.worker_hours:g} worker-hours")
        if s.budget.gpu_hours:
            parts.append(f"{s.budget.gpu_hours:g} GPU-hours")
        lines.append(
            f"budget {' and '.join(parts)} per {s.budget.window} "
            f"(then at most {s.budget.exhausted_max_replicas})"
        )
    for sch in s.schedules:
        bounds = ", ".join(
            f"{k} {v}" for k, v in (("min", sch.min_replicas), ("max", sch.max_replicas)) if v is not None
        )
        lines.append(f"schedule {sch.name}: {sch.cron} for {sch.duration} ({sch.timezone}) {bounds}".rstrip())
    lines.append(f"missing data: {s.on_missing_data.action}")
    return lines
