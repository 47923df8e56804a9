"""The global autoscaling switch (`pause-all` / `resume-all`, contracts.md section 4).

The bot sets it; the controller reads it every tick and feeds `GroupObservation.global_pause`.
Laptop mode keeps it as a small JSON file in the state directory (`FilePauseSwitch`); on Kubernetes
a ConfigMap beside the controller implements the same protocol. It lives in `bot/` until the
controller's reader lands; both must agree on the file: `{"paused": bool, "by": str, "at": ISO}`.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class GlobalPause:
    paused: bool
    by: str | None = None
    at: datetime | None = None


class PauseSwitch(Protocol):
    def get(self) -> GlobalPause: ...

    def set(self, paused: bool, by: str, at: datetime) -> None: ...


class MemoryPauseSwitch:
    def __init__(self) -> None:
        self._state = GlobalPause(False)
        self._lock = threading.Lock()

    def get(self) -> GlobalPause:
        with self._lock:
            return self._state

    def set(self, paused: bool, by: str, at: datetime) -> None:
        with self._lock:
            self._state = GlobalPause(paused, by, at)


class FilePauseSwitch:
    """A missing or unreadable file means "not paused": the switch stops scaling only when someone
    set it, and a corrupt file must not freeze every cluster silently (the reader logs it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self) -> GlobalPause:
        try:
            d = json.loads(self.path.read_text())
            at = datetime.fromisoformat(d["at"]) if d.get("at") else None
            return GlobalPause(d.get("paused") is True, d.get("by"), at)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return GlobalPause(False)

    def set(self, paused: bool, by: str, at: datetime) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"paused": paused, "by": by, "at": at.isoformat()}).encode()
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".pause-")
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
