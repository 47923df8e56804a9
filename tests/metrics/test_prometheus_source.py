"""The Prometheus source against a scripted Prometheus HTTP API on loopback: mapping, faults, tenancy, auth.

The answers follow the real `/api/v1/query` format; the real-Prometheus tests are in test_real_sources.py.
"""

from __future__ import annotations

import logging
import math
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.domain import ClusterRef, GroupRef, SignalSpec, SignalType
from controller.localray import free_ports
from controller.metrics.base import MetricTarget
from controller.metrics.http import HttpSettings
from controller.metrics.prometheus import PrometheusSource
from tests.metrics.stub import Reply, Seen, StubServer, serve

NOW = datetime(2026, 11, 26, 15, 0, 0, tzinfo=UTC)
CPU = SignalSpec(SignalType.UTILIZATION, resource="CPU")
QUEUE = SignalSpec(SignalType.PROMQL, query="sum by (namespace, ray_io_cluster, ray_io_group) (my_queue)")
PENDING = SignalSpec(SignalType.PENDING_DEMAND, resource="CPU")


def target(ns: str, cluster: str, group: str) -> MetricTarget:
    return MetricTarget(GroupRef(ns, cluster, group))


def labels(ref: GroupRef, **extra: str) -> dict[str, str]:
    return {"namespace": ref.namespace, "ray_io_cluster": ref.cluster, "ray_io_group": ref.group, **extra}


def vector(items: list[tuple[dict[str, str], Any, float]]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [ts, str(v)]} for m, v, ts in items],
        },
    }


def utilization_answer(values: dict[GroupRef, Any], age_s: float = 2.0) -> dict[str, Any]:
    """A combined value + sample-time answer, as Prometheus gives for the built-in signals."""
    ts = NOW.timestamp()
    items = [(labels(r, rayops_part="value"), v, ts) for r, v in values.items()]
    items += [(labels(r, rayops_part="time"), ts - age_s, ts) for r in values]
    return vector(items)


def source(stub: StubServer, **kw: Any) -> PrometheusSource:
    http = kw.pop("http", HttpSettings(timeout_s=1.0, retries=0))
    return PrometheusSource(stub.url, http=http, **kw)


@pytest.fixture
def prom() -> Iterator[StubServer]:
    with serve() as s:
        yield s


def test_one_query_per_signal_for_all_clusters(prom: StubServer) -> None:
    targets = [target(f"ns{i % 2}", f"c{i}", g) for i in range(3) for g in ("small", "big")]
    refs = [t.ref for t in targets]

    def answer(seen: Seen) -> Reply:
        q = seen.param("query") or ""
        if "ray_node_cpu_utilization" in q:
            return Reply(body=utilization_answer({r: 10.0 * i for i, r in enumerate(refs)}))
        return Reply(body=vector([(labels(r), i, NOW.timestamp()) for i, r in enumerate(refs)]))

    prom.route("/api/v1/query", answer)
    src = source(prom)
    result = src.fetch(targets, [CPU, QUEUE, CPU], NOW)
    assert len(prom.seen) == 2 and result.requests == 2
    assert {s.param("time") for s in prom.seen} == {f"{NOW.timestamp():.3f}"}
    cpu_query = next(s.param("query") for s in prom.seen if "cpu" in (s.param("query") or ""))
    assert cpu_query is not None and "by (namespace, ray_io_cluster, ray_io_group)" in cpu_query
    for i, r in enumerate(refs):
        cpu = result.get(r, CPU)
        assert cpu.available and cpu.value == 10.0 * i and cpu.source == "prometheus"
        assert cpu.at == NOW - timedelta(seconds=2)  # the scrape time, not the evaluation time
        assert result.get(r, QUEUE).value == i and result.get(r, QUEUE).at == NOW


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (vector([]), "no series"),
        (utilization_answer({GroupRef("ns", "c", "g"): "NaN"}), "NaN"),
        (utilization_answer({GroupRef("ns", "c", "g"): "+Inf"}), "Inf"),
        (vector([({"namespace": "ns"}, 1.0, NOW.timestamp())]), "unmapped"),
        (utilization_answer({GroupRef("ns", "c", "g"): 50.0}, age_s=600), "stale"),
        (utilization_answer({GroupRef("ns", "c", "other"): 50.0}), "no series"),
    ],
)
def test_missing_data_is_unavailable_with_a_reason_never_zero(
    prom: StubServer, answer: dict[str, Any], reason: str
) -> None:
    prom.route("/api/v1/query", Reply(body=answer))
    sample = (
        source(prom, staleness_s=120)
        .fetch([target("ns", "c", "g")], [CPU], NOW)
        .get(GroupRef("ns", "c", "g"), CPU)
    )
    assert not sample.available and sample.value is None
    assert sample.unavailable is not None and sample.unavailable.startswith(reason), sample.unavailable


