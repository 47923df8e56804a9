"""Fixtures of the metrics tests: scripted loopback HTTP servers and the recorded fixtures."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.metrics.stub import StubServer, serve

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
DASHBOARD_FIXTURES = FIXTURES / "ray-dashboard"
GPU_FIXTURES = FIXTURES / "ray-gpu"


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with serve() as s:
        yield s


@pytest.fixture
def stub_factory() -> Iterator[Callable[[], StubServer]]:
    """Several independent servers (one per fake cluster)."""
    with_stack: list[Any] = []

    def make() -> StubServer:
        cm = serve()
        server = cm.__enter__()
        with_stack.append(cm)
        return server

    try:
        yield make
    finally:
        for cm in reversed(with_stack):
            cm.__exit__(None, None, None)


def serve_recorded_dashboard(stub: StubServer, version: str) -> dict[str, Any]:
    """Route `stub` to answer like the recorded cluster of `version`; returns its scenario.json."""
    from tests.metrics.stub import Reply

    d = DASHBOARD_FIXTURES / version
    scenario: dict[str, Any] = load_json(d / "scenario.json")
    stub.route("/api/version", Reply(body=load_json(d / "version.json")))
    stub.route("/api/cluster_status", Reply(body=load_json(d / "cluster_status.json")))
    stub.route("/api/cluster_status?format=1", Reply(body=load_json(d / "cluster_status-format1.json")))
    stub.route("/api/v0/nodes", Reply(body=load_json(d / "v0-nodes.json")))
    stub.route("/api/v0/tasks", Reply(body=load_json(d / "v0-tasks.json")))
    stub.route("/api/v0/actors", Reply(body=load_json(d / "v0-actors.json")))
    for role, node_id in scenario["nodes"].items():
        stub.route(f"/nodes/{node_id}", Reply(body=load_json(d / f"node-{role}.json")))
    return scenario


RECORDED_VERSIONS = ("2.51.1", "2.60.0", "2.60.0-autoscaler-v2")
