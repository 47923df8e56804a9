"""The laptop-mode state directory: the one truth about local clusters (contracts.md section 7).

Any process (`rayops up`, a notebook kernel, a CLI call) may create, scale or delete local clusters,
and any of them may die at any moment, so nothing lives only in a process's memory:

    <state dir>/
      state.lock                    flock held for every read-modify-write of a cluster record
      locks/<cluster>.lock          flock held while one process starts or stops that cluster's nodes
      clusters/<cluster>/cluster.json
      prometheus/file_sd.json       every node's metrics port with the section 5 mapping labels

A record holds the head and every worker with pid, ports and temp dir, so another process can find,
adopt and stop them; the groups' spec (replicas, bounds, shape, pending removals); the rayops labels
and annotations (the same keys as on a RayCluster); and `version`, bumped by every write of the spec,
labels or annotations (the fields a writer decides from), which guards writes like `resourceVersion`.
Bookkeeping of processes (a worker came up, a worker vanished) does not bump it, so a controller's
decision is not refused because a worker it already counted finished starting.

Writes are atomic (a temp file, fsync, `os.replace`): a reader without the lock sees the old or the
new record, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from controller import keys
from controller.backends.base import BackendError
from controller.localray import LOCALHOST, LocalHead, LocalWorker

__all__ = [
    "HEAD_GROUP",
    "STATE_DIR_ENV",
    "ClusterPhase",
    "ClusterRecord",
    "GroupRecord",
    "LostWorker",
    "StateStore",
    "WorkerPhase",
    "WorkerRecord",
    "default_state_dir",
    "file_sd_targets",
]

STATE_DIR_ENV = "RAYOPS_STATE_DIR"
HEAD_GROUP = "headgroup"  # KubeRay's `ray.io/group` value for the head, so file_sd matches the PodMonitor
MAX_LOST = 20  # workers that died on their own, remembered for status (newest last)
_SAFE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """`$RAYOPS_STATE_DIR`, else `$XDG_STATE_HOME/rayops`, else `~/.local/state/rayops` (as the bot)."""
    env = os.environ if env is None else env
    if env.get(STATE_DIR_ENV):
        return Path(env[STATE_DIR_ENV])
    base = env.get("XDG_STATE_HOME")
    return (Path(base) if base else Path.home() / ".local" / "state") / "rayops"


def _time(at: datetime | None) -> str | None:
    return at.astimezone(UTC).isoformat() if at else None


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class ClusterPhase(StrEnum):
    CREATING = "creating"  # the head is being started by `owner_pid`
    RUNNING = "running"
    DELETING = "deleting"  # `owner_pid` is stopping everything


class WorkerPhase(StrEnum):
    STARTING = "starting"  # `owner_pid` runs `ray start`; `node` is not known yet
    RUNNING = "running"
    STOPPING = "stopping"  # drained; `owner_pid` waits for its `ray start --block` to exit


@dataclass
class WorkerRecord:
    name: str  # what decisions name in `remove` (like a KubeRay worker pod name)
    group: str
    temp_dir: Path
    phase: WorkerPhase
    owner_pid: int
    started_at: datetime
    node: LocalWorker | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "temp_dir": str(self.temp_dir),
            "phase": str(self.phase),
            "owner_pid": self.owner_pid,
            "started_at": _time(self.started_at),
            "node": self.node.to_dict() if self.node else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkerRecord:
        started = _parse_time(d.get("started_at"))
        return cls(
            name=str(d["name"]),
            group=str(d["group"]),
            temp_dir=Path(d["temp_dir"]),
            phase=WorkerPhase(d["phase"]),
            owner_pid=int(d["owner_pid"]),
            started_at=started or datetime.now(UTC),
            node=LocalWorker.from_dict(d["node"]) if d.get("node") else None,
        )


@dataclass
class GroupRecord:
    """One worker group: its spec (replicas, bounds, removals asked for) and its node shape."""

    name: str
    replicas: int
    min_replicas: int
    max_replicas: int
    num_cpus: int
    num_gpus: int = 0
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per worker
    pending_deletes: list[str] = field(default_factory=list)
    start_failures: int = 0  # consecutive failed worker starts (backoff)
    retry_at: datetime | None = None  # no new start before this, after a failure
    last_error: str | None = None

    @property
    def shape(self) -> dict[str, float]:
        """What one worker offers Ray, as `ManagedGroup.worker_resources` reports it."""
        out: dict[str, float] = {"CPU": float(self.num_cpus)}
        if self.num_gpus:
            out["GPU"] = float(self.num_gpus)
        return out | dict(self.resources)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "replicas": self.replicas,
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "resources": dict(self.resources),
            "pending_deletes": list(self.pending_deletes),
            "start_failures": self.start_failures,
            "retry_at": _time(self.retry_at),
            "last_error": self.last_error,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GroupRecord:
        return cls(
            name=str(d["name"]),
            replicas=int(d["replicas"]),
            min_replicas=int(d["min_replicas"]),
            max_replicas=int(d["max_replicas"]),
            num_cpus=int(d["num_cpus"]),
            num_gpus=int(d.get("num_gpus", 0)),
            resources={str(k): float(v) for k, v in d.get("resources", {}).items()},
            pending_deletes=[str(n) for n in d.get("pending_deletes", [])],
            start_failures=int(d.get("start_failures", 0)),
            retry_at=_parse_time(d.get("retry_at")),
            last_error=d.get("last_error"),
        )


@dataclass(frozen=True)
class LostWorker:
    """A worker whose process ended without rayops asking (crash, OOM kill, a stray `kill`)."""

    name: str
    group: str
    at: datetime
    cause: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "group": self.group, "at": _time(self.at), "cause": self.cause}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LostWorker:
        return cls(
            str(d["name"]), str(d["group"]), _parse_time(d["at"]) or datetime.now(UTC), str(d["cause"])
        )


@dataclass
class ClusterRecord:
    name: str
    phase: ClusterPhase
    owner_pid: int
    head_temp_dir: Path
    groups: list[GroupRecord]
    labels: dict[str, str]
    annotations: dict[str, str]
    created_at: datetime
    version: int = 1
    head: LocalHead | None = None
    head_cpus: int = 0
    head_gpus: int = 0
    workers: list[WorkerRecord] = field(default_factory=list)
    lost: list[LostWorker] = field(default_factory=list)
    last_error: str | None = None

    def group(self, name: str) -> GroupRecord | None:
        return next((g for g in self.groups if g.name == name), None)

    def workers_of(self, group: str) -> list[WorkerRecord]:
        return [w for w in self.workers if w.group == group]

    def worker(self, name: str) -> WorkerRecord | None:
        return next((w for w in self.workers if w.name == name), None)

    def note_lost(self, lost: LostWorker) -> None:
        self.lost = [*self.lost, lost][-MAX_LOST:]

    @property
    def opted_in(self) -> bool:
        return keys.is_opted_in(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": keys.LOCAL_NAMESPACE,
            "phase": str(self.phase),
            "owner_pid": self.owner_pid,
            "head_temp_dir": str(self.head_temp_dir),
            "head": self.head.to_dict() if self.head else None,
            "head_cpus": self.head_cpus,
            "head_gpus": self.head_gpus,
            "groups": [g.to_dict() for g in self.groups],
            "workers": [w.to_dict() for w in self.workers],
            "lost": [x.to_dict() for x in self.lost],
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "created_at": _time(self.created_at),
            "version": self.version,
            "last_error": self.last_error,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClusterRecord:
        return cls(
            name=str(d["name"]),
            phase=ClusterPhase(d["phase"]),
            owner_pid=int(d["owner_pid"]),
            head_temp_dir=Path(d["head_temp_dir"]),
            groups=[GroupRecord.from_dict(g) for g in d["groups"]],
            labels={str(k): str(v) for k, v in d.get("labels", {}).items()},
            annotations={str(k): str(v) for k, v in d.get("annotations", {}).items()},
            created_at=_parse_time(d.get("created_at")) or datetime.now(UTC),
            version=int(d.get("version", 1)),
            head=LocalHead.from_dict(d["head"]) if d.get("head") else None,
            head_cpus=int(d.get("head_cpus", 0)),
            head_gpus=int(d.get("head_gpus", 0)),
            workers=[WorkerRecord.from_dict(w) for w in d.get("workers", [])],
            lost=[LostWorker.from_dict(x) for x in d.get("lost", [])],
            last_error=d.get("last_error"),
        )


class _FileLock:
    """An flock on one file, reentrant within a thread, exclusive across threads and processes.

    flock alone excludes other processes and other open file descriptions (so other threads that
    open the file themselves), but a thread taking it twice would deadlock on itself; the count
    makes nested `with` blocks (create calling reconcile) safe.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._rlock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._rlock:
            if self._depth == 0:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                    os.close(self._fd)
                    self._fd = None


