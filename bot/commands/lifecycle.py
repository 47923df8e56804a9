"""Handlers that create, extend, delete and release clusters.

The profile's own bounds (its worker groups' maximum workers, its `maxTtl`) are hard: asking past
them is an error with the allowed range. The person's limits (AccessPolicy) are soft: past them the
request waits for an approver.
"""

from __future__ import annotations

from datetime import timedelta

from bot.adapters.base import Reply, ReplyStatus
from bot.authz import over_limits
from bot.commands.context import Context, Outcome, clock_time, error, ok, plural, until
from bot.commands.parser import ParsedCommand, suggest
from bot.commands.requests import request_approval
from bot.commands.views import connect_fields
from controller import keys
from controller.annotations import ApprovedLimits, encode_approved_limits, encode_time
from controller.backends.base import ClusterNotFound, ClusterRequest, ClusterState, NotManaged
from controller.domain import ClusterRef
from controller.policy.durations import format_duration, parse_duration


def create(ctx: Context, cmd: ParsedCommand) -> Outcome:
    name = str(cmd.str_value("name"))
    ns, profile_name = ctx.namespace, ctx.profile
    if ns is None or profile_name is None or ctx.policy_set is None:
        return error("no namespace or profile to create in: your access rules name none")
    profile = ctx.policy_set.cluster_profiles.get(profile_name)
    if profile is None:
        known = sorted(ctx.policy_set.cluster_profiles)
        near = suggest(profile_name, known)
        hint = f" Did you mean `{near}`?" if near else f" Profiles: {', '.join(known) or 'none'}."
        return error(f"no profile named {profile_name}.{hint}")
    spec = profile.spec
    workers, gpus, ttl = cmd.int_value("workers"), cmd.int_value("gpus"), cmd.duration_value("ttl")
    cpu, gpu = spec.cpu_group, spec.gpu_group
    if workers is not None and cpu is None:
        return error(f"profile {profile.name} has no CPU worker group; use gpus= instead")
    if gpus and gpu is None:
        with_gpus = sorted(n for n, p in ctx.policy_set.cluster_profiles.items() if p.spec.gpu_group)
        return error(
            f"profile {profile.name} has no GPU workers "
            f"(profiles with GPUs: {', '.join(with_gpus) or 'none'})"
        )
    if cpu is not None and workers is not None and not cpu.min_workers <= workers <= cpu.max_workers:
        return error(
            f"profile {profile.name} takes {cpu.min_workers} to {cpu.max_workers} workers "
            f"(asked for {workers})"
        )
    if gpu is not None and gpus is not None and not gpu.min_workers <= gpus <= gpu.max_workers:
        return error(
            f"profile {profile.name} takes {gpu.min_workers} to {gpu.max_workers} GPU workers "
            f"(asked for {gpus})"
        )
    max_ttl = parse_duration(spec.max_ttl)
    if ttl is not None and ttl > max_ttl:
        return error(f"profile {profile.name} allows a time-to-live of at most {spec.max_ttl}")
    managed = ctx.settings.namespaces if ctx.settings.backend == "kuberay" else None
    if managed is not None and ns not in managed:
        # Refused before anything is asked or stored: rayops' Roles grant nothing there.
        return error(f"rayops does not manage namespace {ns} (it manages {', '.join(managed)}); ask DevOps")
    ref = ClusterRef(ns, name)
    try:
        existing = ctx.backend.get(ref)
        return error(
            f"a cluster named {name} already exists in {ns} (requested by "
            f"{existing.requester or 'someone else'}, {existing.state}); pick another name"
        )
    except NotManaged:
        return error(
            f"a cluster named {name} already exists in {ns} and is not managed by rayops; pick another name"
        )
    except ClusterNotFound:
        pass
    eff_workers = workers if workers is not None else (cpu.default_workers if cpu else 0)
    gpu_workers = gpus if gpus is not None else (gpu.default_workers if gpu else 0)
    eff_gpus = gpu_workers * gpu.gpu if gpu else 0
    eff_ttl = ttl if ttl is not None else parse_duration(spec.default_ttl)
    if not ctx.approved:
        limits = ctx.grant.limits_for(ns, profile.name)
        if limits is not None:
            mine = [c for c in ctx.backend.list() if c.requester == ctx.identity.key]
            reasons = over_limits(
                limits,
                workers=eff_workers + gpu_workers,  # workersPerCluster counts every group
                gpus=eff_gpus,
                ttl=eff_ttl,
                clusters_after=len(mine) + 1,
            )
            if reasons:
                return request_approval(ctx, cmd, reasons, str(ref))
    annotations: dict[str, str] = {}
    if ctx.approval is not None:
        # Recorded at create, so the controller's first tick already caps at the approved size, not
        # at the requester's own limits (controller/limits.py takes the larger).
        approved = ApprovedLimits(
            eff_workers + gpu_workers, eff_gpus, ctx.approval.request, ctx.approval.by, ctx.approval.at
        )
        annotations[keys.ANN_APPROVED_LIMITS] = encode_approved_limits(approved)
    status = ctx.backend.create(
        ClusterRequest(
            name=name,
            namespace=ns,
            profile=profile.name,
            requester=ctx.identity.key,
            workers=workers,
            gpus=gpus,
            ttl_seconds=int(ttl.total_seconds()) if ttl is not None else None,
            annotations=annotations,
        )
    )
    size = plural(eff_workers, "worker") + (f", {plural(gpu_workers, 'GPU worker')}" if gpu_workers else "")
    expires = f"expires {until(status.expires_at, ctx.now)}" if status.expires_at else "no expiry"
    return Outcome(
        Reply(
            f"Creating {name} in {ns} (profile {profile.name}, {size}, {expires}). "
            f"State: {status.state}. "
            + ("It is ready." if status.state is ClusterState.READY else "I'll tell you when it is ready."),
            fields=tuple(connect_fields(status.connect)),
        ),
        target=str(ref),
    )


