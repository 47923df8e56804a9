"""Builders for what Slack sends to an app: slash commands, block_actions, Events API callbacks, and the
Socket Mode envelopes that carry them.

Why: a test must feed bolt what Slack really sends (field names, strings where Slack sends strings, the
form encoding of a slash command, the `payload=<json>` form of an interaction), otherwise it passes
against a shape Slack never produces. Field lists follow Slack's reference pages and recorded payloads.

Every URL these builders put into a payload is on loopback. The default `response_url` points at a port
nothing listens on (`UNROUTED_RESPONSE_URL`), so a test that forgets to ask the stand-in for a response URL
gets "connection refused" instead of traffic to hooks.slack.com.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

EnvelopeType = Literal["slash_commands", "interactive", "events_api"]


@dataclass(frozen=True)
class Workspace:
    """The identity the stand-in answers with (auth.test) and the payload builders put into requests."""

    team_id: str = "T0RAYOPS1"
    team_domain: str = "rayops-test"
    team_name: str = "rayops test"
    app_id: str = "A0RAYOPS1"
    bot_user_id: str = "U0RAYBOT1"
    bot_id: str = "B0RAYBOT1"
    bot_name: str = "rayops"
    enterprise_id: str | None = None
    enterprise_name: str | None = None

    @property
    def url(self) -> str:
        return f"https://{self.team_domain}.slack.com/"


DEFAULT_WORKSPACE = Workspace()
DEFAULT_USER_ID = "U0ALICE01"
DEFAULT_USER_NAME = "alice"
DEFAULT_CHANNEL_ID = "C0RAYOPS1"
DEFAULT_CHANNEL_NAME = "ray-ops"
# Port 9 (discard) has no listener on a test machine: using it fails fast and never leaves the host.
UNROUTED_RESPONSE_URL = "http://127.0.0.1:9/unrouted-response-url"
# The legacy verification token Slack still sends; apps must ignore it (they verify signatures).
LEGACY_VERIFICATION_TOKEN = "legacyVerificationToken0"

_sequence = itertools.count(1)


def new_trigger_id() -> str:
    """Same shape as Slack's (`<digits>.<digits>.<32 hex>`): opaque to apps, short-lived in Slack."""
    return f"{int(time.time() * 1000)}.{next(_sequence)}.{uuid.uuid4().hex}"


def new_ts() -> str:
    """A message timestamp in Slack's `<seconds>.<6 digits>` form, unique within the process."""
    return f"{int(time.time())}.{next(_sequence) % 1_000_000:06d}"


def slash_command_fields(
    text: str,
    *,
    user_id: str = DEFAULT_USER_ID,
    user_name: str = DEFAULT_USER_NAME,
    channel_id: str = DEFAULT_CHANNEL_ID,
    channel_name: str = DEFAULT_CHANNEL_NAME,
    command: str = "/ray",
    response_url: str = UNROUTED_RESPONSE_URL,
    trigger_id: str | None = None,
    workspace: Workspace = DEFAULT_WORKSPACE,
) -> dict[str, str]:
    """The fields of a slash command, in the order Slack sends them; all values are strings.

    Over HTTP they are form-encoded (`slash_command_body`); in Socket Mode the same fields are the JSON
    `payload` of a `slash_commands` envelope.
    """
    fields = {
        "token": LEGACY_VERIFICATION_TOKEN,
        "team_id": workspace.team_id,
        "team_domain": workspace.team_domain,
    }
    if workspace.enterprise_id is not None:
        fields["enterprise_id"] = workspace.enterprise_id
        fields["enterprise_name"] = workspace.enterprise_name or ""
    fields.update(
        {
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name,
            "command": command,
            "text": text,
            "api_app_id": workspace.app_id,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id or new_trigger_id(),
        }
    )
    return fields


def slash_command_body(text: str, **fields: Any) -> bytes:
    """A slash command as Slack POSTs it: `application/x-www-form-urlencoded`. Same keywords as above."""
    return urlencode(slash_command_fields(text, **fields)).encode()


