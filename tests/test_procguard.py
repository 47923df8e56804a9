"""The process guard finds a process that escaped its parent (as Ray's log_monitor does)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.harness.procguard import _SIDS, _remember_sessions, processes_in_sessions, processes_with_marker


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


def test_guard_finds_a_renamed_process_by_its_session(
    session_marker: str, pytestconfig: pytest.Config
) -> None:
    """A process whose environment no longer carries the marker (as after Ray's setproctitle) is
    still found through the session of a marked process."""
    proc = subprocess.Popen(["sh", "-c", "env -i sleep 60 & exec sleep 60"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        unmarked: list[int] = []
        while time.monotonic() < deadline and not unmarked:
            in_session = {pid for pid, _ in processes_in_sessions({proc.pid})}
            marked = {pid for pid, _ in processes_with_marker(session_marker)}
            unmarked = sorted(in_session - marked)
            time.sleep(0.05)
        assert unmarked, "the environment-less child should be invisible to the marker scan"
        _remember_sessions(pytestconfig, session_marker)
        assert proc.pid in pytestconfig.stash[_SIDS]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 5
    while processes_in_sessions({proc.pid}) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_in_sessions({proc.pid}) == []
