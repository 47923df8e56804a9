"""The global autoscaling switch (`pause-all` / `resume-all`, contracts.md section 4).

The bot writes it; the controller reads it every tick (controller/pause.py) and feeds
`GroupObservation.global_pause`. Laptop mode keeps it in `<state dir>/global-pause.json`
(`FilePauseSwitch`); on Kubernetes it is the `state` key of the ConfigMap `rayops-global-pause` in
the controller's namespace (a ConfigMap writer implementing `PauseSwitch`, beside the ConfigMap
approval store). Both sides agree on the JSON: `{"paused": bool, "by": str, "at": ISO 8601}`.
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