def block_actions_payload(
    action_id: str,
    value: str,
    *,
    user_id: str = DEFAULT_USER_ID,
    user_name: str = DEFAULT_USER_NAME,
    channel_id: str = DEFAULT_CHANNEL_ID,
    channel_name: str = DEFAULT_CHANNEL_NAME,
    message_ts: str | None = None,
    block_id: str = "rayops_actions",
    button_text: str = "Approve",
    style: str | None = None,
    response_url: str = UNROUTED_RESPONSE_URL,
    trigger_id: str | None = None,
    workspace: Workspace = DEFAULT_WORKSPACE,
) -> dict[str, Any]:
    """A button click on a message the bot posted (`type: block_actions`)."""
    ts = message_ts or new_ts()
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "block_id": block_id,
        "text": {"type": "plain_text", "text": button_text, "emoji": True},
        "value": value,
        "action_ts": f"{time.time():.6f}",
    }
    if style is not None:
        button["style"] = style
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": workspace.team_id},
        "api_app_id": workspace.app_id,
        "token": LEGACY_VERIFICATION_TOKEN,
        "container": {"type": "message", "message_ts": ts, "channel_id": channel_id, "is_ephemeral": False},
        "trigger_id": trigger_id or new_trigger_id(),
        "team": {"id": workspace.team_id, "domain": workspace.team_domain},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name},
        "message": {
            "type": "message",
            "user": workspace.bot_user_id,
            "bot_id": workspace.bot_id,
            "ts": ts,
            "text": "",
            "blocks": [{"type": "actions", "block_id": block_id, "elements": [dict(button)]}],
        },
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [button],
    }


def interactive_body(payload: dict[str, Any]) -> bytes:
    """An interaction as Slack POSTs it over HTTP: one form field `payload` holding JSON."""
    return urlencode({"payload": json.dumps(payload)}).encode()


def app_mention_event(
    text: str,
    *,
    user_id: str = DEFAULT_USER_ID,
    channel_id: str = DEFAULT_CHANNEL_ID,
    ts: str | None = None,
    workspace: Workspace = DEFAULT_WORKSPACE,
) -> dict[str, Any]:
    """The inner `event` of an `app_mention` (`<@BOT> ray status`)."""
    when = ts or new_ts()
    return {
        "type": "app_mention",
        "user": user_id,
        "text": text,
        "ts": when,
        "channel": channel_id,
        "event_ts": when,
        "team": workspace.team_id,
    }


def event_callback(
    event: dict[str, Any],
    *,
    event_id: str | None = None,
    event_time: int | None = None,
    workspace: Workspace = DEFAULT_WORKSPACE,
) -> dict[str, Any]:
    """The outer Events API body (`type: event_callback`) around one event."""
    return {
        "token": LEGACY_VERIFICATION_TOKEN,
        "team_id": workspace.team_id,
        "api_app_id": workspace.app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": event_time if event_time is not None else int(time.time()),
        "authorizations": [
            {
                "enterprise_id": workspace.enterprise_id,
                "team_id": workspace.team_id,
                "user_id": workspace.bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-{uuid.uuid4().hex}",
    }


def socket_envelope(
    envelope_type: EnvelopeType,
    payload: dict[str, Any],
    *,
    envelope_id: str | None = None,
    accepts_response_payload: bool | None = None,
) -> dict[str, Any]:
    """A Socket Mode envelope; the app must ack it with `{"envelope_id": ...}` over the socket.

    Slack sets `accepts_response_payload` for slash commands (the ack may carry the reply) and not for
    block_actions or events; override it to test other interaction types.
    """
    if accepts_response_payload is None:
        accepts_response_payload = envelope_type == "slash_commands"
    envelope: dict[str, Any] = {
        "envelope_id": envelope_id or str(uuid.uuid4()),
        "payload": payload,
        "type": envelope_type,
        "accepts_response_payload": accepts_response_payload,
    }
    if envelope_type == "events_api":
        envelope["retry_attempt"] = 0
        envelope["retry_reason"] = ""
    return envelope
