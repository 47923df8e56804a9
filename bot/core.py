"""The bot: one pipeline every command goes through, whatever the platform.

    text -> parse -> who is asking (grant) -> find the target cluster -> authorize (bot.authz.check)
         -> confirm if destructive -> handler -> audit -> redact -> Reply (+ notifications)

Everything that decides lives in this pipeline and in the handlers; adapters only carry text in
and replies out. `execute` is synchronous (backends are synchronous; `handle` runs it in a worker
thread), total (any failure becomes an answer; an unexpected one is logged with its trace and a
reference the person can quote) and redacted (no token survives into a reply, a notification or
the audit trail).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime

from bot import authz
from bot.adapters.base import (
    Button,
    ButtonStyle,
    GroupResolver,
    IncomingCommand,
    Notification,
    NotificationSink,
    Platform,
    Reply,
    ReplyField,
    ReplyStatus,
    Table,
)
from bot.approvals import ApprovalState, ApprovalStore
from bot.audit import AuditLog, AuditRecord
from bot.authz import AccessView, Grant, Identity
from bot.chart import History, NoHistory
from bot.commands.context import Approval, Context, Outcome, error, refused
from bot.commands.parser import ParsedCommand, ParseError, parse, suggest
from bot.commands.registry import HANDLERS
from bot.commands.requests import expire
from bot.commands.table import Access, is_destructive
from bot.confirm import ConfirmationStore, Refusal
from bot.redact import redact
from bot.settings import BotSettings
from bot.switch import PauseSwitch
from controller.backends.base import (
    AlreadyExists,
    BackendError,
    BackendUnavailable,
    CapacityExceeded,
    ClusterBackend,
    ClusterNotFound,
    ClusterStatus,
    ConflictError,
)
from controller.domain import ClusterRef
from controller.policy.durations import format_duration
from controller.policy.loader import PolicySet

log = logging.getLogger("rayops.bot")

PolicyProvider = Callable[[], PolicySet | None]
GROUP_LOOKUP_TIMEOUT_S = 5.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Bot:
    """Chat-agnostic command handling over a `ClusterBackend`; see the module docstring."""

    def __init__(
        self,
        backend: ClusterBackend,
        policies: PolicyProvider,
        approvals: ApprovalStore,
        audit: AuditLog,
        switch: PauseSwitch,
        settings: BotSettings,
        *,
        history: History | None = None,
        groups: GroupResolver | None = None,
        notify: NotificationSink | None = None,
        clock: Callable[[], datetime] = _utcnow,
        charts_for: Iterable[Platform] = (Platform.SLACK, Platform.MATRIX),
    ) -> None:
        self.backend = backend
        self.policies = policies
        self.approvals = approvals
        self.audit = audit
        self.switch = switch
        self.settings = settings
        self.history: History = history or NoHistory()
        self.groups = groups
        self.notify = notify
        self.clock = clock
        self.charts_for = frozenset(charts_for)
        self.confirmations = ConfirmationStore(settings.confirm_ttl)

    # --- async entry points (adapters) ----------------------------------------------------------

    async def handle(self, command: IncomingCommand) -> Reply:
        """Answer one command; notifications it causes (an approval request, a requester's
        outcome) go to `notify`. Never raises."""
        identity = await self._identity(command)
        outcome = await asyncio.to_thread(
            self.execute, identity, command.command_text, channel=command.channel_id, thread=command.thread_id
        )
        await self.deliver(outcome.notifications)
        return outcome.reply

    async def tick(self) -> None:
        """Periodic housekeeping (every poll interval): expire approvals and tell their requesters."""
        notes = await asyncio.to_thread(self.expire_requests)
        await self.deliver(notes)

    async def deliver(self, notifications: Iterable[Notification]) -> None:
        for n in notifications:
            if self.notify is None:
                log.debug("no notification sink; dropping a notification to %s", n.to)
                continue
            try:
                await self.notify.post_notification(n)
            except Exception:  # a sink must not raise, but one that does must not lose the reply
                log.exception("posting a notification to %s failed", n.to)

    async def _identity(self, command: IncomingCommand) -> Identity:
        identity = Identity(command.platform, command.user_id, command.user_display)
        if self.groups is None or not self._access().needs_groups:
            return identity
        try:
            groups = await asyncio.wait_for(
                self.groups.groups_of(command.platform, command.user_id), GROUP_LOOKUP_TIMEOUT_S
            )
        except Exception as e:  # no groups means fewer rights, never more
            log.warning("group lookup for %s failed (%s); using no groups", identity.key, e)
            groups = frozenset()
        return replace(identity, groups=frozenset(groups))

    # --- the pipeline ---------------------------------------------------------------------------

    def _access(self) -> AccessView:
        ps = self.policies()
        return AccessView.of(ps.access_policies.values()) if ps is not None else AccessView()

    def execute(
        self,
        identity: Identity,
        text: str,
        *,
        channel: str | None = None,
        thread: str | None = None,
        confirmed: bool = False,
        approved: bool = False,
        via: str | None = None,
        approval: Approval | None = None,
    ) -> Outcome:
        """Run one command text as `identity`; total and redacted. `approval` (which implies
        `approved`) is the approval being carried out, for handlers that record it."""
        try:
            outcome = self._execute(identity, text, channel, thread, confirmed, approved, via, approval)
        except Exception:
            ref = secrets.token_hex(4)
            log.exception("command failed (ref %s) for %s: %r", ref, identity.key, text[:200])
            outcome = Outcome(
                Reply(
                    f"Something went wrong on my side (reference {ref} in the bot's log). Check the "
                    "cluster's `status` before trying again.",
                    ReplyStatus.ERROR,
                )
            )
        return _redact_outcome(outcome)

    def _execute(
        self,
        identity: Identity,
        text: str,
        channel: str | None,
        thread: str | None,
        confirmed: bool,
        approved: bool,
        via: str | None,
        approval: Approval | None = None,
    ) -> Outcome:
        now = self.clock()
        approved = approved or approval is not None
        parsed = parse(text)
        if isinstance(parsed, ParseError):
            return Outcome(Reply(parsed.message, ReplyStatus.ERROR))
        spec = parsed.spec
        ps = self.policies()
        access = AccessView.of(ps.access_policies.values()) if ps is not None else AccessView()
        grant = access.grant_for(identity)

        def audited(outcome: Outcome, target: ClusterStatus | None = None) -> Outcome:
            if spec.mutates:
                self._audit(identity, parsed, outcome, now, channel, target, via)
            return outcome

        if spec.access is not Access.ANYONE and not grant.known:
            return audited(refused(authz.unknown_user(identity).rstrip(".")))
        if spec.name in ("confirm", "cancel"):
            return self._confirm(identity, parsed, now, channel, thread, audited)
        namespace = parsed.str_value("namespace")
        profile: str | None = None
        target: ClusterStatus | None = None
        try:
            if spec.name == "create":
                namespace = namespace or grant.default_namespace() or self.settings.default_namespace
                known = list(ps.cluster_profiles) if ps is not None else []
                profile = parsed.str_value("profile") or grant.default_profile(namespace, known)
            elif authz.cluster_param(spec):
                found = self._resolve(grant, spec.name, str(parsed.str_value("name")), namespace)
                if isinstance(found, Outcome):
                    return audited(found)
                target = found
            reason = authz.check(grant, spec, target, namespace, profile)
            if reason is not None:
                return audited(refused(reason), target)
            if spec.name == "create" and profile is None:
                return audited(error(f"no profile you may use in {namespace}; ask DevOps which to use"))
            if is_destructive(spec.name, parsed.int_value("n")) and not confirmed:
                return audited(self._ask_confirmation(identity, parsed, target, now, channel), target)
            ctx = Context(
                identity=identity,
                grant=grant,
                access=access,
                policy_set=ps,
                backend=self.backend,
                approvals=self.approvals,
                switch=self.switch,
                history=self.history,
                settings=self.settings,
                now=now,
                run_as=lambda who, cmd_text, why, carried: self.execute(
                    who, cmd_text, channel=channel, thread=thread, confirmed=True, via=why, approval=carried
                ),
                target=target,
                namespace=namespace,
                profile=profile,
                approved=approved,
                approval=approval,
                channel_id=channel,
                thread_id=thread,
                want_chart=identity.platform in self.charts_for,
            )
            outcome = HANDLERS[spec.name](ctx, parsed)
        except BackendError as e:
            outcome = error(_backend_message(e))
        return audited(outcome, target)

    def _resolve(
        self, grant: Grant, command: str, name: str, namespace: str | None
    ) -> ClusterStatus | Outcome:
        """The cluster a command names: in `namespace`, or the only one so named that the person
        can see. Refuses to reveal anything in namespaces they may not use."""
        if namespace is not None:
            if not grant.may_see(namespace):
                return refused(f"you may not use namespace {namespace}")
            try:
                return self.backend.get(ClusterRef(namespace, name))
            except ClusterNotFound:
                others = [c.ref.name for c in self.backend.list(namespace)]
                return error(_not_found(name, f" in {namespace}", others))
        visible = [c for c in self.backend.list() if grant.may_see(c.ref.namespace)]
        matches = [c for c in visible if c.ref.name == name]
        if len(matches) == 1:
            return matches[0]
        if matches:
            spaces = ", ".join(c.ref.namespace for c in matches)
            return error(
                f"there are clusters named {name} in {spaces}; say which, e.g. "
                f"`{command} {matches[0].ref.namespace}/{name}`"
            )
        return error(_not_found(name, "", [c.ref.name for c in visible]))

    def _ask_confirmation(
        self,
        identity: Identity,
        parsed: ParsedCommand,
        target: ClusterStatus | None,
        now: datetime,
        channel: str | None,
    ) -> Outcome:
        p = self.confirmations.ask(identity.key, parsed.text, now, channel)
        what = {
            "delete": "deletes the cluster and everything running in it",
            "release": "stops rayops managing the cluster (annotations and labels removed)",
            "scale": "pins the group at 0 workers: running work on them stops",
        }[parsed.name]
        name = target.ref.name if target else ""
        return Outcome(
            Reply(
                f"`{parsed.text}` {what}. Confirm within {format_duration(self.settings.confirm_ttl)}: "
                f"`confirm {p.id}` (only you can), or `cancel {p.id}`.",
                ReplyStatus.CONFIRM,
                title=f"Confirm: {parsed.name} {name}".rstrip(),
                buttons=(
                    Button("Confirm", f"confirm {p.id}", ButtonStyle.DANGER),
                    Button("Cancel", f"cancel {p.id}"),
                ),
                ephemeral=True,
            ),
            audit_result="confirm-asked",
        )

    def _confirm(
        self,
        identity: Identity,
        parsed: ParsedCommand,
        now: datetime,
        channel: str | None,
        thread: str | None,
        audited: Callable[[Outcome], Outcome],
    ) -> Outcome:
        cid = parsed.str_value("id")
        if parsed.name == "cancel":
            got = self.confirmations.cancel(identity.key, cid, now)
            if isinstance(got, Refusal):
                return _refusal(got)
            return Outcome(Reply(f"Cancelled `{got.command}`; nothing was changed."))
        got = self.confirmations.take(identity.key, cid, now)
        if isinstance(got, Refusal):
            return audited(_refusal(got))
        return self._execute(identity, got.command, channel, thread, True, False, f"confirmation {got.id}")

    def _audit(
        self,
        identity: Identity,
        parsed: ParsedCommand,
        outcome: Outcome,
        now: datetime,
        channel: str | None,
        target: ClusterStatus | None,
        via: str | None,
    ) -> None:
        reply = outcome.reply
        self.audit.record(
            AuditRecord(
                at=now,
                who=identity.key,
                display=identity.display,
                command=parsed.text,
                result=outcome.audit_result or str(reply.status),
                detail=(reply.text.splitlines() or [""])[0][:300],
                channel=channel,
                target=str(target.ref) if target else outcome.target,
                via=via,
            )
        )

    # --- housekeeping ---------------------------------------------------------------------------

    def expire_requests(self) -> list[Notification]:
        now = self.clock()
        notes: list[Notification] = []
        for req in self.approvals.list(ApprovalState.PENDING):
            if req.expires_at <= now:
                sent = expire(self.approvals, req, now)
                if sent:
                    self.audit.record(
                        AuditRecord(
                            now,
                            "rayops",
                            req.command,
                            "expired",
                            f"request {req.id} expired",
                            target=req.target or None,
                            via=f"approval {req.id}",
                        )
                    )
                notes.extend(sent)
        self.approvals.prune(now)
        return [_redact_notification(n) for n in notes]


def _not_found(name: str, where: str, candidates: list[str]) -> str:
    near = suggest(name, sorted(set(candidates)))
    hint = f" Did you mean `{near}`?" if near else " `list` shows the clusters you can see."
    return f"no cluster named {name}{where} that you can see.{hint}"


def _refusal(r: Refusal) -> Outcome:
    return Outcome(
        Reply(
            r.message[0].upper() + r.message[1:] + ".",
            ReplyStatus.REFUSED if r.wrong_person else ReplyStatus.ERROR,
        )
    )


def _backend_message(e: BackendError) -> str:
    if isinstance(e, BackendUnavailable | CapacityExceeded):
        return (
            f"The cluster backend cannot do that right now: {e}. Nothing was changed; try again in a minute."
        )
    if isinstance(e, ConflictError):
        return f"The cluster changed while I was updating it: {e}. Nothing was changed; try again."
    if isinstance(e, AlreadyExists):
        return f"{e}; pick another name."
    return str(e).strip() or type(e).__name__


def _redact_reply(r: Reply) -> Reply:
    table = r.table
    if table is not None:
        table = Table(
            tuple(redact(h) for h in table.headers),
            tuple(tuple(redact(c) for c in row) for row in table.rows),
        )
    return replace(
        r,
        text=redact(r.text),
        title=redact(r.title) if r.title else r.title,
        fields=tuple(ReplyField(redact(f.label), redact(f.value)) for f in r.fields),
        table=table,
        buttons=tuple(replace(b, label=redact(b.label), command=redact(b.command)) for b in r.buttons),
        footer=redact(r.footer) if r.footer else r.footer,
    )


def _redact_notification(n: Notification) -> Notification:
    return replace(n, reply=_redact_reply(n.reply))


def _redact_outcome(o: Outcome) -> Outcome:
    return replace(
        o, reply=_redact_reply(o.reply), notifications=tuple(_redact_notification(n) for n in o.notifications)
    )
