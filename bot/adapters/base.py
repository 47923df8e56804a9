"""The seam between the chat-agnostic bot and each chat transport (Slack, Matrix, console).

Everything crossing this seam is a plain frozen value: adapters turn their SDK's payloads into an
`IncomingCommand`, hand it to one callback (`Bot.handle`), and render the `Reply` that comes back;
the bot's notifier hands them `Notification`s to post. Handlers never see SDK types, and adapters
never decide anything: which user may do what, what a command means and what to say are the bot's.

Buttons are commands. A `Button` carries the exact command text to run (`approve k3j2mq7x`,
`confirm c7p2x9qa`, `extend demo 4h`); an adapter renders it as a native button where it has one
(Slack Block Kit: put `command` in the button's `value`) or as a line telling the user what to type
(Matrix, console). A press comes back as an `IncomingCommand` with `is_button=True` and
`button_value` set to that command; the bot checks the presser's rights exactly as if they had typed
it, so a button pressed twice, or by the wrong person, gets the same clear answer as the typed form.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class Platform(StrEnum):
    """Where a person talks to the bot; also the prefix of identity keys (`slack:U123`)."""

    SLACK = "slack"
    MATRIX = "matrix"
    CONSOLE = "console"
    KUBERNETES = "kubernetes"  # the notebook path (issue 9): a Kubernetes user, not a chat user


@dataclass(frozen=True)
class IncomingCommand:
    """One command as a person sent it, stripped of the platform's prefix (`/ray`, `!ray`, mention).

    `text` is what follows the prefix (`status demo`). For a button press, `is_button` is true and
    `button_value` is the button's command; `text` may repeat it. `thread_id` is an opaque handle the
    adapter uses to answer in the same thread (Slack `thread_ts`, Matrix event id); the bot only
    passes it back. `channel_id` is None for a direct message where the platform has no channel id.
    """

    platform: Platform
    user_id: str
    text: str
    user_display: str = ""
    channel_id: str | None = None
    thread_id: str | None = None
    is_button: bool = False
    button_value: str | None = None
    received_at: datetime | None = None

    @property
    def command_text(self) -> str:
        """What the bot parses: the button's command for a press, else the typed text."""
        if self.is_button and self.button_value is not None:
            return self.button_value
        return self.text


class ReplyStatus(StrEnum):
    """What kind of answer a reply is; adapters may colour by it, tests assert on it."""

    OK = "ok"  # done, or information shown
    ERROR = "error"  # the input was wrong, or the backend refused; nothing changed
    REFUSED = "refused"  # not allowed for this person; nothing changed
    PENDING = "pending"  # over a limit: waiting for an approver
    CONFIRM = "confirm"  # destructive: waiting for the same person to confirm


class ButtonStyle(StrEnum):
    DEFAULT = "default"
    PRIMARY = "primary"
    DANGER = "danger"


@dataclass(frozen=True)
class Button:
    """A button that runs `command` as the person who presses it."""

    label: str
    command: str
    style: ButtonStyle = ButtonStyle.DEFAULT


@dataclass(frozen=True)
class ReplyField:
    """One labelled value (Block Kit section field; a `label: value` line in text)."""

    label: str
    value: str


@dataclass(frozen=True)
class Table:
    """A small table (cluster lists, per-group workers); text renders aligned columns."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    """A PNG to upload with the reply (Slack: to the thread; Matrix: an `m.image`)."""

    name: str
    data: bytes
    alt: str = ""


@dataclass(frozen=True)
class Reply:
    """The bot's answer to one command, in parts: `text` is the main message (a sentence or a few
    lines, complete for a quick glance, and the fallback text of a Slack message); `title`,
    `fields`, `table`, `buttons`, `footer` add detail. `bot.render` renders the whole reply: plain
    text (console, Matrix body), Matrix HTML, or Slack Block Kit. `image` is uploaded separately."""

    text: str
    status: ReplyStatus = ReplyStatus.OK
    title: str | None = None
    fields: tuple[ReplyField, ...] = ()
    table: Table | None = None
    buttons: tuple[Button, ...] = ()
    image: Image | None = None
    ephemeral: bool = False  # only the asker sees it (Slack ephemeral; elsewhere a normal reply)
    footer: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is ReplyStatus.OK


class DestinationKind(StrEnum):
    USER = "user"  # a direct message to one person
    CHANNEL = "channel"  # a channel or room (the DevOps channel)


@dataclass(frozen=True)
class Destination:
    """Where a notification goes, on one platform."""

    platform: Platform
    kind: DestinationKind
    id: str  # Slack user/channel id, Matrix user id/room id, console user name

    @staticmethod
    def user(platform: Platform, user_id: str) -> Destination:
        return Destination(platform, DestinationKind.USER, user_id)

    @staticmethod
    def channel(platform: Platform, channel_id: str) -> Destination:
        return Destination(platform, DestinationKind.CHANNEL, channel_id)


@dataclass(frozen=True)
class Notification:
    """A message the bot starts (not an answer): cluster ready, approval needed, an alert.

    `thread_channel`/`thread_id`, when set, name the conversation it belongs to (the thread where a
    request was made), so an adapter may answer there instead of, or as well as, a direct message.
    `key` identifies what it is about (e.g. `alert:MetricsUnavailable:ns/c`), for adapters that
    coalesce bursts (Slack's per-channel queue).
    """

    to: Destination
    reply: Reply
    key: str = ""
    thread_channel: str | None = None
    thread_id: str | None = None


CommandCallback = Callable[[IncomingCommand], Awaitable[Reply]]


class NotificationSink(Protocol):
    async def post_notification(self, notification: Notification) -> None:
        """Deliver one notification; must not raise for delivery failures (log them and drop or
        retry), so one unreachable user never stops the notifier."""
        ...


class ChatAdapter(NotificationSink, Protocol):
    """A chat transport. Lifecycle: `start(on_command)` connects and begins delivering commands to
    `on_command`, one call per command (possibly concurrently); each returned `Reply` is rendered
    back to where the command came from, by the adapter, with `send_reply`. `stop()` disconnects and
    returns when no delivery is in flight. Reconnection with backoff lives inside the adapter.

    An adapter acknowledges a platform's deadline itself (Slack's 3 s ack) before awaiting the
    callback: commands may take long (a cluster create).
    """

    platform: Platform

    async def start(self, on_command: CommandCallback) -> None: ...

    async def stop(self) -> None: ...

    async def send_reply(self, command: IncomingCommand, reply: Reply) -> None:
        """Answer `command` where it came from (thread, ephemeral where asked), with its image."""
        ...


class GroupResolver(Protocol):
    """Which platform user groups a user belongs to (Slack: `usergroups.users.list`), so access
    rules naming groups apply. Implementations cache; the bot calls this only when some rule names
    a group, and treats a failure as "no groups" (the user may then be refused, never over-granted).
    """

    async def groups_of(self, platform: Platform, user_id: str) -> frozenset[str]: ...
