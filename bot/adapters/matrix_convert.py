"""Matrix messages to command text, and `Reply`s to Matrix event content: pure functions, no I/O.

A message is a command when its body starts with the prefix (`!ray status demo`) or with a mention
of the bot (`rayops: status demo`, `@rayops:example.org status demo`: clients put the display name
of a mention pill into the plain body), or when it is written in the bot's direct room with one
person, where the prefix is optional. Answers are `m.notice` (bots answer notices never, so two
bots cannot loop) with the renderer's HTML, sent as a reply to the command (inside its thread when
it was written in one). Buttons become lines saying what to type.
"""

from __future__ import annotations

import html
import re
import struct
from dataclasses import replace
from typing import Any

from bot.adapters.base import Reply
from bot.render import to_html, to_text

PREFIX = "!ray"
NOTICE = "m.notice"
HTML_FORMAT = "org.matrix.custom.html"


def command_text(
    body: str, *, user_id: str, display_name: str | None, direct: bool, prefix: str = PREFIX
) -> str | None:
    """The command in `body` with its prefix or mention stripped, or None when it is not for us."""
    text = _strip_reply_fallback(body).strip()
    low = text.lower()
    p = prefix.lower()
    if low == p or low.startswith(p + " ") or low.startswith(p + "\n"):
        return text[len(prefix) :].strip()
    localpart = user_id[1:].split(":", 1)[0] if user_id.startswith("@") else user_id
    for name in dict.fromkeys(n for n in (user_id, display_name, localpart, "@" + localpart) if n):
        m = re.match(rf"{re.escape(name)}(?:[:,]\s*|\s+|$)", text, re.IGNORECASE)
        if m:
            return text[m.end() :].strip()
    return text if direct else None


def _strip_reply_fallback(body: str) -> str:
    """Replies may start with quoted lines (`> <@a:b> original`) and a blank line: drop them."""
    lines = body.splitlines()
    if not lines or not lines[0].startswith("> "):
        return body
    i = 0
    while i < len(lines) and lines[i].startswith(">"):
        i += 1
    return "\n".join(lines[i:])


def encode_thread(event_id: str, thread_root: str | None) -> str:
    """`IncomingCommand.thread_id` for Matrix: the command's event id, and its thread root if any."""
    return f"{event_id} {thread_root}" if thread_root else event_id


def decode_thread(thread_id: str | None) -> tuple[str | None, str | None]:
    """(event to reply to, thread root) from `encode_thread`'s value."""
    if not thread_id:
        return None, None
    event_id, _, root = thread_id.partition(" ")
    return event_id, root or None


def relation(reply_to: str | None, thread_root: str | None) -> dict[str, Any] | None:
    if thread_root:
        rel: dict[str, Any] = {"rel_type": "m.thread", "event_id": thread_root, "is_falling_back": True}
        if reply_to:
            rel["m.in_reply_to"] = {"event_id": reply_to}
        return rel
    if reply_to:
        return {"m.in_reply_to": {"event_id": reply_to}}
    return None


def notice_content(
    reply: Reply,
    *,
    prefix: str = PREFIX,
    reply_to: str | None = None,
    thread_root: str | None = None,
    mention: str | None = None,
) -> dict[str, Any]:
    """The `m.notice` for a reply; buttons become "type `!ray approve k3j2mq7x`" lines, and
    `mention` (a user id) is named first so that person is notified."""
    bare = replace(reply, buttons=())
    body, formatted = to_text(bare), to_html(bare)
    if reply.buttons:
        body += "\n" + "\n".join(f"{b.label}: type `{prefix} {b.command}`" for b in reply.buttons)
        formatted += "<br>" + "<br>".join(
            f"{html.escape(b.label)}: type <code>{html.escape(prefix)} {html.escape(b.command)}</code>"
            for b in reply.buttons
        )
    content: dict[str, Any] = {
        "msgtype": NOTICE,
        "body": body,
        "format": HTML_FORMAT,
        "formatted_body": formatted,
    }
    if mention:
        content["body"] = f"{mention}: {body}"
        content["formatted_body"] = (
            f'<a href="https://matrix.to/#/{html.escape(mention)}">{html.escape(mention)}</a>: {formatted}'
        )
        content["m.mentions"] = {"user_ids": [mention]}
    rel = relation(reply_to, thread_root)
    if rel is not None:
        content["m.relates_to"] = rel
    return content


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk (clients lay out an `m.image` before fetching it)."""
    if len(data) >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    return None


def image_content(
    name: str, mxc: str, data: bytes, alt: str, reply_to: str | None, thread_root: str | None
) -> dict[str, Any]:
    info: dict[str, Any] = {"mimetype": "image/png", "size": len(data)}
    size = png_size(data)
    if size is not None:
        info["w"], info["h"] = size
    content: dict[str, Any] = {
        "msgtype": "m.image",
        "body": alt or name,
        "filename": name,
        "url": mxc,
        "info": info,
    }
    rel = relation(reply_to, thread_root)
    if rel is not None:
        content["m.relates_to"] = rel
    return content
