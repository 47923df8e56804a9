"""Schedules: cron + duration + IANA timezone, across both DST changes of America/New_York (2026)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from controller.domain import ReasonCode
from controller.policy.decide import decide
from controller.policy.schedule import crontab_weekdays, latest_fire
from controller.policy.state import GroupState
from tests.policy.conftest import make_policy, observe, workers

NY = ZoneInfo("America/New_York")
NIGHTS = {
    "name": "nights",
    "cron": "0 20 * * *",
    "duration": "12h",
    "timezone": "America/New_York",
    "maxReplicas": 2,
}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def ny(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=NY, fold=fold)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("now", "expected_start"),
    [
        # spring forward (Sunday 2026-03-08, 02:00 EST -> 03:00 EDT): the window opened at 20:00 EST
        # on Saturday lasts 12 elapsed hours, so it closes at 09:00 EDT, not 08:00
        (ny(2026, 3, 7, 19, 59), None),
        (ny(2026, 3, 7, 20, 0), utc(2026, 3, 8, 1, 0)),
        (ny(2026, 3, 8, 8, 30), utc(2026, 3, 8, 1, 0)),
        (ny(2026, 3, 8, 8, 59, 59), utc(2026, 3, 8, 1, 0)),
        (ny(2026, 3, 8, 9, 0), None),
        # Sunday's window opens at 20:00 local again, now EDT (00:00 UTC)
        (ny(2026, 3, 8, 19, 59), None),
        (ny(2026, 3, 8, 20, 0), utc(2026, 3, 9, 0, 0)),
        # fall back (Sunday 2026-11-01, 02:00 EDT -> 01:00 EST): Saturday's 20:00 EDT window closes
        # 12 elapsed hours later, 07:00 EST, not 08:00
        (ny(2026, 10, 31, 20, 0), utc(2026, 11, 1, 0, 0)),
        (ny(2026, 11, 1, 1, 30, fold=1), utc(2026, 11, 1, 0, 0)),
        (ny(2026, 11, 1, 6, 59), utc(2026, 11, 1, 0, 0)),
        (ny(2026, 11, 1, 7, 0), None),
        (ny(2026, 11, 1, 20, 0), utc(2026, 11, 2, 1, 0)),
    ],
)
def test_nightly_window_across_dst(now: datetime, expected_start: datetime | None) -> None:
    assert latest_fire("0 20 * * *", "America/New_York", timedelta(hours=12), now) == expected_start


def test_cron_at_a_local_time_that_does_not_exist_fires_an_hour_late() -> None:
    # 02:30 does not exist on 2026-03-08 in New York; apscheduler fires at 02:30 under the old offset
    start = latest_fire("30 2 * * *", "America/New_York", timedelta(hours=1), ny(2026, 3, 8, 3, 45))
    assert start == utc(2026, 3, 8, 7, 30)  # 03:30 EDT
    assert latest_fire("30 2 * * *", "America/New_York", timedelta(hours=1), ny(2026, 3, 8, 3, 29)) is None


def test_cron_at_a_repeated_local_time_fires_once() -> None:
    # 01:30 happens twice on 2026-11-01; the window opens at the first (EDT) one only
    duration = timedelta(minutes=20)
    assert latest_fire("30 1 * * *", "America/New_York", duration, ny(2026, 11, 1, 1, 40)) == utc(
        2026, 11, 1, 5, 30
    )
    assert latest_fire("30 1 * * *", "America/New_York", duration, ny(2026, 11, 1, 1, 40, fold=1)) is None


@pytest.mark.parametrize(
    ("cron", "duration", "now", "expected"),
    [
        ("*/5 * * * *", timedelta(hours=1), utc(2026, 6, 1, 12, 7, 30), utc(2026, 6, 1, 12, 5)),
        ("*/5 * * * *", timedelta(hours=1), utc(2026, 6, 1, 12, 5), utc(2026, 6, 1, 12, 5)),
        ("* 3 * * *", timedelta(hours=2), utc(2026, 6, 1, 4, 30), utc(2026, 6, 1, 3, 59)),
        ("0 9 * * 1-5", timedelta(hours=9), utc(2026, 6, 6, 10, 0), None),  # a Saturday
        ("0 9 * * 1-5", timedelta(hours=9), utc(2026, 6, 5, 17, 59), utc(2026, 6, 5, 9, 0)),
        ("0 9 * * 1-5", timedelta(days=3), utc(2026, 6, 7, 10, 0), utc(2026, 6, 5, 9, 0)),
    ],
)
def test_latest_fire_within_duration(
    cron: str, duration: timedelta, now: datetime, expected: datetime | None
) -> None:
    assert latest_fire(cron, "UTC", duration, now) == expected


def test_night_cap_overrides_max_and_says_which_schedule() -> None:
    policy = make_policy(
        maxReplicas=10,
        schedules=[NIGHTS],
        behavior={"scaleDown": {"policies": [], "stabilizationWindowSeconds": 0}},
    )
    obs = observe(6, workers=workers(idle=6))
    day, _ = decide(policy, obs, GroupState.empty(), ny(2026, 3, 8, 9, 0))
    assert day.target == 6
    assert ReasonCode.SCHEDULE not in day.codes
    night, _ = decide(policy, obs, GroupState.empty(), ny(2026, 3, 8, 8, 59))
    assert night.target == 2
    assert night.codes[:2] == (ReasonCode.SCHEDULE, ReasonCode.AT_MAX)
    assert night.reasons[0].data["end"] == "2026-03-08T13:00:00+00:00"
    assert night.reasons[1].data["source"] == "schedule:nights"


def test_business_hours_floor_and_overlapping_windows() -> None:
    business = {
        "name": "business",
        "cron": "0 9 * * 1-5",
        "duration": "9h",
        "timezone": "Europe/Berlin",
        "minReplicas": 4,
    }
    crunch = {"name": "crunch", "cron": "0 9 1 * *", "duration": "1d", "timezone": "UTC", "minReplicas": 6}
    cap = {"name": "cap", "cron": "0 0 1 * *", "duration": "1d", "timezone": "UTC", "maxReplicas": 5}
    policy = make_policy(maxReplicas=10, schedules=[business, crunch, cap])
    monday = datetime(2026, 6, 1, 12, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # also the 1st: all active
    decision, _ = decide(policy, observe(1), GroupState.empty(), monday)
    # highest floor (6) and lowest cap (5): the cap wins
    assert decision.target == 5
    active = [r.data.get("schedule") for r in decision.reasons if r.code == ReasonCode.SCHEDULE]
    assert active == ["business", "crunch", "cap"]
    tuesday = monday + timedelta(days=1)
    decision, _ = decide(policy, observe(1), GroupState.empty(), tuesday)
    assert decision.target == 4
    at_min = next(r for r in decision.reasons if r.code == ReasonCode.AT_MIN)
    assert at_min.data["source"] == "schedule:business"


def test_schedule_in_bounds_mode_sets_the_bounds() -> None:
    policy = make_policy(mode="bounds", minReplicas=1, maxReplicas=10, schedules=[NIGHTS])
    decision, _ = decide(
        policy, observe(1, min_replicas=1, max_replicas=10), GroupState.empty(), ny(2026, 7, 1, 23, 0)
    )
    assert (decision.min_replicas, decision.max_replicas) == (1, 2)
    assert decision.codes == (ReasonCode.SCHEDULE, ReasonCode.BOUNDS_SET)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("1-5", "mon,tue,wed,thu,fri"),
        ("0", "sun"),
        ("7", "sun"),
        ("5-7", "sun,fri,sat"),
        ("*/2", "sun,tue,thu,sat"),
        ("mon-fri", "mon,tue,wed,thu,fri"),
        ("*", "*"),
        ("0-6", "*"),
    ],
)
def test_crontab_weekday_numbers_mean_what_crontab_means(field: str, expected: str) -> None:
    assert crontab_weekdays(field) == expected


def test_weeknights_fire_monday_to_friday() -> None:
    # 2026-06-06 is a Saturday, 2026-06-07 a Sunday: `1-5` must not fire on them (apscheduler 3.x's
    # own reading of 1-5 would be Tuesday to Saturday)
    fires = [
        latest_fire("0 20 * * 1-5", "UTC", timedelta(hours=1), utc(2026, 6, d, 20, 30)) for d in range(1, 8)
    ]
    assert [f is not None for f in fires] == [True, True, True, True, True, False, False]


def test_policy_check_reads_crontab_weekdays_like_decide(tmp_path: Path) -> None:
    """`rayops policy check` and `decide` must agree that 1-5 is Monday to Friday and 7 is Sunday."""
    from controller.policy.loader import check_directory

    (tmp_path / "p.yaml").write_text(
        "apiVersion: rayops.io/v1alpha1\nkind: ScalingPolicy\nmetadata: {name: p}\n"
        "spec:\n  maxReplicas: 4\n  schedules:\n"
        "    - {name: weekdays, cron: '0 20 * * 1-5', duration: 1h, maxReplicas: 1}\n"
        "    - {name: sunday, cron: '0 8 * * 7', duration: 1h, maxReplicas: 2}\n"
    )
    result = check_directory(tmp_path)
    assert [str(e) for e in result.errors] == []
