"""What the bot process needs to know: where policies and state live, which backend, and timings.

Grouped in one frozen dataclass, each field documented; `from_env` reads `RAYOPS_*` variables so a
container needs no config file. Secrets are never settings fields printed anywhere: `secret_values`
collects the tokens in the environment only so the redactor can mask them.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from controller.policy.durations import parse_duration

BACKENDS = ("memory", "local", "kuberay")
SECRET_ENV = (
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "SLACK_SIGNING_SECRET",
    "MATRIX_ACCESS_TOKEN",
    "MATRIX_PASSWORD",
)


def default_state_dir() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "rayops"


@dataclass(frozen=True)
class BotSettings:
    policy_dir: Path
    """The policy directory (contracts.md section 2), reloaded when it changes."""
    state_dir: Path = field(default_factory=default_state_dir)
    """Pending approvals, the audit log, the event journal and the global pause switch (laptop)."""
    backend: str = "local"
    """memory (demo and tests: clusters live in this process only), local (laptop), kuberay."""
    console_user: str = field(default_factory=getpass.getuser)
    """Who types at the console: the identity is `console:<user>`."""
    default_namespace: str = "local"
    """Where `create` puts a cluster when neither the command nor the person's rules name one."""
    confirm_ttl: timedelta = timedelta(minutes=5)
    """How long a destructive command waits for its confirmation."""
    pin_default: timedelta = timedelta(hours=24)
    """How long a `scale` pin holds when `for=` is not given (never past the cluster's expiry)."""
    scaled_summary: timedelta = timedelta(minutes=5)
    """At most one "scaled" message per cluster per this interval; the rest are summarized."""
    alert_repeat: timedelta = timedelta(minutes=30)
    """An alert without a recovery event (conflict, limit clamped) is repeated at most this often."""
    chart_window: timedelta = timedelta(hours=1)
    poll_interval_s: float = 2.0
    """How often the notifier reads events and the bot expires approvals."""
    ready_on_create: bool = False
    """memory backend only: clusters are READY at once (the console demo)."""
    namespaces: tuple[str, ...] | None = None
    """kuberay: the managed namespaces (`RAYOPS_NAMESPACES`), where clusters are listed, approvals kept
    and events read. None: only the pod's own namespace in a pod, every namespace elsewhere (a
    developer's kubeconfig; listing across namespaces needs rights the deployment never grants)."""
    rayops_namespace: str = "default"
    """kuberay: the namespace rayops runs in (`POD_NAMESPACE`, else the first managed one): the global
    pause ConfigMap, where the controller reads it, and approvals about unmanaged namespaces."""
    kubeconfig: str | None = None
    """kuberay outside a pod: the kubeconfig (`KUBECONFIG`, else ~/.kube/config); in a pod the
    ServiceAccount is used."""

    @property
    def approvals_dir(self) -> Path:
        return self.state_dir / "approvals"

    @property
    def audit_path(self) -> Path:
        return self.state_dir / "audit.jsonl"

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "events.jsonl"

    @property
    def pause_switch_path(self) -> Path:
        return self.state_dir / "global-pause.json"

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None, **overrides: object) -> BotSettings:
        """Settings from `RAYOPS_*` variables; keyword overrides (command-line flags) win."""
        env = os.environ if env is None else env
        kw: dict[str, object] = {"policy_dir": Path(env.get("RAYOPS_POLICY_DIR", "policies"))}
        if "RAYOPS_STATE_DIR" in env:
            kw["state_dir"] = Path(env["RAYOPS_STATE_DIR"])
        if "RAYOPS_BOT_BACKEND" in env:
            kw["backend"] = env["RAYOPS_BOT_BACKEND"]
        if "RAYOPS_CONSOLE_USER" in env:
            kw["console_user"] = env["RAYOPS_CONSOLE_USER"]
        if "RAYOPS_NAMESPACE" in env:
            kw["default_namespace"] = env["RAYOPS_NAMESPACE"]
        if "RAYOPS_CONFIRM_TTL" in env:
            kw["confirm_ttl"] = parse_duration(env["RAYOPS_CONFIRM_TTL"])
        if "RAYOPS_POLL_INTERVAL" in env:
            kw["poll_interval_s"] = float(env["RAYOPS_POLL_INTERVAL"])
        in_pod = bool(env.get("KUBERNETES_SERVICE_HOST") or env.get("POD_NAME"))
        namespaces = tuple(n.strip() for n in env.get("RAYOPS_NAMESPACES", "").split(",") if n.strip())
        if not namespaces and in_pod and env.get("POD_NAMESPACE"):
            namespaces = (env["POD_NAMESPACE"],)
        kw["namespaces"] = namespaces or None
        # The same rule as the controller's (controller/daemon.py), so both find the same switch.
        kw["rayops_namespace"] = env.get("POD_NAMESPACE") or (namespaces[0] if namespaces else "default")
        if env.get("KUBECONFIG"):
            kw["kubeconfig"] = env["KUBECONFIG"]
        kw.update({k: v for k, v in overrides.items() if v is not None})
        settings = BotSettings(**kw)  # type: ignore[arg-type]
        if settings.backend not in BACKENDS:
            raise ValueError(f"unknown backend {settings.backend!r} (expected one of {', '.join(BACKENDS)})")
        if settings.backend == "kuberay" and "default_namespace" not in kw:
            # `local` names laptop clusters only; on Kubernetes create where rayops manages clusters.
            home = settings.namespaces[0] if settings.namespaces else settings.rayops_namespace
            settings = replace(settings, default_namespace=home)
        return settings


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """Every token-like value in the environment, for the redactor (never for display)."""
    env = os.environ if env is None else env
    names = set(SECRET_ENV) | {
        k
        for k in env
        if k.startswith(("RAYOPS_", "SLACK_", "MATRIX_"))
        and k.endswith(("_TOKEN", "_SECRET", "_PASSWORD", "_KEY"))
    }
    return [env[k] for k in sorted(names) if env.get(k)]
