"""The two command lines of issue 6, as processes, where no Ray is needed: `rayops controller run --once`
on an empty laptop state directory, and `rayops up` refusing to be a second controller."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from controller.leader import FileLockElector

REPO = Path(__file__).resolve().parents[2]


def rayops(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYOPS_")}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_controller_once_on_an_empty_laptop(tmp_path: Path) -> None:
    proc = rayops(
        "controller",
        "run",
        "--once",
        "--backend",
        "local",
        "--policies",
        str(REPO / "policies"),
        state=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"outcome": "success", "clusters": 0' in proc.stdout


def test_up_refuses_to_be_a_second_controller(tmp_path: Path) -> None:
    holder = FileLockElector(tmp_path / "controller.lock", "rayops up (pid 4242)")
    assert holder.try_acquire()
    try:
        proc = rayops("up", "--no-console", "--policies", str(REPO / "policies"), state=tmp_path)
    finally:
        holder.stop()
    assert proc.returncode == 1
    assert "another controller already runs" in proc.stderr and "pid 4242" in proc.stderr
    assert not (tmp_path / "clusters").exists()  # nothing was started


def test_up_needs_a_policy_directory(tmp_path: Path) -> None:
    proc = rayops("up", "--no-console", "--policies", str(tmp_path / "nowhere"), state=tmp_path)
    assert proc.returncode == 2 and "no policy directory" in proc.stderr
