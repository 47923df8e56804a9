"""Only one controller acts: a `coordination.k8s.io` Lease on Kubernetes, a file lock on a laptop.

Why not `kubernetes.leaderelection` (the client's own): it blocks in `run()` with callbacks on threads,
calls `sys.exit` on a missing config, talks to the API through its own client (so not through
`KubeApi`, the one module allowed to, with its typed errors, timeouts and no credentials in messages),
and offers no "am I still safe to act?" check. What is needed fits in one small class that keeps
client-go's rules:

- **Acquire**: create the Lease if none exists; take it over when its holder has not renewed for
  `leaseDurationSeconds`, measured on *this* replica's monotonic clock from the moment it first saw
  the current record (never from the holder's timestamps, so clock skew between nodes cannot make a
  lease look expired early).
- **Renew** every `retry_period` with an update guarded by `resourceVersion` (a lost race is a
  `ConflictError`: someone else renewed or took it).
- **Stop acting before another can take over**: `is_leader()` is true only until `renew_deadline`
  after the last successful renewal (again on the local monotonic clock, started *before* the renewal
  request was sent). `renew_deadline < lease_duration`, and a candidate waits `lease_duration` from
  when *it* saw that renewal, which is later; so a leader cut off from the API server stops writing at
  least `lease_duration - renew_deadline` seconds before anyone else may start.
- **Release** on a clean shutdown (holder cleared, duration 1 s), so failover after a rollout takes a
  second, not the full lease.

Laptop mode: `FileLockElector` holds `fcntl.flock` on `<state dir>/controller.lock`; the kernel drops
the lock when the process dies (even SIGKILL), so a second local controller takes over at its next try.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from controller.backends.base import AlreadyExists, BackendError, ConflictError
from controller.backends.kube_api import KubeApi
from controller.settings import LeaderSettings

log = logging.getLogger("rayops.controller.leader")


class Elector(Protocol):
    identity: str

    def start(self) -> None:
        """Begin trying to lead in a background thread (returns at once)."""
        ...

    def stop(self) -> None:
        """Stop trying and give up leadership (release the lease or lock) if held."""
        ...

    def is_leader(self) -> bool:
        """Whether this replica may act *now*; checked before every write."""
        ...

    def healthy(self) -> bool:
        """Whether the coordination service (API server, lock file) was reachable recently."""
        ...


def _micro(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Leader election on one Lease through `KubeApi`; see the module docstring for the rules."""

    def __init__(
        self,
        api: KubeApi,
        settings: LeaderSettings,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if not settings.namespace:
            raise ValueError("the Lease needs a namespace (POD_NAMESPACE)")
        self.api = api
        self.settings = settings
        self.identity = settings.identity
        self.namespace: str = settings.namespace
        self._mono = monotonic
        self._wall = wall
        self._on_change = on_change
        self._lock = threading.Lock()
        self._renewed_at: float | None = None  # monotonic time the last successful renewal was *sent*
        self._observed: tuple[Any, ...] | None = None  # the last lease record seen
        self._observed_at = 0.0  # monotonic time that record was first seen
        self._contact_at: float | None = None  # last successful API round trip
        self._leading = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ state

    def is_leader(self) -> bool:
        with self._lock:
            return (
                self._renewed_at is not None
                and self._mono() - self._renewed_at < self.settings.renew_deadline_s
            )

    def healthy(self) -> bool:
        with self._lock:
            return (
                self._contact_at is not None
                and self._mono() - self._contact_at < 2 * self.settings.lease_duration_s
            )

    def _set_leading(self, leading: bool) -> None:
        if leading != self._leading:
            self._leading = leading
            log.info(
                "%s %s the lease %s/%s",
                self.identity,
                "now holds" if leading else "no longer holds",
                self.namespace,
                self.settings.lease_name,
            )
            if self._on_change is not None:
                self._on_change(leading)

    # ------------------------------------------------------------------ one round

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the lease afterwards. Never raises for API trouble."""
        sent = self._mono()
        try:
            ok = self._attempt(sent)
        except BackendError as e:
            log.info("lease %s: %s", self.settings.lease_name, e)
            ok = False
        leading = self.is_leader()
        self._set_leading(leading)
        return ok

    def _attempt(self, sent: float) -> bool:
        name = self.settings.lease_name
        lease = self.api.get_lease(self.namespace, name)
        with self._lock:
            self._contact_at = self._mono()
        now = self._wall()
        duration = round(self.settings.lease_duration_s)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": duration,
                    "acquireTime": _micro(now),
                    "renewTime": _micro(now),
                    "leaseTransitions": 0,
                },
            }
            try:
                self.api.create_lease(self.namespace, body)
            except AlreadyExists:
                return False
            self._won(sent)
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (
            holder,
            spec.get("renewTime"),
            spec.get("leaseDurationSeconds"),
            spec.get("leaseTransitions"),
        )
        if record != self._observed:
            self._observed, self._observed_at = record, self._mono()
        if holder and holder != self.identity:
            their = float(spec.get("leaseDurationSeconds") or duration)
            if self._mono() - self._observed_at < their:
                with self._lock:
                    self._renewed_at = None
                return False  # held, and not expired as far as this replica has seen
        transitions = int(spec.get("leaseTransitions") or 0)
        mine = holder == self.identity
        new_spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": duration,
            "acquireTime": spec.get("acquireTime") if mine else _micro(now),
            "renewTime": _micro(now),
            "leaseTransitions": transitions if mine else transitions + 1,
        }
        body = {**lease, "spec": new_spec}
        try:
            updated = self.api.replace_lease(self.namespace, name, body)
        except ConflictError:
            return False
        spec = updated.get("spec") or {}
        self._observed = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            spec.get("leaseDurationSeconds"),
            spec.get("leaseTransitions"),
        )
        self._observed_at = self._mono()
        self._won(sent)
        if not mine:
            log.info("%s took over lease %s from %s", self.identity, name, holder or "nobody")
        return True

    def _won(self, sent: float) -> None:
        with self._lock:
            self._renewed_at = sent

    def release(self) -> None:
        """Give the lease up now (holder cleared), if this replica holds it."""
        with self._lock:
            held = self._renewed_at is not None
            self._renewed_at = None
        self._set_leading(False)
        if not held:
            return
        try:
            lease = self.api.get_lease(self.namespace, self.settings.lease_name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = dict(lease.get("spec") or {})
            spec.update({"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": _micro(self._wall())})
            self.api.replace_lease(self.namespace, self.settings.lease_name, {**lease, "spec": spec})
            log.info("%s released lease %s", self.identity, self.settings.lease_name)
        except BackendError as e:
            log.info("could not release lease %s (%s); it expires on its own", self.settings.lease_name, e)

    # ------------------------------------------------------------------ loop

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rayops-leader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.try_acquire_or_renew()
            self._stop.wait(self.settings.retry_period_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.renew_deadline_s)
            self._thread = None
        self.release()


class FileLockElector:
    """Laptop mode: whoever holds the `flock` on the lock file acts; others retry every period."""

    def __init__(
        self,
        path: Path,
        identity: str | None = None,
        retry_period_s: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.path = path
        self.identity = identity or f"pid {os.getpid()}"
        self.retry_period_s = retry_period_s
        self._on_change = on_change
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._told_holder = False

    def try_acquire(self) -> bool:
        with self._lock:
            if self._fd is not None:
                return True
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if not self._told_holder:
                    self._told_holder = True
                    log.warning(
                        "another rayops controller holds %s (%s); this one waits and does not scale",
                        self.path,
                        self._holder(),
                    )
                return False
            os.ftruncate(fd, 0)
            os.write(fd, f"{self.identity}\n".encode())
            self._fd = fd
        log.info("%s holds the controller lock %s", self.identity, self.path)
        if self._on_change is not None:
            self._on_change(True)
        return True

    def _holder(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8").strip() or "unknown"
        except OSError:
            return "unknown"

    def is_leader(self) -> bool:
        with self._lock:
            return self._fd is not None

    def healthy(self) -> bool:
        return True

    def start(self) -> None:
        if self.try_acquire() or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rayops-lock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.retry_period_s):
            if self.try_acquire():
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.retry_period_s + 1)
            self._thread = None
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            if self._on_change is not None:
                self._on_change(False)


class AlwaysLeader:
    """For `--once` runs and tests: this process acts, no coordination."""

    identity = "single"

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def is_leader(self) -> bool:
        return True

    def healthy(self) -> bool:
        return True
