"""No token or secret reaches a log line, an audit record or a chat message: `rayops bot run` as a
real process (the composition root installs redaction; logging at DEBUG for every logger, slack_sdk,
bolt, nio and aiohttp included), with real-looking Slack tokens against the stand-in and a real
Synapse access token, and people pasting tokens into commands.

Everything the process wrote is scanned: stderr (all logs), the audit file, the approval records,
and every message the bot sent (the stand-in's records of Web API calls and response-URL posts;
the bot's events in every Matrix room). Slack response URLs are capabilities too (whoever has one
may post into the channel), so they must not be logged either.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from nio import RoomMessagesResponse

from bot.redact import MASK
from controller.localray import free_ports
from tests.bot_adapters.conftest import SLACK_ACCESS, write_policies
from tests.bot_adapters.matrix_people import Person
from tests.harness.synapse import SynapseServer
from tests.standins.slack_api import SlackApiStandIn
from tests.standins.slack_payloads import (
    block_actions_payload,
    interactive_body,
    slash_command_body,
    slash_command_fields,
)
from tests.standins.slack_signing import signed_request

ROOT = Path(__file__).resolve().parents[2]
RAYOPS = ROOT / ".venv" / "bin" / "rayops"

SLACK_BOT = "xoxb-2045678901234-2045678901234-Zq8RkV3tXbW9yLmN4pQs7UaE"
SLACK_APP = "xapp-1-A02BCDEF3GH-2045678901234-6a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b"
SIGNING_SECRET = "5f0d7e3c9a1b2c4d6e8f0a1b3c5d7e9f"
MATRIX_PASSWORD = "correct horse battery staple 42"

pytestmark = pytest.mark.slow


def _fragments(*secrets: str) -> list[str]:
    return [s[-16:] for s in secrets]  # a token's tail must not survive either


def _leaks(text: str, fragments: list[str]) -> list[str]:
    return [f for f in fragments if f in text]


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAYOPS_", "SLACK_", "MATRIX_"))
        and k.lower() not in ("https_proxy", "http_proxy")
    }
    return env | extra


def _start(tmp: Path, adapter: str, env: dict[str, str], policies: Path) -> subprocess.Popen[str]:
    """The bot process; its stderr goes to a file (a pipe nobody reads until the end would fill up
    with debug logs and block the bot)."""
    return subprocess.Popen(
        [
            str(RAYOPS),
            "bot",
            "run",
            "--adapter",
            adapter,
            "--backend",
            "memory",
            "--policies",
            str(policies),
            "--state-dir",
            str(tmp / "state"),
            "--ready-on-create",
            "--poll-interval",
            "0.1",
            "--log-level",
            "DEBUG",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "stderr.log").open("w"),
        text=True,
        env=env,
        cwd=ROOT,
    )


def _wait_ready(proc: subprocess.Popen[str], port: int, timeout: float = 60.0) -> None:
    """Poll /readyz (the pod's readiness probe) until 200."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the bot exited with {proc.returncode}; see its stderr.log")
        try:
            with opener.open(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=1) as h:
                        assert h.status == 200
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError("the bot never became ready")


def _stop(proc: subprocess.Popen[str], tmp: Path) -> str:
    """SIGTERM, as Kubernetes stops a pod: the bot must exit 0. Returns everything it logged."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    err = (tmp / "stderr.log").read_text()
    assert proc.returncode == 0, err[-3000:]
    return err


@pytest.fixture
def reaper() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


def _state_texts(tmp: Path) -> dict[str, str]:
    state = tmp / "state"
    return {
        "audit": (state / "audit.jsonl").read_text() if (state / "audit.jsonl").exists() else "",
        "approvals": "".join(p.read_text() for p in (state / "approvals").glob("*.json")),
    }


@pytest.mark.parametrize("mode", ["http", "socket"])
def test_slack_bot_process_leaks_no_token(
    tmp_path: Path, slack_api: SlackApiStandIn, reaper: list[subprocess.Popen[str]], mode: str
) -> None:
    slack_port, health_port = free_ports(2)
    env = _env(
        SLACK_BOT_TOKEN=SLACK_BOT,
        SLACK_APP_TOKEN=SLACK_APP,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        RAYOPS_SLACK_MODE=mode,
        RAYOPS_SLACK_PORT=str(slack_port),
        RAYOPS_SLACK_API_URL=slack_api.base_url,
        RAYOPS_HTTP_PORT=str(health_port),
        RAYOPS_NAMESPACE="ray-nlp",
    )
    slack_api.set_usergroup("S0NLPTEAM", [])
    slack_api.set_usergroup("S0APPROVE", [])
    proc = _start(tmp_path, "slack", env, write_policies(tmp_path / "policies", SLACK_ACCESS))
    reaper.append(proc)
    _wait_ready(proc, health_port)
    url = f"http://127.0.0.1:{slack_port}/slack/events"

    def command(text: str, user: str = "U0ALICE01", secret: str = SIGNING_SECRET) -> str:
        response_url = slack_api.new_response_url()
        if mode == "socket":
            slack_api.push_envelope(
                "slash_commands", slash_command_fields(text, user_id=user, response_url=response_url)
            )
        else:
            body = slash_command_body(text, user_id=user, response_url=response_url)
            signed_request(url, body, secret).send()
        return response_url

    slack_api.rate_limit("chat.postMessage", count=1, retry_after=1)  # the DevOps post is retried
    answers = [command("create demo"), command(f"status {SLACK_BOT}"), command(f"create x ttl={SLACK_APP}")]
    pending = command("create big workers=6")
    if mode == "http":  # logged by bolt as an invalid signature, body and all
        command(f"create y note={SIGNING_SECRET}", secret="wrong-secret-0123456789")
    for u in [*answers, pending]:
        slack_api.wait_for_responses(u)
    [devops] = [c for c in slack_api.wait_for_calls("chat.postMessage", count=2) if c.status == 200]
    approve = next(
        e["value"] for b in devops.params["blocks"] if b["type"] == "actions" for e in b["elements"]
    )
    pressed = slack_api.new_response_url()
    payload = block_actions_payload("rayops-0", approve, user_id="U0BOSS001", response_url=pressed)
    if mode == "socket":
        slack_api.push_envelope("interactive", payload)
    else:
        signed_request(url, interactive_body(payload), SIGNING_SECRET).send()
    slack_api.wait_for_responses(pressed)
    slack_api.wait_for_calls("chat.postMessage", count=3)  # the requester's outcome
    stderr = _stop(proc, tmp_path)

    sent = [json.dumps(c.params) for c in slack_api.calls()] + [
        json.dumps(p.body) for u in [*answers, pending, pressed] for p in slack_api.responses(u)
    ]
    fragments = _fragments(SLACK_BOT, SLACK_APP, SIGNING_SECRET)
    texts = {"stderr": stderr, **_state_texts(tmp_path), **{f"chat {i}": t for i, t in enumerate(sent)}}
    for where, text in texts.items():
        assert not _leaks(text, fragments), (where, text)
    # Response URLs are capabilities: not in the logs either.
    response_ids = [u.rsplit("/", 1)[-1] for u in [*answers, pending, pressed]]
    assert not [line for line in stderr.splitlines() if any(r in line for r in response_ids)]
    # The scan looked at real material: debug logs of the SDK and bolt, the audit, the answers.
    assert "slack_sdk" in stderr and "slack_bolt" in stderr and "rayops.audit" in stderr
    assert "rate-limited (429)" in stderr
    assert "Invalid request signature" in stderr if mode == "http" else "apps.connections.open" in stderr
    assert "Unclosed" not in stderr and "Traceback" not in stderr
    assert any(MASK in t for t in sent)
    assert MASK in stderr or mode == "socket"  # http: bolt logs the refused request, masked
    assert texts["audit"].count("\n") >= 4


async def test_matrix_bot_process_leaks_no_token(
    tmp_path: Path, synapse: SynapseServer, reaper: list[subprocess.Popen[str]]
) -> None:
    suffix = uuid.uuid4().hex[:8]
    bot = synapse.register_user(f"rayops{suffix}", MATRIX_PASSWORD)
    alice = Person.of(synapse, synapse.register_user(f"alice{suffix}", "pw-alice"))
    boss = Person.of(synapse, synapse.register_user(f"boss{suffix}", "pw-boss"))
    try:
        devops = await boss.create_room("devops", invite=[bot.user_id])
        team = await alice.create_room("team", invite=[bot.user_id])
        access = (
            "apiVersion: rayops.io/v1alpha1\nkind: AccessPolicy\nmetadata: {name: team}\nspec:\n"
            f'  devops: {{matrix: {{room: "{devops}"}}}}\n  approvers: [{{matrixUser: "{boss.id}"}}]\n'
            f'  rules:\n    - subjects: [{{matrixUser: "{alice.id}"}}]\n      namespaces: [ray-nlp]\n'
            "      profiles: [small]\n      limits: {clustersPerUser: 2, workersPerCluster: 4}\n"
        )
        (health_port,) = free_ports(1)
        env = _env(
            MATRIX_HOMESERVER=synapse.url,
            MATRIX_USER_ID=bot.user_id,
            MATRIX_ACCESS_TOKEN=bot.access_token,
            MATRIX_PASSWORD=MATRIX_PASSWORD,
            MATRIX_DEVICE_ID=bot.device_id,
            RAYOPS_MATRIX_SYNC_TIMEOUT="1",
            RAYOPS_HTTP_PORT=str(health_port),
            RAYOPS_NAMESPACE="ray-nlp",
        )
        proc = _start(tmp_path, "matrix", env, write_policies(tmp_path / "policies", access))
        reaper.append(proc)
        _wait_ready(proc, health_port)
        await alice.start()
        await boss.start()

        await alice.say(team, "!ray create demo")
        await alice.notice(team, "Creating demo")
        await alice.say(team, f"!ray status {bot.access_token}")
        await alice.notice(team, MASK)  # the pasted token is masked in the answer
        await alice.say(team, f"!ray create x note={MATRIX_PASSWORD}")
        await alice.notice(team, "")
        await alice.say(team, "!ray create big workers=6")
        pending = await alice.notice(team, "waits for an approver as `")
        rid = re.search(r"as `([a-z0-9]{8})`", pending.body)
        assert rid is not None
        await boss.say(devops, f"!ray approve {rid[1]}")
        await boss.notice(devops, "Approved")
        await alice.notice(team, "was approved by")
        stderr = _stop(proc, tmp_path)

        sent: list[str] = []
        for person, room in ((alice, team), (boss, devops)):
            resp = await person.client.room_messages(room, start=person.client.next_batch, limit=100)
            assert isinstance(resp, RoomMessagesResponse), resp
            sent += [json.dumps(e.source) for e in resp.chunk if e.sender == bot.user_id]
    finally:
        await alice.close()
        await boss.close()

    fragments = _fragments(bot.access_token, MATRIX_PASSWORD)
    texts = {"stderr": stderr, **_state_texts(tmp_path), **{f"chat {i}": t for i, t in enumerate(sent)}}
    for where, text in texts.items():
        assert not _leaks(text, fragments), (where, text)
    assert "DEBUG nio." in stderr and "rayops.audit" in stderr
    assert "Unclosed" not in stderr and "Traceback" not in stderr
    assert len(sent) >= 6 and any(MASK in t for t in sent)
