"""Which schedule windows are in force at a given instant.

A window opens at each fire time of its 5-field cron, read in its IANA timezone, and lasts
`duration` of elapsed time (not wall-clock time): `0 20 * * *` with `12h` in America/New_York opens
at 20:00 local on both sides of a DST change and closes 12 real hours later, i.e. at 09:00 EDT on the
night clocks spring forward and at 07:00 EST on the night they fall back (Karpenter's budget
schedules behave the same way). Fire times come from apscheduler's CronTrigger, which for a local time
that does not exist (02:30 on the spring-forward day) fires at the instant that time would have been
under the old offset (03:30 EDT), and for a repeated local time (01:30 on the fall-back day) fires
once, at the first occurrence.

All arithmetic happens in UTC: Python compares and adds aware datetimes that share a tzinfo in wall
time, which is wrong across a DST change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from controller.policy.durations import parse_duration
from controller.policy.model import Schedule

_MICRO = timedelta(microseconds=1)
_MINUTE = timedelta(minutes=1)
_MAX_STEPS = 5000


@dataclass(frozen=True)
class ActiveWindow:
    schedule: Schedule
    start: datetime  # UTC
    end: datetime  # UTC


@lru_cache(maxsize=4096)
def _trigger(cron: str, timezone: str) -> CronTrigger:
    # Parsing a crontab costs tens of microseconds; the same few schedules are asked about every tick.
    return CronTrigger.from_crontab(cron, timezone=ZoneInfo(timezone))


@lru_cache(maxsize=4096)
def _duration(text: str) -> timedelta:
    return parse_duration(text)


def _next_fire(trigger: CronTrigger, after: datetime | None, not_before: datetime) -> datetime | None:
    fire: datetime | None = trigger.get_next_fire_time(after, not_before)
    return fire.astimezone(UTC) if fire is not None else None


def latest_fire(cron: str, timezone: str, duration: timedelta, now: datetime) -> datetime | None:
    """The most recent fire time `f` with `now - duration < f <= now`, in UTC; None if there is none.

    One trigger call finds the earliest fire time in the window; the common case (a daily or weekly
    cron) then needs one more call to see that nothing later fired. Dense crons (every few minutes)
    are answered by a probe of the last minute instead of walking the whole window.
    """
    trigger = _trigger(cron, timezone)
    now = now.astimezone(UTC)
    first = _next_fire(trigger, None, now - duration + _MICRO)
    if first is None or first > now:
        return None
    following = _next_fire(trigger, first, first)
    if following is None or following > now:
        return first
    probe = _next_fire(trigger, None, max(following, now - _MINUTE + _MICRO))
    if probe is not None and probe <= now:
        return probe
    latest = following
    for _ in range(_MAX_STEPS):
        nxt = _next_fire(trigger, latest, latest)
        if nxt is None or nxt > now or nxt <= latest:
            break
        latest = nxt
    return latest


def active_windows(schedules: list[Schedule], now: datetime) -> list[ActiveWindow]:
    """The schedules in force at `now`, in policy order."""
    out: list[ActiveWindow] = []
    for s in schedules:
        duration = _duration(s.duration)
        start = latest_fire(s.cron, s.timezone, duration, now)
        if start is not None:
            out.append(ActiveWindow(s, start, start + duration))
    return out
