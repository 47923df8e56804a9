"""Slack payloads to `IncomingCommand`s, and `Reply`s to what Slack shows: pure functions, no I/O.

What comes in: a slash command (`/ray status demo`: form fields), a button press (`block_actions`
with the button's `value`, which is the command to run), an `app_mention` event (`<@U0BOT> status
demo`) and a direct message (`message` with `channel_type: im`). Each becomes one `IncomingCommand`
plus an `Origin`: how to answer it (the `response_url` of a command or press, else the channel and
thread to post into). The bot never sees either payload.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.adapters.base import IncomingCommand, Platform, Reply, ReplyStatus
from bot.render import ACTION_ID_PREFIX, to_blocks, to_text

ACTION_ID_PATTERN = re.compile("^" + re.escape(ACTION_ID_PREFIX))
_LEADING_MENTION = re.compile(r"^\s*<@([A-Z0-9]+)(?:\|[^>]*)?>[\s:,]*")


@dataclass(frozen=True)
class Origin:
    """Where a command came from, for the answer: `response_url` (slash commands and button
    presses: Slack's webhook for this interaction), else `channel` and `thread_ts` to post into."""

    channel: str | None
    user: str
    response_url: str | None = None
    thread_ts: str | None = None
    kind: str = "slash"  # slash | button | mention | dm


def _now() -> datetime:
    return datetime.now(UTC)


def from_slash_command(body: Mapping[str, Any]) -> tuple[IncomingCommand, Origin]:
    user = str(body.get("user_id") or "")
    channel = str(body.get("channel_id") or "") or None
    command = IncomingCommand(
        Platform.SLACK,
        user,
        str(body.get("text") or "").strip(),
        user_display=str(body.get("user_name") or ""),
        channel_id=channel,
        received_at=_now(),
    )
    return command, Origin(channel, user, response_url=body.get("response_url") or None, kind="slash")


def from_block_action(body: Mapping[str, Any]) -> tuple[IncomingCommand, Origin] | None:
    """The press of one of our buttons, or None when the payload has no such action."""
    actions = [a for a in body.get("actions") or [] if ACTION_ID_PATTERN.match(str(a.get("action_id") or ""))]
    if not actions:
        return None
    value = str(actions[0].get("value") or "")
    user_obj = body.get("user") or {}
    user = str(user_obj.get("id") or "")
    container = body.get("container") or {}
    message = body.get("message") or {}
    channel = str((body.get("channel") or {}).get("id") or container.get("channel_id") or "") or None
    thread = message.get("thread_ts") or container.get("thread_ts") or None
    command = IncomingCommand(
        Platform.SLACK,
        user,
        value,
        user_display=str(user_obj.get("username") or user_obj.get("name") or ""),
        channel_id=channel,
        thread_id=thread,
        is_button=True,
        button_value=value,
        received_at=_now(),
    )
    return command, Origin(channel, user, response_url=body.get("response_url") or None, kind="button")


def strip_mention(text: str, bot_user_id: str | None) -> str:
    """`<@U0BOT> status demo` -> `status demo` (only a leading mention of this bot is removed)."""
    m = _LEADING_MENTION.match(text)
    if m and (bot_user_id is None or m.group(1) == bot_user_id):
        return text[m.end() :].strip()
    return text.strip()


def from_message_event(
    event: Mapping[str, Any], bot_user_id: str | None, kind: str
) -> tuple[IncomingCommand, Origin] | None:
    """An `app_mention` (kind "mention") or a direct message (kind "dm"); None for what is not a
    person's new message (edits, bot posts, joins)."""
    if event.get("subtype") or event.get("bot_id") or not event.get("user"):
        return None
    if bot_user_id is not None and event.get("user") == bot_user_id:
        return None
    user = str(event["user"])
    channel = str(event.get("channel") or "") or None
    ts = event.get("ts")
    # A mention is answered in its thread (starting one); a direct message in the conversation,
    # unless it was itself written in a thread.
    thread = event.get("thread_ts") or (ts if kind == "mention" else None)
    command = IncomingCommand(
        Platform.SLACK,
        user,
        strip_mention(str(event.get("text") or ""), bot_user_id),
        channel_id=channel,
        thread_id=thread,
        received_at=_now(),
    )
    return command, Origin(channel, user, thread_ts=thread, kind=kind)


def answer_privately(command: IncomingCommand, reply: Reply) -> bool:
    """Only the asker sees the answer: when the bot says so, and when a button press was refused or
    wrong (a stray press in a shared channel is nobody else's business)."""
    return reply.ephemeral or (command.is_button and reply.status in (ReplyStatus.REFUSED, ReplyStatus.ERROR))


def message_parts(reply: Reply, mention: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) for a reply; `mention` (a user id) is named first so that person is
    notified, e.g. a requester answered in the thread where they asked."""
    text, blocks = to_text(reply), to_blocks(reply)
    if mention:
        text = f"<@{mention}> {text}"
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"<@{mention}>"}}, *blocks]
    return text, blocks
