"""The status indicator: what it renders, where (one line outside Jupyter, a widget inside), and that
its background thread never blocks the caller and stops when the cluster is deleted or it is closed."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bot.adapters.base import Platform
from bot.approvals import MemoryApprovalStore
from bot.audit import MemoryAuditLog
from bot.authz import Identity
from bot.core import Bot
from bot.notebook import RayopsSession
from bot.notebook.indicator import Indicator, in_jupyter
from bot.notebook.snapshot import DELETED, Snapshot, snapshot_of, summarize
from bot.notebook.usage import DashboardUsage, Usage, usage_from_report
from bot.settings import BotSettings
from bot.switch import MemoryPauseSwitch
from controller.backends.base import (
    BackendUnavailable,
    ClusterNotFound,
    ClusterState,
    ClusterStatus,
    ConnectInfo,
    GroupStatus,
)
from controller.backends.memory import MemoryBackend
from controller.domain import Action, ClusterRef, Decision, GroupRef, ManualPin, Reason, ReasonCode
from controller.policy.loader import load_policy_set
from tests.notebook.support import POLICIES, Tty

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
REF = ClusterRef("team-a", "demo")
FIXTURES = Path(__file__).parents[1] / "fixtures"


def status(
    desired: int = 1,
    ready: int = 1,
    state: ClusterState = ClusterState.READY,
    decision: Decision | None = None,
    stuck: str | None = None,
) -> ClusterStatus:
    return ClusterStatus(
        ref=REF,
        state=state,
        groups=(GroupStatus("cpu", ready, desired, 0, 4, {"CPU": 1.0}),),
        expires_at=T0 + timedelta(hours=2),
        connect=ConnectInfo("ray://127.0.0.1:10001", "http://127.0.0.1:8265", "http://127.0.0.1:8265"),
        last_decision=decision,
        stuck_cause=stuck,
    )


def up(current: int, target: int) -> Decision:
    return Decision(
        ref=GroupRef("team-a", "demo", "cpu"),
        policy="nb-default",
        mode="owner",
        current=current,
        target=target,
        action=Action.UP if target > current else Action.DOWN,
        reasons=(
            Reason(
                ReasonCode.BACKLOG_PENDING,
                f"{target - current} CPU tasks wait for a node",
                {"signal": "pending-cpu", "type": "pendingDemand", "value": 3},
            ),
        ),
        at=T0,
    )


class Scripted:
    """A cluster that answers the statuses it was given, one per read, then is deleted (or, with
    `forever`, keeps answering the last one)."""

    label = str(REF)

    def __init__(
        self, *answers: ClusterStatus | Exception, usage: Usage | None = None, forever: bool = False
    ) -> None:
        self.answers = list(answers)
        self.usage = usage
        self.forever = forever
        self.reads = 0
        self.gate: threading.Event | None = None

    def read_status(self) -> ClusterStatus:
        if self.gate is not None:
            self.gate.wait(10)
        self.reads += 1
        if not self.answers:
            raise ClusterNotFound(f"no Ray cluster named {REF.name} in namespace {REF.namespace}")
        answer = self.answers[0] if self.forever and len(self.answers) == 1 else self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def read_usage(self, status: ClusterStatus) -> Usage | None:
        return self.usage


def test_the_line_shows_everything_the_issue_lists() -> None:
    s = snapshot_of(
        status(3, 1, ClusterState.STARTING, up(1, 3), stuck="pod demo-cpu-x: Unschedulable"),
        T0,
        Usage(in_use="CPU 2 of 2", pending="3 CPU in 3 requests"),
    )
    assert s.line() == (
        "team-a/demo STARTING | stuck: pod demo-cpu-x: Unschedulable | workers cpu 1/3 | "
        "pending 3 CPU in 3 requests | CPU 2 of 2 | last: cpu 1 → 3 (BACKLOG_PENDING: 2 CPU tasks wait "
        "for a node) | expires in 2h | http://127.0.0.1:8265"
    )
    html = s.html()
    for part in (
        "STARTING",
        "pod demo-cpu-x: Unschedulable",
        "1 ready / 3 desired (min 0, max 4)",
        "3 CPU in 3 requests",
        "CPU 2 of 2",
        "cpu 1 → 3 at 12:00:00",
        "BACKLOG_PENDING: 2 CPU tasks wait for a node",
        "expires in 2h",
        '<a href="http://127.0.0.1:8265" target="_blank">',
    ):
        assert part in html


def test_without_live_usage_the_decisions_readings_and_capacity_stand_in() -> None:
    s = snapshot_of(status(2, 2, decision=up(1, 2)), T0, None)
    assert (s.pending, s.usage) == ("pending-cpu 3", "capacity CPU 2 of 2")
    unreachable = snapshot_of(status(2, 2), T0, Usage(problem="dashboard did not answer (ConnectTimeout)"))
    assert unreachable.usage == "usage unavailable: dashboard did not answer (ConnectTimeout)"
    assert unreachable.pending is None  # unknown, never 0


def test_a_stuck_cause_with_a_log_tail_shows_its_first_line() -> None:
    cause = "worker start failed (3 in a row): ray start exited\n--- rayops-ray-start.log ---\nTraceback"
    s = snapshot_of(status(1, 0, ClusterState.STARTING, stuck=cause), T0)
    assert "stuck: worker start failed (3 in a row): ray start exited |" in s.line()
    assert "Traceback" not in s.line()
    assert "<details><summary>more</summary>" in s.html() and "Traceback" in s.html()
    long = snapshot_of(status(stuck="x" * 500), T0)
    assert "stuck: " + "x" * 159 + "…" in long.line()


def test_a_pin_and_a_pause_show_as_autoscaling_control() -> None:
    pinned = ClusterStatus(
        ref=REF, state=ClusterState.READY, paused=True, pin=ManualPin("cpu", 2, T0, "kubernetes:alice")
    )
    assert snapshot_of(pinned, T0).control == "paused; pinned cpu at 2"


def test_outside_jupyter_plain_lines_are_written_per_change() -> None:
    out = io.StringIO()
    watched = Scripted(
        status(1, 1), status(1, 1), status(3, 1, decision=up(1, 3)), status(3, 3, decision=up(1, 3))
    )
    ind = Indicator(watched, mode="auto", out=out, clock=lambda: T0)
    assert ind.mode == "text" and not in_jupyter()
    for _ in range(5):
        ind.refresh()
    lines = out.getvalue().splitlines()
    assert [line.split(" | ")[1] for line in lines[:3]] == [
        "workers cpu 1/1",
        "workers cpu 1/3",
        "workers cpu 3/3",
    ]
    assert lines[3] == "team-a/demo DELETED"
    assert len(ind.history) == 4 and ind.history[-1].state == DELETED


def test_on_a_tty_the_line_is_rewritten_in_place() -> None:
    out = Tty()
    ind = Indicator(Scripted(status(1, 1), status(2, 1)), mode="text", out=out, clock=lambda: T0)
    ind.refresh()
    ind.refresh()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.count("\x1b[K") == 2 and "\n" not in text
    assert text.rsplit("\r", 1)[1].startswith("team-a/demo READY | workers cpu 1/2")
    ind.close()
    assert out.getvalue().endswith("\n")


def test_a_failed_read_keeps_the_last_state_and_says_why() -> None:
    out = io.StringIO()
    watched = Scripted(status(2, 2), BackendUnavailable("the API server answered 503"), status(2, 2))
    ind = Indicator(watched, mode="text", out=out, clock=lambda: T0)
    ind.refresh()
    stale = ind.refresh()
    assert stale.state == "READY" and stale.desired == 2
    assert stale.line().endswith("(not refreshed: the API server answered 503)")
    assert ind.refresh().error is None
    assert summarize(ind.history)["scaled_down"] is False  # a blip is not a scale-down


def test_the_summary_sees_scale_up_then_scale_down() -> None:
    seq = [status(0, 0), status(3, 0, decision=up(0, 3)), status(3, 3), status(0, 3, decision=up(3, 0))]
    ind = Indicator(Scripted(*seq, status(0, 0)), mode="none", clock=lambda: T0)
    for _ in range(6):
        ind.refresh()
    summary = ind.summary()
    assert summary["scaled_up"] and summary["scaled_down"] and summary["deleted"]
    assert (summary["peak_desired"], summary["peak_ready"]) == (3, 3)
    assert summary["actions"] == ["down", "up"]
    only_up = summarize([snapshot_of(status(0, 0), T0), snapshot_of(status(2, 0), T0)])
    assert only_up["scaled_up"] and not only_up["scaled_down"]


def test_start_returns_at_once_and_refreshes_in_the_background() -> None:
    watched = Scripted(status(1, 1), forever=True)
    watched.gate = threading.Event()  # the first read blocks until released
    ind = Indicator(watched, interval=0.01, mode="none")
    began = time.monotonic()
    ind.start()
    assert time.monotonic() - began < 0.5
    assert ind.running and ind.history == []
    watched.gate.set()
    deadline = time.monotonic() + 5
    while watched.reads < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert watched.reads >= 3 and len(ind.history) == 1  # re-read, rendered once (nothing changed)
    ind.close()
    assert not ind.running


def test_close_stops_the_thread_and_the_output() -> None:
    out = io.StringIO()
    ind = Indicator(Scripted(status(1, 1), forever=True), interval=0.01, mode="text", out=out).start()
    time.sleep(0.05)
    ind.close()
    assert not ind.running
    reads_after = out.getvalue()
    time.sleep(0.05)
    assert out.getvalue() == reads_after


def test_closing_the_widget_stops_the_thread(capsys: pytest.CaptureFixture[str]) -> None:
    ind = Indicator(Scripted(status(1, 1), forever=True), interval=0.01, mode="widget").start()
    deadline = time.monotonic() + 5
    while not ind.history and time.monotonic() < deadline:
        time.sleep(0.01)
    widget = ind.widget
    assert widget is not None and "READY" in widget.value and "cpu" in widget.value
    widget.close()
    assert ind.wait(5)
    assert "HTML(" in capsys.readouterr().out  # displayed (outside a kernel: its repr)


@pytest.fixture
def memory_session(tmp_path: Path) -> Iterator[tuple[RayopsSession, MemoryBackend]]:
    ps = load_policy_set(str(POLICIES))
    backend = MemoryBackend(ps.cluster_profiles)
    bot = Bot(
        backend,
        lambda: ps,
        MemoryApprovalStore(),
        MemoryAuditLog(),
        MemoryPauseSwitch(),
        BotSettings(policy_dir=POLICIES, state_dir=tmp_path),
    )
    session = RayopsSession(bot, Identity(Platform.KUBERNETES, "alice@example.com"), namespace="team-a")
    yield session, backend
    session.close()


def test_the_thread_stops_when_the_cluster_is_deleted(
    memory_session: tuple[RayopsSession, MemoryBackend],
) -> None:
    session, backend = memory_session
    cluster = session.request("demo", "cpu-small")
    backend.make_ready(cluster.ref)
    out = io.StringIO()
    ind = cluster.indicator(0.01, out=out)
    deadline = time.monotonic() + 5
    while not ind.history and time.monotonic() < deadline:
        time.sleep(0.01)
    cluster.delete()
    assert ind.wait(5), "the indicator kept running after the cluster was deleted"
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("team-a/demo READY | workers cpu 1/1")
    assert lines[-1] == "team-a/demo DELETED"


def test_usage_from_recorded_dashboard_answers() -> None:
    v1 = json.loads((FIXTURES / "ray-dashboard/2.60.0/cluster_status.json").read_text())
    assert usage_from_report(v1) == Usage(in_use="CPU 1 of 1", pending="6 CPU + 1 GPU in 6 requests")
    v2 = json.loads((FIXTURES / "ray-dashboard/2.60.0-autoscaler-v2/cluster_status.json").read_text())
    assert usage_from_report(v2) is None  # no JSON report: the probe asks for the text form
    gpu = json.loads((FIXTURES / "ray-gpu/cluster_status-gpu-pending-t15.json").read_text())
    assert usage_from_report(gpu) == Usage(
        in_use="CPU 4 of 4, GPU 1 of 1", pending="2 CPU + 2 GPU in 2 requests"
    )


class _Dashboard(BaseHTTPRequestHandler):
    answers: dict[str, Any] = {}
    hits: list[str] = []

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = self.answers.get(self.path)
        data = json.dumps(body).encode() if body is not None else b"{}"
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_the_probe_asks_for_the_text_form_under_autoscaler_v2_and_backs_off_when_down() -> None:
    v2 = FIXTURES / "ray-dashboard/2.60.0-autoscaler-v2"
    _Dashboard.answers = {
        "/api/cluster_status": json.loads((v2 / "cluster_status.json").read_text()),
        "/api/cluster_status?format=1": json.loads((v2 / "cluster_status-format1.json").read_text()),
    }
    _Dashboard.hits = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Dashboard)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    now = [0.0]
    probe = DashboardUsage(timeout_s=2, backoff_s=15, clock=lambda: now[0])
    try:
        got = probe.probe(url)
        assert got is not None and got.pending == "6 CPU + 1 GPU in 6 requests"
        assert _Dashboard.hits == ["/api/cluster_status", "/api/cluster_status?format=1"]
    finally:
        httpd.shutdown()
        httpd.server_close()
    down = probe.probe(url)
    assert (
        down is not None and down.problem is not None and down.problem.startswith("dashboard did not answer")
    )
    _Dashboard.hits = []
    now[0] = 5.0
    assert probe.probe(url) == down and _Dashboard.hits == []  # within the back-off: not asked again


def test_a_snapshot_round_trips_to_json() -> None:
    s: Snapshot = snapshot_of(status(3, 1, decision=up(1, 3)), T0)
    d = json.loads(json.dumps(s.to_dict()))
    assert (d["state"], d["desired"], d["ready"], d["action"]) == ("READY", 3, 1, "up")
