"""The Slack adapter in HTTP mode: the real bolt app behind the adapter's own WSGI server, requests
signed like Slack's, the Web API and response URLs answered by the stand-in.

What is pinned: a signed slash command is acked inside the request and answered afterwards; a
wrong signature, a stale timestamp and a replayed request get 401 and change nothing (no command,
no Web API call, no answer); the Approve button works for an approver only, and a second press says
who decided; mentions and direct messages are answered in their thread; a status reply carries a
real PNG uploaded into the reply's thread.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from bot.adapters.slack import SlackAdapter
from controller.domain import ClusterRef
from tests.bot_adapters.conftest import NAMESPACE, BotParts
from tests.harness.slack import SIGNING_SECRET
from tests.standins.slack_api import SlackApiStandIn
from tests.standins.slack_payloads import (
    DEFAULT_CHANNEL_ID,
    DEFAULT_USER_ID,
    app_mention_event,
    block_actions_payload,
    event_callback,
    interactive_body,
    slash_command_body,
)
from tests.standins.slack_signing import JSON_CONTENT_TYPE, signed_request

StartSlack = Callable[..., tuple[BotParts, SlackAdapter]]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BOSS = "U0BOSS001"
BOB = "U0BOB0001"


def _command(adapter: SlackAdapter, text: str, response_url: str, **fields: Any) -> Any:
    assert adapter.url is not None
    return signed_request(
        adapter.url, slash_command_body(text, response_url=response_url, **fields), SIGNING_SECRET
    )


def _press(adapter: SlackAdapter, value: str, user: str, response_url: str) -> Any:
    assert adapter.url is not None
    payload = block_actions_payload(
        "rayops-0",
        value,
        user_id=user,
        user_name=user.lower(),
        channel_id="C0DEVOPS1",
        response_url=response_url,
    )
    return signed_request(adapter.url, interactive_body(payload), SIGNING_SECRET).send()


def test_signed_slash_command_is_acked_within_the_request_and_answered_on_the_response_url(
    slack_api: SlackApiStandIn, start_slack: StartSlack
) -> None:
    parts, adapter = start_slack()
    url = slack_api.new_response_url()

    started = time.monotonic()
    reply = _command(adapter, "create demo", url).send()
    acked_after = time.monotonic() - started

    assert reply.status == 200
    assert reply.body == b""  # an empty ack: the answer follows on the response URL
    assert acked_after < 1.0
    [answer] = slack_api.wait_for_responses(url)
    assert answer.status == 200
    assert answer.body["text"].startswith("Creating demo in ray-nlp (profile small")
    assert answer.body["response_type"] == "in_channel"
    assert any(b["type"] == "section" for b in answer.body["blocks"])
    status = parts.backend.get(ClusterRef(NAMESPACE, "demo"))
    assert status.requester == f"slack:{DEFAULT_USER_ID}"
    audit = [json.loads(x) for x in parts.settings.audit_path.read_text().splitlines()]
    assert [(a["who"], a["command"], a["channel"]) for a in audit] == [
        (f"slack:{DEFAULT_USER_ID}", "create demo", DEFAULT_CHANNEL_ID)
    ]


def test_bad_signature_stale_timestamp_and_replay_get_401_and_change_nothing(
    slack_api: SlackApiStandIn, start_slack: StartSlack
) -> None:
    parts, adapter = start_slack()
    assert adapter.url is not None
    url = slack_api.new_response_url()
    body = slash_command_body("create demo", response_url=url)

    wrong = signed_request(adapter.url, body, "not-the-signing-secret").send()
    stale = signed_request(adapter.url, body, SIGNING_SECRET, timestamp=int(time.time()) - 600).send()
    assert (wrong.status, stale.status) == (401, 401)
    assert parts.backend.list() == []

    request = signed_request(adapter.url, body, SIGNING_SECRET)
    first = request.send()
    slack_api.wait_for_responses(url)
    replay = request.send()

    assert (first.status, replay.status) == (200, 401)
    assert replay.json() == {"error": "invalid request"}
    assert adapter.replay_guard.refused == 1
    assert [c.ref.name for c in parts.backend.list()] == ["demo"]
    assert len(parts.backend.calls) == 1  # one create, not two
    assert len(slack_api.responses(url)) == 1  # the replay was never answered
    assert slack_api.calls("chat.postMessage") == []  # nor did it reach the Web API
    audit = parts.settings.audit_path.read_text().splitlines()
    assert len(audit) == 1


def test_approve_button_is_refused_for_a_non_approver_accepted_for_an_approver_and_a_second_press_says_who(
    slack_api: SlackApiStandIn, start_slack: StartSlack
) -> None:
    parts, adapter = start_slack()
    asked = slack_api.new_response_url()
    assert _command(adapter, "create big workers=6", asked).send().status == 200
    [pending] = slack_api.wait_for_responses(asked)
    assert "waits for an approver" in pending.body["text"]

    # The request reached the DevOps channel with real Block Kit buttons; press what Slack shows.
    [devops] = slack_api.wait_for_calls("chat.postMessage")
    assert devops.params["channel"] == "C0DEVOPS1"
    blocks = devops.params["blocks"]
    buttons = {e["text"]["text"]: e for b in blocks if b["type"] == "actions" for e in b["elements"]}
    approve = buttons["Approve"]["value"]
    assert approve.startswith("approve ") and buttons["Approve"]["action_id"].startswith("rayops-")

    by_bob = slack_api.new_response_url()
    assert _press(adapter, approve, BOB, by_bob).status == 200
    [refused] = slack_api.wait_for_responses(by_bob)
    assert "only approvers may approve" in refused.body["text"]
    assert refused.body["response_type"] == "ephemeral"  # only the presser sees it
    assert parts.backend.list() == []

    by_boss = slack_api.new_response_url()
    assert _press(adapter, approve, BOSS, by_boss).status == 200
    [accepted] = slack_api.wait_for_responses(by_boss)
    assert accepted.body["response_type"] == "in_channel"
    assert "Approved" in accepted.body["text"]
    assert [c.ref.name for c in parts.backend.list()] == ["big"]
    # The requester is told the outcome (no thread for a slash command: a direct message).
    told = slack_api.wait_for_calls("chat.postMessage", count=2)[1]
    assert told.params["channel"] == DEFAULT_USER_ID
    assert "big" in told.params["text"]

    again = slack_api.new_response_url()
    assert _press(adapter, approve, BOSS, again).status == 200
    [second] = slack_api.wait_for_responses(again)
    assert f"was already approved by slack:{BOSS}" in second.body["text"]
    assert second.body["response_type"] == "ephemeral"
    assert len(parts.backend.list()) == 1


def test_status_posts_block_kit_and_uploads_the_chart_png_into_the_thread(
    slack_api: SlackApiStandIn, start_slack: StartSlack
) -> None:
    parts, adapter = start_slack()
    created = slack_api.new_response_url()
    _command(adapter, "create demo workers=2", created).send()
    slack_api.wait_for_responses(created)
    parts.scaled("demo", [(50, 1, 1, 0), (30, 1, 2, 3), (10, 2, 2, 0)])

    asked = slack_api.new_response_url()
    assert _command(adapter, "status demo", asked).send().status == 200

    # The first chart of the session imports matplotlib: seconds on a busy machine.
    [post] = slack_api.wait_for_calls("chat.postMessage", timeout=60)
    assert post.params["channel"] == DEFAULT_CHANNEL_ID
    blocks = post.params["blocks"]
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": "Ray cluster demo"}}
    assert any("fields" in b for b in blocks)
    slack_api.wait_for_calls("files.completeUploadExternal", timeout=30)
    [chart] = slack_api.files()
    assert chart.content is not None and chart.content.startswith(PNG_MAGIC)
    assert (chart.channel_id, chart.thread_ts) == (DEFAULT_CHANNEL_ID, post.response["ts"])
    assert chart.filename == "demo-workers.png"
    assert slack_api.responses(asked) == []  # answered in the channel, with the chart, instead


def test_where_the_bot_may_not_post_the_status_falls_back_to_the_response_url(
    slack_api: SlackApiStandIn, start_slack: StartSlack, caplog: pytest.LogCaptureFixture
) -> None:
    parts, adapter = start_slack()
    created = slack_api.new_response_url()
    _command(adapter, "create demo", created).send()
    slack_api.wait_for_responses(created)
    parts.scaled("demo", [(20, 1, 1, 0)])
    slack_api.fail("chat.postMessage", "not_in_channel")  # a channel the app was not invited to

    asked = slack_api.new_response_url()
    _command(adapter, "status demo", asked).send()

    [answer] = slack_api.wait_for_responses(asked, timeout=60)
    assert answer.body["text"].startswith("Ray cluster demo")
    assert answer.body["response_type"] == "in_channel"
    assert [c.status for c in slack_api.calls("chat.postMessage")] == [200]  # tried once, refused
    assert slack_api.calls("chat.postMessage")[0].response["error"] == "not_in_channel"
    assert slack_api.files() == []
    assert any("answering without the chart" in r.getMessage() for r in caplog.records)


def test_mention_and_direct_message_are_answered_in_their_thread(
    slack_api: SlackApiStandIn, start_slack: StartSlack
) -> None:
    _, adapter = start_slack()
    assert adapter.url is not None
    mention = app_mention_event(f"<@{slack_api.workspace.bot_user_id}> whoami")
    body = json.dumps(event_callback(mention)).encode()
    reply = signed_request(adapter.url, body, SIGNING_SECRET, content_type=JSON_CONTENT_TYPE).send()
    assert reply.status == 200

    [answer] = slack_api.wait_for_calls("chat.postMessage")
    assert (answer.params["channel"], answer.params["thread_ts"]) == (DEFAULT_CHANNEL_ID, mention["ts"])
    assert "ray-nlp" in answer.params["text"]

    dm = {**app_mention_event("ray list"), "type": "message", "channel": "D0ALICE01", "channel_type": "im"}
    body = json.dumps(event_callback(dm)).encode()
    assert (
        signed_request(adapter.url, body, SIGNING_SECRET, content_type=JSON_CONTENT_TYPE).send().status == 200
    )
    answers = slack_api.wait_for_calls("chat.postMessage", count=2)
    assert answers[1].params["channel"] == "D0ALICE01"
    assert "thread_ts" not in answers[1].params
    assert "No clusters" in answers[1].params["text"]


def test_slack_user_group_grants_rights_and_is_cached(
    slack_api: SlackApiStandIn, start_slack: StartSlack
) -> None:
    slack_api.set_usergroup("S0NLPTEAM", ["U0CAROL01"])
    slack_api.set_usergroup("S0APPROVE", [])
    parts, adapter = start_slack()

    for name in ("one", "two"):
        url = slack_api.new_response_url()
        _command(adapter, f"create {name}", url, user_id="U0CAROL01", user_name="carol").send()
        assert slack_api.wait_for_responses(url)[0].body["text"].startswith(f"Creating {name}")
    stranger = slack_api.new_response_url()
    _command(adapter, "create three", stranger, user_id="U0DAVE001").send()
    assert "I don't know you" in slack_api.wait_for_responses(stranger)[0].body["text"]

    lookups = [c.params["usergroup"] for c in slack_api.calls("usergroups.users.list")]
    assert sorted(lookups) == ["S0APPROVE", "S0NLPTEAM"]  # once per group: cached afterwards
    assert {c.ref.name for c in parts.backend.list()} == {"one", "two"}