def test_promql_with_several_series_per_group_is_ambiguous(prom: StubServer) -> None:
    ref = GroupRef("ns", "c", "g")
    prom.route(
        "/api/v1/query",
        Reply(body=vector([(labels(ref, instance="a"), 1, 0.0), (labels(ref, instance="b"), 2, 0.0)])),
    )
    sample = source(prom).fetch([MetricTarget(ref)], [QUEUE], NOW).get(ref, QUEUE)
    assert sample.unavailable is not None and sample.unavailable.startswith("ambiguous: 2 series")


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(500, "internal error"), "HTTP 500"),
        (Reply(503, "overloaded"), "HTTP 503"),
        (Reply(200, "<html>not prometheus</html>", "text/html"), "garbage answer"),
        (Reply(200, {"status": "success"}), "garbage answer"),
        (Reply(200, {"status": "success", "data": {"result": "scalar?"}}), "garbage answer"),
        (
            Reply(200, {"status": "success", "data": {"result": [{"metric": {}, "values": []}]}}),
            "garbage answer",
        ),
        (Reply(drop=True), "cannot connect"),
    ],
)
def test_upstream_faults_are_unavailable_with_a_reason(prom: StubServer, reply: Reply, reason: str) -> None:
    prom.route("/api/v1/query", reply)
    ref = GroupRef("ns", "c", "g")
    result = source(prom).fetch([MetricTarget(ref)], [CPU, QUEUE], NOW)
    for spec in (CPU, QUEUE):
        sample = result.get(ref, spec)
        assert sample.value is None and sample.unavailable is not None
        assert sample.unavailable.startswith(reason), sample.unavailable


def test_down_prometheus_is_unavailable_at_once() -> None:
    (port,) = free_ports(1)
    src = PrometheusSource(f"http://127.0.0.1:{port}", http=HttpSettings(timeout_s=2.0, retries=2))
    started = time.monotonic()
    sample = src.fetch([target("ns", "c", "g")], [CPU], NOW).get(GroupRef("ns", "c", "g"), CPU)
    assert time.monotonic() - started < 2.0
    assert sample.unavailable is not None and sample.unavailable.startswith("cannot connect")


def test_slow_prometheus_times_out_within_the_configured_timeout(prom: StubServer) -> None:
    prom.route("/api/v1/query", Reply(body=vector([]), delay_s=5.0))
    src = source(prom, http=HttpSettings(timeout_s=1.0, retries=1))
    started = time.monotonic()
    result = src.fetch([target("ns", "c", "g")], [CPU, QUEUE], NOW)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, elapsed
    for spec in (CPU, QUEUE):
        assert result.get(GroupRef("ns", "c", "g"), spec).unavailable == "timeout after 1.0 s"


def test_gateway_errors_are_retried_once_then_succeed(prom: StubServer) -> None:
    ref = GroupRef("ns", "c", "g")
    replies = iter([Reply(502, "bad gateway"), Reply(body=utilization_answer({ref: 42.0}))])
    prom.route("/api/v1/query", lambda seen: next(replies))
    sample = source(prom, http=HttpSettings(timeout_s=2.0, retries=1)).fetch([MetricTarget(ref)], [CPU], NOW)
    assert sample.get(ref, CPU).value == 42.0
    assert len(prom.seen) == 2


def test_tenancy_mode_queries_each_namespace_with_its_parameter(prom: StubServer) -> None:
    a, b = GroupRef("team-a", "c1", "g"), GroupRef("team-b", "c2", "g")

    def answer(seen: Seen) -> Reply:
        ns = seen.param("namespace")
        if ns == "team-b":
            return Reply(403, "forbidden: no view role in team-b")
        return Reply(body=utilization_answer({a: 30.0}))

    prom.route("/api/v1/query", answer)
    result = source(prom, tenancy=True).fetch([MetricTarget(a), MetricTarget(b)], [CPU], NOW)
    assert sorted(s.param("namespace") or "" for s in prom.seen) == ["team-a", "team-b"]
    assert result.requests == 2
    assert result.get(a, CPU).value == 30.0
    assert (result.get(b, CPU).unavailable or "").startswith("HTTP 403")


def test_cluster_wide_mode_never_sends_a_namespace(prom: StubServer) -> None:
    prom.route("/api/v1/query", Reply(body=vector([])))
    source(prom).fetch([target("a", "c", "g"), target("b", "c", "g")], [CPU], NOW)
    assert len(prom.seen) == 1 and prom.seen[0].param("namespace") is None


def test_bearer_token_and_rotated_token_file(prom: StubServer, tmp_path: Path) -> None:
    prom.route("/api/v1/query", Reply(body=vector([])))
    source(prom, http=HttpSettings(timeout_s=1.0, bearer_token="s3cret")).fetch(
        [target("n", "c", "g")], [CPU], NOW
    )
    assert prom.seen[-1].headers["authorization"] == "Bearer s3cret"
    token = tmp_path / "token"
    token.write_text("first\n")
    src = source(prom, http=HttpSettings(timeout_s=1.0, token_file=str(token)))
    src.fetch([target("n", "c", "g")], [CPU], NOW)
    assert prom.seen[-1].headers["authorization"] == "Bearer first"
    token.write_text("second\n")
    later = time.time() + 5
    import os

    os.utime(token, (later, later))
    src.fetch([target("n", "c", "g")], [CPU], NOW)
    assert prom.seen[-1].headers["authorization"] == "Bearer second"


