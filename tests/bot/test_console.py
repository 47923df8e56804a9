"""The console adapter: the real `rayops bot run --adapter console` driven through a pipe, and the
in-process `run_console` that `rayops up` calls, with notifications printed between prompts."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from bot.compose import build_bot, run_console
from bot.settings import BotSettings
from controller.backends.memory import MemoryBackend
from controller.domain import ClusterRef
from controller.events import Event, EventType, JournalSink, MemoryEvents
from tests.bot.conftest import POLICIES, T0, fixture_policy_set

ROOT = Path(__file__).resolve().parents[2]
RAYOPS = ROOT / ".venv" / "bin" / "rayops"


def console(state: Path, *args: str, user: str = "alice") -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYOPS_")}
    return subprocess.Popen(
        [
            str(RAYOPS),
            "bot",
            "run",
            "--adapter",
            "console",
            "--backend",
            "memory",
            "--policies",
            str(POLICIES),
            "--state-dir",
            str(state),
            "--user",
            user,
            *args,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_console_repl_in_a_subprocess(tmp_path: Path) -> None:
    script = "\n".join(
        [
            "create demo workers=2",
            "list",
            "status demo",
            "scale demo 3",
            "creat x",
            "create x workers=6",
            "delete demo",
            "confirm",
            "list",
            "exit",
        ]
    )
    p = console(tmp_path, "--ready-on-create")
    out, err = p.communicate(script + "\n", timeout=60)
    assert p.returncode == 0, err
    assert out.startswith("rayops console: you are console:alice.")
    assert out.count("ray> ") == 10
    for expected in (
        "Creating demo in ray-nlp (profile small, 2 workers, expires in 8h). State: READY. It is ready.",
        "demo  ray-nlp    READY  2/2      console:alice",
        "Workers ready/desired  workers 2/2",
        "GROUP    READY  DESIRED  MIN  MAX",
        "Pinned demo/workers at 3 workers",
        "unknown command 'creat'\nDid you mean `create`?",
        "is over your limits (workers 6 > 4), so it waits for an approver as `",
        "`delete demo` deletes the cluster",
        "Deleted demo in ray-nlp.",
        "No clusters that you can see.",
    ):
        assert expected in out, (expected, out)
    # The pending request reached the DevOps "channel", which on the console is this terminal.
    assert "[devops] Approval needed: " in out
    audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [a["command"] for a in audit] == [
        "create demo workers=2",
        "scale demo 3",
        "create x workers=6",
        "delete demo",
        "delete demo",
    ]
    assert len(list((tmp_path / "approvals").glob("*.json"))) == 1


def test_pending_approval_survives_a_console_restart(tmp_path: Path) -> None:
    first = console(tmp_path, user="alice")
    out, _ = first.communicate("create big workers=6\n", timeout=60)
    rid = out.split("waits for an approver as `")[1][:8]
    second = console(tmp_path, user="boss")  # a console approver, in a new process
    out2, err2 = second.communicate(f"pending\napprove {rid}\n", timeout=60)
    assert second.returncode == 0, err2
    assert rid in out2 and "create big workers=6" in out2
    # The memory backend lives in one process only, so the approved create runs in this one.
    assert f"Approved `{rid}` (`create big workers=6` for console:alice): Creating big in ray-nlp" in out2
    assert "[notice] Your request `create big workers=6`" in out2


def test_end_of_input_and_errors_in_the_policy_directory(tmp_path: Path) -> None:
    p = console(tmp_path)
    out, _ = p.communicate("", timeout=60)
    assert p.returncode == 0 and out.endswith("ray> \n")
    bad = tmp_path / "bad-policies"
    bad.mkdir()
    (bad / "x.yaml").write_text("apiVersion: rayops.io/v1alpha1\nkind: Nope\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYOPS_")}
    r = subprocess.run(
        [
            str(RAYOPS),
            "bot",
            "run",
            "--adapter",
            "console",
            "--backend",
            "memory",
            "--policies",
            str(bad),
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 1 and "is not usable" in r.stderr and "x.yaml" in r.stderr


def test_slack_and_matrix_refuse_to_start_without_their_settings(tmp_path: Path) -> None:
    # The adapters themselves are tested in tests/bot_adapters; here only the CLI's exit code.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAYOPS_", "SLACK_", "MATRIX_"))}
    for adapter, variable in (("slack", "SLACK_BOT_TOKEN"), ("matrix", "MATRIX_HOMESERVER")):
        r = subprocess.run(
            [str(RAYOPS), "bot", "run", "--adapter", adapter, "--backend", "memory",
             "--policies", str(POLICIES), "--state-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert r.returncode == 2 and variable in r.stderr, r.stderr


def test_journal_events_are_printed_between_prompts(tmp_path: Path) -> None:
    p = console(tmp_path, "--poll-interval", "0.1")
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write("create demo\n")
    p.stdin.flush()
    lines: list[str] = []

    def read() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while not any("Creating demo" in x for x in lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    JournalSink(tmp_path / "events.jsonl").publish(
        Event(
            EventType.CLUSTER_READY, "head and workers up", T0, ClusterRef("ray-nlp", "demo"), "console:alice"
        )
    )
    while not any("[notice]" in x for x in lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    p.stdin.write("exit\n")
    p.stdin.flush()
    p.wait(timeout=30)
    reader.join(timeout=5)
    text = "".join(lines)
    assert "[notice] demo is ready." in text
    assert "ray://demo-head-svc.ray-nlp.svc:10001" in text.split("[notice]")[1]


def test_run_console_in_process_with_memory_events(tmp_path: Path) -> None:
    """`rayops up`'s way in: its own backend and in-memory events, our REPL on given streams."""
    ps = fixture_policy_set()
    settings = BotSettings(
        policy_dir=POLICIES, state_dir=tmp_path, console_user="alice", poll_interval_s=0.01
    )
    bot = build_bot(settings, MemoryBackend(ps.cluster_profiles), lambda: ps)
    events = MemoryEvents()
    events.publish(Event(EventType.FAILURE, "Ray dashboard unreachable", T0, None))

    class SlowStdin(io.StringIO):
        """Gives the background loop time to post before the REPL sees end of input."""

        def __iter__(self):  # type: ignore[no-untyped-def]
            yield "whoami\n"
            time.sleep(0.5)
            yield "list\n"

    out = io.StringIO()
    assert run_console(bot, events, SlowStdin(), out) == 0
    text = out.getvalue()
    assert "You are console:alice." in text
    assert "\n[devops] Failure: Ray dashboard unreachable\nray> " in text  # between prompts
    assert "No clusters that you can see." in text


def test_python_m_bot_is_the_same_program() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bot", "bot", "run", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 0 and "--adapter" in r.stdout and "--backend" in r.stdout