def delete(ctx: Context, cmd: ParsedCommand) -> Outcome:
    ctx.backend.delete(ctx.ref)
    return ok(f"Deleted {ctx.ref.name} in {ctx.ref.namespace}.")


def release(ctx: Context, cmd: ParsedCommand) -> Outcome:
    ctx.backend.release(ctx.ref)
    return ok(
        f"Released {ctx.ref}: rayops no longer manages it (annotations and labels removed, pending "
        "removals cleared). It keeps running as it is."
    )


def extend(ctx: Context, cmd: ParsedCommand) -> Outcome:
    target = ctx.target
    assert target is not None
    by = cmd.duration_value("duration") or timedelta(0)
    base = max(ctx.now, target.expires_at) if target.expires_at else ctx.now
    new_expiry = base + by
    left = new_expiry - ctx.now
    profile = ctx.policy_set.cluster_profiles.get(target.profile or "") if ctx.policy_set else None
    if profile is not None:
        max_ttl = parse_duration(profile.spec.max_ttl)
        if left > max_ttl:
            room = max_ttl - (base - ctx.now)
            hint = (
                f" (you can add up to {format_duration(room)} now)"
                if room > timedelta(0)
                else " (no more time can be added now)"
            )
            return error(
                f"profile {profile.name} allows at most {profile.spec.max_ttl} ahead; "
                f"{format_duration(left)} asked{hint}"
            )
    if not ctx.approved and not ctx.grant.devops_in(ctx.ref.namespace):
        limits = ctx.grant.limits_for(ctx.ref.namespace, target.profile or "")
        reasons = over_limits(limits, ttl=left) if limits is not None else []
        if reasons:
            return request_approval(ctx, cmd, reasons, str(ctx.ref))
    ctx.backend.set_annotations(ctx.ref, {keys.ANN_EXPIRES_AT: encode_time(new_expiry)})
    return Outcome(
        Reply(
            f"{ctx.ref.name} now expires {clock_time(new_expiry)} ({until(new_expiry, ctx.now)}).",
            ReplyStatus.OK,
        )
    )
