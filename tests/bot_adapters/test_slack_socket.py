"""The Slack adapter in Socket Mode (the default): the builtin slack_sdk client connects to the
stand-in's WebSocket with the app token; envelopes are acked over the socket with their own
envelope_id before the bot runs, and answers go to the response URL. Also: a refresh request from
Slack reconnects, and stopping closes the link and ends every thread the adapter started."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.adapters.runtime import SettingsError
from bot.adapters.slack import SlackAdapter
from bot.adapters.slack_settings import SlackSettings
from bot.compose import serve
from controller.domain import ClusterRef
from tests.bot_adapters.conftest import NAMESPACE, SLACK_ACCESS, BotParts, BotRunner, make_bot
from tests.harness.slack import APP_TOKEN, BOT_TOKEN
from tests.standins.slack_api import SlackApiStandIn
from tests.standins.slack_payloads import block_actions_payload, slash_command_fields

StartSlack = Callable[..., tuple[BotParts, SlackAdapter]]


def test_slash_command_over_socket_mode_is_acked_with_its_envelope_id_then_answered(
    slack_api: SlackApiStandIn, start_slack: StartSlack
) -> None:
    parts, adapter = start_slack("socket")
    assert adapter.readiness().ready
    url = slack_api.new_response_url()

    envelope_id = slack_api.push_envelope(
        "slash_commands", slash_command_fields("create demo", response_url=url)
    )
    ack = slack_api.wait_for_ack(envelope_id)

    assert ack.envelope_id == envelope_id
    assert ack.payload is None  # an empty ack; the answer follows
    [answer] = slack_api.wait_for_responses(url)
    assert answer.body["text"].startswith("Creating demo in ray-nlp")
    assert ack.at <= answer.at
    assert [(c.token, c.status) for c in slack_api.calls("apps.connections.open")] == [(APP_TOKEN, 200)]
    assert parts.backend.get(ClusterRef(NAMESPACE, "demo")).requester == "slack:U0ALICE01"


def test_delete_confirmed_with_the_button_over_socket_mode(
    slack_api: SlackApiStandIn, start_slack: StartSlack
) -> None:
    parts, _ = start_slack("socket")
    created = slack_api.new_response_url()
    slack_api.send_envelope("slash_commands", slash_command_fields("create demo", response_url=created))
    slack_api.wait_for_responses(created)

    asked = slack_api.new_response_url()
    slack_api.send_envelope("slash_commands", slash_command_fields("delete demo", response_url=asked))
    [question] = slack_api.wait_for_responses(asked)
    assert question.body["response_type"] == "ephemeral"
    buttons = {
        e["text"]["text"]: e["value"]
        for b in question.body["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
    }
    assert parts.backend.list() != []

    pressed = slack_api.new_response_url()
    ack = slack_api.send_envelope(
        "interactive", block_actions_payload("rayops-0", buttons["Confirm"], response_url=pressed)
    )
    assert ack.payload is None
    [done] = slack_api.wait_for_responses(pressed)
    assert done.body["text"].startswith("Deleted demo")
    assert parts.backend.list() == []

    # The same press again (Slack redelivers nothing, but a person may double-click).
    again = slack_api.new_response_url()
    slack_api.send_envelope(
        "interactive", block_actions_payload("rayops-0", buttons["Confirm"], response_url=again)
    )
    [second] = slack_api.wait_for_responses(again)
    assert "already" in second.body["text"]
    assert second.body["response_type"] == "ephemeral"


def test_reconnects_on_refresh_and_stop_closes_the_link_and_its_threads(
    slack_api: SlackApiStandIn, start_slack: StartSlack, runners: list[BotRunner]
) -> None:
    _, adapter = start_slack("socket")
    slack_api.request_reconnect()
    url = slack_api.new_response_url()
    slack_api.send_envelope("slash_commands", slash_command_fields("whoami", response_url=url))
    assert "ray-nlp" in slack_api.wait_for_responses(url)[0].body["text"]
    assert slack_api.links_opened() == 2

    runners.pop().stop()

    assert slack_api.socket_connections() == 0
    assert not adapter.readiness().ready
    leftover = [t.name for t in threading.enumerate() if t.name.startswith(("slack-listener", "bot-loop"))]
    assert leftover == []


@pytest.mark.parametrize("revoked", [BOT_TOKEN, APP_TOKEN])
def test_a_refused_token_stops_the_start_with_a_clear_error(
    tmp_path: Path, slack_api: SlackApiStandIn, revoked: str
) -> None:
    slack_api.revoke_token(revoked)
    parts = make_bot(tmp_path, SLACK_ACCESS)
    settings = SlackSettings(bot_token=BOT_TOKEN, app_token=APP_TOKEN, api_url=slack_api.base_url)
    adapter = SlackAdapter(settings)
    name = "SLACK_BOT_TOKEN" if revoked == BOT_TOKEN else "SLACK_APP_TOKEN"
    with pytest.raises(SettingsError, match=f"Slack did not accept {name}: .*token_revoked"):
        asyncio.run(serve(parts.bot, adapter, parts.events))
    assert not adapter.readiness().ready