def _write_atomic(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def file_sd_targets(records: Iterable[ClusterRecord]) -> list[dict[str, Any]]:
    """Prometheus file_sd entries: one per live node, labelled as Ray pods are on Kubernetes (section 5)."""
    out: list[dict[str, Any]] = []
    for rec in sorted(records, key=lambda r: r.name):
        if rec.head is None or rec.phase == ClusterPhase.DELETING:
            continue
        nodes: list[tuple[str, int]] = [(HEAD_GROUP, rec.head.metrics_port)]
        nodes += [
            (w.group, w.node.metrics_port)
            for w in sorted(rec.workers, key=lambda w: w.name)
            if w.node is not None and w.phase == WorkerPhase.RUNNING
        ]
        for group, port in nodes:
            out.append(
                {
                    "targets": [f"{LOCALHOST}:{port}"],
                    "labels": {
                        keys.METRIC_LABEL_NAMESPACE: keys.LOCAL_NAMESPACE,
                        keys.METRIC_LABEL_CLUSTER: rec.name,
                        keys.METRIC_LABEL_GROUP: group,
                    },
                }
            )
    return out


class StateStore:
    """Reads and writes cluster records under the state directory's locks (see the module doc)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.clusters_dir = self.root / "clusters"
        self.locks_dir = self.root / "locks"
        self.file_sd_path = self.root / "prometheus" / "file_sd.json"
        self._state_lock = _FileLock(self.root / "state.lock")
        self._cluster_locks: dict[str, _FileLock] = {}
        self._guard = threading.Lock()

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The state lock: hold it for every read-modify-write of a record (short sections only)."""
        return self._state_lock.held()

    def cluster_lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Held while starting or stopping one cluster's nodes (seconds); take it before `lock()`.

        Lock files are never deleted: removing a file another process has open and locked would let
        a third process lock a new file of the same name at the same time.
        """
        self._check_name(name)
        with self._guard:
            lock = self._cluster_locks.get(name)
            if lock is None:
                lock = self._cluster_locks[name] = _FileLock(self.locks_dir / f"{name}.lock")
        return lock.held()

    def _check_name(self, name: str) -> None:
        if not _SAFE_NAME.match(name):
            raise BackendError(f"'{name}' cannot name a local cluster (lowercase letters, digits and '-')")

    def _path(self, name: str) -> Path:
        return self.clusters_dir / name / "cluster.json"

    def names(self) -> list[str]:
        if not self.clusters_dir.is_dir():
            return []
        return sorted(p.parent.name for p in self.clusters_dir.glob("*/cluster.json"))

    def read(self, name: str) -> ClusterRecord | None:
        """The record, or None when there is none (a name that cannot be a cluster has none)."""
        if not _SAFE_NAME.match(name):
            return None
        path = self._path(name)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            return ClusterRecord.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError) as e:
            raise BackendError(f"the state file {path} is unreadable ({e}); fix or remove it") from e

    def read_all(self) -> list[ClusterRecord]:
        return [r for r in (self.read(n) for n in self.names()) if r is not None]

    def write(self, record: ClusterRecord) -> None:
        """Replace the record atomically; the caller holds `lock()` and bumps `version` if it should."""
        self._check_name(record.name)
        _write_atomic(self._path(record.name), json.dumps(record.to_dict(), indent=1, sort_keys=True))

    def update(self, name: str, change: Callable[[ClusterRecord], bool]) -> ClusterRecord | None:
        """Read, `change` in place, write when it returns True; all under the state lock."""
        with self.lock():
            rec = self.read(name)
            if rec is None:
                return None
            if change(rec):
                self.write(rec)
            return rec

    def remove(self, name: str) -> None:
        self._check_name(name)
        shutil.rmtree(self.clusters_dir / name, ignore_errors=True)

    def write_file_sd(self) -> None:
        """Rewrite the file_sd file from every record (Prometheus re-reads it when it changes)."""
        with self.lock():
            targets = file_sd_targets(self.read_all())
            _write_atomic(self.file_sd_path, json.dumps(targets, indent=1, sort_keys=True))
