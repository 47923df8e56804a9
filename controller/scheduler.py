"""Timer wiring only (APScheduler 3): the tick, finishing removals, housekeeping, and the probes' view.

Jobs run in a small thread pool with `max_instances=1` and `coalesce=True`: a tick that overruns its
interval is not run twice at once and missed runs are not queued behind it (they collapse into one
run, as soon as the slow one ends); each skipped run counts in `rayops_tick_overruns_total`.

Every job checks leadership first (controller/leader.py), and the reconciler checks again before each
write. A replica that does not lead still runs the tick job, to keep its heartbeat (`/healthz`) and
to reload the policy directory (`/readyz` means able to act if elected), but observes and writes
nothing. Time comes from `clock`, so tests can run jobs by hand (`run_tick`) at any instant.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from controller.housekeeping import Housekeeper
from controller.leader import Elector
from controller.reconcile import Reconciler, TickReport
from controller.settings import LoopSettings
from controller.telemetry import ErrorKind

log = logging.getLogger("rayops.controller.scheduler")

TICK, REMOVALS, HOUSEKEEPING = "tick", "removals", "housekeeping"
OVERRUN_LOG_EVERY_S = 60.0


class ControllerScheduler:
    def __init__(
        self,
        reconciler: Reconciler,
        elector: Elector,
        settings: LoopSettings,
        housekeeper: Housekeeper | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_tick: Callable[[TickReport], None] | None = None,
    ) -> None:
        self.reconciler = reconciler
        self.elector = elector
        self.settings = settings
        self.housekeeper = housekeeper
        self.clock = clock
        self.on_tick = on_tick
        self.telemetry = reconciler.telemetry
        self._beat: float | None = None
        self._last_overrun_log = 0.0
        self._lock = threading.Lock()
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=3)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": max(1, int(settings.tick_seconds)),
            },
            timezone=UTC,
        )
        self.scheduler.add_listener(self._max_instances, EVENT_JOB_MAX_INSTANCES)
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)  # overruns are counted below
        logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)

    # ------------------------------------------------------------------ jobs

    def run_tick(self) -> TickReport | None:
        """One tick if this replica leads (None otherwise); what the `tick` job runs."""
        with self._lock:
            self._beat = time.monotonic()
        leader = self.elector.is_leader()
        self.telemetry.leader.set(1 if leader else 0)
        now = self.clock()
        if not leader:
            self.reconciler.gate.store.reload()  # stay ready to lead: policies loaded, no alerts
            return None
        try:
            report = self.reconciler.reconcile_once(now)
        except Exception:  # a bug: counted, logged with its trace; the next tick runs as usual
            self.telemetry.errors.labels(ErrorKind.INTERNAL).inc()
            self.telemetry.ticks.labels("failure").inc()
            log.exception("tick failed unexpectedly")
            return None
        if self.on_tick is not None:
            self.on_tick(report)
        return report

    def run_removals(self) -> int:
        if not self.elector.is_leader():
            return 0
        return self.reconciler.finish_pending_removals(self.clock())

    def run_housekeeping(self) -> None:
        if self.housekeeper is None or not self.elector.is_leader():
            return
        with self.reconciler.lock:  # never alongside a tick's writes
            self.housekeeper.run(self.clock())

    def _max_instances(self, event: JobExecutionEvent) -> None:
        if event.job_id != TICK:
            return
        self.telemetry.tick_overruns.inc()
        now = time.monotonic()
        if now - self._last_overrun_log >= OVERRUN_LOG_EVERY_S:
            self._last_overrun_log = now
            log.warning(
                "a tick is still running after %.0f s: the next one waits (not queued); "
                "a longer tick interval (RAYOPS_TICK_SECONDS) may fit this fleet better",
                self.settings.tick_seconds,
            )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        s = self.settings
        now = datetime.now(UTC)
        self.scheduler.add_job(
            self.run_tick,
            "interval",
            seconds=s.tick_seconds,
            id=TICK,
            next_run_time=now,
            name="reconcile tick",
        )
        self.scheduler.add_job(
            self.run_removals,
            "interval",
            seconds=s.removals_seconds,
            id=REMOVALS,
            next_run_time=now + timedelta(seconds=s.removals_seconds),
            name="finish worker removals",
        )
        if self.housekeeper is not None:
            self.scheduler.add_job(
                self.run_housekeeping,
                "interval",
                seconds=s.housekeeping_seconds,
                id=HOUSEKEEPING,
                next_run_time=now + timedelta(seconds=min(5.0, s.housekeeping_seconds)),
                name="expiry and stuck clusters",
            )
        self.scheduler.start()

    def stop(self, wait: bool = True) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)

    # ------------------------------------------------------------------ probes

    def health(self) -> tuple[bool, str]:
        """Alive: the tick job ran within a few intervals (or the scheduler just started)."""
        with self._lock:
            beat = self._beat
        limit = max(60.0, 5 * self.settings.tick_seconds)
        if beat is None:
            return (self.scheduler.running, "starting" if self.scheduler.running else "scheduler not running")
        age = time.monotonic() - beat
        if age > limit:
            return False, f"no tick for {age:.0f} s (limit {limit:.0f} s): the scheduler is stuck"
        return True, f"last tick {age:.1f} s ago"

    def ready(self) -> tuple[bool, str]:
        """Able to act if elected: a valid policy set and a reachable coordination service/backend."""
        store = self.reconciler.gate.store
        if store.current is None:
            return False, f"no valid policy set loaded from {store.directory} yet"
        if not self.elector.healthy():
            return False, "the API server (lease) has not answered recently"
        role = "leader" if self.elector.is_leader() else "standby"
        return True, f"{role}, policy set {store.current.revision}"
