"""Demand rebuilt from Prometheus history, against a loopback stand-in serving `/api/v1/query_range`."""

from __future__ import annotations

import math
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.simulate import prometheus_history as ph
from controller.simulate.baselines import demand_steps
from controller.simulate.model import Model
from controller.simulate.run import simulate
from controller.simulate.trace import SimulationInputError, Trace
from tests.simulate.fake_prometheus import FakePrometheus, serve

START = datetime(2024, 5, 1, tzinfo=UTC)
T0 = START.timestamp()
# pending + running tasks: 0, then 2 at 15 s, 3 at 30 s, 1 at 45 s, 0 from 75 s
LEVELS = {0: 0, 15: 2, 30: 3, 45: 1, 60: 1, 75: 0}


def level(ts: float) -> float | None:
    return float(LEVELS.get(round(ts - T0), 0))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_levels_become_tasks_last_in_first_out() -> None:
    levels = [(T0 + t, float(v)) for t, v in LEVELS.items()]
    tasks = ph.levels_to_tasks(levels, T0, 90.0)
    # +2 at 15 (a, b), +1 at 30 (c); at 45 the newest two end (c after 15 s, b after 30 s); a ends at 75
    assert [(t.arrival_s, t.duration_s) for t in tasks] == [(15.0, 30.0), (15.0, 60.0), (30.0, 15.0)]
    tr = Trace("p", tuple(tasks), 90.0)
    # replayed with zero wait, the demand is exactly the level series
    assert demand_steps(tr, Model().for_trace(tr)) == [(0.0, 0), (15.0, 2), (30.0, 3), (45.0, 1), (75.0, 0)]


def test_gaps_hold_the_last_level_and_negative_or_fractional_levels_are_rounded() -> None:
    levels = [(T0, 2.2), (T0 + 15, math.nan), (T0 + 30, -1.0), (T0 + 45, 0.6)]
    tasks = ph.levels_to_tasks(levels, T0, 60.0)
    # 2 from 0 (the NaN at 15 holds it), 0 at 30, 1 from 45 to the end (60)
    assert [(t.arrival_s, t.duration_s) for t in tasks] == [(0.0, 30.0), (0.0, 30.0), (45.0, 15.0)]


def test_rebuild_from_prometheus_with_the_default_query() -> None:
    with serve(FakePrometheus(level)) as prom:
        tr = ph.trace_from_prometheus(prom.url, START, START + timedelta(seconds=90), cluster="ns/c1")
    assert prom.requests[0]["query"] == (
        'sum(ray_tasks{State=~"PENDING_NODE_ASSIGNMENT|PENDING_ARGS_AVAIL|RUNNING",'
        'namespace="ns",ray_io_cluster="c1"})'
    )
    assert (prom.requests[0]["start"], prom.requests[0]["step"]) == (str(int(T0)), "15s")
    assert (tr.start, tr.end_s, tr.source, len(tr.tasks)) == (START, 90.0, "prometheus", 3)
    assert "LIFO" in tr.notes[0]
    rep = simulate(tr, [], Model())
    assert rep.result("oracle").worker_hours * 3600 == pytest.approx(2 * 15 + 3 * 15 + 1 * 30)


def test_long_ranges_are_fetched_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ph, "MAX_POINTS", 2)  # at most 3 points per request
    with serve(FakePrometheus(level)) as prom:
        levels = ph.fetch_levels(prom.url, "q", START, START + timedelta(seconds=90), 15.0)
    assert len(prom.requests) == 3
    assert [(int(r["start"]) - int(T0), int(r["end"]) - int(T0)) for r in prom.requests] == [
        (0, 30),
        (45, 75),
        (90, 90),
    ]
    assert [(ts - T0, v) for ts, v in levels] == [(t, float(LEVELS.get(t, 0))) for t in range(0, 91, 15)]


@pytest.mark.parametrize(
    ("fake", "what"),
    [
        (FakePrometheus(level, series=2), "returned 2 series"),
        (FakePrometheus(lambda ts: None), "returned no data"),
        (FakePrometheus(level, status=400, error="parse error at char 5"), "parse error at char 5"),
        (FakePrometheus(level, status=503, error="overloaded"), "refused the query: HTTP Status Code 503"),
    ],
)
def test_bad_answers_are_clear_errors(fake: FakePrometheus, what: str) -> None:
    with serve(fake) as prom, pytest.raises(SimulationInputError, match=what):
        ph.trace_from_prometheus(prom.url, START, START + timedelta(seconds=90))


def test_a_prometheus_that_is_down_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(SimulationInputError) as e:
        ph.trace_from_prometheus(url, START, START + timedelta(seconds=90))
    assert str(e.value) == f"cannot reach Prometheus at {url}: Connection refused"


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"step": "0s"}, "--step must be longer than 0"),
        ({"step": "fast"}, "--step: 'fast' is not a duration"),
        ({"query": "q", "cluster": "a/b"}, "--cluster applies to the default query"),
        ({"cluster": "nope"}, "expected NAMESPACE/NAME"),
    ],
)
def test_bad_options(kwargs: dict[str, Any], what: str) -> None:
    with pytest.raises(SimulationInputError, match=what):
        ph.trace_from_prometheus("http://127.0.0.1:1", START, START + timedelta(seconds=90), **kwargs)
    with pytest.raises(SimulationInputError, match="is not after"):
        ph.trace_from_prometheus("http://127.0.0.1:1", START, START)


def test_times_iso_unix_and_relative() -> None:
    now = datetime(2024, 5, 8, 12, 0, tzinfo=UTC)
    assert ph.parse_time("now", now) == now
    assert ph.parse_time("now-7d", now) == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert ph.parse_time("2024-05-01T00:00:00", now) == START
    assert ph.parse_time("2024-05-01T02:00:00+02:00", now) == START
    assert ph.parse_time(str(int(T0)), now) == START
    with pytest.raises(SimulationInputError, match="is not ISO 8601"):
        ph.parse_time("last tuesday", now)
    with pytest.raises(SimulationInputError, match="not a duration"):
        ph.parse_time("now-lots", now)
