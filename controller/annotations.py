"""How the values in rayops' annotations are written and read (contracts.md section 3). Pure.

The bot writes what the controller and every backend read (a pin, an expiry, approved limits), and
the controller writes what the bot shows (the last decision). One codec for all of them, so the
KubeRay, local and in-memory backends and both processes agree byte for byte; the keys themselves
are in `controller.keys`. (It used to live in the in-memory backend, which real backends should not
import.)

Readers are forgiving on purpose: an absent or malformed value decodes to None, never to a guess. A
pin or an approval someone mangled by hand must not turn into a scaling decision.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.domain import Decision, ManualPin


def encode_time(at: datetime) -> str:
    """`rayops.io/expires-at` and every time inside an annotation: UTC, whole seconds, ISO 8601."""
    return at.astimezone(UTC).isoformat(timespec="seconds")


def decode_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except (ValueError, TypeError):
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def encode_pin(pin: ManualPin) -> str:
    """`rayops.io/manual-replicas`: `{"group": ..., "replicas": N, "until": ISO-8601 | null, "by": ...}`."""
    return json.dumps(
        {
            "group": pin.group,
            "replicas": pin.replicas,
            "until": encode_time(pin.until) if pin.until else None,
            "by": pin.by,
        },
        sort_keys=True,
    )


def decode_pin(text: str | None) -> ManualPin | None:
    """The pin, or None when absent or unreadable (a malformed pin is ignored, never guessed at)."""
    if not text:
        return None
    try:
        d = json.loads(text)
        group, replicas = d["group"], d["replicas"]
        if not isinstance(group, str) or not isinstance(replicas, int) or replicas < 0:
            return None
        by = d.get("by")
        return ManualPin(group, replicas, decode_time(d.get("until")), by if isinstance(by, str) else None)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def decode_decision(text: str | None) -> Decision | None:
    """`rayops.io/decision`, written by the controller's report step."""
    if not text:
        return None
    try:
        return Decision.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


@dataclass(frozen=True)
class ApprovedLimits:
    """`rayops.io/approved-limits`: what an approver allowed this cluster beyond its requester's
    access limits (`workersPerCluster` over all groups, `gpusPerCluster`).

    Written by the bot when it carries out an approved request; read by the controller's limits
    (controller/limits.py), which take the larger of this and the rule limits, so an approved
    `create big workers=6` is not clamped back to the requester's 4 on the next tick. `request` and
    `by` say which approval allowed it, for `status` and the audit trail.
    """

    workers: int
    gpus: int
    request: str = ""
    by: str = ""
    at: datetime | None = None

    def widened(self, other: ApprovedLimits) -> ApprovedLimits:
        """A later approval on the same cluster keeps what earlier ones allowed (the larger of each)."""
        return ApprovedLimits(
            max(self.workers, other.workers), max(self.gpus, other.gpus), other.request, other.by, other.at
        )


def encode_approved_limits(limits: ApprovedLimits) -> str:
    return json.dumps(
        {
            "workers": limits.workers,
            "gpus": limits.gpus,
            "request": limits.request,
            "by": limits.by,
            "at": encode_time(limits.at) if limits.at else None,
        },
        sort_keys=True,
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def decode_approved_limits(text: str | None) -> ApprovedLimits | None:
    """The approved limits, or None when absent or unreadable: a malformed value grants nothing."""
    if not text:
        return None
    try:
        d = json.loads(text)
        workers, gpus = _count(d["workers"]), _count(d.get("gpus", 0))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if workers is None or gpus is None:
        return None
    request, by = d.get("request"), d.get("by")
    return ApprovedLimits(
        workers,
        gpus,
        request if isinstance(request, str) else "",
        by if isinstance(by, str) else "",
        decode_time(d.get("at")) if isinstance(d.get("at"), str) else None,
    )
