"""Handlers that only read: list, status, why, policy, connect, whoami, help."""

from __future__ import annotations

from bot.adapters.base import Image, Reply, ReplyField, Table
from bot.authz import describe
from bot.chart import render_chart
from bot.commands.context import Context, Outcome
from bot.commands.parser import ParsedCommand
from bot.commands.table import BY_NAME, COMMANDS, Access
from bot.commands.views import (
    clusters_table,
    connect_fields,
    decision_line,
    event_line,
    groups_table,
    policy_lines,
    status_fields,
)
from controller.policy.loader import Ambiguous, UnknownPolicy


def list_clusters(ctx: Context, cmd: ParsedCommand) -> Outcome:
    clusters = [c for c in ctx.backend.list(ctx.namespace) if ctx.grant.may_see(c.ref.namespace)]
    if not clusters:
        where = f" in {ctx.namespace}" if ctx.namespace else ""
        return Outcome(Reply(f"No clusters{where} that you can see. Create one with `create NAME`."))
    mine = sum(1 for c in clusters if c.requester == ctx.identity.key)
    return Outcome(
        Reply(f"{len(clusters)} clusters ({mine} yours).", table=clusters_table(clusters, ctx.now))
    )


def status(ctx: Context, cmd: ParsedCommand) -> Outcome:
    s = ctx.target
    assert s is not None
    image = None
    if ctx.want_chart:
        points = ctx.history.points(s.ref, ctx.now - ctx.settings.chart_window)
        if points:
            png = render_chart(points, f"{s.ref.name}: workers vs demand", ctx.now, ctx.settings.chart_window)
            image = Image(f"{s.ref.name}-workers.png", png, f"workers and pending demand of {s.ref.name}")
    global_pause = ctx.switch.get()
    footer = "All autoscaling is paused globally (pause-all)." if global_pause.paused else None
    return Outcome(
        Reply(
            f"{s.ref.name} in {s.ref.namespace}: {s.state}",
            title=f"Ray cluster {s.ref.name}",
            fields=tuple(status_fields(s, ctx.now)),
            table=groups_table(s.groups) if s.groups else None,
            image=image,
            footer=footer,
        )
    )


def why(ctx: Context, cmd: ParsedCommand) -> Outcome:
    s = ctx.target
    assert s is not None
    lines: list[str] = []
    if ctx.switch.get().paused:
        lines.append("All autoscaling is paused globally (pause-all): nothing changes until resume-all.")
    if s.paused:
        lines.append("This cluster is paused: its workers stay as they are until `resume`.")
    if s.pin is not None:
        lines.append(f"Pinned from chat: {s.pin.group} at {s.pin.replicas} workers.")
    events = ctx.history.events(s.ref, 10)
    if events:
        lines.append("Recent decisions:")
        lines += [f"  {event_line(e)}" for e in events]
    if s.last_decision is not None:
        lines.append("Last decision:")
        lines.append(f"  {decision_line(s.last_decision)}")
    if not events and s.last_decision is None:
        lines.append(
            "No decisions recorded yet: the controller records one per worker group each tick for the "
            "clusters it manages (is it running, and does a scaling policy apply? see `policy`)."
        )
    return Outcome(Reply("\n".join(lines), title=f"Why {s.ref.name} has the workers it has"))


def policy(ctx: Context, cmd: ParsedCommand) -> Outcome:
    s = ctx.target
    assert s is not None
    if ctx.policy_set is None:
        return Outcome(Reply("No policy set is loaded yet."))
    fields: list[ReplyField] = []
    for g in s.groups:
        # The controller's own rule (controller.policy.selection), on the same labels and annotations.
        sel = ctx.policy_set.scaling_policy_for(s.ref.namespace, s.ref.name, s.labels, s.annotations, g.name)
        if sel is None:
            text = "no scaling policy applies (not autoscaled)"
        elif isinstance(sel, Ambiguous | UnknownPolicy):
            text = f"none: {sel.reason}"
        else:
            text = f"{sel.name}: " + "; ".join(policy_lines(sel))
        fields.append(ReplyField(g.name, text))
    profile = f"profile {s.profile}" if s.profile else "no profile"
    return Outcome(
        Reply(
            f"{s.ref.name} ({profile}); policy set revision {ctx.policy_set.revision}.",
            title=f"Scaling policy of {s.ref.name}",
            fields=tuple(fields),
        )
    )


def connect(ctx: Context, cmd: ParsedCommand) -> Outcome:
    s = ctx.target
    assert s is not None
    ready = "" if str(s.state) == "READY" else f" (it is {s.state}: the addresses answer once it is READY)"
    return Outcome(Reply(f"Connect to {s.ref.name}{ready}:", fields=tuple(connect_fields(s.connect))))


def whoami(ctx: Context, cmd: ParsedCommand) -> Outcome:
    lines = describe(ctx.grant)
    return Outcome(Reply(f"You are {ctx.identity.shown}.\n" + "\n".join(lines)))


def help_command(ctx: Context, cmd: ParsedCommand) -> Outcome:
    topic = cmd.str_value("command")
    if topic is not None:
        spec = BY_NAME[topic]
        lines = [spec.help, f"Usage: {spec.usage}"]
        for p in (*spec.params, *spec.options):
            if p.help:
                lines.append(f"  {p.name}: {p.help}")
        if spec.examples:
            lines.append("Examples: " + "; ".join(f"`{e}`" for e in spec.examples))
        if spec.access is not Access.MEMBER:
            lines.append(f"Who: {spec.access}")
        return Outcome(Reply("\n".join(lines), title=spec.name))
    rows = tuple((c.usage, c.summary) for c in COMMANDS)
    return Outcome(
        Reply("Commands (`help COMMAND` for one):", table=Table(("USAGE", "WHAT"), rows)),
    )
