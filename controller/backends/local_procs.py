"""The local "operator": makes a cluster's processes match its record (contracts.md section 7).

What KubeRay's operator does for pods, this does for `ray start --block` processes, with two
differences that make scale-down safe on a laptop:

- It removes only workers a decision named (`pending_deletes`), never one of its own choosing, and
  each removal first asks Ray to drain the node for *idle* termination (`localray.drain_idle`). The
  raylet accepts that only while nothing runs on the node and then takes no new work, so a task
  that landed after the controller saw the worker idle is never lost: the drain is refused, the
  worker stays, and the group's replicas go back up by one (the record stays true).
- Workers start concurrently, each with its own temp dir and ports (two `ray start` in one temp dir
  race); a failed start is cleaned up completely and retried later with exponential backoff.

Who may touch a cluster's processes is decided by the per-cluster lock in the state directory
(`StateStore.cluster_lock`): only its holder starts or stops nodes. A record left STARTING or
STOPPING by a process that no longer holds the lock is therefore an orphan of a process that died
mid-way, and the next holder takes it over: a half-started worker whose `ray start` lives on is
waited for and adopted (once registered it may already run tasks, so killing it would fail them);
one that cannot come up is killed and cleaned up (`sweep`). A RUNNING worker whose process is gone died on
its own: it is forgotten, remembered in the record's `lost` list for status, and replaced if the
replicas still ask for it.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from controller import keys, localray
from controller.backends.base import BackendUnavailable, ClusterNotFound
from controller.backends.local_caps import LocalCaps, Usage
from controller.backends.local_state import (
    HEAD_GROUP,
    ClusterPhase,
    ClusterRecord,
    GroupRecord,
    LostWorker,
    StateStore,
    WorkerPhase,
    WorkerRecord,
)
from controller.domain import ClusterRef
from controller.localray import LocalHead, LocalRayError, LocalWorker

__all__ = [
    "INSTANCE_ID_ENV",
    "LABEL_CLUSTER",
    "LABEL_GROUP",
    "NodeSettings",
    "Operator",
    "ReconcileReport",
    "Reconciler",
    "head_labels",
    "usage_of",
]

log = logging.getLogger(__name__)

# Ray node labels naming the cluster and group a local node serves (visible in the dashboard).
LABEL_CLUSTER = "rayops.io/cluster"
LABEL_GROUP = "rayops.io/group"
MAX_ERROR_CHARS = 2000
INSTANCE_ID_ENV = "RAY_CLOUD_INSTANCE_ID"


@dataclass(frozen=True)
class NodeSettings:
    """How local nodes are started and stopped.

    `head_cpus` is 0 by default, as KubeRay heads usually are, so tasks run on workers: the workers
    are what policies scale and what the pending demand is about. Timeouts are generous because a
    loaded 2-core laptop takes far longer than the 4-7 s a `ray start` takes on an idle one.
    """

    head_cpus: int = 0
    start_timeout_s: float = 180.0
    stop_timeout_s: float = 45.0  # above Ray's 30 s drain wait
    delete_timeout_s: float = 15.0  # delete does not wait for running tasks
    object_store_memory: int | None = None
    head_args: tuple[str, ...] = ()
    worker_args: tuple[str, ...] = ()
    temp_parent: Path | None = None  # where node temp dirs go (short paths only: Unix sockets)
    # Concurrent `ray start`s: more than the CPUs only slows each (Ray gives a starting node 30 s to
    # register, which several at once on a loaded 2-core machine miss).
    max_parallel: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    retry_base_s: float = 10.0
    retry_max_s: float = 300.0


@dataclass
class ReconcileReport:
    """What one reconcile did, for `ApplyResult.detail`, logs and tests."""

    cluster: ClusterRef
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    kept_busy: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("started", self.started),
                ("stopped", self.stopped),
                ("kept (busy, drain refused)", self.kept_busy),
                ("lost (exited on their own)", self.lost),
                ("adopted half-started", self.adopted),
                ("cleaned up orphans", self.orphans),
            )
            if names
        ]
        parts += [f"error: {e}" for e in self.errors]
        return "; ".join(parts) or "nothing to do"


def usage_of(records: Sequence[ClusterRecord]) -> Usage:
    """The nodes the records ask for: every cluster's head, and per group the larger of replicas and
    workers present (a removal still draining costs memory until its process exits)."""
    total = Usage()
    for rec in records:
        workers = 0
        cpus = 0.0
        for g in rec.groups:
            n = max(g.replicas, len(rec.workers_of(g.name)))
            workers += n
            cpus += n * g.num_cpus
        total = total + Usage(1, workers, cpus)
    return total


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + " ..."


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class Reconciler:
    """Starts, drains and stops one state directory's nodes; see the module doc for the rules."""

    def __init__(
        self, store: StateStore, settings: NodeSettings, caps: LocalCaps, clock: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.settings = settings
        self.caps = caps
        self.clock = clock

    # ------------------------------------------------------------------ sweep

    def sweep(self, rec: ClusterRecord, report: ReconcileReport, conclusive: bool) -> bool:
        """Forget what died; with `conclusive` (the caller holds the cluster lock) also clean up
        orphans of a process that died while starting or stopping. Mutates `rec`; True if changed.
        """
        changed = False
        now = self.clock()
        keep: list[WorkerRecord] = []
        for w in rec.workers:
            alive = w.node is not None and localray.node_running(w.node)
            g = rec.group(w.group)
            pending = g is not None and w.name in g.pending_deletes
            if w.phase == WorkerPhase.RUNNING and not alive:
                localray.kill_marked(w.temp_dir)  # the log monitor and agents it may have left
                remove_dir(w.temp_dir)
                if not pending:
                    pid = w.node.pid if w.node else "?"
                    rec.note_lost(
                        LostWorker(
                            w.name, w.group, now, f"its ray start process (pid {pid}) exited on its own"
                        )
                    )
                    report.lost.append(w.name)
                changed = True
                continue
            if w.phase == WorkerPhase.STOPPING and not alive:
                localray.kill_marked(w.temp_dir)
                remove_dir(w.temp_dir)
                changed = True
                continue
            if w.phase == WorkerPhase.STARTING and conclusive:
                killed = localray.kill_marked(w.temp_dir)
                remove_dir(w.temp_dir)
                report.orphans.append(f"{w.name} (a start left unfinished; killed {len(killed)} process(es))")
                changed = True
                continue
            keep.append(w)
        rec.workers = keep
        return changed

    # ------------------------------------------------------------------ reconcile

    def reconcile(self, name: str) -> ReconcileReport:
        """Make the cluster's processes match its record: sweep, drain+stop named workers, start
        missing ones (concurrently). Errors of single nodes are recorded, not raised."""
        report = ReconcileReport(ClusterRef(keys.LOCAL_NAMESPACE, name))
        with self.store.cluster_lock(name):
            self._adopt_half_started(name, report)
            with self.store.lock():
                rec = self.store.read(name)
                if rec is None:
                    raise ClusterNotFound(f"no local Ray cluster named {name}")
                if rec.phase != ClusterPhase.RUNNING or rec.head is None:
                    # Holding the cluster lock, a create or delete in progress can only be an orphan:
                    # the process doing it held the lock until it finished, and died instead.
                    self._finish_orphan(rec, report)
                    return report
                changed = self.sweep(rec, report, conclusive=True)
                head = rec.head
                stops: list[WorkerRecord] = []
                starts: list[tuple[WorkerRecord, GroupRecord]] = []
                if localray.node_running(head):
                    for w in rec.workers:
                        g = rec.group(w.group)
                        if w.phase == WorkerPhase.STOPPING or (
                            w.phase == WorkerPhase.RUNNING and g is not None and w.name in g.pending_deletes
                        ):
                            w.phase, w.owner_pid = WorkerPhase.STOPPING, os.getpid()
                            stops.append(w)
                    starts = self._reserve_starts(rec, report)
                changed = changed or bool(stops) or bool(starts)
                if changed:
                    self.store.write(rec)
            try:
                jobs: list[Callable[[], None]] = [
                    partial(self._remove_one, name, head, w, report) for w in stops
                ]
                jobs += [partial(self._start_one, name, head, w, g, report) for w, g in starts]
                if jobs:
                    with ThreadPoolExecutor(max_workers=max(1, self.settings.max_parallel)) as pool:
                        for f in [pool.submit(job) for job in jobs]:
                            f.result()
            finally:
                if changed:
                    self.store.write_file_sd()
        if report.lost or report.errors or report.kept_busy:
            log.warning("local cluster %s: %s", name, report.summary())
        return report

    def _adopt_half_started(self, name: str, report: ReconcileReport) -> None:
        """Take over the workers a dead process left STARTING whose node still comes up.

        Called holding the cluster lock, so every STARTING worker is such an orphan. Waits (outside
        the store lock) as long as a start may take; the sweep then kills whatever was not adopted.
        """
        rec = self.store.read(name)
        if rec is None or rec.head is None or rec.phase != ClusterPhase.RUNNING:
            return
        head = rec.head
        orphans = [
            (w, g) for w in rec.workers if w.phase == WorkerPhase.STARTING and (g := rec.group(w.group))
        ]
        if not orphans or not localray.node_running(head):
            return

        def adopt(w: WorkerRecord, g: GroupRecord) -> tuple[str, LocalWorker | None]:
            node = localray.adopt_worker(
                head,
                w.temp_dir,
                num_cpus=g.num_cpus,
                num_gpus=g.num_gpus,
                resources=g.resources or None,
                timeout_s=self.settings.start_timeout_s,
            )
            return w.name, node

        with ThreadPoolExecutor(max_workers=max(1, self.settings.max_parallel)) as pool:
            nodes = {n: node for n, node in pool.map(lambda wg: adopt(*wg), orphans) if node is not None}
        if not nodes:
            return

        def running(rec: ClusterRecord) -> bool:
            for w in rec.workers:
                if w.phase == WorkerPhase.STARTING and w.name in nodes:
                    w.node, w.phase, w.owner_pid = nodes[w.name], WorkerPhase.RUNNING, os.getpid()
            return True

        self.store.update(name, running)
        report.adopted.extend(sorted(nodes))
        log.info("local cluster %s: adopted half-started worker(s) %s", name, ", ".join(sorted(nodes)))

    def _reserve_starts(
        self, rec: ClusterRecord, report: ReconcileReport
    ) -> list[tuple[WorkerRecord, GroupRecord]]:
        """Record the workers to start (STARTING, with their temp dirs) before any process exists,
        so a crash mid-start leaves a record the next lock holder cleans up."""
        now = self.clock()
        wanted: list[tuple[GroupRecord, int]] = []
        for g in rec.groups:
            active = [
                w
                for w in rec.workers_of(g.name)
                if w.phase in (WorkerPhase.STARTING, WorkerPhase.RUNNING) and w.name not in g.pending_deletes
            ]
            need = g.replicas - len(active)
            if need <= 0:
                continue
            if g.retry_at is not None and now < g.retry_at:
                report.errors.append(
                    f"group {g.name}: next start after {g.retry_at.isoformat()} ({g.last_error})"
                )
                continue
            wanted.append((g, need))
        if not wanted:
            return []
        try:
            self.caps.check_now(Usage(workers=sum(n for _, n in wanted)))
        except BackendUnavailable as e:
            rec.last_error = str(e)
            report.errors.append(str(e))
            return []
        taken = {w.name for w in rec.workers} | {n for g in rec.groups for n in g.pending_deletes}
        out: list[tuple[WorkerRecord, GroupRecord]] = []
        for g, n in wanted:
            for _ in range(n):
                name = _worker_name(rec.name, g.name, taken)
                taken.add(name)
                w = WorkerRecord(
                    name=name,
                    group=g.name,
                    temp_dir=localray.make_temp_dir("rayops-w-", self.settings.temp_parent),
                    phase=WorkerPhase.STARTING,
                    owner_pid=os.getpid(),
                    started_at=now,
                )
                rec.workers.append(w)
                out.append((w, g))
        return out

    def _start_one(
        self, cluster: str, head: LocalHead, w: WorkerRecord, g: GroupRecord, report: ReconcileReport
    ) -> None:
        s = self.settings
        try:
            node = localray.start_worker(
                head,
                num_cpus=g.num_cpus,
                num_gpus=g.num_gpus,
                resources=g.resources or None,
                labels={LABEL_CLUSTER: cluster, LABEL_GROUP: g.name},
                temp_dir=w.temp_dir,
                # What KubeRay sets to the pod name: Ray reports it as the node's instance id, so the
                # dashboard maps a node to its worker by name here as on Kubernetes.
                env={INSTANCE_ID_ENV: w.name},
                object_store_memory=s.object_store_memory,
                extra_args=list(s.worker_args),
                timeout_s=s.start_timeout_s,
            )
        except (LocalRayError, OSError, ValueError) as e:
            localray.kill_marked(w.temp_dir)
            remove_dir(w.temp_dir)
            self._start_failed(cluster, w, str(e))
            report.errors.append(f"worker {w.name} did not start: {_short(str(e))}")
            return
        except BaseException:
            localray.kill_marked(w.temp_dir)
            remove_dir(w.temp_dir)
            raise

        def running(rec: ClusterRecord) -> bool:
            mine = rec.worker(w.name)
            if mine is None:
                return False
            mine.node, mine.phase = node, WorkerPhase.RUNNING
            group = rec.group(w.group)
            if group is not None:
                group.start_failures, group.retry_at, group.last_error = 0, None, None
            return True

        rec = self.store.update(cluster, running)
        if rec is None or rec.worker(w.name) is None:  # forgotten meanwhile: do not leave it running
            localray.stop_worker(node, timeout_s=s.delete_timeout_s)
            remove_dir(w.temp_dir)
            return
        self.store.write_file_sd()  # scraped from now on, not once every start of this round is done
        report.started.append(w.name)

    def _start_failed(self, cluster: str, w: WorkerRecord, error: str) -> None:
        def failed(rec: ClusterRecord) -> bool:
            rec.workers = [x for x in rec.workers if x.name != w.name]
            g = rec.group(w.group)
            if g is not None:
                g.start_failures += 1
                delay = min(
                    self.settings.retry_max_s, self.settings.retry_base_s * 2 ** (g.start_failures - 1)
                )
                g.retry_at = self.clock() + timedelta(seconds=delay)
                g.last_error = _short(
                    f"worker start failed ({g.start_failures} in a row; next try in {delay:.0f} s): {error}"
                )
            return True

        self.store.update(cluster, failed)

    def _remove_one(self, cluster: str, head: LocalHead, w: WorkerRecord, report: ReconcileReport) -> None:
        """Drain for idle termination, then SIGTERM; a refused drain keeps the worker (it is busy)."""
        node = w.node
        if node is None:
            return
        accepted, why = True, ""
        if localray.node_running(node):
            try:
                accepted, why = localray.drain_idle(
                    head.gcs_address, node.node_id, f"rayops: {w.name} removed by a scale-down decision"
                )
            except Exception as e:  # the GCS is an edge: any failure means "not proven idle"
                accepted, why = False, f"drain request failed: {type(e).__name__}: {e}"
        if not accepted:
            self._keep(cluster, w, why, report)
            return
        # Out of the scrape targets before its metrics port closes: a scrape that fails makes the
        # group's utilization unavailable, which holds the next scale-down step (missing data).
        self.store.write_file_sd()
        localray.stop_worker(node, timeout_s=self.settings.stop_timeout_s)

        def gone(rec: ClusterRecord) -> bool:
            rec.workers = [x for x in rec.workers if x.name != w.name]
            return True  # the name stays in pending_deletes until finish_removals

        self.store.update(cluster, gone)
        remove_dir(w.temp_dir)
        report.stopped.append(w.name)

    def _keep(self, cluster: str, w: WorkerRecord, why: str, report: ReconcileReport) -> None:
        def keep(rec: ClusterRecord) -> bool:
            mine = rec.worker(w.name)
            g = rec.group(w.group)
            if mine is not None:
                mine.phase = WorkerPhase.RUNNING
            if g is not None and w.name in g.pending_deletes:
                g.pending_deletes.remove(w.name)
                g.replicas += 1  # the worker stays, so the spec counts it again
                g.last_error = f"{w.name} was not removed: Ray refused to drain it ({why})"
                rec.version += 1
            return True

        self.store.update(cluster, keep)
        report.kept_busy.append(w.name)

    def _finish_orphan(self, rec: ClusterRecord, report: ReconcileReport) -> None:
        """Undo a create, or finish a delete, that a dead process left half-done (lock held)."""
        what = "create" if rec.phase == ClusterPhase.CREATING else "delete"
        self.stop_all(rec)
        self.store.remove(rec.name)
        report.orphans.append(f"cluster {rec.name} (a {what} left unfinished)")
        self.store.write_file_sd()

    # ------------------------------------------------------------------ delete

    def stop_all(self, rec: ClusterRecord) -> None:
        """Stop every node of the cluster (workers first, concurrently; then the head) and remove
        their temp dirs. The caller holds the cluster lock and has marked the record DELETING."""
        head_alive = rec.head is not None and localray.node_running(rec.head)
        timeout = self.settings.delete_timeout_s if head_alive else 5.0  # no GCS: nothing to drain

        def stop(w: WorkerRecord) -> None:
            if w.node is not None:
                localray.stop_worker(w.node, timeout_s=timeout)
            localray.kill_marked(w.temp_dir)
            remove_dir(w.temp_dir)

        if rec.workers:
            with ThreadPoolExecutor(max_workers=max(1, self.settings.max_parallel)) as pool:
                for f in [pool.submit(stop, w) for w in rec.workers]:
                    f.result()
        if rec.head is not None:
            localray.stop_head(rec.head, timeout_s=self.settings.delete_timeout_s)
        localray.kill_marked(rec.head_temp_dir)
        remove_dir(rec.head_temp_dir)


class Operator(threading.Thread):
    """Background reconciles: at once for kicked clusters, every `resync_s` for all of them."""

    def __init__(self, reconciler: Reconciler, resync_s: float) -> None:
        super().__init__(name="rayops-local-operator", daemon=True)
        self.reconciler = reconciler
        self.resync_s = resync_s
        self._cond = threading.Condition()
        self._kicked: set[str] = set()
        self._stopping = False
        self.errors = 0

    def kick(self, name: str) -> None:
        with self._cond:
            self._kicked.add(name)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self.join()

    def run(self) -> None:
        while True:
            with self._cond:
                if not self._kicked and not self._stopping:
                    self._cond.wait(self.resync_s)
                if self._stopping:
                    return
                names = sorted(self._kicked) or self.reconciler.store.names()
                self._kicked.clear()
            for name in names:
                try:
                    self.reconciler.reconcile(name)
                except ClusterNotFound:
                    continue
                except Exception:  # keep operating the other clusters; counted and logged in full
                    self.errors += 1
                    log.exception("local operator: reconciling %s failed", name)


def _worker_name(cluster: str, group: str, taken: set[str]) -> str:
    """`<cluster>-<group>-worker-<5 hex>`, like a KubeRay worker pod, unique within the cluster."""
    while True:
        name = f"{cluster}-{group}-worker-{secrets.token_hex(3)[:5]}"
        if name not in taken:
            return name


def head_labels(cluster: str) -> dict[str, str]:
    return {LABEL_CLUSTER: cluster, LABEL_GROUP: HEAD_GROUP}
