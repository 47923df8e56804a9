"""The adapters' pure parts, on their own: payload conversion, command detection, rendering for
Matrix, the replay guard's window, settings from the environment (files, errors, no secret in a
repr), the sync backoff, and the health endpoints."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import aiohttp
import pytest
from slack_bolt.request import BoltRequest

from bot.adapters.base import Button, ButtonStyle, Platform, Reply, ReplyStatus
from bot.adapters.matrix import MatrixAdapter
from bot.adapters.matrix_convert import (
    command_text,
    decode_thread,
    encode_thread,
    image_content,
    notice_content,
    png_size,
)
from bot.adapters.matrix_settings import MatrixSettings
from bot.adapters.runtime import HealthServer, Readiness, SettingsError
from bot.adapters.slack_convert import (
    answer_privately,
    from_block_action,
    from_message_event,
    from_slash_command,
    message_parts,
    strip_mention,
)
from bot.adapters.slack_guard import ReplayGuard
from bot.adapters.slack_settings import SlackSettings
from bot.redact import MASK, redact
from tests.standins.slack_payloads import (
    app_mention_event,
    block_actions_payload,
    slash_command_fields,
)

ROOT = Path(__file__).resolve().parents[2]
BOT = "@rayops:example.org"

# --- Slack payloads ---------------------------------------------------------------------------


def test_slash_command_becomes_a_command_with_its_response_url() -> None:
    fields = slash_command_fields("  status demo ", response_url="http://127.0.0.1:1/r")
    command, origin = from_slash_command(fields)
    assert (command.platform, command.user_id, command.text, command.user_display) == (
        Platform.SLACK,
        "U0ALICE01",
        "status demo",
        "alice",
    )
    assert (command.channel_id, command.is_button, command.thread_id) == ("C0RAYOPS1", False, None)
    assert (origin.response_url, origin.kind) == ("http://127.0.0.1:1/r", "slash")


def test_only_our_buttons_are_commands_and_the_value_is_the_command() -> None:
    ours = from_block_action(block_actions_payload("rayops-1", "approve k3j2mq7x", user_id="U0BOSS001"))
    assert ours is not None
    command, origin = ours
    assert command.is_button and command.button_value == "approve k3j2mq7x"
    assert command.command_text == "approve k3j2mq7x" and command.user_id == "U0BOSS001"
    assert origin.kind == "button"
    assert from_block_action(block_actions_payload("someone_elses_button", "approve x")) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<@U0BOT> status demo", "status demo"),
        ("<@U0BOT|rayops>: ray list", "ray list"),
        ("  <@U0BOT>   whoami", "whoami"),
        ("<@U0OTHER> status demo", "<@U0OTHER> status demo"),
        ("status demo", "status demo"),
    ],
)
def test_a_leading_mention_of_the_bot_is_stripped(text: str, expected: str) -> None:
    assert strip_mention(text, "U0BOT") == expected


def test_message_events_from_bots_edits_and_the_bot_itself_are_not_commands() -> None:
    mention = app_mention_event("<@U0BOT> list", ts="1700000000.000100")
    command, origin = from_message_event(mention, "U0BOT", "mention") or (None, None)
    assert command is not None and origin is not None
    assert (command.text, command.thread_id, origin.thread_ts) == ("list", mention["ts"], mention["ts"])
    assert from_message_event({**mention, "subtype": "message_changed"}, "U0BOT", "dm") is None
    assert from_message_event({**mention, "bot_id": "B0OTHER"}, "U0BOT", "dm") is None
    assert from_message_event({**mention, "user": "U0BOT"}, "U0BOT", "dm") is None
    dm = from_message_event({**mention, "text": "list", "channel": "D01"}, "U0BOT", "dm")
    assert dm is not None and dm[1].thread_ts is None  # a direct message is answered in place


def test_who_sees_an_answer_and_a_mention_first() -> None:
    press, _ = from_block_action(block_actions_payload("rayops-0", "approve x")) or (None, None)
    typed, _ = from_slash_command(slash_command_fields("approve x"))
    assert press is not None
    refused = Reply("only approvers may approve", ReplyStatus.REFUSED)
    assert answer_privately(press, refused) and not answer_privately(typed, refused)
    assert answer_privately(typed, Reply("confirm?", ReplyStatus.CONFIRM, ephemeral=True))
    text, blocks = message_parts(Reply("demo is ready."), mention="U0ALICE01")
    assert text == "<@U0ALICE01> demo is ready."
    assert blocks[0]["text"]["text"] == "<@U0ALICE01>"


# --- the replay guard -------------------------------------------------------------------------


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_replay_guard_remembers_a_request_until_its_timestamp_leaves_the_window() -> None:
    clock = _Clock(1_700_000_000.0)
    guard = ReplayGuard(clock=clock)
    ts = str(int(clock.now))
    assert guard.admit(ts, "v0=aa") is None
    assert guard.admit(ts, "v0=aa") == (401, "replayed")
    assert guard.admit(ts, "v0=bb") is None  # another request in the same second
    clock.now += 302  # past the window: Slack's check refuses the timestamp anyway; the entry goes
    assert guard.admit(str(int(clock.now)), "v0=cc") is None
    assert len(guard) == 1
    assert guard.admit("", "v0=aa") == (401, "no usable timestamp")
    assert guard.admit(ts, "") == (401, "no signature")


def test_replay_guard_refuses_rather_than_forgets_when_full() -> None:
    clock = _Clock(1_700_000_000.0)
    guard = ReplayGuard(max_entries=2, clock=clock)
    ts = str(int(clock.now))
    assert guard.admit(ts, "v0=1") is None and guard.admit(ts, "v0=2") is None
    assert guard.admit(ts, "v0=3") == (503, "replay cache full")
    assert guard.admit(ts, "v0=1") == (401, "replayed")


def test_replay_guard_lets_socket_mode_through() -> None:
    guard = ReplayGuard()
    req = BoltRequest(body=json.dumps({"type": "block_actions"}), mode="socket_mode")
    passed: list[bool] = []
    guard.process(req=req, resp=None, next=lambda: passed.append(True))  # type: ignore[arg-type, func-returns-value]
    assert passed == [True] and len(guard) == 0


# --- settings ---------------------------------------------------------------------------------


def test_slack_settings_read_files_and_keep_secrets_out_of_repr(tmp_path: Path) -> None:
    token_file = tmp_path / "bot-token"
    token_file.write_text("xoxb-9990001112223-abcdefABCDEF123456\n")
    s = SlackSettings.from_env(
        {
            "SLACK_BOT_TOKEN_FILE": str(token_file),
            "SLACK_SIGNING_SECRET": "0d1e2f3a4b5c6d7e8f90a1b2c3d4e5f6",
            "RAYOPS_SLACK_MODE": "HTTP",
            "RAYOPS_SLACK_PORT": "3000",
            "RAYOPS_SLACK_API_URL": "http://127.0.0.1:1/api",
        }
    )
    assert s.bot_token == "xoxb-9990001112223-abcdefABCDEF123456"
    assert (s.mode, s.port, s.host, s.api_url) == ("http", 3000, "127.0.0.1", "http://127.0.0.1:1/api/")
    assert "xoxb" not in repr(s) and "0d1e2f3a" not in repr(s)
    assert redact("secret 0d1e2f3a4b5c6d7e8f90a1b2c3d4e5f6 here") == f"secret {MASK} here"
    pod = SlackSettings.from_env(
        {"SLACK_BOT_TOKEN": "xoxb-1-2", "SLACK_APP_TOKEN": "xapp-1", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    )
    assert (pod.mode, pod.host) == ("socket", "0.0.0.0")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SLACK_BOT_TOKEN"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, "socket mode needs SLACK_APP_TOKEN"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "RAYOPS_SLACK_MODE": "http"}, "http mode needs SLACK_SIGNING_SECRET"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "RAYOPS_SLACK_MODE": "rtm"}, "socket or http"),
        (
            {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1", "RAYOPS_SLACK_PORT": "x"},
            "whole number",
        ),
        ({"SLACK_BOT_TOKEN_FILE": "/nonexistent/token"}, "SLACK_BOT_TOKEN_FILE: cannot read"),
    ],
)
def test_slack_settings_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        SlackSettings.from_env(env)


def test_matrix_settings(tmp_path: Path) -> None:
    s = MatrixSettings.from_env(
        {
            "MATRIX_HOMESERVER": "https://matrix.example.org/",
            "MATRIX_USER_ID": BOT,
            "MATRIX_ACCESS_TOKEN": "syt_cmF5b3Bz_abcdefghijklmnop_0AbCdE",
        }
    )
    assert (s.homeserver, s.allowed_inviters, s.encryption) == (
        "https://matrix.example.org",
        ("@*:example.org",),
        False,
    )
    assert "syt_" not in repr(s)
    for env, message in (
        ({"MATRIX_USER_ID": BOT, "MATRIX_ACCESS_TOKEN": "t" * 10}, "MATRIX_HOMESERVER"),
        (
            {"MATRIX_HOMESERVER": "h", "MATRIX_USER_ID": "rayops", "MATRIX_ACCESS_TOKEN": "t" * 10},
            "full user id",
        ),
        ({"MATRIX_HOMESERVER": "h", "MATRIX_USER_ID": BOT}, "MATRIX_ACCESS_TOKEN"),
        (
            {
                "MATRIX_HOMESERVER": "h",
                "MATRIX_USER_ID": BOT,
                "MATRIX_PASSWORD": "pw-123456",
                "MATRIX_E2EE": "yes",
            },
            "MATRIX_STORE_PATH",
        ),
    ):
        with pytest.raises(SettingsError, match=message):
            MatrixSettings.from_env(env)
    e2ee = MatrixSettings("h", BOT, password="pw-123456", encryption=True, store_path=str(tmp_path))
    with pytest.raises(SettingsError, match=r"matrix-nio\[e2e\]"):  # this build has no crypto extra
        MatrixAdapter(e2ee)


# --- Matrix commands and content --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "direct", "expected"),
    [
        ("!ray status demo", False, "status demo"),
        ("!RAY list", False, "list"),
        ("!ray", False, ""),
        ("!rayops status", False, None),
        ("rayops: status demo", False, "status demo"),
        ("RayOps Bot, whoami", False, "whoami"),
        ("@rayops:example.org list", False, "list"),
        ("@rayops list", False, "list"),
        ("status demo", False, None),
        ("status demo", True, "status demo"),
        ("> <@alice:example.org> earlier\n\n!ray list", False, "list"),
    ],
)
def test_matrix_command_text(body: str, direct: bool, expected: str | None) -> None:
    assert command_text(body, user_id=BOT, display_name="RayOps Bot", direct=direct) == expected


def test_notice_content_buttons_mention_and_thread() -> None:
    reply = Reply(
        "over your limits <b>",
        ReplyStatus.PENDING,
        title="Approval needed: k3j2mq7x",
        buttons=(Button("Approve", "approve k3j2mq7x", ButtonStyle.PRIMARY), Button("Deny", "deny k3j2mq7x")),
    )
    c = notice_content(reply, reply_to="$cmd", thread_root="$root", mention="@alice:example.org")
    assert c["msgtype"] == "m.notice" and c["format"] == "org.matrix.custom.html"
    assert c["body"].startswith("@alice:example.org: Approval needed: k3j2mq7x\n")
    assert c["body"].endswith("Approve: type `!ray approve k3j2mq7x`\nDeny: type `!ray deny k3j2mq7x`")
    assert "[Approve:" not in c["body"]  # the console's hint form is replaced by what to type here
    assert "&lt;b&gt;" in c["formatted_body"] and "<code>!ray deny k3j2mq7x</code>" in c["formatted_body"]
    assert c["m.mentions"] == {"user_ids": ["@alice:example.org"]}
    assert c["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": "$root",
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": "$cmd"},
    }
    plain = notice_content(Reply("ok"), reply_to="$cmd")
    assert plain["m.relates_to"] == {"m.in_reply_to": {"event_id": "$cmd"}}
    assert "m.relates_to" not in notice_content(Reply("ok"))


def test_thread_handles_and_image_content() -> None:
    assert decode_thread(encode_thread("$e", None)) == ("$e", None)
    assert decode_thread(encode_thread("$e", "$r")) == ("$e", "$r")
    assert decode_thread(None) == (None, None)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (600).to_bytes(4, "big") + (250).to_bytes(4, "big")
    assert png_size(png) == (600, 250) and png_size(b"GIF89a") is None
    c = image_content("c.png", "mxc://s/x", png, "chart", "$e", None)
    assert c["info"] == {"mimetype": "image/png", "size": len(png), "w": 600, "h": 250}
    assert (c["msgtype"], c["url"], c["body"]) == ("m.image", "mxc://s/x", "chart")


def test_sync_backoff_doubles_up_to_the_cap_with_jitter_between_half_and_full() -> None:
    s = MatrixSettings("http://127.0.0.1:1", BOT, access_token="t" * 10, backoff_initial_s=1, backoff_max_s=8)
    low, high = MatrixAdapter(s, rng=lambda: 0.0), MatrixAdapter(s, rng=lambda: 1.0)
    assert [high.backoff_s(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]
    assert [low.backoff_s(n) for n in range(1, 5)] == [0.5, 1, 2, 4]


# --- the process ------------------------------------------------------------------------------


async def test_health_endpoints_follow_readiness() -> None:
    state = Readiness(False, "Socket Mode link down (reconnecting)")
    server = HealthServer("127.0.0.1", 0, lambda: state)
    await server.start()
    try:
        async with aiohttp.ClientSession(trust_env=False) as http:
            base = f"http://127.0.0.1:{server.port}"
            async with http.get(base + "/healthz") as r:
                assert r.status == 200
            async with http.get(base + "/readyz") as r:
                assert (r.status, await r.text()) == (503, "Socket Mode link down (reconnecting)\n")
            state = Readiness(True, "slack socket mode ready")
            async with http.get(base + "/readyz") as r:
                assert r.status == 200
    finally:
        await server.stop()


def test_bot_run_refuses_missing_chat_settings_with_exit_code_2(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAYOPS_", "SLACK_", "MATRIX_"))}
    policies = ROOT / "tests" / "bot" / "fixtures" / "policies"
    base = [str(ROOT / ".venv" / "bin" / "rayops"), "bot", "run", "--backend", "memory"]
    base += ["--policies", str(policies), "--state-dir", str(tmp_path)]
    for adapter, message in (("slack", "SLACK_BOT_TOKEN"), ("matrix", "MATRIX_HOMESERVER")):
        r = subprocess.run([*base, "--adapter", adapter], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 2, r.stderr
        assert message in r.stderr and "Traceback" not in r.stderr


def test_the_slack_app_manifest_fits_the_adapter() -> None:
    """What the adapter listens to and calls must be what the app an admin creates allows."""
    import yaml

    manifest = yaml.safe_load((ROOT / "deploy" / "slack" / "app-manifest.yaml").read_text())
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == SlackSettings(bot_token="xoxb-1", app_token="xapp-1").command
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    # chat.postMessage/postEphemeral, /ray, files_upload_v2, usergroups.users.list, app_mention, DMs
    assert {
        "chat:write",
        "commands",
        "files:write",
        "usergroups:read",
        "app_mentions:read",
        "im:history",
    } <= scopes
    settings = manifest["settings"]
    assert {"app_mention", "message.im"} <= set(settings["event_subscriptions"]["bot_events"])
    assert settings["interactivity"]["is_enabled"] is True  # block_actions: the buttons
    assert settings["socket_mode_enabled"] is True  # the adapter's default mode
