"""Leader election on the Kubernetes API stand-in (a real Lease through the official client) and the
laptop lock. Short durations (lease 2 s, renew deadline 1.2 s, retry 0.2 s) keep the tests fast; the
timeline of who believes it leads is sampled every 10 ms and must never show two leaders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.backends.kube_api import KubeApi, RetryPolicy
from controller.leader import FileLockElector, LeaseElector
from controller.settings import LeaderSettings
from tests.standins.kube_api import KubeApiServer
from tests.standins.kube_requests import ApiRequest

A, B = "system:serviceaccount:rayops:controller-a", "system:serviceaccount:rayops:controller-b"
TOKENS = {"token-a": A, "token-b": B, "admin": "system:admin"}
FAST = RetryPolicy(attempts=1, base_delay_s=0.01, max_delay_s=0.01, connect_timeout_s=1.0, read_timeout_s=1.0)


class Partition:
    """An authorizer that cuts one identity off the API server (403), as a network partition would."""

    def __init__(self) -> None:
        self.cut: set[str] = set()

    def __call__(self, req: ApiRequest) -> bool:
        return req.identity not in self.cut


@pytest.fixture
def partition() -> Partition:
    return Partition()


@pytest.fixture
def server(partition: Partition) -> Iterator[KubeApiServer]:
    s = KubeApiServer(TOKENS, authorizer=partition, default_token="admin").start()
    try:
        yield s
    finally:
        s.stop()


def elector(server: KubeApiServer, token: str, name: str) -> LeaseElector:
    settings = LeaderSettings(
        lease_name="rayops-controller",
        namespace="rayops",
        identity=name,
        lease_duration_s=2.0,
        renew_deadline_s=1.2,
        retry_period_s=0.2,
    )
    return LeaseElector(KubeApi(server.client(token), FAST, sleep=lambda _: None), settings)


class Timeline:
    """Samples who believes it leads, every 10 ms, in a thread."""

    def __init__(self, *electors: LeaseElector) -> None:
        self.electors = electors
        self.samples: list[tuple[float, tuple[bool, ...]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.samples.append((time.monotonic(), tuple(e.is_leader() for e in self.electors)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def first(self, index: int, value: bool, after: float = 0.0) -> float | None:
        return next((t for t, s in self.samples if t >= after and s[index] is value), None)


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_one_of_two_replicas_leads_and_the_other_takes_over_after_a_clean_stop(server: KubeApiServer) -> None:
    a, b = elector(server, "token-a", "a"), elector(server, "token-b", "b")
    a.start()
    wait_for(a.is_leader)
    b.start()
    timeline = Timeline(a, b)
    time.sleep(1.5)
    assert a.is_leader() and not b.is_leader()
    stopped = time.monotonic()
    a.stop()  # releases the lease
    wait_for(b.is_leader, timeout=3)
    took = time.monotonic() - stopped
    timeline.stop()
    b.stop()
    assert took < 1.0  # a released lease is taken at the next retry, not after the full duration
    assert not any(all(s) for _, s in timeline.samples)
    lease = server.get_obj("leases", "rayops", "rayops-controller")
    assert lease is not None and lease["spec"]["leaseTransitions"] >= 1
    renewals = [r for r in server.resource_requests(A) if r.verb == "update"]
    assert len(renewals) >= 5  # the leader renews every retry period


def test_a_cut_off_leader_stops_acting_before_another_can_take_over(
    server: KubeApiServer, partition: Partition
) -> None:
    a, b = elector(server, "token-a", "a"), elector(server, "token-b", "b")
    a.start()
    wait_for(a.is_leader)
    b.start()
    time.sleep(0.5)
    timeline = Timeline(a, b)
    cut = time.monotonic()
    partition.cut.add(A)  # a can no longer renew; it does not know whether anyone else can
    wait_for(b.is_leader, timeout=6)
    time.sleep(0.2)
    timeline.stop()
    a.stop()
    b.stop()
    a_stopped = timeline.first(0, False, after=cut)
    b_started = timeline.first(1, True, after=cut)
    assert a_stopped is not None and b_started is not None
    assert a_stopped < b_started - 0.5  # renew deadline 1.2 s < lease 2 s: a gap, never an overlap
    assert a_stopped - cut <= 1.2 + 0.3
    assert b_started - cut >= 2.0 - 0.2  # b waited out the lease from its own sighting
    assert not any(all(s) for _, s in timeline.samples)


def test_a_crashed_leader_is_replaced_after_the_lease_duration(server: KubeApiServer) -> None:
    a, b = elector(server, "token-a", "a"), elector(server, "token-b", "b")
    assert a.try_acquire_or_renew()  # a leads, then dies without releasing (no stop())
    b.start()
    started = time.monotonic()
    wait_for(b.is_leader, timeout=6)
    waited = time.monotonic() - started
    b.stop()
    assert 1.5 <= waited <= 3.5
    assert not a.is_leader()  # a's renew deadline passed long ago


def test_the_laptop_lock_admits_one_controller_and_is_freed_by_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "controller.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        mine = FileLockElector(path, "test", retry_period_s=0.1)
        assert not mine.try_acquire() and not mine.is_leader()
        mine.start()
        time.sleep(0.3)
        assert not mine.is_leader()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        wait_for(mine.is_leader, timeout=3)
        second = FileLockElector(path, "another")
        assert not second.try_acquire()  # one process at a time, even within one process
        mine.stop()
        assert second.try_acquire()
        second.stop()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
