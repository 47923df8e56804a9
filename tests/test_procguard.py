"""The process guard finds a process that escaped its parent (as Ray's log_monitor does)."""

import os
import signal
import subprocess
import sys
import time

from tests.harness.procguard import processes_with_marker


def test_guard_finds_detached_child(session_marker: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if any(pid == proc.pid for pid, _ in processes_with_marker(session_marker)):
                break
            time.sleep(0.05)
        assert any(pid == proc.pid for pid, _ in processes_with_marker(session_marker))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert all(pid != proc.pid for pid, _ in processes_with_marker(session_marker))
