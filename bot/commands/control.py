"""Handlers that steer autoscaling: pins, pauses, and the global switch.

The bot never writes `replicas`: a `scale` is a pin annotation the controller honours (reason
MANUAL_PIN) until `resume` or the pin's `until`; a pause is the `rayops.io/paused` annotation
(reason PAUSED); `pause-all` is the global switch (reason GLOBAL_PAUSE). So the controller stays
the only writer of worker counts and every change shows up in `why`.
"""

from __future__ import annotations

from dataclasses import replace

from bot.adapters.base import Reply, ReplyStatus
from bot.authz import over_limits
from bot.commands.context import Context, Outcome, clock_time, error, ok
from bot.commands.parser import ParsedCommand, suggest
from bot.commands.requests import request_approval
from controller import keys
from controller.annotations import (
    ApprovedLimits,
    decode_approved_limits,
    encode_approved_limits,
    encode_pin,
)
from controller.backends.base import GroupStatus
from controller.domain import ManualPin


def _default_group(groups: tuple[GroupStatus, ...]) -> GroupStatus:
    """The first group without GPUs (the usual "workers"), else the first group."""
    return next((g for g in groups if not g.resources.get("GPU")), groups[0])


def scale(ctx: Context, cmd: ParsedCommand) -> Outcome:
    target = ctx.target
    assert target is not None
    n = cmd.int_value("n") or 0
    if not target.groups:
        return error(f"{target.ref.name} has no worker groups to scale")
    wanted = cmd.str_value("group")
    if wanted is not None:
        group = next((g for g in target.groups if g.name == wanted), None)
        if group is None:
            names = [g.name for g in target.groups]
            near = suggest(wanted, names)
            hint = f"did you mean `{near}`?" if near else f"groups: {', '.join(names)}"
            return error(f"{target.ref.name} has no worker group {wanted} ({hint})")
    else:
        group = _default_group(target.groups)
    if n > group.max_replicas:
        return error(
            f"group {group.name} of {target.ref.name} allows at most {group.max_replicas} workers "
            f"(asked for {n})"
        )
    if n < group.min_replicas:
        return error(
            f"group {group.name} of {target.ref.name} keeps at least {group.min_replicas} workers "
            f"(asked for {n})"
        )
    if not ctx.approved and not ctx.grant.devops_in(ctx.ref.namespace):
        limits = ctx.grant.limits_for(ctx.ref.namespace, target.profile or "")
        approved = decode_approved_limits(target.annotations.get(keys.ANN_APPROVED_LIMITS))
        if limits is not None and approved is not None:
            # What an approver already allowed this cluster needs no second approval (the controller
            # caps at the same larger value, controller/limits.py).
            limits = replace(
                limits,
                workers_per_cluster=max(limits.workers_per_cluster, approved.workers),
                gpus_per_cluster=max(limits.gpus_per_cluster, approved.gpus),
            )
        if limits is not None:
            # As the controller counts them (controller/limits.py): workers over all groups, GPUs
            # over the GPU groups, with this group at its pinned count.
            counts = {g.name: (n if g.name == group.name else g.desired) for g in target.groups}
            gpus = sum(counts[g.name] * g.resources.get("GPU", 0.0) for g in target.groups)
            reasons = over_limits(limits, workers=sum(counts.values()), gpus=int(gpus))
            if reasons:
                return request_approval(ctx, cmd, reasons, str(ctx.ref))
    hold = cmd.duration_value("for")
    pin_until = ctx.now + (hold or ctx.settings.pin_default)
    if hold is None and target.expires_at is not None and target.expires_at > ctx.now:
        pin_until = min(pin_until, target.expires_at)
    pin = ManualPin(group.name, n, pin_until, ctx.identity.key)
    updates = {keys.ANN_MANUAL_REPLICAS: encode_pin(pin)}
    if ctx.approval is not None:
        updates[keys.ANN_APPROVED_LIMITS] = _approved_limits(ctx, group, n)
    ctx.backend.set_annotations(ctx.ref, updates)
    note = " Autoscaling is paused for it too; `resume` clears both." if target.paused else ""
    return Outcome(
        Reply(
            f"Pinned {target.ref.name}/{group.name} at {n} workers until {clock_time(pin_until)}: the "
            "controller keeps it there instead of autoscaling. "
            f"`resume {target.ref.name}` ends the pin.{note}",
            ReplyStatus.OK,
        )
    )


def _approved_limits(ctx: Context, group: GroupStatus, n: int) -> str:
    """An approved pin past the requester's limits also raises the cluster's approved limits (never
    lowering what an earlier approval allowed), or the controller would cap the pin back."""
    target, approval = ctx.target, ctx.approval
    assert target is not None and approval is not None
    counts = {g.name: (n if g.name == group.name else g.desired) for g in target.groups}
    gpus = sum(counts[g.name] * g.resources.get("GPU", 0.0) for g in target.groups)
    now = ApprovedLimits(sum(counts.values()), int(gpus), approval.request, approval.by, approval.at)
    before = decode_approved_limits(target.annotations.get(keys.ANN_APPROVED_LIMITS))
    return encode_approved_limits(before.widened(now) if before is not None else now)


def pause(ctx: Context, cmd: ParsedCommand) -> Outcome:
    target = ctx.target
    assert target is not None
    if target.paused:
        return ok(f"{target.ref.name} is already paused; `resume {target.ref.name}` to autoscale again.")
    ctx.backend.set_annotations(ctx.ref, {keys.ANN_PAUSED: "true"})
    return ok(
        f"Paused autoscaling of {target.ref.name}: its workers stay as they are until "
        f"`resume {target.ref.name}`."
    )


def resume(ctx: Context, cmd: ParsedCommand) -> Outcome:
    target = ctx.target
    assert target is not None
    if not target.paused and target.pin is None:
        return ok(f"{target.ref.name} is neither paused nor pinned: it is already autoscaled.")
    ctx.backend.set_annotations(ctx.ref, {keys.ANN_PAUSED: None, keys.ANN_MANUAL_REPLICAS: None})
    ended = " and ".join(x for x, on in (("pause", target.paused), ("pin", target.pin is not None)) if on)
    extra = ""
    if ctx.switch.get().paused:
        extra = " All autoscaling is still paused globally (`resume-all`, DevOps)."
    return ok(f"Resumed autoscaling of {target.ref.name} (ended its {ended}).{extra}")


def pause_all(ctx: Context, cmd: ParsedCommand) -> Outcome:
    state = ctx.switch.get()
    if state.paused:
        since = f" since {clock_time(state.at)}" if state.at else ""
        return ok(f"All autoscaling is already paused (by {state.by or 'someone'}{since}).")
    ctx.switch.set(True, ctx.identity.key, ctx.now)
    return ok("Paused all autoscaling: the controller changes no cluster until `resume-all`.")


def resume_all(ctx: Context, cmd: ParsedCommand) -> Outcome:
    if not ctx.switch.get().paused:
        return ok("All autoscaling is already on.")
    ctx.switch.set(False, ctx.identity.key, ctx.now)
    return ok("Resumed all autoscaling. Per-cluster pauses and pins stay as they were.")
