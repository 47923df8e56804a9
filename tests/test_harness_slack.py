"""The Slack harness works against real slack-bolt and slack_sdk code: signed HTTP requests, Web API calls,
429 handling, file uploads, response URLs and Socket Mode, all on 127.0.0.1.

These tests pin what later bot tests rely on: that a bolt app served by the harness accepts exactly the
requests Slack would sign, that the stand-in answers the way slack_sdk expects (so the SDK's own retry and
upload logic runs), and that Socket Mode connects, acks and closes without leaving threads behind.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import pytest
from slack_bolt import Ack, App, Respond, Say
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncSay
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from tests.harness.slack import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, BoltHttpServer, close_socket_mode
from tests.standins.slack_api import SlackApiStandIn
from tests.standins.slack_payloads import (
    DEFAULT_CHANNEL_ID,
    DEFAULT_USER_ID,
    app_mention_event,
    block_actions_payload,
    event_callback,
    interactive_body,
    slash_command_body,
    slash_command_fields,
)
from tests.standins.slack_signing import SignedRequest, sign, signature, signed_request

MakeApp = Callable[..., App]
Serve = Callable[..., BoltHttpServer]


def _ray_app(make_slack_app: MakeApp, seen: list[dict[str, Any]], **app_kwargs: Any) -> App:
    """A `/ray` command that acks at once, then answers in the channel and on the response URL."""
    app = make_slack_app(**app_kwargs)

    @app.command("/ray")
    def ray(ack: Ack, command: dict[str, Any], say: Say, respond: Respond) -> None:
        seen.append(command)
        ack("working on it")
        say(f"<@{command['user_id']}> ray {command['text']}: 2 workers")
        respond("done")

    return app


# ---------------------------------------------------------------------------- signed HTTP requests


def test_signed_slash_command_is_acked_and_followed_up(
    slack_api: SlackApiStandIn, make_slack_app: MakeApp, serve_slack_app: Serve
) -> None:
    seen: list[dict[str, Any]] = []
    server = serve_slack_app(_ray_app(make_slack_app, seen))
    response_url = slack_api.new_response_url()

    reply = server.post(slash_command_body("status", response_url=response_url))

    assert reply.status == 200
    assert "working on it" in reply.text
    post = slack_api.wait_for_calls("chat.postMessage")[0]
    assert post.status == 200
    assert post.token == BOT_TOKEN
    assert post.params["channel"] == DEFAULT_CHANNEL_ID
    assert post.params["text"] == f"<@{DEFAULT_USER_ID}> ray status: 2 workers"
    assert post.response["message"]["ts"] == post.response["ts"]
    assert [r.body["text"] for r in slack_api.wait_for_responses(response_url)] == ["done"]
    assert [c["text"] for c in seen] == ["status"]
    # The app verified its token against the stand-in when it was built.
    assert [c.token for c in slack_api.calls("auth.test")] == [BOT_TOKEN]


def _wrong_secret(server: BoltHttpServer, body: bytes) -> SignedRequest:
    return server.request(body, secret="not-the-signing-secret")


def _tampered_body(server: BoltHttpServer, body: bytes) -> SignedRequest:
    signed = server.request(body)
    return SignedRequest(signed.url, body.replace(b"status", b"delete"), signed.headers)


def _unsigned(server: BoltHttpServer, body: bytes) -> SignedRequest:
    return SignedRequest(server.url, body, {"Content-Type": "application/x-www-form-urlencoded"})


@pytest.mark.parametrize("forge", [_wrong_secret, _tampered_body, _unsigned])
def test_badly_signed_request_is_401_and_runs_no_listener(
    slack_api: SlackApiStandIn,
    make_slack_app: MakeApp,
    serve_slack_app: Serve,
    forge: Callable[[BoltHttpServer, bytes], SignedRequest],
) -> None:
    seen: list[dict[str, Any]] = []
    server = serve_slack_app(_ray_app(make_slack_app, seen))

    reply = forge(server, slash_command_body("status", response_url=slack_api.new_response_url())).send()

    assert reply.status == 401
    # A listener acks before the HTTP reply is sent, so a 401 means none started: no wait needed.
    assert seen == []
    assert slack_api.calls("chat.postMessage") == []


@pytest.mark.parametrize(("age_s", "status"), [(600, 401), (-600, 401), (310, 401), (240, 200)])
def test_timestamp_outside_five_minutes_is_401(
    slack_api: SlackApiStandIn, make_slack_app: MakeApp, serve_slack_app: Serve, age_s: int, status: int
) -> None:
    seen: list[dict[str, Any]] = []
    server = serve_slack_app(_ray_app(make_slack_app, seen))
    body = slash_command_body("status", response_url=slack_api.new_response_url())

    reply = server.post(body, timestamp=int(time.time()) - age_s)

    assert reply.status == status
    assert len(seen) == (1 if status == 200 else 0)


def test_resent_request_is_byte_identical_and_plain_bolt_accepts_the_replay(
    slack_api: SlackApiStandIn, make_slack_app: MakeApp, serve_slack_app: Serve
) -> None:
    """Slack's scheme has no replay protection inside the 5-minute window; rayops must add its own.

    This pins the helper a later "replayed request -> 401" test needs (resend the same bytes and headers)
    and the baseline it must change: bolt alone answers the replay 200 and runs the listener again.
    """
    seen: list[dict[str, Any]] = []
    server = serve_slack_app(_ray_app(make_slack_app, seen))
    request = server.request(slash_command_body("scale up", response_url=slack_api.new_response_url()))

    first, replay = request.send(), request.send()

    assert (first.status, replay.status) == (200, 200)
    slack_api.wait_for_calls("chat.postMessage", count=2)
    assert len(seen) == 2
    assert seen[0]["trigger_id"] == seen[1]["trigger_id"]


def test_block_actions_click_over_http_answers_on_the_response_url(
    slack_api: SlackApiStandIn, make_slack_app: MakeApp, serve_slack_app: Serve
) -> None:
    app = make_slack_app()
    clicks: list[str] = []

    @app.action("approve_cluster")
    def approve(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        clicks.append(body["actions"][0]["value"])
        respond(text=f"approved by <@{body['user']['id']}>", replace_original=True)

    server = serve_slack_app(app)
    url = slack_api.new_response_url()

    reply = server.post(
        interactive_body(block_actions_payload("approve_cluster", "req-42", response_url=url))
    )

    assert reply.status == 200
    posted = slack_api.wait_for_responses(url)[0]
    assert posted.body["text"] == f"approved by <@{DEFAULT_USER_ID}>"
    assert posted.body["replace_original"] is True
    assert clicks == ["req-42"]


# ---------------------------------------------------------------------------- signing helper


def test_signature_matches_slacks_published_example_and_slack_sdk() -> None:
    # The worked example from Slack's "Verifying requests from Slack" page.
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
        b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
        b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F"
        b"96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert signature("8f742231b10e8888abcd99yyyzzz85a5", body, 1531420618) == expected

    now = int(time.time())
    headers = sign(SIGNING_SECRET, b"a=1", now)
    assert headers["X-Slack-Request-Timestamp"] == str(now)
    assert SignatureVerifier(SIGNING_SECRET).is_valid(
        body=b"a=1", timestamp=str(now), signature=headers["X-Slack-Signature"]
    )


def test_signed_request_refuses_non_loopback_urls() -> None:
    request = signed_request("http://hooks.example.com/slack/events", b"a=1", SIGNING_SECRET)
    with pytest.raises(ValueError, match="loopback"):
        request.send()


def test_slash_command_fields_are_the_ones_slack_sends() -> None:
    body = slash_command_body("create gpu-small", response_url="http://127.0.0.1:1/r")
    fields = parse_qsl(body.decode(), keep_blank_values=True)
    assert [k for k, _ in fields] == [
        "token",
        "team_id",
        "team_domain",
        "channel_id",
        "channel_name",
        "user_id",
        "user_name",
        "command",
        "text",
        "api_app_id",
        "is_enterprise_install",
        "response_url",
        "trigger_id",
    ]
    assert dict(fields)["text"] == "create gpu-small"
    assert dict(fields)["command"] == "/ray"


# ---------------------------------------------------------------------------- Web API semantics


def test_rate_limit_answers_429_with_retry_after(slack_api: SlackApiStandIn) -> None:
    slack_api.rate_limit("chat.postMessage", count=1, retry_after=7)
    client = slack_api.web_client(BOT_TOKEN)  # slack_sdk's defaults: no rate-limit retries

    with pytest.raises(SlackApiError) as raised:
        client.chat_postMessage(channel=DEFAULT_CHANNEL_ID, text="alert")

    response = raised.value.response
    assert response.status_code == 429
    assert response["error"] == "ratelimited"
    assert {k.lower(): v for k, v in response.headers.items()}["retry-after"] == "7"
    assert client.chat_postMessage(channel=DEFAULT_CHANNEL_ID, text="alert")["ok"] is True
    assert [c.status for c in slack_api.calls("chat.postMessage")] == [429, 200]


def test_say_is_retried_after_retry_after_with_the_rate_limit_handler(
    slack_api: SlackApiStandIn, make_slack_app: MakeApp, serve_slack_app: Serve
) -> None:
    handlers = [ConnectionErrorRetryHandler(), RateLimitErrorRetryHandler(max_retry_count=1)]
    seen: list[dict[str, Any]] = []
    app = _ray_app(make_slack_app, seen, client=slack_api.web_client(BOT_TOKEN, retry_handlers=handlers))
    server = serve_slack_app(app)
    slack_api.rate_limit("chat.postMessage", count=1, retry_after=1)

    started = time.monotonic()
    reply = server.post(slash_command_body("status", response_url=slack_api.new_response_url()))
    acked_after = time.monotonic() - started

    assert reply.status == 200
    assert acked_after < 1.0  # the ack does not wait for the rate-limited follow-up
    first, retry = slack_api.wait_for_calls("chat.postMessage", count=2)
    assert (first.status, first.response["error"]) == (429, "ratelimited")
    assert (retry.status, retry.response["ok"]) == (200, True)
    assert retry.at - first.at >= 1.0
    assert retry.params == first.params


@pytest.mark.parametrize(
    ("token", "method", "error"),
    [
        (None, "chat.postMessage", "not_authed"),
        ("not-a-slack-token", "chat.postMessage", "invalid_auth"),
        (APP_TOKEN, "chat.postMessage", "not_allowed_token_type"),
        (BOT_TOKEN, "apps.connections.open", "not_allowed_token_type"),
    ],
)
def test_tokens_are_checked_like_slack(
    slack_api: SlackApiStandIn, token: str | None, method: str, error: str
) -> None:
    client = WebClient(token=token, base_url=slack_api.base_url)
    params = {"channel": DEFAULT_CHANNEL_ID, "text": "x"} if method == "chat.postMessage" else {}

    with pytest.raises(SlackApiError) as raised:
        client.api_call(method, params=params)

    assert raised.value.response.status_code == 200
    assert raised.value.response["error"] == error
    assert slack_api.calls(method)[0].token == token


def test_revoked_token_gets_token_revoked(slack_api: SlackApiStandIn) -> None:
    client = slack_api.web_client(BOT_TOKEN)
    assert client.auth_test()["user_id"] == slack_api.workspace.bot_user_id
    slack_api.revoke_token(BOT_TOKEN)
    with pytest.raises(SlackApiError, match="token_revoked"):
        client.auth_test()


def test_chat_update_rewrites_the_stored_message_and_ephemeral_returns_message_ts(
    slack_api: SlackApiStandIn,
) -> None:
    client = slack_api.web_client(BOT_TOKEN)
    posted = client.chat_postMessage(channel=DEFAULT_CHANNEL_ID, text="scaling up: 1/4 workers")

    updated = client.chat_update(channel=DEFAULT_CHANNEL_ID, ts=posted["ts"], text="scaled: 4/4 workers")
    ephemeral = client.chat_postEphemeral(channel=DEFAULT_CHANNEL_ID, user=DEFAULT_USER_ID, text="only you")

    assert updated["ts"] == posted["ts"]
    stored = slack_api.message(DEFAULT_CHANNEL_ID, posted["ts"])
    assert stored is not None and stored["text"] == "scaled: 4/4 workers"
    # The record of the first call keeps what was answered then.
    assert slack_api.calls("chat.postMessage")[0].response["message"]["text"] == "scaling up: 1/4 workers"
    assert ephemeral["message_ts"] > posted["ts"]
    with pytest.raises(SlackApiError, match="message_not_found"):
        client.chat_update(channel=DEFAULT_CHANNEL_ID, ts="1.000001", text="x")


def test_usergroup_membership_and_injected_failures(slack_api: SlackApiStandIn) -> None:
    client = slack_api.web_client(BOT_TOKEN)
    slack_api.set_usergroup("S0RAYADMIN", ["U0ALICE01", "U0BOB0001"])
    slack_api.fail("usergroups.users.list", "internal_error", status=500)

    with pytest.raises(SlackApiError) as raised:
        client.usergroups_users_list(usergroup="S0RAYADMIN")

    assert raised.value.response.status_code == 500
    assert client.usergroups_users_list(usergroup="S0RAYADMIN")["users"] == ["U0ALICE01", "U0BOB0001"]
    with pytest.raises(SlackApiError, match="no_such_subteam"):
        client.usergroups_users_list(usergroup="S0UNKNOWN")


def _png(width: int = 2, height: int = 2) -> bytes:
    """A valid RGB PNG, built by hand so the test does not import matplotlib."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_files_upload_v2_lands_the_bytes_in_the_stand_in(slack_api: SlackApiStandIn) -> None:
    client = slack_api.web_client(BOT_TOKEN)
    png = _png()
    thread_ts = client.chat_postMessage(channel=DEFAULT_CHANNEL_ID, text="load chart")["ts"]

    result = client.files_upload_v2(
        channel=DEFAULT_CHANNEL_ID, thread_ts=thread_ts, content=png, filename="load.png", title="Load (1h)"
    )

    [uploaded] = slack_api.files()
    assert uploaded.content == png
    assert uploaded.length == len(png)
    assert (uploaded.channel_id, uploaded.thread_ts, uploaded.title) == (
        DEFAULT_CHANNEL_ID,
        thread_ts,
        "Load (1h)",
    )
    assert result["file"]["id"] == uploaded.file_id
    assert result["file"]["mimetype"] == "image/png"
    methods = [c.method for c in slack_api.calls() if c.method.startswith("files.")]
    assert methods == ["files.getUploadURLExternal", "files.completeUploadExternal"]


