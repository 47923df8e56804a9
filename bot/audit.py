"""The audit trail: who did what, when, and what came of it, for every command that changes something.

One JSON object per line, appended with a single `write` (lines stay whole with several writers),
and the same record on the `rayops.audit` logger for log aggregation. Records are redacted before
they are written: a token pasted into a command must not survive in the audit file.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from bot.redact import redact

log = logging.getLogger("rayops.audit")


@dataclass(frozen=True)
class AuditRecord:
    at: datetime
    who: str  # identity key
    command: str  # what was asked (canonical when it parsed, else the raw text)
    result: str  # ok | error | refused | pending | confirm | approved | denied | expired ...
    detail: str = ""  # the first line of the answer
    display: str = ""
    channel: str | None = None
    target: str | None = None  # namespace/name
    via: str | None = None  # "approval k3j2mq7x by slack:U9", "confirmation c7p2x9qa"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["at"] = self.at.isoformat()
        return {k: redact(v) if isinstance(v, str) else v for k, v in d.items()}


class AuditLog(Protocol):
    def record(self, rec: AuditRecord) -> None:
        """Append one record; never raises (an audit failure is logged as an error)."""
        ...


class JsonlAuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, rec: AuditRecord) -> None:
        d = rec.to_dict()
        line = json.dumps(d, sort_keys=True, ensure_ascii=False)
        log.info("audit %s", line)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        except OSError as e:
            log.error("could not append to the audit log %s: %s", self.path, e)

    def read(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]
        except FileNotFoundError:
            return []


class MemoryAuditLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[dict[str, Any]] = []

    def record(self, rec: AuditRecord) -> None:
        with self._lock:
            self.records.append(rec.to_dict())
