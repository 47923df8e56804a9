"""Which schedule windows are in force at a given instant.

A window opens at each fire time of its 5-field cron, read in its IANA timezone, and lasts
`duration` of elapsed time (not wall-clock time): `0 20 * * *` with `12h` in America/New_York opens
at 20:00 local on both sides of a DST change and closes 12 real hours later, i.e. at 09:00 EDT on the
night clocks spring forward and at 07:00 EST on the night they fall back (Karpenter's budget
schedules behave the same way). Fire times come from apscheduler's CronTrigger, which for a local time
that does not exist (02:30 on the spring-forward day) fires at the instant that time would have been
under the old offset (03:30 EDT), and for a repeated local time (01:30 on the fall-back day) fires

once, at the first occurrence (vixie cron's rule; apscheduler alone would also fire at the second
one when asked from inside the repeated hour, so such fire times are skipped here).

Weekday numbers follow crontab (0 or 7 = Sunday, 1-5 = Monday to Friday). apscheduler 3.x reads
them as 0 = Monday (its issue 286), which would shift `1-5` to Tuesday-Saturday, so the field is
rewritten to day names before apscheduler sees it. Unlike vixie cron, a cron restricting both
day-of-month and day-of-week fires when both match, not either (apscheduler's rule).

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


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _day(token: str) -> int:
    token = token.strip().lower()
    if token in _DAY_NAMES:
        return _DAY_NAMES.index(token)
    n = int(token)
    if not 0 <= n <= 7:
        raise ValueError(f"weekday {n} out of range 0-7")
    return n


def crontab_weekdays(field: str) -> str:
    """Rewrite a crontab day-of-week field (0/7 = Sunday) as apscheduler 3.x day names.

    Anything this does not understand is passed through for apscheduler to judge.
    """
    days: set[int] = set()
    try:
        for part in field.split(","):
            base, _, step_text = part.partition("/")
            step = int(step_text) if step_text else 1
            if base == "*":
                lo, hi = 0, 6
            elif "-" in base:
                a, b = base.split("-", 1)
                lo, hi = _day(a), _day(b)
            else:
                lo = _day(base)
                hi = 6 if step_text else lo
            if step < 1 or lo > hi:
                raise ValueError(f"bad weekday range {part!r}")
            days.update(d % 7 for d in range(lo, hi + 1, step))
    except ValueError:
        return field
    return "*" if len(days) == 7 else ",".join(_DAY_NAMES[d] for d in sorted(days))


@lru_cache(maxsize=4096)
def cron_trigger(cron: str, timezone: str) -> CronTrigger:
    """A CronTrigger reading `cron` as crontab does (weekdays included), in `timezone`.

    Cached: parsing costs tens of microseconds and the same few schedules are asked about every tick.
    """
    minute, hour, day, month, weekday = cron.split()
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=crontab_weekdays(weekday),
        timezone=ZoneInfo(timezone),
    )


@lru_cache(maxsize=4096)
def _duration(text: str) -> timedelta:
    return parse_duration(text)


def _next_fire(trigger: CronTrigger, after: datetime | None, not_before: datetime) -> datetime | None:
    fire: datetime | None = trigger.get_next_fire_time(after, not_before)
    if fire is None:
        return None
    local = fire.astimezone(trigger.timezone)
    if local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset():
        # the second occurrence of a repeated local time: cron fires only at the first
        return _next_fire(trigger, None, fire.astimezone(UTC) + timedelta(seconds=1))
    return fire.astimezone(UTC)


def latest_fire(cron: str, timezone: str, duration: timedelta, now: datetime) -> datetime | None:
    """The most recent fire time `f` with `now - duration < f <= now`, in UTC; None if there is none.

    Memoized: in one tick every group sharing a schedule asks the same question with the same `now`.
    The key is `now` in UTC: aware datetimes sharing a tzinfo compare and hash equal across a DST
    fold (01:40 EDT == 01:40 EST), which would mix up the two instants.
    """
    return _latest_fire(cron, timezone, duration, now.astimezone(UTC))


@lru_cache(maxsize=1024)
def _latest_fire(cron: str, timezone: str, duration: timedelta, now: datetime) -> datetime | None:
    """`latest_fire` for a UTC `now`.

    One trigger call finds the earliest fire time in the window; the common case (a daily or weekly
    cron) then needs one more call to see that nothing later fired. Dense crons (every few minutes)
    are answered by a probe of the last minute instead of walking the whole window.
    """
    trigger = cron_trigger(cron, timezone)
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
