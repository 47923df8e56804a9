"""What a handler gets (`Context`) and gives back (`Outcome`).

Handlers are plain functions `(Context, ParsedCommand) -> Outcome`. By the time one runs, the core
has parsed the command, found its target cluster, checked the person's rights and obtained any
confirmation; the handler only does the work and says what happened. It raises nothing on purpose:
backend errors it does not handle itself are turned into answers by the core, in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.adapters.base import Destination, Notification, Platform, Reply, ReplyStatus
from bot.approvals import ApprovalStore
from bot.authz import AccessView, Grant, Identity
from bot.chart import History
from bot.settings import BotSettings
from bot.switch import PauseSwitch
from controller.backends.base import ClusterBackend, ClusterStatus
from controller.domain import ClusterRef
from controller.policy.durations import format_duration
from controller.policy.loader import PolicySet


@dataclass(frozen=True)
class Outcome:
    reply: Reply
    notifications: tuple[Notification, ...] = ()
    audit_result: str | None = None  # overrides the reply status in the audit record
    target: str | None = None  # namespace/name, for the audit record when there was no target


@dataclass(frozen=True)
class Approval:
    """The approval a run carries out: the handler records it on what it creates or changes
    (`rayops.io/approved-limits`), so the controller keeps the approved size instead of clamping it
    back to the requester's limits."""

    request: str  # the request id
    by: str  # the approver's identity key
    at: datetime


RunAs = Callable[[Identity, str, str, Approval], Outcome]
"""Run a command text as another identity with its limits lifted (an approved request runs as its
requester); the third argument says why, for the audit trail ("approval k3j2mq7x by slack:U9")."""


@dataclass(frozen=True)
class Context:
    identity: Identity
    grant: Grant
    access: AccessView
    policy_set: PolicySet | None
    backend: ClusterBackend
    approvals: ApprovalStore
    switch: PauseSwitch
    history: History
    settings: BotSettings
    now: datetime
    run_as: RunAs
    target: ClusterStatus | None = None
    namespace: str | None = None  # create/list: the namespace in effect
    profile: str | None = None  # create: the profile in effect
    approved: bool = False  # an approver approved this run: limits do not apply
    approval: Approval | None = None  # which approval, when `approved`
    channel_id: str | None = None
    thread_id: str | None = None
    want_chart: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> ClusterRef:
        assert self.target is not None, "handler of a command without a target cluster"
        return self.target.ref

    def devops_destination(self) -> Destination | None:
        platform = self.identity.platform
        if platform is Platform.CONSOLE:
            return Destination.channel(Platform.CONSOLE, "devops")
        channel = self.access.devops_channel(platform)
        return Destination.channel(platform, channel) if channel else None


def ok(text: str) -> Outcome:
    return Outcome(Reply(text, ReplyStatus.OK))


def error(text: str) -> Outcome:
    return Outcome(Reply(text, ReplyStatus.ERROR))


def refused(text: str) -> Outcome:
    return Outcome(Reply(f"Not allowed: {text}. Nothing was changed.", ReplyStatus.REFUSED))


def until(when: datetime | None, now: datetime) -> str:
    """`in 3h20m` / `2m ago` / `never`, for expiry and pin times (minutes, rounded, past a minute)."""
    if when is None:
        return "never"
    secs = (when - now).total_seconds()
    size = abs(secs)
    rounded = timedelta(seconds=size) if size < 60 else timedelta(minutes=round(size / 60))
    text = format_duration(timedelta(seconds=int(rounded.total_seconds())))
    return f"in {text}" if secs >= 0 else f"{text} ago"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def clock_time(when: datetime) -> str:
    return f"{when:%Y-%m-%d %H:%M} UTC"
