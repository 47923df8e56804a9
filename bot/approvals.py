"""Requests over a limit, kept durably until an approver decides or they expire.

A request stores the command as canonical text plus the requester's identity, so approving it runs
exactly what was asked, as the requester, through the same authorization (minus the limits). State
changes are compare-and-set (`update(request, expected=PENDING)`): of two approvers pressing
Approve at once, or one pressing twice, exactly one wins and the other is told who decided.

Implementations: `DirectoryApprovalStore` (laptop mode: one JSON file per request in the state
directory, written atomically, state changes under a file lock, so a restart or a second process
loses nothing) and `MemoryApprovalStore` (tests). On Kubernetes a ConfigMap per request in the
target namespace implements the same protocol (resourceVersion as the compare-and-set guard);
rayops does not touch the RayCluster's `spec.suspend`, which Kueue may own.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from bot.commands.parser import ID_ALPHABET, ID_LENGTH

log = logging.getLogger("rayops.bot.approvals")

KEEP_DECIDED = timedelta(days=7)  # decided requests stay readable this long ("approved by X")


class ApprovalState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


def new_id() -> str:
    """Short enough to type (`approve k3j2mq7x`), unguessable (31^8, about 8.5e11), no 0/o, 1/l/i."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


@dataclass(frozen=True)
class ApprovalRequest:
    id: str
    requester: str  # identity key, e.g. slack:U123
    command: str  # canonical command text, run as the requester when approved
    reasons: tuple[str, ...]  # the limits it exceeds
    created_at: datetime
    expires_at: datetime
    requester_display: str = ""
    requester_groups: tuple[str, ...] = ()
    target: str = ""  # namespace/name the request is about
    channel_id: str | None = None  # where it was asked, to answer there
    thread_id: str | None = None
    state: ApprovalState = ApprovalState.PENDING
    decided_by: str | None = None
    decided_at: datetime | None = None
    outcome: str = ""  # what happened when it was decided (created / failed: why / denial reason)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = str(self.state)
        d["reasons"] = list(self.reasons)
        d["requester_groups"] = list(self.requester_groups)
        for k in ("created_at", "expires_at", "decided_at"):
            v = getattr(self, k)
            d[k] = v.isoformat() if v else None
        return d

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> ApprovalRequest:
        return ApprovalRequest(
            id=str(d["id"]),
            requester=str(d["requester"]),
            command=str(d["command"]),
            reasons=tuple(str(r) for r in d.get("reasons", ())),
            created_at=datetime.fromisoformat(d["created_at"]),
            expires_at=datetime.fromisoformat(d["expires_at"]),
            requester_display=str(d.get("requester_display", "")),
            requester_groups=tuple(str(g) for g in d.get("requester_groups", ())),
            target=str(d.get("target", "")),
            channel_id=d.get("channel_id"),
            thread_id=d.get("thread_id"),
            state=ApprovalState(d.get("state", "pending")),
            decided_by=d.get("decided_by"),
            decided_at=datetime.fromisoformat(d["decided_at"]) if d.get("decided_at") else None,
            outcome=str(d.get("outcome", "")),
        )

    def decided(
        self, state: ApprovalState, by: str | None, at: datetime, outcome: str = ""
    ) -> ApprovalRequest:
        return replace(self, state=state, decided_by=by, decided_at=at, outcome=outcome)


class ApprovalStore(Protocol):
    """Durable pending requests. `add` fails on an existing id; `update` is compare-and-set on the
    state and returns False (changing nothing) when the stored state is not `expected`."""

    def add(self, request: ApprovalRequest) -> None: ...

    def get(self, request_id: str) -> ApprovalRequest | None: ...

    def list(self, state: ApprovalState | None = ApprovalState.PENDING) -> list[ApprovalRequest]: ...

    def update(self, request: ApprovalRequest, expected: ApprovalState) -> bool: ...

    def prune(self, now: datetime) -> int:
        """Forget requests decided more than KEEP_DECIDED ago; returns how many."""
        ...


class MemoryApprovalStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, ApprovalRequest] = {}

    def add(self, request: ApprovalRequest) -> None:
        with self._lock:
            if request.id in self._items:
                raise ValueError(f"request id {request.id} exists")
            self._items[request.id] = request

    def get(self, request_id: str) -> ApprovalRequest | None:
        with self._lock:
            return self._items.get(request_id)

    def list(self, state: ApprovalState | None = ApprovalState.PENDING) -> list[ApprovalRequest]:
        with self._lock:
            items = [r for r in self._items.values() if state is None or r.state is state]
        return sorted(items, key=lambda r: r.created_at)

    def update(self, request: ApprovalRequest, expected: ApprovalState) -> bool:
        with self._lock:
            current = self._items.get(request.id)
            if current is None or current.state is not expected:
                return False
            self._items[request.id] = request
            return True

    def prune(self, now: datetime) -> int:
        with self._lock:
            old = [k for k, r in self._items.items() if r.decided_at and now - r.decided_at > KEEP_DECIDED]
            for k in old:
                del self._items[k]
        return len(old)


class DirectoryApprovalStore:
    """One `<id>.json` per request; writes go to a temporary file then `os.replace`, so a reader or
    a crash never sees half a request. Every change takes an exclusive `flock` on `.lock`, so bots
    in several processes on one state directory see one truth."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the lock

    def _path(self, request_id: str) -> Path:
        return self.directory / f"{request_id}.json"

    def _write(self, request: ApprovalRequest) -> None:
        data = json.dumps(request.to_dict(), sort_keys=True, indent=1).encode()
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path(request.id))

    def _read(self, path: Path) -> ApprovalRequest | None:
        try:
            return ApprovalRequest.from_dict(json.loads(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as e:
            log.warning("ignoring an unreadable approval request %s: %s", path.name, e)
            return None

    def add(self, request: ApprovalRequest) -> None:
        with self._locked():
            if self._path(request.id).exists():
                raise ValueError(f"request id {request.id} exists")
            self._write(request)

    def get(self, request_id: str) -> ApprovalRequest | None:
        if len(request_id) != ID_LENGTH or not all(c in ID_ALPHABET for c in request_id):
            return None  # never build a path from anything but a well-formed id
        return self._read(self._path(request_id))

    def list(self, state: ApprovalState | None = ApprovalState.PENDING) -> list[ApprovalRequest]:
        out = []
        for path in self.directory.glob("*.json"):
            if path.name.startswith("."):
                continue
            r = self._read(path)
            if r is not None and (state is None or r.state is state):
                out.append(r)
        return sorted(out, key=lambda r: r.created_at)

    def update(self, request: ApprovalRequest, expected: ApprovalState) -> bool:
        with self._locked():
            current = self._read(self._path(request.id))
            if current is None or current.state is not expected:
                return False
            self._write(request)
            return True

    def prune(self, now: datetime) -> int:
        n = 0
        with self._locked():
            for r in self.list(None):
                if r.decided_at and now - r.decided_at > KEEP_DECIDED:
                    self._path(r.id).unlink(missing_ok=True)
                    n += 1
        return n
