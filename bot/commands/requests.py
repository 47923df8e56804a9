"""Requests over a limit: asking for approval, `approve`, `deny`, `pending`.

A request over a limit is not refused: it is stored (`bot.approvals`) and posted to the DevOps
channel with Approve/Deny buttons. Approving claims the request first (compare-and-set), then runs
the stored command as the requester with limits lifted, and tells the requester what came of it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from bot.adapters.base import (
    Button,
    ButtonStyle,
    Destination,
    Notification,
    Reply,
    ReplyStatus,
    Table,
)
from bot.approvals import ApprovalRequest, ApprovalState, ApprovalStore, new_id
from bot.authz import Identity
from bot.commands.context import Approval, Context, Outcome, clock_time, error, refused, until
from bot.commands.parser import ParsedCommand


def request_approval(ctx: Context, cmd: ParsedCommand, reasons: list[str], target: str) -> Outcome:
    """Store `cmd` for an approver and say so; the same person asking again gets the same id."""
    me = ctx.identity
    for r in ctx.approvals.list():
        if r.requester == me.key and r.command == cmd.text and r.expires_at > ctx.now:
            return Outcome(
                Reply(
                    f"`{cmd.text}` is already waiting for approval as `{r.id}` "
                    f"(expires {until(r.expires_at, ctx.now)}).",
                    ReplyStatus.PENDING,
                ),
                target=target,
            )
    rid = new_id()
    while ctx.approvals.get(rid) is not None:
        rid = new_id()
    req = ApprovalRequest(
        id=rid,
        requester=me.key,
        command=cmd.text,
        reasons=tuple(reasons),
        created_at=ctx.now,
        expires_at=ctx.now + ctx.access.request_expiry,
        requester_display=me.display,
        requester_groups=tuple(sorted(me.groups)),
        target=target,
        channel_id=ctx.channel_id,
        thread_id=ctx.thread_id,
    )
    ctx.approvals.add(req)
    over = ", ".join(reasons)
    devops = ctx.devops_destination()
    notes: tuple[Notification, ...] = ()
    where = "DevOps has been asked"
    if devops is not None:
        notes = (
            Notification(
                devops,
                Reply(
                    f"{me.shown} asks for `{cmd.text}`, over their limits ({over}). "
                    f"Expires {until(req.expires_at, ctx.now)}.",
                    ReplyStatus.PENDING,
                    title=f"Approval needed: {rid}",
                    buttons=(
                        Button("Approve", f"approve {rid}", ButtonStyle.PRIMARY),
                        Button("Deny", f"deny {rid}", ButtonStyle.DANGER),
                    ),
                ),
                key=f"approval:{rid}",
            ),
        )
    else:
        where = "no DevOps channel is configured for this platform; approvers see it with `pending`"
    return Outcome(
        Reply(
            f"`{cmd.text}` is over your limits ({over}), so it waits for an approver as `{rid}` "
            f"({where}; expires {until(req.expires_at, ctx.now)}). I'll tell you the outcome.",
            ReplyStatus.PENDING,
        ),
        notes,
        target=target,
    )


def _requester_note(req: ApprovalRequest, reply: Reply) -> tuple[Notification, ...]:
    who = Identity.from_key(req.requester, req.requester_display)
    if who is None:
        return ()
    return (
        Notification(
            Destination.user(who.platform, who.user_id),
            reply,
            key=f"approval:{req.id}",
            thread_channel=req.channel_id,
            thread_id=req.thread_id,
        ),
    )


def _decidable(ctx: Context, rid: str) -> ApprovalRequest | Outcome:
    req = ctx.approvals.get(rid)
    if req is None:
        return error(f"no request `{rid}` (see `pending` for the open ones)")
    if req.state is not ApprovalState.PENDING:
        by = f" by {req.decided_by}" if req.decided_by else ""
        at = f" at {clock_time(req.decided_at)}" if req.decided_at else ""
        return error(f"request `{rid}` was already {req.state}{by}{at}; nothing more to do")
    if req.expires_at <= ctx.now:
        expire(ctx.approvals, req, ctx.now)
        return error(f"request `{rid}` expired {until(req.expires_at, ctx.now)}; the requester can ask again")
    return req


def expire(approvals: ApprovalStore, req: ApprovalRequest, now: datetime) -> tuple[Notification, ...]:
    """Mark one request expired (if nobody decided it meanwhile) and word the requester's notice."""
    if not approvals.update(req.decided(ApprovalState.EXPIRED, None, now), ApprovalState.PENDING):
        return ()
    return _requester_note(
        req,
        Reply(
            f"Your request `{req.command}` ({req.id}) expired without a decision. Ask again if you "
            "still need it, or talk to DevOps.",
            ReplyStatus.ERROR,
        ),
    )


