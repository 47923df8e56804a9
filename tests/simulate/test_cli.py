"""`rayops simulate` end to end: files written, input errors as one line with exit 1, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from bot.cli import main
from tests.simulate.fake_prometheus import FakePrometheus, serve
from tests.simulate.helpers import PENDING_POLICY, REPO, TWO_AT_ZERO
from tests.simulate.test_prometheus import START, closed_port, level

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rayops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "trace.csv").write_text(TWO_AT_ZERO)
    (tmp_path / "bad.csv").write_text("timestamp,tasks,duration_s\n0,2,60\n5,2,soon\n")
    (tmp_path / "policy.yaml").write_text(PENDING_POLICY)
    return {p.stem: p for p in tmp_path.iterdir()}


def test_simulate_writes_the_table_json_markdown_and_png(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    r = rayops(
        "simulate", "--policy", str(files["policy"]), "--trace", str(files["trace"]), "--startup", "5",
        "--json", str(out / "r.json"), "--markdown", str(out / "r.md"), "--plot", str(out / "r.png"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert "trace trace (csv): 2 tasks" in r.stdout
    assert any(line.startswith("pending-only ") for line in r.stdout.splitlines())
    data = json.loads((out / "r.json").read_text())
    assert [x["policy"] for x in data["results"]] == [
        "pending-only",
        "static-peak",
        "ray-like",
        "hpa-like",
        "oracle",
    ]
    assert data["model"]["startup_s"] == 5.0
    assert "| pending-only |" in (out / "r.md").read_text()
    png = (out / "r.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 10_000


def test_a_bad_trace_row_is_one_line_with_the_row_and_exit_1(files: dict[str, Path]) -> None:
    r = rayops("simulate", "--policy", str(files["policy"]), "--trace", str(files["bad"]))
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == f"rayops simulate: {files['bad']}, line 3: duration_s 'soon' is not a number\n"
    assert "Traceback" not in r.stderr


def test_from_prometheus_end_to_end_and_down(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start, end = START.isoformat(), (START + timedelta(seconds=90)).isoformat()
    with serve(FakePrometheus(level)) as prom:
        code = main([
            "simulate", "--policy", str(files["policy"]), "--from-prometheus", prom.url,
            "--start", start, "--end", end, "--json", str(tmp_path / "p.json"),
        ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "(prometheus): 3 tasks" in out
    assert "note: demand rebuilt from Prometheus" in out
    assert json.loads((tmp_path / "p.json").read_text())["trace"]["source"] == "prometheus"
    url = f"http://127.0.0.1:{closed_port()}"
    down = ["simulate", "--policy", str(files["policy"]), "--from-prometheus", url, "--start", start]
    assert main(down) == 1
    captured = capsys.readouterr()
    assert captured.err == f"rayops simulate: cannot reach Prometheus at {url}: Connection refused\n"
    assert captured.out == ""


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["--trace", "{missing}"], "{missing}: cannot read: No such file or directory"),
        (["--trace", "{trace}", "--policy", "{trace}"], "{trace}:1: "),
        (["--trace", "{trace}", "--startup", "-1"], "--startup -1.0: out of range"),
        (["--trace", "{trace}", "--worker-cpus", "0.5"], "line 2: a task needs 1 CPU"),
        (["--trace", "{trace}", "--start", "now"], "--start only apply with --from-prometheus"),
        (["--trace", "synthetic:weekly"], "expected synthetic:KIND[:SEED]"),
        (["--trace", "synthetic:steps:x"], "the seed must be a whole number"),
        (["--trace", "{trace}", "--azure-model", "1,2"], "--azure-model '1,2'"),
        (["--from-prometheus", "http://127.0.0.1:1"], "--from-prometheus needs --start"),
        (["--trace", "{trace}", "--json", "{tmp}/no/such/dir/r.json"], "cannot write"),
        (["--trace", "{trace}", "--plot", "{tmp}/no/such/dir/r.png"], "its directory does not exist"),
    ],
)
def test_input_errors_exit_1_with_one_line(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], what: str
) -> None:
    values = {"missing": str(tmp_path / "missing.csv"), "trace": str(files["trace"]), "tmp": str(tmp_path)}
    argv = ["simulate", "--policy", str(files["policy"]), *(a.format(**values) for a in args)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("rayops simulate: ") and err.count("\n") == 1
    assert what.format(**values) in err


def test_a_policy_directory(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--policy", str(REPO / "policies"), "--trace", str(files["trace"])]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("cpu-default ") for line in out.splitlines())
    assert any(line.startswith("nights-and-weekends ") for line in out.splitlines())


def test_a_synthetic_trace(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--policy", str(files["policy"]), "--trace", "synthetic:steps:2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("trace steps (synthetic): ")
    assert "note: synthetic steps (seed 2): levels 2, 10, 4, 16, 0, 6" in out