def test_response_url_takes_five_posts_like_slacks(slack_api: SlackApiStandIn) -> None:
    url = slack_api.new_response_url()
    webhook = WebhookClient(url)

    statuses = [webhook.send(text=f"update {n}", response_type="in_channel").status_code for n in range(6)]

    assert statuses == [200] * 5 + [404]
    assert [p.body["text"] for p in slack_api.responses(url)][:2] == ["update 0", "update 1"]
    assert slack_api.responses(url)[0].body["response_type"] == "in_channel"


# ---------------------------------------------------------------------------- Socket Mode


def test_socket_mode_slash_command_is_acked_over_the_socket_and_closes_cleanly(
    slack_api: SlackApiStandIn,
    make_slack_app: MakeApp,
    connect_socket_mode: Callable[..., SocketModeHandler],
) -> None:
    seen: list[dict[str, Any]] = []
    app = _ray_app(make_slack_app, seen)
    threads_before = set(threading.enumerate())
    handler = connect_socket_mode(app)
    response_url = slack_api.new_response_url()

    envelope_id = slack_api.push_envelope(
        "slash_commands", slash_command_fields("status", response_url=response_url)
    )
    ack = slack_api.wait_for_ack(envelope_id)

    assert ack.payload == {"text": "working on it"}
    assert [(c.token, c.status) for c in slack_api.calls("apps.connections.open")] == [(APP_TOKEN, 200)]
    post = slack_api.wait_for_calls("chat.postMessage")[0]
    assert (post.token, post.params["channel"]) == (BOT_TOKEN, DEFAULT_CHANNEL_ID)
    assert slack_api.wait_for_responses(response_url)[0].body["text"] == "done"
    assert [c["text"] for c in seen] == ["status"]

    close_socket_mode(handler, slack_api)

    leftover = [
        t.name
        for t in set(threading.enumerate()) - threads_before
        if t.is_alive() and not t.name.startswith("bolt-listener")  # the app's pool, shut at teardown
    ]
    assert leftover == []
    assert slack_api.socket_connections() == 0


