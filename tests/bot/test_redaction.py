"""Tokens and secrets never appear in logs, audit records or chat, however they get in."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bot.adapters.base import Notification, Reply
from bot.audit import JsonlAuditLog
from bot.authz import Identity
from bot.redact import MASK, Redactor, install_log_redaction, redact
from bot.render import to_blocks, to_html, to_text
from bot.settings import secret_values
from controller.backends.base import BackendUnavailable
from tests.bot.conftest import ALICE, APPROVER, OPS, make_harness

SLACK_BOT = "xoxb-2045678901234-2045678901234-Zq8RkV3tXbW9yLmN4pQs7UaE"
SLACK_USER = "xoxp-2045678901234-2045678901234-2045678901234-4f9c2a7e1b3d5f6a8c9e0b1d2f3a4c5e"
SLACK_APP = (
    "xapp-1-A02BCDEF3GH-2045678901234-6a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f"
)
SLACK_REFRESH = "xoxe.xoxp-1-Mi0yLTIwNDU2Nzg5MDEyMzQtMjA0NTY3ODkwMTIzNC0yMDQ1Njc4OTAxMjM0"
MATRIX = "syt_cmF5b3BzLWJvdA_kWuCYsGbHdQxTvNmPaLe_0ZtF3q"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # any shape: matched as a configured value
MATRIX_PASSWORD = "correct horse battery staple"
JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IkJ4In0.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJl"
TOKENS = (SLACK_BOT, SLACK_USER, SLACK_APP, SLACK_REFRESH, MATRIX, SIGNING_SECRET, MATRIX_PASSWORD, JWT)
FRAGMENTS = tuple(t[-16:] for t in TOKENS)  # a token's tail must not survive either


def leaks(text: str) -> list[str]:
    return [f for f in FRAGMENTS if f in text]


@pytest.mark.parametrize(
    "text",
    [
        f"token is {SLACK_BOT} ok",
        f"app={SLACK_APP}",
        f"{SLACK_REFRESH}",
        f"user {SLACK_USER}",
        f"matrix {MATRIX}",
        f"Authorization: Bearer {JWT}",
        f"headers {{'authorization': 'Bearer {JWT}'}}",
        f"GET /_matrix/client/v3/sync?access_token={MATRIX}&timeout=30000",
        f"password={MATRIX_PASSWORD.replace(' ', '-')}",
    ],
)
def test_patterns(text: str) -> None:
    out = Redactor()(text)
    assert MASK in out
    assert not leaks(out) and "Zq8RkV3t" not in out and "kWuCYsGb" not in out


def test_configured_secrets_of_any_shape() -> None:
    r = Redactor([SIGNING_SECRET, MATRIX_PASSWORD, "abc"])  # "abc" is too short to be a secret
    assert r(f"x {SIGNING_SECRET} y {MATRIX_PASSWORD}.") == f"x {MASK} y {MASK}."
    assert r("abc") == "abc"


def test_ordinary_text_is_left_alone() -> None:
    text = "create demo workers=2 ttl=4h; status ray-nlp/demo; the bearer of good news; xox"
    assert redact(text) == text


def test_secret_values_come_from_the_environment() -> None:
    env = {
        "SLACK_BOT_TOKEN": SLACK_BOT,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "MATRIX_PASSWORD": MATRIX_PASSWORD,
        "RAYOPS_WEBHOOK_SECRET": "s3cr3t-value",
        "HOME": "/home/alice",
    }
    assert sorted(secret_values(env)) == sorted([SLACK_BOT, SIGNING_SECRET, MATRIX_PASSWORD, "s3cr3t-value"])


def test_a_bot_run_with_tokens_everywhere_leaks_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install_log_redaction([SIGNING_SECRET, MATRIX_PASSWORD, SLACK_BOT, SLACK_APP, MATRIX])
    caplog.set_level(logging.DEBUG)
    h = make_harness(tmp_path)
    audit = JsonlAuditLog(tmp_path / "audit.jsonl")
    h.bot.audit = audit
    replies: list[Reply] = []
    notes: list[Notification] = []

    def run(who: Identity, text: str) -> None:
        out = h.run(who, text)
        replies.append(out.reply)
        notes.extend(out.notifications)

    # People paste tokens into commands...
    run(ALICE, f"create demo token={SLACK_BOT}")
    run(ALICE, f"status {SLACK_BOT}")
    run(ALICE, f"{MATRIX}")
    run(ALICE, f"help {SLACK_APP}")
    run(ALICE, f"create x profile={SIGNING_SECRET}")
    run(ALICE, "create demo")
    rid = h.run(ALICE, "create big workers=6").notifications[0].reply.buttons[0].command.split()[1]
    run(APPROVER, f"deny {rid} use {SLACK_USER} and {MATRIX_PASSWORD} instead")
    run(ALICE, f'deny {rid} "{JWT}"')
    # ...backends quote headers in their errors...
    h.backend.fail_next("set_annotations", BackendUnavailable(f"PATCH failed; Authorization: Bearer {JWT}"))
    run(ALICE, "pause demo")
    # ...and unexpected failures carry whatever they carry.
    h.backend.fail_next(
        "list", RuntimeError(f"connect to https://hooks.slack.com?token={SLACK_REFRESH} failed")
    )  # type: ignore[arg-type]
    run(OPS, "list")
    # SDKs log what they send.
    logging.getLogger("slack_sdk.web.base_client").debug(
        "Sending a request - headers: %s", {"Authorization": f"Bearer {SLACK_BOT}"}
    )
    logging.getLogger("nio.client").info("Logged in with %s, password %s", MATRIX, MATRIX_PASSWORD)
    try:
        raise ValueError(f"bad app token {SLACK_APP}")
    except ValueError:
        logging.getLogger("rayops.bot").exception("socket mode failed")

    chat = []
    for r in replies + [n.reply for n in notes]:
        chat += [to_text(r), to_html(r), json.dumps(to_blocks(r))]
    logs = [rec.getMessage() + (rec.exc_text or "") for rec in caplog.records]
    audit_text = (tmp_path / "audit.jsonl").read_text()
    assert len(logs) > 5 and audit_text.count("\n") >= 4 and len(chat) > 20
    for where, texts in (("chat", chat), ("logs", logs), ("audit", [audit_text])):
        for t in texts:
            assert not leaks(t), (where, t)
    assert MASK in audit_text and any(MASK in t for t in chat) and any(MASK in t for t in logs)
    # the redacted command still says what happened
    assert any("deny" in a["command"] and a["result"] == "denied" for a in audit.read())


def test_the_console_process_with_tokens_in_its_environment_leaks_none(tmp_path: Path) -> None:
    """The real composition root: secrets from the environment, debug logging, tokens typed in."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYOPS_")}
    env |= {
        "SLACK_BOT_TOKEN": SLACK_BOT,
        "SLACK_APP_TOKEN": SLACK_APP,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "MATRIX_PASSWORD": MATRIX_PASSWORD,
    }
    script = "\n".join(
        [
            f"create demo note={SIGNING_SECRET}",
            f"status {SLACK_BOT}",
            "create demo",
            f"extend demo {MATRIX_PASSWORD}",
            "create big workers=6",
            f"echo {SLACK_APP} {JWT}",
        ]
    )
    r = subprocess.run(
        [
            str(root / ".venv" / "bin" / "rayops"),
            "bot",
            "run",
            "--adapter",
            "console",
            "--backend",
            "memory",
            "--policies",
            str(Path(__file__).parent / "fixtures" / "policies"),
            "--state-dir",
            str(tmp_path),
            "--user",
            "alice",
            "--log-level",
            "DEBUG",
        ],
        input=script + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=root,
    )
    assert r.returncode == 0, r.stderr
    audit = (tmp_path / "audit.jsonl").read_text()
    approvals = "".join(p.read_text() for p in (tmp_path / "approvals").glob("*.json"))
    assert "rayops.audit" in r.stderr  # debug logging really ran
    for where, text in (
        ("stdout", r.stdout),
        ("stderr", r.stderr),
        ("audit", audit),
        ("approvals", approvals),
    ):
        assert not leaks(text), (where, text)
    assert MASK in r.stdout
