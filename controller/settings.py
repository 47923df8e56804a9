"""What the controller process needs to know, grouped by meaning, read from `RAYOPS_*` variables.

A container needs no config file: `ControllerSettings.from_env` reads the variables the manifests in
`deploy/` set (docs/deploy.md section 3), and command-line flags override them. Every field is typed,
defaulted and documented with its unit and why the default is what it is.

Secrets are never fields: only the *paths* of token files are settings, and `secret_values` reads the
files so the composition root can hand their contents to the log redactor (never to a log line).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import yaml

from controller.policy.durations import parse_duration

BACKENDS = ("kuberay", "local")
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"

KUBE_TICK_SECONDS = 15.0
"""Kubernetes: pods take 10-60 s to start, Prometheus scrapes every 15-30 s; a faster loop only re-reads."""
LOCAL_TICK_SECONDS = 2.0
"""Laptop: a local worker joins in ~2-5 s and the dashboard answers at once; a short tick is the point."""


def default_state_dir() -> Path:
    """`$XDG_STATE_HOME/rayops`, else `~/.local/state/rayops` (home is looked up only then: a container
    running as an arbitrary UID has none)."""
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "rayops"


@dataclass(frozen=True)
class LoopSettings:
    """The reconcile loop and its housekeeping jobs."""

    tick_seconds: float = KUBE_TICK_SECONDS
    """Seconds between reconcile ticks. A tick that overruns is not queued behind itself (coalesced)."""
    dry_run: bool = False
    """Decide and report (logs, events, metrics) but write nothing to any cluster: no replicas, no
    bounds, no annotations, no deletion at expiry."""
    paused: bool = False
    """The global switch from configuration (`RAYOPS_PAUSED`): every group holds with GLOBAL_PAUSE.
    The bot's `pause-all` is read as well (controller/pause.py); either one pauses."""
    removals_seconds: float = 5.0
    """How often pending worker removals are checked and cleared once their workers are gone
    (KubeRay never clears `workersToDelete` itself, and a new scale-down waits for it)."""
    housekeeping_seconds: float = 30.0
    """How often clusters are checked for expiry and for being stuck (minute-scale events)."""
    expiry_warning: timedelta = timedelta(minutes=15)
    """An `Expiring` event goes to the requester this long before a cluster's time-to-live ends."""
    stuck_after: timedelta = timedelta(minutes=10)
    """A cluster whose pods stay not-ready with a cause for this long gets one `ClusterStuck` event."""
    transient_before_alert: int = 3
    """Consecutive ticks with the same transient trouble on one cluster (a lost write race, an API
    timeout) before it is alerted: one race or one timeout is normal, and the next tick re-reads."""


@dataclass(frozen=True)
class LeaderSettings:
    """Leader election: a `coordination.k8s.io` Lease on Kubernetes, a file lock in laptop mode.

    `renew_deadline_s < lease_duration_s` is what makes failover safe: a leader that could not renew
    for `renew_deadline_s` stops acting, while another replica waits the full `lease_duration_s` from
    its own sighting of the last renewal before it takes over, so there is no moment with two actors.
    """

    lease_name: str = "rayops-controller"
    namespace: str | None = None
    """Namespace of the Lease (the pod's own, from `POD_NAMESPACE`)."""
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    """This replica's name in the Lease (`POD_NAME` in a pod)."""
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration "
                f"(got {self.retry_period_s}, {self.renew_deadline_s}, {self.lease_duration_s})"
            )


@dataclass(frozen=True)
class ServeSettings:
    """The HTTP endpoints `/metrics`, `/healthz`, `/readyz`."""

    host: str = "127.0.0.1"
    """Loopback unless the process runs in a pod (probes and scrapes come from outside the pod)."""
    port: int | None = 8080
    """None turns the endpoints off; 0 picks a free port (tests, several local controllers)."""


@dataclass(frozen=True)
class PrometheusSettings:
    """Where utilization and PromQL signals come from; without a URL, only Ray's own endpoints."""

    url: str | None = None
    token_file: str | None = None
    """Bearer token file (the ServiceAccount token on OpenShift), re-read when it changes."""
    ca_file: str | None = None
    timeout_s: float = 5.0
    """Bounds a whole fetch, retries included, so a hung Prometheus cannot stall a tick."""


