"""The laptop scrape targets (Prometheus file_sd) follow the workers as they come and go.

In laptop mode CPU utilization is scraped from every node's metrics port through the file_sd file the
local backend writes. A worker being removed must leave that file before its port closes: a scrape
that fails makes its group's utilization unavailable, and missing data holds the next scale-down step
for a whole stabilization window. No Ray runs here: the node operations (`localray`) are replaced, so
the order of "out of the targets" and "stopped" is what is checked.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller import localray
from controller.backends.local_caps import LocalCaps
from controller.backends.local_procs import NodeSettings, Reconciler
from controller.backends.local_state import (
    ClusterPhase,
    ClusterRecord,
    GroupRecord,
    StateStore,
    WorkerPhase,
    WorkerRecord,
)
from controller.localray import HeadPorts, LocalHead, LocalWorker, WorkerPorts

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _record(tmp: Path) -> ClusterRecord:
    head = LocalHead(
        pid=os.getpid(),
        temp_dir=tmp / "h",
        ports=HeadPorts(*range(21000, 21009)),
        node_id="head",
        node_name="h",
        num_cpus=0,
        num_gpus=0,
    )

    def worker(name: str, metrics_port: int) -> WorkerRecord:
        node = LocalWorker(
            pid=os.getpid(),
            temp_dir=tmp / name,
            ports=WorkerPorts(metrics_port, metrics_port + 1, metrics_port + 2, metrics_port + 3),
            node_id=f"node-{name}",
            node_name=name,
            gcs_address=head.gcs_address,
            dashboard_url=head.dashboard_url,
            num_cpus=1,
            num_gpus=0,
        )
        return WorkerRecord(name, "cpu", tmp / name, WorkerPhase.RUNNING, os.getpid(), NOW, node)

    group = GroupRecord(
        "cpu", replicas=1, min_replicas=0, max_replicas=2, num_cpus=1, pending_deletes=["c-cpu-a"]
    )
    return ClusterRecord(
        name="c",
        phase=ClusterPhase.RUNNING,
        owner_pid=os.getpid(),
        head_temp_dir=tmp / "h",
        groups=[group],
        labels={},
        annotations={},
        created_at=NOW,
        head=head,
        workers=[worker("c-cpu-a", 22000), worker("c-cpu-b", 22010)],
    )


def _ports(store: StateStore) -> set[str]:
    targets: list[dict[str, Any]] = json.loads(store.file_sd_path.read_text())
    return {t for entry in targets for t in entry["targets"]}


def test_a_removed_worker_leaves_the_scrape_targets_before_it_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path / "state")
    with store.lock():
        store.write(_record(tmp_path))
    store.write_file_sd()
    assert _ports(store) == {"127.0.0.1:21002", "127.0.0.1:22000", "127.0.0.1:22010"}

    seen_at_stop: list[set[str]] = []
    monkeypatch.setattr(localray, "node_running", lambda node: True)
    monkeypatch.setattr(localray, "drain_idle", lambda gcs, node_id, message: (True, ""))
    monkeypatch.setattr(localray, "stop_worker", lambda node, **kw: seen_at_stop.append(_ports(store)))
    monkeypatch.setattr(localray, "kill_marked", lambda temp_dir: [])
    caps = LocalCaps(memory_bytes=64 << 30, cpus=64)
    report = Reconciler(store, NodeSettings(), caps, lambda: NOW).reconcile("c")

    assert report.stopped == ["c-cpu-a"]
    # While it was being stopped, its metrics port was no longer a scrape target; the other worker's was.
    assert seen_at_stop == [{"127.0.0.1:21002", "127.0.0.1:22010"}]
    assert _ports(store) == {"127.0.0.1:21002", "127.0.0.1:22010"}
