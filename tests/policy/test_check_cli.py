"""`rayops policy check` as people, pre-commit and CI run it: the installed console script in a
subprocess, its exit codes, its lines, and never a traceback for bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RAYOPS = REPO / ".venv" / "bin" / "rayops"

GOOD = (
    "apiVersion: rayops.io/v1alpha1\nkind: ScalingPolicy\nmetadata:\n  name: {name}\nspec:\n"
    "  priority: {priority}\n  maxReplicas: 3\n"
)


def rayops(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(RAYOPS), "policy", "check", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def test_shipped_policies_exit_0_with_a_summary() -> None:
    proc = rayops("policies")
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    n = len(list((REPO / "policies").glob("*.yaml")))
    assert lines[0].startswith(f"policies: {n} documents in {n} files, 0 errors (revision ")
    assert proc.stderr == ""


def test_default_directory_is_policies_in_the_working_directory(tmp_path: Path) -> None:
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    proc = rayops(cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("policies: ")


def test_invalid_set_exits_1_with_each_error_and_a_summary(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD.format(name="a", priority=0))
    (tmp_path / "b.yaml").write_text(GOOD.format(name="b", priority=1) + "  minReplica: 1\n  mode: onwer\n")
    proc = rayops(str(tmp_path))
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"{tmp_path}/b.yaml:8: spec.minReplica: unknown field (got 'minReplica'; expected 'minReplicas')",
        f"{tmp_path}/b.yaml:9: spec.mode: not an allowed value (got 'onwer'; expected 'owner' or 'bounds')",
        f"{tmp_path}: 2 errors in 1 file; the set is refused",
    ]


def test_file_arguments_check_their_whole_directory(tmp_path: Path) -> None:
    """pre-commit passes changed files; a duplicate name spans files, so the set is what counts."""
    (tmp_path / "a.yaml").write_text(GOOD.format(name="same", priority=0))
    (tmp_path / "b.yaml").write_text(GOOD.format(name="same", priority=1))
    proc = rayops(str(tmp_path / "b.yaml"), str(tmp_path / "a.yaml"))
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"{tmp_path}/b.yaml:4: metadata.name: duplicate ScalingPolicy name (got 'same', already defined "
        f"at {tmp_path}/a.yaml:4; expected a name used once per kind)",
        f"{tmp_path}: 1 error in 1 file; the set is refused",
    ]
    (tmp_path / "b.yaml").unlink()
    ok = rayops(str(tmp_path / "a.yaml"))
    assert ok.returncode == 0
    assert ok.stdout.startswith(f"{tmp_path}: 1 document in 1 file, 0 errors (revision ")


def test_warnings_are_printed_but_do_not_fail(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        GOOD.format(name="a", priority=0)
        + "  schedules:\n    - {name: always, cron: '* * * * *', duration: 1h, maxReplicas: 1}\n"
    )
    proc = rayops(str(tmp_path))
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(
        f"{tmp_path}/a.yaml:9: spec.schedules[0].duration: warning: the window never closes"
    )
    assert lines[1].startswith(f"{tmp_path}: 1 document in 1 file, 0 errors, 1 warning (revision ")


@pytest.mark.parametrize(
    ("name", "stderr"),
    [
        ("missing", "rayops policy check: {d}/missing: no such directory\n"),
        ("fifo", "rayops policy check: {d}/fifo: not a directory or a file\n"),
    ],
)
def test_bad_paths_exit_1_with_a_clear_message(tmp_path: Path, name: str, stderr: str) -> None:
    target = tmp_path / name
    if name == "fifo":
        os.mkfifo(target)
    proc = rayops(str(target))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == stderr.format(d=tmp_path)


def test_empty_directory_is_not_a_pass(tmp_path: Path) -> None:
    proc = rayops(str(tmp_path))
    assert proc.returncode == 1
    assert proc.stdout == f"{tmp_path}: no policy files (*.yaml, *.yml) to check\n"


def test_usage_error_exits_2() -> None:
    proc = rayops("--no-such-flag")
    assert proc.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in proc.stderr


def test_hostile_files_give_errors_not_tracebacks(tmp_path: Path) -> None:
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    (tmp_path / "control.yaml").write_text("a: \x07\n")
    (tmp_path / "deep.yaml").write_text("[" * 5000 + "]" * 5000)
    (tmp_path / "python.yaml").write_text("!!python/object/apply:os.system ['true']\n")
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "nowhere")
    proc = rayops(str(tmp_path))
    assert proc.returncode == 1
    out = proc.stdout.splitlines()
    assert out[-1] == f"{tmp_path}: 5 errors in 5 files; the set is refused"
    by_file = {line.split(":", 1)[0].rsplit("/", 1)[-1]: line for line in out[:-1]}
    # bytes(range(256)) has its newline (0x0a) before the first invalid byte (0x80): line 2
    assert (
        by_file["binary.yaml"]
        == f"{tmp_path}/binary.yaml:2: file: not UTF-8 text (got byte 0x80; expected UTF-8)"
    )
    assert by_file["control.yaml"] == (
        f"{tmp_path}/control.yaml:1: yaml: unacceptable character "
        "(got character U+0007; expected printable text)"
    )
    assert by_file["python.yaml"] == (
        f"{tmp_path}/python.yaml:1: yaml: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system' at column 1 "
        "(got \"!!python/object/apply:os.system ['true']\"; expected valid YAML)"
    )
    assert by_file["dangling.yaml"] == (
        f"{tmp_path}/dangling.yaml:1: file: cannot read "
        "(got No such file or directory; expected a readable file)"
    )
    assert (
        by_file["deep.yaml"] == f"{tmp_path}/deep.yaml:1: yaml: nesting too deep (expected a policy document)"
    )
