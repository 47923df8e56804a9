"""Checks that need more than one field: across documents (names, references, overlapping
selectors) and across a policy's own parts (schedule windows, PromQL).

Each check returns errors instead of stopping at the first, so one run of `rayops policy check`
shows everything to fix. A window that never opens is an error (the author meant something);
a window that never closes is only a warning (it may be a deliberate "always" override).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

from controller.policy.durations import parse_duration
from controller.policy.errors import PolicyError, Severity
from controller.policy.model import ScalingPolicy, Schedule
from controller.policy.promql import check_query
from controller.policy.schedule import cron_trigger
from controller.policy.selection import selectors_overlap
from controller.policy.source import FieldPath, ParsedDocument, render_path
from controller.policy.validate import DocumentModel

# Fire times are searched from a fixed instant, so a check gives the same answer every day. A
# 5-field cron has no year, so if it ever fires it fires again within 28 years of any instant;
# apscheduler searches until it finds one or runs out of calendar.
_REFERENCE = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Declared:
    """A document's kind and name as written, even if the document is otherwise invalid: references
    to it are not "dangling", and a second document with its name is still a duplicate."""

    kind: str
    name: str
    source: ParsedDocument


@dataclass(frozen=True)
class Loaded:
    doc: DocumentModel
    source: ParsedDocument


def _error(src: ParsedDocument, fpath: FieldPath, message: str, severity: Severity = "error") -> PolicyError:
    line, _ = src.locate(fpath)
    return PolicyError(src.path, line, render_path(fpath), message, severity)


def _where(src: ParsedDocument) -> str:
    return f"{src.path}:{src.locate(('metadata', 'name'))[0]}"


def duplicate_names(declared: Sequence[Declared]) -> list[PolicyError]:
    first: dict[tuple[str, str], Declared] = {}
    errors = []
    for d in declared:
        key = (d.kind, d.name)
        if key in first:
            errors.append(
                _error(
                    d.source,
                    ("metadata", "name"),
                    f"duplicate {d.kind} name (got '{d.name}', already defined at "
                    f"{_where(first[key].source)}; expected a name used once per kind)",
                )
            )
        else:
            first[key] = d
    return errors


def dangling_references(loaded: Sequence[Loaded], declared: Sequence[Declared]) -> list[PolicyError]:
    names: dict[str, list[str]] = {}
    for d in declared:
        names.setdefault(d.kind, []).append(d.name)
    errors = []
    for item in loaded:
        doc = item.doc
        if doc.kind == "ClusterProfile" and doc.spec.scaling_policy is not None:
            ref = doc.spec.scaling_policy
            if ref not in names.get("ScalingPolicy", []):
                errors.append(_missing(item.source, ("spec", "scalingPolicy"), "ScalingPolicy", ref, names))
        elif doc.kind == "AccessPolicy":
            for i, rule in enumerate(doc.spec.rules):
                for j, ref in enumerate(rule.profiles):
                    known = names.get("ClusterProfile", [])
                    found = any(fnmatch.fnmatchcase(n, ref) for n in known) if _is_glob(ref) else ref in known
                    if not found:
                        fpath = ("spec", "rules", i, "profiles", j)
                        errors.append(_missing(item.source, fpath, "ClusterProfile", ref, names))
    return errors


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _missing(
    src: ParsedDocument, fpath: FieldPath, kind: str, ref: str, names: dict[str, list[str]]
) -> PolicyError:
    known = sorted(set(names.get(kind, [])))
    expected = (
        f"one of {', '.join(known)}" if known else f"a {kind} defined in this directory (there is none)"
    )
    what = f"no {kind} matches '{ref}'" if _is_glob(ref) else f"no {kind} named '{ref}'"
    return _error(src, fpath, f"{what} (got '{ref}'; expected {expected})")


def overlapping_selectors(policies: Sequence[Loaded]) -> list[PolicyError]:
    """Two ScalingPolicies at the same priority that could both match one group would make
    selection ambiguous at run time; refuse the set now instead."""
    errors = []
    seen: set[str] = set()
    unique = []
    for p in policies:
        if p.doc.name not in seen:  # a duplicate name is already an error of its own
            seen.add(p.doc.name)
            unique.append(p)
    for i, b in enumerate(unique):
        for a in unique[:i]:
            pa, pb = a.doc, b.doc
            assert isinstance(pa, ScalingPolicy) and isinstance(pb, ScalingPolicy)
            if pa.spec.priority != pb.spec.priority:
                continue
            both = selectors_overlap(pa.spec, pb.spec)
            if both is None:
                continue
            fpath = ("spec", "selector") if ("spec", "selector") in b.source.nodes else ("spec",)
            errors.append(
                _error(
                    b.source,
                    fpath,
                    f"overlaps ScalingPolicy '{pa.name}' ({_where(a.source)}) at the same priority "
                    f"{pb.spec.priority} (got both matching {both}; expected a distinct spec.priority "
                    "or a narrower selector)",
                )
            )
    return errors


def policy_checks(src: ParsedDocument, model: DocumentModel | None) -> list[PolicyError]:
    """The rules of one ScalingPolicy that pydantic cannot express field by field.

    PromQL and cron are checked on the raw YAML, so their errors show up in the same run as a typo
    elsewhere in the document; the bounds of a window need the validated policy.
    """
    raw = src.value
    spec = raw.get("spec") if isinstance(raw, dict) and raw.get("kind") == "ScalingPolicy" else None
    if not isinstance(spec, dict):
        return []
    errors: list[PolicyError] = []
    for i, signal in enumerate(_list(spec.get("signals"))):
        query = signal.get("query") if isinstance(signal, dict) and signal.get("type") == "promql" else None
        if isinstance(query, str) and query:  # an empty one is the model's error
            problem = check_query(query)
            if problem is not None:
                errors.append(_error(src, ("spec", "signals", i, "query"), str(problem)))
    for i, schedule in enumerate(_list(spec.get("schedules"))):
        if isinstance(schedule, dict):
            errors += _window_checks(src, ("spec", "schedules", i), schedule)
    if isinstance(model, ScalingPolicy):
        for i, sched in enumerate(model.spec.schedules):
            errors += _bounds_checks(src, ("spec", "schedules", i), sched, model)
    return errors


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _window_checks(src: ParsedDocument, at: FieldPath, raw: dict[str, object]) -> list[PolicyError]:
    cron, tz, duration = raw.get("cron"), raw.get("timezone", "UTC"), raw.get("duration")
    if not isinstance(cron, str) or not isinstance(tz, str) or len(cron.split()) != 5:
        return []
    try:
        trigger = cron_trigger(cron, tz)
    except (ValueError, KeyError):  # invalid cron or timezone: the model reports it
        return []
    if trigger.get_next_fire_time(None, _REFERENCE) is None:
        return [
            _error(
                src,
                (*at, "cron"),
                f"the window never opens: no date matches (got '{cron}'; "
                "expected a cron that fires, e.g. '0 20 * * 1-5')",
            )
        ]
    try:
        length = parse_duration(duration) if isinstance(duration, str) else None
    except ValueError:
        length = None
    if length is not None and length > timedelta(0) and _always_open(trigger, length):
        return [
            _error(
                src,
                (*at, "duration"),
                f"the window never closes: a new one opens before the last ends (got '{duration}' "
                f"after '{cron}'; expected a duration shorter than the time between starts, "
                "or no schedule)",
                "warning",
            )
        ]
    return []


def _bounds_checks(
    src: ParsedDocument, at: FieldPath, s: Schedule, policy: ScalingPolicy
) -> list[PolicyError]:
    """Inside a window the bounds are the schedule's where it sets them, else the policy's; they
    must still satisfy min <= max (a cap below the policy's floor would be ambiguous)."""
    spec = policy.spec
    if s.max_replicas is not None and s.min_replicas is None and s.max_replicas < spec.min_replicas:
        return [
            _error(
                src,
                (*at, "maxReplicas"),
                f"the window's maxReplicas {s.max_replicas} is below the policy's minReplicas "
                f"{spec.min_replicas} (got {s.max_replicas}; expected at least {spec.min_replicas}, "
                "or a minReplicas in this schedule too)",
            )
        ]
    if s.min_replicas is not None and s.max_replicas is None and s.min_replicas > spec.max_replicas:
        return [
            _error(
                src,
                (*at, "minReplicas"),
                f"the window's minReplicas {s.min_replicas} is above the policy's maxReplicas "
                f"{spec.max_replicas} (got {s.min_replicas}; expected at most {spec.max_replicas}, "
                "or a maxReplicas in this schedule too)",
            )
        ]
    return []


def _always_open(trigger: CronTrigger, duration: timedelta) -> bool:
    """Whether windows follow each other without a gap, judged on samples (it only warns).

    First consecutive starts at varying times over two months (a gap longer than `duration` means
    "no"); then whether the instants where gaps hide (each hour's first and last minute for eight
    days, each day's last minute for a year) are inside some window.
    """
    tiny = timedelta(microseconds=1)
    step = timedelta(hours=37, minutes=13)
    for k in range(40):
        fire = trigger.get_next_fire_time(None, _REFERENCE + k * step)
        for _ in range(8):
            if fire is None:
                return False
            nxt = trigger.get_next_fire_time(fire, fire + tiny)
            if nxt is None or nxt - fire > duration:
                return False
            fire = nxt
    hour, minute, day = timedelta(hours=1), timedelta(minutes=1), timedelta(days=1)
    probes = [_REFERENCE + k * hour + m for k in range(24 * 8) for m in (timedelta(0), hour - minute)]
    probes += [_REFERENCE + k * day + day - minute for k in range(370)]
    for x in probes:
        start = trigger.get_next_fire_time(None, x - duration + tiny)
        if start is None or start > x:  # no window started in (x - duration, x]
            return False
    return True


__all__ = [
    "Declared",
    "Loaded",
    "dangling_references",
    "duplicate_names",
    "overlapping_selectors",
    "policy_checks",
]
