"""Policies reload while running (issue 6 point 4): the set in force, and one alert per bad change.

Every tick starts with `PolicyGate.refresh`: `PolicyStore.reload()` costs a directory listing and a stat
per file while nothing changed. A valid change is in force for this very tick. A set the loader
refuses keeps the last good one in force. On top of the loader's checks, a set asking for a signal no
configured metrics source can give (`controller.metrics.check_signals`: e.g. a PromQL signal in laptop
mode without Prometheus) is refused here the same way, since every tick would otherwise hold on
"unavailable" data forever.

One `PolicyInvalid` alert when the directory turns bad (with the errors), one `PolicyRecovered` when it
is good again, nothing in between: `rayops_policy_set_valid` shows the state at any time.
"""

from __future__ import annotations

import logging
from datetime import datetime

from controller.events import Event, EventSink, EventType
from controller.metrics.base import MetricsSource
from controller.metrics.composite import check_signals
from controller.policy.loader import PolicySet, PolicyStore
from controller.telemetry import ControllerMetrics

log = logging.getLogger("rayops.controller.policies")

MAX_LISTED_ERRORS = 5


class PolicyGate:
    def __init__(
        self,
        store: PolicyStore,
        sink: EventSink,
        telemetry: ControllerMetrics,
        source: MetricsSource | None = None,
    ) -> None:
        self.store = store
        self.sink = sink
        self.telemetry = telemetry
        self.source = source
        self.active: PolicySet | None = None
        self.problems: tuple[str, ...] = ()
        self._checked: str | None = None  # revision whose signals were checked
        self._signal_errors: tuple[str, ...] = ()
        self._alerted = False

    def refresh(self, now: datetime) -> PolicySet | None:
        """The set in force for this tick (None before any valid set was loaded)."""
        result = self.store.reload()
        if result.errors:
            problems = tuple(str(e) for e in result.errors)
        else:
            current = result.current
            if current is not None and current.revision != self._checked:
                errors = check_signals(current, self.source) if self.source is not None else []
                self._checked, self._signal_errors = current.revision, tuple(errors)
                if not errors:
                    if self.active is not None and self.active.revision != current.revision:
                        log.info("policy set %s is in force (was %s)", current.revision, self.active.revision)
                    self.active = current
            problems = self._signal_errors
        self.problems = problems
        self.telemetry.policy_set_valid.set(0 if problems else 1)
        if problems and not self._alerted:
            self._alerted = True
            self.sink.publish(self._invalid_event(problems, now))
        elif not problems and self._alerted:
            self._alerted = False
            revision = self.active.revision if self.active else "none"
            self.sink.publish(
                Event(
                    EventType.POLICY_RECOVERED,
                    f"the policy set in {self.store.directory} is valid again (revision {revision})",
                    now,
                    data={"revision": revision},
                )
            )
        return self.active

    def _invalid_event(self, problems: tuple[str, ...], now: datetime) -> Event:
        kept = (
            f"the last good set (revision {self.active.revision}) stays in force"
            if self.active is not None
            else "no valid set was loaded yet: nothing is autoscaled"
        )
        listed = "; ".join(problems[:MAX_LISTED_ERRORS])
        more = f" (and {len(problems) - MAX_LISTED_ERRORS} more)" if len(problems) > MAX_LISTED_ERRORS else ""
        log.warning("policy set in %s refused: %s%s", self.store.directory, listed, more)
        return Event(
            EventType.POLICY_INVALID,
            f"the policy set in {self.store.directory} was refused ({len(problems)} error(s)): "
            f"{listed}{more}; "
            f"{kept}. Run `rayops policy check {self.store.directory}`.",
            now,
            severity="warning",
            data={"errors": len(problems), "revision": self.active.revision if self.active else None},
        )