def approve(ctx: Context, cmd: ParsedCommand) -> Outcome:
    rid = str(cmd.str_value("id"))
    found = _decidable(ctx, rid)
    if isinstance(found, Outcome):
        return found
    req = found
    if req.requester == ctx.identity.key:
        return refused("you cannot approve your own request; ask another approver")
    claimed = req.decided(ApprovalState.APPROVED, ctx.identity.key, ctx.now, "running")
    if not ctx.approvals.update(claimed, ApprovalState.PENDING):
        return error(f"request `{rid}` was decided by someone else just now; see `pending`")
    requester = Identity.from_key(req.requester, req.requester_display)
    if requester is None:
        ctx.approvals.update(replace(claimed, outcome="failed: unreadable requester"), ApprovalState.APPROVED)
        return error(f"request `{rid}` names a requester I cannot read ({req.requester}); nothing was run")
    requester = replace(requester, groups=frozenset(req.requester_groups))
    result = ctx.run_as(
        requester,
        req.command,
        f"approval {rid} by {ctx.identity.key}",
        Approval(rid, ctx.identity.key, ctx.now),
    )
    first = result.reply.text.splitlines()[0] if result.reply.text else str(result.reply.status)
    done = result.reply.status is ReplyStatus.OK
    ctx.approvals.update(
        replace(claimed, outcome=("done: " if done else "failed: ") + first), ApprovalState.APPROVED
    )
    verdict = "" if done else " but it could not be carried out"
    to_requester = Reply(
        f"Your request `{req.command}` ({rid}) was approved by {ctx.identity.shown}{verdict}: {first}",
        result.reply.status,
        fields=result.reply.fields,
    )
    return Outcome(
        Reply(
            f"Approved `{rid}` (`{req.command}` for {req.requester}){verdict}: {first}", result.reply.status
        ),
        _requester_note(req, to_requester) + result.notifications,
        audit_result="approved" if done else "approved-failed",
        target=req.target or None,
    )


def deny(ctx: Context, cmd: ParsedCommand) -> Outcome:
    rid = str(cmd.str_value("id"))
    reason = (cmd.str_value("reason") or "").strip()
    found = _decidable(ctx, rid)
    if isinstance(found, Outcome):
        return found
    req = found
    decided = req.decided(ApprovalState.DENIED, ctx.identity.key, ctx.now, reason)
    if not ctx.approvals.update(decided, ApprovalState.PENDING):
        return error(f"request `{rid}` was decided by someone else just now; see `pending`")
    because = f": {reason}" if reason else ""
    note = Reply(
        f"Your request `{req.command}` ({rid}) was denied by {ctx.identity.shown}{because}.",
        ReplyStatus.REFUSED,
    )
    return Outcome(
        Reply(f"Denied `{rid}` (`{req.command}` for {req.requester}){because}."),
        _requester_note(req, note),
        audit_result="denied",
        target=req.target or None,
    )


def pending(ctx: Context, cmd: ParsedCommand) -> Outcome:
    items = [r for r in ctx.approvals.list() if r.expires_at > ctx.now]
    if not ctx.grant.approver:
        items = [r for r in items if r.requester == ctx.identity.key]
    if not items:
        return Outcome(Reply("No requests are waiting for approval."))
    table = Table(
        ("ID", "REQUESTER", "COMMAND", "OVER", "EXPIRES"),
        tuple(
            (r.id, r.requester, r.command, ", ".join(r.reasons), until(r.expires_at, ctx.now)) for r in items
        ),
    )
    hint = "Approve with `approve ID`, deny with `deny ID [reason]`." if ctx.grant.approver else ""
    return Outcome(Reply(f"{len(items)} waiting for approval. {hint}".strip(), table=table))
