"""The global switch that stops all scaling (contracts.md section 4), as the loop reads it each tick.

Two places can set it, and either one pauses:
- configuration: `RAYOPS_PAUSED=true` (settings; a restart to change, for maintenance windows);
- DevOps in chat: `pause-all` / `resume-all`. The bot writes that switch (bot/switch.py) and the
  controller only reads it, in the same format: `{"paused": bool, "by": str, "at": ISO-8601}`.
  Laptop mode keeps it in `<state dir>/global-pause.json`; on Kubernetes it is the `state` key of the
  ConfigMap `rayops-global-pause` in the controller's namespace.

A missing or unreadable switch means "not paused", as the bot's writer defines it (a corrupt file must
not freeze every cluster silently); a read problem is logged once per incident.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from controller.backends.base import BackendError

if TYPE_CHECKING:
    from controller.backends.kube_api import KubeApi

log = logging.getLogger("rayops.controller.pause")

PAUSE_CONFIGMAP = "rayops-global-pause"
PAUSE_KEY = "state"


@dataclass(frozen=True)
class PauseState:
    paused: bool
    by: str | None = None
    source: str = ""


class PauseSource(Protocol):
    def read(self) -> PauseState: ...


def _parse(text: str, source: str) -> PauseState:
    d: Any = json.loads(text)
    if not isinstance(d, dict):
        raise ValueError("not a JSON object")
    by = d.get("by")
    return PauseState(d.get("paused") is True, by if isinstance(by, str) else None, source)


class StaticPause:
    """The configured switch (`RAYOPS_PAUSED`)."""

    def __init__(self, paused: bool) -> None:
        self.state = PauseState(paused, "configuration (RAYOPS_PAUSED)", "config")

    def read(self) -> PauseState:
        return self.state


class FilePause:
    """The bot's laptop-mode switch file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._failing = False

    def read(self) -> PauseState:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return PauseState(False)
        except OSError as e:
            return self._problem(f"cannot read {self.path}: {e}")
        try:
            state = _parse(text, f"file {self.path}")
        except ValueError as e:
            return self._problem(f"{self.path} is not a pause switch ({e})")
        self._failing = False
        return state

    def _problem(self, message: str) -> PauseState:
        if not self._failing:
            log.warning("global pause switch: %s; treating it as not paused", message)
        self._failing = True
        return PauseState(False)


class ConfigMapPause:
    """The bot's switch on Kubernetes: ConfigMap `rayops-global-pause`, key `state`."""

    def __init__(self, api: KubeApi, namespace: str, name: str = PAUSE_CONFIGMAP) -> None:
        self.api, self.namespace, self.name = api, namespace, name
        self._failing = False

    def read(self) -> PauseState:
        try:
            cm = self.api.get_configmap(self.namespace, self.name)
            text = ((cm or {}).get("data") or {}).get(PAUSE_KEY)
            state = _parse(text, f"ConfigMap {self.namespace}/{self.name}") if text else PauseState(False)
        except (BackendError, ValueError) as e:
            if not self._failing:
                log.warning(
                    "global pause switch: cannot read ConfigMap %s/%s (%s); treating it as not paused",
                    self.namespace,
                    self.name,
                    e,
                )
            self._failing = True
            return PauseState(False)
        self._failing = False
        return state


class AnyPause:
    """Paused when any source says so (the first that does is reported)."""

    def __init__(self, *sources: PauseSource) -> None:
        self.sources = sources

    def read(self) -> PauseState:
        for s in self.sources:
            state = s.read()
            if state.paused:
                return state
        return PauseState(False)
