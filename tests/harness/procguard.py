"""Fail the test run if a process the tests started outlives the session.

Every process started during the session inherits the environment variable below (it is set in this
process before any fixture runs). Ray re-parents some helpers, such as `log_monitor`, to PID 1, so a
parent/child walk misses them; the inherited environment does not. Ray's agents rename themselves
(setproctitle), which can overwrite the environment block too, so after every test the guard also
remembers the session ids of marked processes (test code starts each Ray node in a session of its
own): a renamed process is still found by its session. At the end of the session every process
found either way is reported, killed, and the run is marked failed.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

MARKER_VAR = "RAYOPS_TEST_SESSION"


def marker_entry(token: str) -> bytes:
    return f"{MARKER_VAR}={token}".encode()


def processes_with_marker(token: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose environment carries this run's marker."""
    entry = marker_entry(token)
    found: list[tuple[int, str]] = []
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            if entry not in env:
                continue
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":  # a zombie holds no resources
                continue
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        found.append((int(proc.name), cmd))
    return found


def _session_id(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[3])


def processes_in_sessions(sids: set[int]) -> list[tuple[int, str]]:
    """(pid, command line) of every live, non-zombie process in one of these sessions."""
    found: list[tuple[int, str]] = []
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z" or int(fields[3]) not in sids:
                continue
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError, ValueError):
            continue
        found.append((int(proc.name), cmd))
    return found


_SIDS = pytest.StashKey[set[int]]()


def _remember_sessions(config: pytest.Config, token: str) -> None:
    own = os.getsid(0)
    sids = config.stash.setdefault(_SIDS, set())
    for pid, _ in processes_with_marker(token):
        sid = _session_id(pid)
        if sid is not None and sid != own:
            sids.add(sid)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    token = item.config.stash.get(_TOKEN, None)
    if token is not None:
        _remember_sessions(item.config, token)


def pytest_configure(config: pytest.Config) -> None:
    token = os.environ.get(MARKER_VAR) or uuid.uuid4().hex
    os.environ[MARKER_VAR] = token
    config.stash[_TOKEN] = token


_TOKEN = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def session_marker(pytestconfig: pytest.Config) -> str:
    return pytestconfig.stash[_TOKEN]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    token = session.config.stash.get(_TOKEN, None)
    if token is None or hasattr(session.config, "workerinput"):
        return
    _remember_sessions(session.config, token)
    found = dict(processes_with_marker(token))
    found.update(processes_in_sessions(session.config.stash.get(_SIDS, set())))
    survivors = sorted(found.items())
    if not survivors:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"  pid {pid}: {cmd[:200]}" for pid, cmd in survivors]
    msg = "process guard: processes started by the tests are still alive after the session:\n" + "\n".join(
        lines
    )
    if reporter is not None:
        reporter.write_line(msg, red=True)
    else:
        print(msg)
    for pid, _ in survivors:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
