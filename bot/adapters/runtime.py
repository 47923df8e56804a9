"""What a chat adapter needs from the process it runs in: secrets from the environment or files,
where to bind, and the pod's `/healthz` and `/readyz`.

Shared by the Slack and Matrix adapters (which must not import each other) and by
`rayops bot run`. Secrets may come as a variable (`SLACK_BOT_TOKEN`) or as a file named by
`<NAME>_FILE` (a mounted Secret, so the value is in no process environment listing); either way the
value is handed to the log redactor before anything can log it, and never appears in a settings
repr.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from bot.redact import DEFAULT as REDACTOR

log = logging.getLogger("rayops.bot.health")

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names the variable, never a secret's value."""


def in_pod(env: Mapping[str, str]) -> bool:
    """Kubernetes sets KUBERNETES_SERVICE_HOST in every container (service links or not)."""
    return bool(env.get("KUBERNETES_SERVICE_HOST") or env.get("POD_NAME"))


def default_host(env: Mapping[str, str]) -> str:
    """Loopback on a laptop; every interface only in a pod, where probes and Slack come from outside
    the container (the same rule as the controller's ServeSettings)."""
    return "0.0.0.0" if in_pod(env) else "127.0.0.1"


def read_secret(env: Mapping[str, str], name: str) -> str | None:
    """`name` from the environment, else the contents of the file `<name>_FILE` (trailing newline
    stripped). The value is added to the process-wide redactor before it is returned."""
    value = env.get(name) or None
    file_name = env.get(f"{name}_FILE")
    if value is None and file_name:
        try:
            value = Path(file_name).read_text().strip() or None
        except OSError as e:
            raise SettingsError(f"{name}_FILE: cannot read {file_name}: {e.strerror}") from None
    if value is not None:
        REDACTOR.add_secrets([value])  # masked in replies now, and in logs once redaction is installed
    return value


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {text!r}") from None


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise SettingsError(f"{name} must be a number, not {text!r}") from None


@dataclass(frozen=True)
class Readiness:
    """Whether the adapter can take commands now, and if not, why (shown by `/readyz`)."""

    ready: bool
    detail: str


class HealthServer:
    """`/healthz` (the event loop answers: the process is alive) and `/readyz` (the adapter is
    connected: Socket Mode link up, HTTP server bound, Matrix sync succeeding) on the bot's own event
    loop, so a wedged loop fails the liveness probe too. Port 0 picks a free port (tests)."""

    def __init__(self, host: str, port: int, readiness: Callable[[], Readiness]) -> None:
        self.host = host
        self.port = port
        self.readiness = readiness
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(HEALTH_PATH, self._healthz)
        app.router.add_get(READY_PATH, self._readyz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("health endpoints on http://%s:%d%s and %s", self.host, self.port, HEALTH_PATH, READY_PATH)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        state = self.readiness()
        return web.Response(status=200 if state.ready else 503, text=state.detail + "\n")
