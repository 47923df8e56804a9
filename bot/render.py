"""Replies to what each platform shows: plain text, Matrix HTML, Slack Block Kit.

Pure functions of a `Reply`, returning strings and dicts: no SDK imports, so adapters stay thin
and these are tested directly. Buttons become native buttons in Block Kit (the command in the
button's `value`, `action_id` starting with `ACTION_ID_PREFIX`) and "type `command`" hints
elsewhere.
"""

from __future__ import annotations

import html
from typing import Any

from bot.adapters.base import Button, ButtonStyle, Reply, Table

ACTION_ID_PREFIX = "rayops-"
"""Every button's `action_id` starts with this; the Slack adapter registers one action listener
for the prefix and turns the pressed button's `value` into an `IncomingCommand`."""

# Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
_SECTION_TEXT = 3000
_FIELD_TEXT = 2000
_FIELDS_PER_SECTION = 10
_HEADER_TEXT = 150
_BUTTON_TEXT = 75
_BUTTONS_PER_ACTIONS = 25
_MAX_BLOCKS = 50


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def table_text(table: Table, max_rows: int = 50) -> str:
    rows = [table.headers, *table.rows[:max_rows]]
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(len(table.headers))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]
    if len(table.rows) > max_rows:
        lines.append(f"... and {len(table.rows) - max_rows} more")
    return "\n".join(lines)


def button_hint(buttons: tuple[Button, ...]) -> str:
    return "   ".join(f"[{b.label}: `{b.command}`]" for b in buttons)


def to_text(reply: Reply) -> str:
    """The whole reply as plain text (console, Matrix `body`, Slack notification fallback)."""
    parts: list[str] = []
    if reply.title:
        parts.append(reply.title)
    if reply.text:
        parts.append(reply.text)
    if reply.fields:
        width = max(len(f.label) for f in reply.fields)
        parts.append("\n".join(f"  {f.label.ljust(width)}  {f.value}" for f in reply.fields))
    if reply.table is not None:
        parts.append(table_text(reply.table))
    if reply.buttons:
        parts.append(button_hint(reply.buttons))
    if reply.footer:
        parts.append(reply.footer)
    return "\n".join(parts)


def to_html(reply: Reply) -> str:
    """Matrix `formatted_body` (org.matrix.custom.html): the same parts as `to_text`."""
    e = html.escape
    parts: list[str] = []
    if reply.title:
        parts.append(f"<b>{e(reply.title)}</b>")
    if reply.text:
        parts.append(e(reply.text).replace("\n", "<br>"))
    if reply.fields:
        items = "".join(f"<li><b>{e(f.label)}</b>: {e(f.value)}</li>" for f in reply.fields)
        parts.append(f"<ul>{items}</ul>")
    if reply.table is not None:
        parts.append(f"<pre><code>{e(table_text(reply.table))}</code></pre>")
    if reply.buttons:
        parts.append(" · ".join(f"{e(b.label)}: <code>{e(b.command)}</code>" for b in reply.buttons))
    if reply.footer:
        parts.append(f"<i>{e(reply.footer)}</i>")
    return "<br>".join(parts)


def _mrkdwn_escape(text: str) -> str:
    # Slack's mrkdwn needs only these three escaped; the rest is literal.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _button(b: Button, index: int) -> dict[str, Any]:
    d: dict[str, Any] = {
        "type": "button",
        "action_id": f"{ACTION_ID_PREFIX}{index}",
        "text": {"type": "plain_text", "text": _cut(b.label, _BUTTON_TEXT), "emoji": False},
        "value": b.command,
    }
    if b.style is not ButtonStyle.DEFAULT:
        d["style"] = str(b.style)
    return d


def to_blocks(reply: Reply) -> list[dict[str, Any]]:
    """Slack Block Kit blocks for `chat.postMessage`/`respond` (pass `to_text(reply)` as `text`)."""
    blocks: list[dict[str, Any]] = []
    if reply.title:
        blocks.append(
            {"type": "header", "text": {"type": "plain_text", "text": _cut(reply.title, _HEADER_TEXT)}}
        )
    if reply.text:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _cut(_mrkdwn_escape(reply.text), _SECTION_TEXT)},
            }
        )
    for i in range(0, len(reply.fields), _FIELDS_PER_SECTION):
        chunk = reply.fields[i : i + _FIELDS_PER_SECTION]
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {
                        "type": "mrkdwn",
                        "text": _cut(f"*{_mrkdwn_escape(f.label)}*\n{_mrkdwn_escape(f.value)}", _FIELD_TEXT),
                    }
                    for f in chunk
                ],
            }
        )
    if reply.table is not None:
        body = _cut(_mrkdwn_escape(table_text(reply.table, max_rows=40)), _SECTION_TEXT - 8)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{body}```"}})
    if reply.footer:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(reply.footer, _FIELD_TEXT)}]}
        )
    if reply.buttons:
        buttons = reply.buttons[:_BUTTONS_PER_ACTIONS]
        blocks.append({"type": "actions", "elements": [_button(b, i) for i, b in enumerate(buttons)]})
    return blocks[:_MAX_BLOCKS]
