"""Assemble a running controller from settings: backend, metrics sources, sinks, election, endpoints.

The command line (`rayops controller run`, `rayops up`; bot/cli/) is the composition root that reads
flags and installs logging and redaction; this module is the part of the wiring that belongs to the
controller, so both commands (and tests) build the same thing (kuberay | local):

- backend: `KubeRayBackend` over `KubeApi` (in a pod or from a kubeconfig) | `LocalBackend` over the
  state directory, with its operator thread (a tick never waits for `ray start`);
- pending demand: the Ray dashboards (each head Service's port 8265 | each local head);
- utilization and PromQL: Prometheus / Thanos Querier (`RAYOPS_PROMETHEUS_*`) | Prometheus if
  configured, else Ray's own `/metrics` through the file_sd file the local backend writes; CPU
  utilization is Ray's logical CPU use there, as every local node shares the laptop's CPUs
  (controller/laptop.py);
- events: structured log lines plus Kubernetes Events | plus the journal in the state directory;
- election: Lease `RAYOPS_LEASE_NAME` in `POD_NAMESPACE` | `flock` on `<state dir>/controller.lock`;
- global switch: `RAYOPS_PAUSED`, or ConfigMap `rayops-global-pause` | `<state dir>/global-pause.json`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from controller.backends.base import ClusterBackend, ScaleTarget
from controller.events import EventSink, FanoutSink, JournalSink, LogSink
from controller.housekeeping import Housekeeper
from controller.http import ControllerEndpoints
from controller.laptop import OneHostSource
from controller.leader import AlwaysLeader, Elector, FileLockElector, LeaseElector
from controller.metrics.base import MetricsSource
from controller.metrics.composite import CompositeSource
from controller.metrics.http import HttpSettings
from controller.pause import AnyPause, ConfigMapPause, FilePause, PauseSource, StaticPause
from controller.policy.loader import PolicyStore
from controller.policy.model import ClusterProfile
from controller.reconcile import Reconciler, TickClock, TickReport
from controller.scheduler import ControllerScheduler
from controller.scrub import Scrubber, ScrubbingSink
from controller.settings import ControllerSettings, secret_values
from controller.telemetry import ControllerMetrics

log = logging.getLogger("rayops.controller")

LOCAL_RAY_ENV = {
    "RAY_raylet_start_wait_time_s": "120",
    "AUTOSCALER_UPDATE_INTERVAL_S": "1",
    "RAY_metrics_report_interval_ms": "5000",
}
"""Set (unless already set) for the local `ray start` processes the laptop backend spawns, which inherit
this process's environment:
- Ray waits 30 s by default for a new node to register with its head's GCS; on a busy 2-core laptop
  four workers starting together often take longer, and each failed start costs a retry with backoff
  (Ray's own message for that failure recommends raising exactly this);
- the head's monitor refreshes the demand report the dashboard serves every 5 s by default; the
  laptop tick is 2 s, so waiting tasks would go unseen for up to two ticks. Once a second costs the
  head about 1 % of a core;
- nodes export their metrics (`ray_resources`, laptop mode's CPU utilization) every 10 s by default,
  so utilization lagged up to five ticks behind the tasks: a finished burst kept its workers up to
  10 s longer, and a new worker had no series (a hold) for up to 10 s. Every 5 s halves that; not
  faster, because Ray drops a gauge not re-exported within two intervals, and a loaded laptop that
  misses a 2 s export by 4 s would see the series vanish (missing data: a hold and an alert)."""


class Backend(ScaleTarget, ClusterBackend, Protocol):
    """Both protocols: the loop scales through one, housekeeping deletes through the other."""


@dataclass
class Controller:
    settings: ControllerSettings
    backend: Backend
    metrics: MetricsSource
    store: PolicyStore
    sink: EventSink
    reconciler: Reconciler
    scheduler: ControllerScheduler
    elector: Elector
    telemetry: ControllerMetrics
    endpoints: ControllerEndpoints | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)
    _stopped: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        if self.endpoints is not None:
            self.endpoints.start()
        self.elector.start()
        self.scheduler.start()
        log.info(
            "controller %s started: backend %s, tick %.0f s%s, policies %s",
            self.elector.identity,
            self.settings.backend,
            self.settings.loop.tick_seconds,
            ", dry run" if self.settings.loop.dry_run else "",
            self.store.directory,
        )

    def stop(self) -> None:
        """Stop scheduling (waiting for a running tick), give up leadership, close everything."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.scheduler.stop(wait=True)
        self.elector.stop()
        if self.endpoints is not None:
            self.endpoints.stop()
        for close in reversed(self.closers):
            try:
                close()
            except Exception:  # closing is best effort at exit; say what failed
                log.exception("closing %s failed", close)

    def run_once(self) -> TickReport:
        """One tick now, as the leader (for `--once`): no scheduler, no election."""
        return self.reconciler.reconcile_once(datetime.now(UTC))


def _profiles(store: PolicyStore) -> Callable[[], Mapping[str, ClusterProfile]]:
    return lambda: store.current.cluster_profiles if store.current is not None else {}


def build_controller(
    settings: ControllerSettings,
    *,
    extra_sinks: Sequence[EventSink] = (),
    backend: Backend | None = None,
    metrics: MetricsSource | None = None,
    elector: Elector | None = None,
    on_tick: Callable[[TickReport], None] | None = None,
    serve: bool = True,
    watch: bool = True,
) -> Controller:
    """Everything wired but not started. Injected parts (tests, `rayops up`) replace the defaults.

    `watch` False lists RayClusters at each tick instead of keeping a watch open: for one tick
    (`--once`), a cache would cost a full list plus the watches for nothing.
    """
    store = PolicyStore(str(settings.policy_dir))
    store.reload()
    telemetry = ControllerMetrics()
    closers: list[Callable[[], None]] = []
    clock = TickClock()
    if settings.backend == "kuberay":
        parts = _kuberay(settings, store, closers, clock, watch=watch)
    else:
        parts = _local(settings, store, closers, clock)
    backend = backend or parts.backend
    metrics = metrics or parts.metrics
    sinks: list[EventSink] = [LogSink(), *parts.sinks, *extra_sinks]
    sink: EventSink = FanoutSink(sinks)

    def leader_changed(leading: bool) -> None:
        telemetry.leader.set(1 if leading else 0)

    if elector is None:
        elector = parts.elector(leader_changed)
    pause: PauseSource = AnyPause(StaticPause(settings.loop.paused), *parts.pauses)
    scrub = Scrubber(secret_values(settings))
    sink = ScrubbingSink(sink, scrub)
    reconciler = Reconciler(
        backend,
        metrics,
        store,
        sink,
        settings=settings.loop,
        pause=pause,
        telemetry=telemetry,
        may_act=elector.is_leader,
        scrub=scrub,
        clock=clock,
    )
    housekeeper = Housekeeper(backend, sink, telemetry, settings.loop, elector.is_leader)
    scheduler = ControllerScheduler(reconciler, elector, settings.loop, housekeeper, on_tick=on_tick)
    endpoints = None
    if serve and settings.serve.port is not None:
        endpoints = ControllerEndpoints(
            telemetry, scheduler.health, scheduler.ready, settings.serve.host, settings.serve.port
        )
    return Controller(
        settings, backend, metrics, store, sink, reconciler, scheduler, elector, telemetry, endpoints, closers
    )


@dataclass
class _Parts:
    backend: Any
    metrics: MetricsSource
    sinks: list[EventSink]
    pauses: list[PauseSource]
    elector: Callable[[Callable[[bool], None]], Elector]


def _prometheus(settings: ControllerSettings, closers: list[Callable[[], None]]) -> list[MetricsSource]:
    p = settings.prometheus
    if not p.url:
        return []
    from controller.metrics.prometheus import PrometheusSource

    source = PrometheusSource(
        p.url, http=HttpSettings(timeout_s=p.timeout_s, token_file=p.token_file, ca_bundle=p.ca_file)
    )
    closers.append(source.close)
    return [source]


def _kuberay(
    settings: ControllerSettings,
    store: PolicyStore,
    closers: list[Callable[[], None]],
    clock: TickClock,
    watch: bool = True,
) -> _Parts:
    from controller.backends.kube_api import KubeApi
    from controller.backends.kuberay import KubeRayBackend
    from controller.backends.kuberay_events import KubeEventSink
    from controller.metrics.ray_dashboard import RayDashboardSource, kuberay_dashboard_url

    api = KubeApi.from_environment(settings.kubeconfig)
    dashboard = RayDashboardSource(
        http=HttpSettings(timeout_s=settings.dashboard_timeout_s), url_for=kuberay_dashboard_url
    )
    closers.append(dashboard.close)
    backend = KubeRayBackend(
        api,
        _profiles(store),
        activity=dashboard,
        policies=lambda: store.current.scaling_policies if store.current is not None else {},
        namespaces=settings.namespaces,
        connect_routes=False,  # housekeeping never shows addresses: no `list routes` in its Role
        watch=watch,  # ticks read an informer cache, not a relist (kuberay_cache.py)
    )
    closers.append(backend.close)
    namespace = settings.leader.namespace or (settings.namespaces[0] if settings.namespaces else "default")
    leader = settings.leader if settings.leader.namespace else replace(settings.leader, namespace=namespace)
    metrics = CompositeSource([*_prometheus(settings, closers), dashboard])
    closers.append(metrics.close)
    log.info("signals: %s", ", ".join(f"{t} from {s}" for t, s in metrics.capabilities().items()))
    return _Parts(
        backend,
        metrics,
        [KubeEventSink(api, namespace, settings.leader.identity)],
        [ConfigMapPause(api, namespace)],
        lambda changed: LeaseElector(api, leader, on_change=changed),
    )


def _local(
    settings: ControllerSettings, store: PolicyStore, closers: list[Callable[[], None]], clock: TickClock
) -> _Parts:
    from controller.backends.local import LocalBackend
    from controller.metrics.direct import DirectSource
    from controller.metrics.ray_dashboard import RayDashboardSource

    for name, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(name, value)

    dashboard = RayDashboardSource(http=HttpSettings(timeout_s=settings.dashboard_timeout_s))
    closers.append(dashboard.close)
    backend = LocalBackend(
        _profiles(store), state_dir=settings.state_dir, activity=dashboard, background=True, clock=clock
    )
    closers.append(backend.close)
    sources: list[MetricsSource] = [*_prometheus(settings, closers), dashboard]
    if not settings.prometheus.url:
        direct = DirectSource([backend.file_sd_path])
        closers.append(direct.close)
        sources.append(direct)
    composite = CompositeSource(sources)
    closers.append(composite.close)
    log.info("signals: %s", ", ".join(f"{t} from {s}" for t, s in composite.capabilities().items()))
    return _Parts(
        backend,
        OneHostSource(composite),  # CPU utilization means Ray's logical use here (controller/laptop.py)
        [JournalSink(settings.journal_path)],
        [FilePause(settings.pause_path)],
        lambda changed: FileLockElector(
            settings.lock_path, settings.leader.identity, settings.leader.retry_period_s, changed
        ),
    )


__all__ = ["AlwaysLeader", "Backend", "Controller", "build_controller"]