@dataclass(frozen=True)
class ControllerSettings:
    backend: str = "kuberay"
    """kuberay (RayClusters through the Kubernetes API) or local (laptop mode, real local Ray)."""
    policy_dir: Path = Path("policies")
    """The policy directory (contracts.md section 2), reloaded at every tick."""
    namespaces: tuple[str, ...] | None = None
    """Managed namespaces (kuberay). None: only the namespace the controller runs in (in a pod), all
    namespaces otherwise (a developer's kubeconfig)."""
    state_dir: Path = field(default_factory=default_state_dir)
    """Laptop mode: local clusters, the event journal, the controller lock, the global switch file."""
    kubeconfig: str | None = None
    dashboard_timeout_s: float = 5.0
    """Bounds the Ray dashboard requests of one tick (all clusters, concurrently)."""
    log_level: str = "INFO"
    loop: LoopSettings = field(default_factory=LoopSettings)
    leader: LeaderSettings = field(default_factory=LeaderSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    prometheus: PrometheusSettings = field(default_factory=PrometheusSettings)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r} (expected one of {', '.join(BACKENDS)})")
        if self.loop.tick_seconds <= 0:
            raise ValueError(f"the tick must be longer than 0 s (got {self.loop.tick_seconds})")

    @property
    def journal_path(self) -> Path:
        """The laptop event journal; the bot tails the same file (bot/settings.py)."""
        return self.state_dir / "events.jsonl"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "controller.lock"

    @property
    def pause_path(self) -> Path:
        """The bot's `pause-all` switch in laptop mode (bot/switch.py writes it)."""
        return self.state_dir / "global-pause.json"

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None, **overrides: object) -> ControllerSettings:
        """Settings from `RAYOPS_*` variables; keyword overrides (flags, None = not given) win.

        Overrides use the flat names of the command line: backend, policy_dir, namespaces, state_dir,
        kubeconfig, tick_seconds, dry_run, paused, http_port, http_host, lease_name, prometheus_url.
        """
        env = os.environ if env is None else env
        o = {k: v for k, v in overrides.items() if v is not None}
        backend = str(o.get("backend") or env.get("RAYOPS_BACKEND") or "kuberay")
        in_pod = bool(env.get("KUBERNETES_SERVICE_HOST") or env.get("POD_NAME"))
        default_tick = LOCAL_TICK_SECONDS if backend == "local" else KUBE_TICK_SECONDS
        loop = LoopSettings(
            tick_seconds=float(
                str(o.get("tick_seconds") or _float(env, "RAYOPS_TICK_SECONDS", default_tick))
            ),
            dry_run=bool(o.get("dry_run")) or _bool(env, "RAYOPS_DRY_RUN"),
            paused=bool(o.get("paused")) or _bool(env, "RAYOPS_PAUSED"),
            expiry_warning=_duration(env, "RAYOPS_EXPIRY_WARNING", LoopSettings.expiry_warning),
            stuck_after=_duration(env, "RAYOPS_STUCK_AFTER", LoopSettings.stuck_after),
        )
        if "removals_seconds" in o:
            loop = replace(loop, removals_seconds=float(str(o["removals_seconds"])))
        if "housekeeping_seconds" in o:
            loop = replace(loop, housekeeping_seconds=float(str(o["housekeeping_seconds"])))
        leader = LeaderSettings(
            lease_name=str(o.get("lease_name") or env.get("RAYOPS_LEASE_NAME") or "rayops-controller"),
            namespace=env.get("POD_NAMESPACE") or None,
            identity=str(o.get("identity") or env.get("POD_NAME") or LeaderSettings().identity),
        )
        port_text = o.get("http_port", env.get("RAYOPS_HTTP_PORT", "8080"))
        port = None if str(port_text).strip().lower() in ("", "none", "off") else int(str(port_text))
        serve = ServeSettings(
            host=str(
                o.get("http_host") or env.get("RAYOPS_HTTP_HOST") or ("0.0.0.0" if in_pod else "127.0.0.1")
            ),
            port=port,
        )
        prometheus = PrometheusSettings(
            url=str(o.get("prometheus_url") or env.get("RAYOPS_PROMETHEUS_URL") or "") or None,
            token_file=env.get("RAYOPS_PROMETHEUS_TOKEN_FILE") or None,
            ca_file=env.get("RAYOPS_PROMETHEUS_CA_FILE") or None,
        )
        namespaces_text = o.get("namespaces", env.get("RAYOPS_NAMESPACES", ""))
        namespaces: tuple[str, ...] | None = (
            tuple(n.strip() for n in str(namespaces_text).split(",") if n.strip()) or None
        )
        if namespaces is None and in_pod and env.get("POD_NAMESPACE"):
            namespaces = (env["POD_NAMESPACE"],)
        state_dir = o.get("state_dir") or env.get("RAYOPS_STATE_DIR")
        return ControllerSettings(
            backend=backend,
            policy_dir=Path(str(o.get("policy_dir") or env.get("RAYOPS_POLICY_DIR") or "policies")),
            namespaces=namespaces,
            state_dir=Path(str(state_dir)) if state_dir else default_state_dir(),
            kubeconfig=str(o.get("kubeconfig") or env.get("KUBECONFIG") or "") or None,
            log_level=str(o.get("log_level") or env.get("RAYOPS_LOG_LEVEL") or "INFO"),
            loop=loop,
            leader=leader,
            serve=serve,
            prometheus=prometheus,
        )


def secret_values(settings: ControllerSettings, env: Mapping[str, str] | None = None) -> list[str]:
    """Token values this process may hold (file contents, token-like variables), for the log redactor.

    Never printed: the composition root passes them to the redactor and drops them.
    """
    env = os.environ if env is None else env
    out: list[str] = []
    for path in (settings.prometheus.token_file, SERVICE_ACCOUNT_TOKEN):
        if path:
            try:
                value = Path(path).read_text(encoding="utf-8").strip()
            except OSError:
                continue
            if value:
                out.append(value)
    out += [v for k, v in env.items() if v and k.endswith(("_TOKEN", "_SECRET", "_PASSWORD"))]
    out += _kubeconfig_tokens(settings.kubeconfig or env.get("KUBECONFIG"))
    return out


def _kubeconfig_tokens(path: str | None) -> list[str]:
    """Bearer tokens written into a kubeconfig (a developer's, or a test's), so they are redacted too."""
    if not path:
        return []
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return []
    users = doc.get("users") if isinstance(doc, dict) else None
    out = []
    for u in users if isinstance(users, list) else []:
        user = u.get("user") if isinstance(u, dict) else None
        token = user.get("token") if isinstance(user, dict) else None
        if isinstance(token, str) and token:
            out.append(token)
    return out


def _bool(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name}={env.get(name)!r} is not a boolean (expected true or false)")


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number of seconds") from None


def _duration(env: Mapping[str, str], name: str, default: timedelta) -> timedelta:
    text = env.get(name, "").strip()
    return parse_duration(text) if text else default