def _make_ca_and_cert(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""
    ca_key, ca, key, csr, cert, ext = (d / n for n in ("ca.key", "ca.pem", "k.key", "k.csr", "k.pem", "ext"))

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    new_key = ["-newkey", "rsa:2048", "-nodes"]
    run(
        "req",
        "-x509",
        *new_key,
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
    )
    run("req", *new_key, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    sign = ["-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2", "-extfile", str(ext)]
    run("x509", "-req", "-in", str(csr), "-out", str(cert), *sign)
    return ca, cert, key


def test_ca_bundle_is_used_for_tls(tmp_path: Path) -> None:
    ca, cert, key = _make_ca_and_cert(tmp_path)
    ref = GroupRef("ns", "c", "g")
    with serve(tls=(str(cert), str(key))) as https:
        https.route("/api/v1/query", Reply(body=utilization_answer({ref: 7.0})))
        assert https.url.startswith("https://")
        trusted = PrometheusSource(https.url, http=HttpSettings(timeout_s=2.0, ca_bundle=str(ca)))
        assert trusted.fetch([MetricTarget(ref)], [CPU], NOW).get(ref, CPU).value == 7.0
        untrusted = PrometheusSource(https.url, http=HttpSettings(timeout_s=2.0, retries=0))
        reason = untrusted.fetch([MetricTarget(ref)], [CPU], NOW).get(ref, CPU).unavailable or ""
        assert reason.startswith("TLS error"), reason


def test_pending_demand_is_refused_with_a_reason(prom: StubServer) -> None:
    src = source(prom)
    support = src.supports(PENDING)
    assert not support and "Ray dashboard" in support.reason
    sample = src.fetch([target("n", "c", "g")], [PENDING], NOW).get(GroupRef("n", "c", "g"), PENDING)
    assert (sample.unavailable or "").startswith("not supported")
    assert prom.seen == []


def test_pending_tasks_per_cluster(prom: StubServer) -> None:
    ts = NOW.timestamp()
    c1, c2 = ClusterRef("ns", "c1"), ClusterRef("ns", "c2")
    body = vector(
        [
            ({"namespace": "ns", "ray_io_cluster": "c1", "rayops_part": "value"}, 4, ts),
            ({"namespace": "ns", "ray_io_cluster": "c1", "rayops_part": "time"}, ts - 1, ts),
        ]
    )
    prom.route("/api/v1/query", Reply(body=body))
    counts = source(prom).pending_tasks([c1, c2], NOW)
    query = prom.seen[0].param("query") or ""
    assert "sum by (namespace, ray_io_cluster) (ray_tasks{" in query
    assert counts[c1].value == 4.0
    assert (counts[c2].unavailable or "").startswith("no series")


def test_trouble_is_logged_once_per_incident(prom: StubServer, caplog: pytest.LogCaptureFixture) -> None:
    ref = GroupRef("ns", "c", "g")
    prom.route("/api/v1/query", Reply(500, "boom"))
    src = source(prom)
    caplog.set_level(logging.INFO, logger="controller.metrics.prometheus")
    for i in range(5):
        src.fetch([MetricTarget(ref)], [CPU], NOW + timedelta(seconds=i))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "HTTP 500" in warnings[0].getMessage()
    prom.route("/api/v1/query", Reply(body=utilization_answer({ref: 1.0})))
    for _ in range(3):
        assert src.fetch([MetricTarget(ref)], [CPU], NOW).get(ref, CPU).value == 1.0
    recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert len(recovered) == 1 and "5 failed attempts" in recovered[0].getMessage()


def test_nan_values_never_become_numbers(prom: StubServer) -> None:
    ref = GroupRef("ns", "c", "g")
    prom.route("/api/v1/query", Reply(body=vector([(labels(ref), "NaN", NOW.timestamp())])))
    sample = source(prom).fetch([MetricTarget(ref)], [QUEUE], NOW).get(ref, QUEUE)
    assert sample.value is None and not math.isnan(sample.value or 0.0)
    assert (sample.unavailable or "").startswith("NaN")


def test_tenancy_keeps_only_the_namespace_asked_for(prom: StubServer) -> None:
    a, b = GroupRef("team-a", "c1", "g"), GroupRef("team-b", "c2", "g")
    prom.route("/api/v1/query", Reply(body=utilization_answer({a: 10.0, b: 20.0})))  # a proxy that ignores it
    result = source(prom, tenancy=True).fetch([MetricTarget(a), MetricTarget(b)], [CPU], NOW)
    assert len(prom.seen) == 2
    assert result.get(a, CPU).value == 10.0 and result.get(b, CPU).value == 20.0
