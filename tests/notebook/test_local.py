"""Laptop-mode wiring that needs no Ray: the controller-lock probe, policy errors, where logs go."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

import pytest

from bot.notebook import RayopsSession, SetupError
from bot.notebook.local import LOGGERS, lock_is_free, route_logs


def test_the_lock_probe_sees_a_holder_and_leaves_the_lock_free(tmp_path: Path) -> None:
    path = tmp_path / "controller.lock"
    assert lock_is_free(path)  # no file yet: nobody ever ran a controller here
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert not lock_is_free(path)
    finally:
        os.close(fd)
    assert lock_is_free(path)
    assert lock_is_free(path)  # the probe itself did not keep it


def test_a_missing_policy_directory_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match=r"no policy directory at .*; pass policies="):
        RayopsSession.local(tmp_path / "state", tmp_path / "nowhere", start_controller=False)


def test_an_invalid_policy_set_is_refused_with_the_loaders_reason(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "broken.yaml").write_text("apiVersion: rayops.io/v1alpha1\nkind: ScalingPolicy\n")
    with pytest.raises(SetupError, match="is not usable"):
        RayopsSession.local(tmp_path / "state", policies, start_controller=False)


def test_controller_logs_go_to_the_file_not_under_the_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # a kernel without logging set up
    path = tmp_path / "controller.log"
    undo = route_logs(path)
    try:
        logging.getLogger("controller.backends.local_procs").warning("worker start failed")
        logging.getLogger("rayops.controller").info("tick")
    finally:
        undo()
    assert "worker start failed" in path.read_text() and "tick" in path.read_text()
    assert capsys.readouterr().err == ""
    assert all(logging.getLogger(n).propagate for n in LOGGERS)  # undone
    assert not any(isinstance(h, logging.FileHandler) for n in LOGGERS for h in logging.getLogger(n).handlers)


LAPTOP_POLICIES = Path(__file__).parent / "fixtures" / "laptop-policies"


def test_with_the_lock_held_elsewhere_the_session_leaves_scaling_to_that_process(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    fd = os.open(state / "controller.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as `rayops up` holds it
        session = RayopsSession.local(state, LAPTOP_POLICIES, user="alice")
        try:
            assert session.controller is None
            assert session.identity.key == "console:alice" and session.namespace == "local"
            assert session.clusters() == []
        finally:
            session.close()
    finally:
        os.close(fd)


def test_with_the_lock_free_the_controller_runs_in_the_kernel_until_close(tmp_path: Path) -> None:
    state = tmp_path / "state"
    session = RayopsSession.local(state, LAPTOP_POLICIES, user="alice")
    try:
        assert session.controller is not None
        assert session.controller.elector.is_leader()
        assert not lock_is_free(state / "controller.lock")
    finally:
        session.close()
    assert lock_is_free(state / "controller.lock")  # handed back: `rayops up` may take over
    assert (state / "notebook-controller.log").exists()