def test_socket_mode_block_actions_and_app_mention(
    slack_api: SlackApiStandIn,
    make_slack_app: MakeApp,
    connect_socket_mode: Callable[..., SocketModeHandler],
) -> None:
    app = make_slack_app()
    clicks: list[str] = []

    @app.action("approve_cluster")
    def approve(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        clicks.append(body["actions"][0]["value"])
        respond(text="approved", replace_original=True)

    @app.event("app_mention")
    def mention(event: dict[str, Any], say: Say) -> None:
        say(text="2 clusters running", thread_ts=event["ts"])

    connect_socket_mode(app)
    url = slack_api.new_response_url()

    click_ack = slack_api.send_envelope(
        "interactive", block_actions_payload("approve_cluster", "req-7", response_url=url)
    )
    mention_event = app_mention_event(f"<@{slack_api.workspace.bot_user_id}> ray status")
    event_ack = slack_api.send_envelope("events_api", event_callback(mention_event))

    assert (click_ack.payload, event_ack.payload) == (None, None)
    assert slack_api.wait_for_responses(url)[0].body["text"] == "approved"
    assert clicks == ["req-7"]
    post = slack_api.wait_for_calls("chat.postMessage")[0]
    assert post.params["thread_ts"] == mention_event["ts"]


def test_socket_mode_reconnects_on_a_disconnect_request(
    slack_api: SlackApiStandIn,
    make_slack_app: MakeApp,
    connect_socket_mode: Callable[..., SocketModeHandler],
) -> None:
    seen: list[dict[str, Any]] = []
    connect_socket_mode(_ray_app(make_slack_app, seen))

    slack_api.request_reconnect()
    url = slack_api.new_response_url()
    ack = slack_api.send_envelope("slash_commands", slash_command_fields("status", response_url=url))

    assert ack.payload == {"text": "working on it"}
    assert slack_api.links_opened() == 2
    assert slack_api.socket_connections() == 1  # the stand-in closed the old link, as Slack does
    assert len(slack_api.calls("apps.connections.open")) == 2  # a fresh URL for the new link
    assert slack_api.wait_for_responses(url)[0].body["text"] == "done"


def test_socket_link_refuses_a_ticket_it_did_not_issue(slack_api: SlackApiStandIn) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as raised:
        opener.open(f"{slack_api.root_url}/link/?ticket=forged", timeout=5)
    raised.value.close()
    assert raised.value.code == 401


async def test_async_app_over_socket_mode(slack_api: SlackApiStandIn) -> None:
    """The same stand-in serves an asyncio bot: AsyncApp + the aiohttp Socket Mode client."""
    app = AsyncApp(client=slack_api.async_web_client(BOT_TOKEN), signing_secret=SIGNING_SECRET)

    @app.command("/ray")
    async def ray(ack: AsyncAck, say: AsyncSay) -> None:
        await ack("working on it")
        await say("2 workers")

    handler = AsyncSocketModeHandler(app, APP_TOKEN)
    await handler.connect_async()
    try:
        await asyncio.to_thread(slack_api.wait_for_socket_connection)
        envelope_id = await asyncio.to_thread(
            slack_api.push_envelope, "slash_commands", slash_command_fields("status")
        )
        ack = await slack_api.await_ack(envelope_id)
        post = (await slack_api.await_calls("chat.postMessage"))[0]
    finally:
        await handler.close_async()

    assert ack.payload == {"text": "working on it"}
    assert (post.token, post.params["text"]) == (BOT_TOKEN, "2 workers")
