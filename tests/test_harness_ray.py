"""The Ray fixtures are real Ray: tasks run, workers join and drain, everything listens on loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from controller import localray
from tests.harness.ray import RayTestCluster
from tests.harness.tcpproxy import TcpProxy


def _listening_addresses(pids: list[int]) -> set[tuple[str, int]]:
    found = set()
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        # gRPC servers bind IPv6 sockets; `::ffff:127.0.0.1` is IPv4 loopback seen through one.
        found.update(
            (c.laddr.ip.removeprefix("::ffff:"), c.laddr.port)
            for c in conns
            if c.status == psutil.CONN_LISTEN
        )
    return found


def test_task_runs_on_the_session_head(ray_cluster: RayTestCluster) -> None:
    result = ray_cluster.run_driver(
        """
        import json, ray
        ray.init(logging_level="ERROR")
        @ray.remote(num_cpus=1)
        def double(x):
            return x * 2, ray.get_runtime_context().get_node_id()
        value, node = ray.get(double.remote(21))
        print(json.dumps({"value": value, "node": node}))
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.json() == {"value": 42, "node": ray_cluster.node_id}


def test_every_ray_listener_is_on_loopback(ray_cluster: RayTestCluster) -> None:
    pids = localray.node_processes(ray_cluster.head)
    listening = _listening_addresses(pids)
    ports = {port for _, port in listening}
    # The head's own ports are among them, so the check looked at the right processes.
    ports_ = ray_cluster.head.ports
    assert {ports_.gcs, ports_.dashboard, ports_.metrics_export, ports_.client_server} <= ports, (
        ports_,
        listening,
    )
    assert {ip for ip, _ in listening} == {"127.0.0.1"}, sorted(listening)


@pytest.mark.slow
def test_worker_joins_runs_a_task_and_drains_away(ray_cluster: RayTestCluster) -> None:
    worker = ray_cluster.add_worker(num_cpus=1, num_gpus=1, resources={"rayops_accel": 2})

    node = ray_cluster.node(worker.node_id)
    assert node["state"] == "ALIVE"
    assert node["node_ip"] == "127.0.0.1"
    assert node["resources_total"]["CPU"] == 1
    assert node["resources_total"]["GPU"] == 1
    assert node["resources_total"]["rayops_accel"] == 2
    assert node["labels"][localray.NODE_LABEL] == worker.node_name

    result = ray_cluster.run_driver(
        """
        import json, ray
        ray.init(logging_level="ERROR")
        @ray.remote(num_cpus=1, resources={"rayops_accel": 1})
        def where():
            return ray.get_runtime_context().get_node_id()
        print(json.dumps(ray.get(where.remote())))
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.json() == worker.node_id

    # The head's discovery file lists the worker's metrics endpoint (rewritten every ~5 s).
    target = f"127.0.0.1:{worker.metrics_port}"
    deadline = time.monotonic() + 20
    while target not in ray_cluster.sd_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert target in json.loads(ray_cluster.sd_file.read_text())[0]["targets"]

    report = ray_cluster.stop_worker(worker)
    assert report.graceful, report
    assert report.killed_pids == ()
    dead = ray_cluster.node(worker.node_id)
    assert dead["state"] == "DEAD"
    assert "preemption" in dead["state_message"]  # drained, not killed
    assert localray.node_processes(worker) == []
    assert worker not in ray_cluster.workers


def test_dashboard_proxy_passes_refuses_hangs_and_comes_back(
    ray_cluster: RayTestCluster, dashboard_proxy: TcpProxy
) -> None:
    def version() -> str:
        with urllib.request.urlopen(f"{dashboard_proxy.url}/api/version", timeout=2) as resp:
            return str(json.loads(resp.read())["ray_version"])

    assert version() == localray_version()

    dashboard_proxy.refuse()
    with pytest.raises(urllib.error.URLError) as refused:
        version()
    assert isinstance(refused.value.reason, ConnectionRefusedError)

    dashboard_proxy.hang()
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)) as hung:
        version()
    assert "timed out" in str(hung.value)

    dashboard_proxy.reset()
    with pytest.raises((ConnectionResetError, urllib.error.URLError, ConnectionError)):
        version()

    dashboard_proxy.passthrough()
    assert version() == localray_version()
    # The dashboard itself never went away: only the path through the proxy did.
    with urllib.request.urlopen(f"{ray_cluster.dashboard_url}/api/version", timeout=2) as resp:
        assert resp.status == 200


def localray_version() -> str:
    import ray

    return str(ray.__version__)


def test_handles_round_trip_through_dicts(ray_cluster: RayTestCluster) -> None:
    head = ray_cluster.head
    again = localray.LocalHead.from_dict(json.loads(json.dumps(head.to_dict())))
    assert again == head
    assert again.gcs_address == ray_cluster.gcs_address


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = localray.free_ports(20)
    assert len(set(ports)) == 20
    for port in ports[:3]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_temp_dirs_are_short_and_usable_as_ray_labels() -> None:
    # Ray rejects a label value that does not end with a letter or digit, and a socket path over
    # ~107 bytes; the node is named after its temp dir, and Ray nests sockets ~60 bytes under it.
    dirs = [localray.make_temp_dir("rayops-t-") for _ in range(40)]
    try:
        for d in dirs:
            assert re.fullmatch(r"rayops-t-[0-9a-f]{10}", d.name), d
            assert len(str(d)) <= localray.MAX_TEMP_DIR_LEN
        assert len(set(dirs)) == len(dirs)
    finally:
        for d in dirs:
            d.rmdir()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_fresh_head_counts_concurrently_started_workers(
    fresh_ray_head: Callable[..., RayTestCluster],
) -> None:
    cluster = fresh_ray_head(num_cpus=0)
    assert [n["node_id"] for n in cluster.nodes("ALIVE")] == [cluster.node_id]

    # Two workers start at the same moment: each has its own temp dir and ports, so they do not race.
    errors: list[BaseException] = []

    def add() -> None:
        try:
            cluster.add_worker(num_cpus=1)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=add) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    alive = cluster.nodes("ALIVE")
    assert len(alive) == 3
    assert {n["node_id"] for n in alive} == {cluster.node_id, *(w.node_id for w in cluster.workers)}

    # A pending-demand workload: 3 one-CPU tasks on 2 one-CPU workers, no CPU on the head.
    result = cluster.run_driver(
        """
        import json, ray, time
        ray.init(logging_level="ERROR")
        @ray.remote(num_cpus=1)
        def node():
            time.sleep(0.5)
            return ray.get_runtime_context().get_node_id()
        print(json.dumps(sorted(set(ray.get([node.remote() for _ in range(3)])))))
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(result.json()) <= {w.node_id for w in cluster.workers}

    # A node whose `ray start --block` died (crashed, SIGKILLed) is still cleaned up completely.
    crashed = cluster.workers[0]
    os.kill(crashed.pid, signal.SIGKILL)
    report = cluster.stop_worker(crashed)
    assert localray.node_processes(crashed) == [], report

    cluster.close()
    assert localray.node_processes(cluster.head) == []


def test_nodes_do_not_inherit_the_driver_only_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A kernel that is both a driver and the controller must still start nodes that can join."""
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    env = localray.node_environment(tmp_path, {"EXTRA": "1"})
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in env
    assert env["EXTRA"] == "1"
    assert env[localray.NODE_ENV_MARKER] == str(tmp_path)
