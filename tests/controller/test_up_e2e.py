"""The README's first command, `rayops up`, as a person runs it: a real local Ray cluster, the controller
printing each decision with its reason, a demo burst that makes workers come and go, and Ctrl-C that
stops everything it started, even when pressed twice.

The shipped policies are used with one change, a 5 s scale-down window instead of 30 s, so the test
takes about a minute on a loaded 2-core machine.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from controller import localray
from tests.backends.driver_local import node_processes

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _policies(tmp: Path) -> Path:
    d = tmp / "policies"
    shutil.copytree(REPO / "policies", d)
    path = d / "cpu-default.yaml"
    text = path.read_text()
    assert "stabilizationWindowSeconds: 30" in text
    path.write_text(text.replace("stabilizationWindowSeconds: 30", "stabilizationWindowSeconds: 5"))
    return d


@pytest.mark.timeout(400)
def test_rayops_up_scales_a_burst_and_a_double_ctrl_c_still_stops_everything(tmp_path: Path) -> None:
    name = f"up-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYOPS_")}
    command = [sys.executable, "-m", "bot", "up", "--no-console", "--name", name]
    command += ["--policies", str(_policies(tmp_path)), "--state-dir", str(tmp_path / "state")]
    command += ["--demo-burst", "2", "--task-seconds", "4"]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=REPO,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()

    def until(pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, "rayops up exited early:\n" + "\n".join(seen)
                continue
            seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in {timeout} s:\n" + "\n".join(seen))

    try:
        until(rf"cluster local/{name} is up", 180)
        up = until(r"ScaledUp .*cpu: 0 -> [12] workers: pending-cpu", 120)
        assert "CPU pending" in up  # the reason is printed with the decision
        until(r"demo burst: all 2 tasks finished", 150)
        until(r"ScaledDown .*-> 0 workers", 120)
        assert node_processes(name), "the head runs until Ctrl-C"
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # impatient: a second Ctrl-C must not cut the clean-up short
        assert proc.wait(timeout=120) == 0, "\n".join(seen)
        rest = []
        while not lines.empty():
            rest.append(lines.get())
        output = "\n".join(seen + rest)
        assert f"stopped local cluster {name}" in output, output
        assert "Traceback" not in output, output
        assert node_processes(name) == []  # head and workers gone
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for p in node_processes(name):  # only after a failure: leave nothing behind
            if p.temp_dir is not None:
                localray.kill_marked(p.temp_dir)
