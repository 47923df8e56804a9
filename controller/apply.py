"""Step 3 of a tick: apply. Make each cluster's decisions real, one guarded write per changed cluster.

A cluster none of whose decisions changes it (owner mode: target equals the asked count and every
worker to remove is already asked for; bounds mode: the bounds equal the stored ones) gets **no call at
all**, so a steady fleet costs no writes. Dry-run (global or the policy's) and a replica that is not the
leader write nothing.

Errors are isolated per cluster and classified by what the loop does next (style.md B5); nothing here
raises for a backend problem:

| outcome | from | the loop |
|---|---|---|
| `conflict` | `ConflictError` (someone wrote between our read and our write) | hold; next tick re-reads |
| `persistent_conflict` | `PersistentConflict` (a fight over fields) | one Conflict alert; backend backs off |
| `backoff` | `ApplyResult.backoff_until` while the backend backs off | hold quietly |
| `unavailable` | `BackendUnavailable` (timeouts, 5xx, 429 after retries) | retry; alert if it persists |
| `refused` | any other `BackendError` (unsafe removal, mode refused, group or cluster gone) | alert once |
| `internal` | anything else: a bug | logged with its trace, counted, next tick runs |
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from controller.backends.base import (
    BackendError,
    BackendUnavailable,
    ConflictError,
    GroupNotFound,
    ManagedCluster,
    PersistentConflict,
    ScaleTarget,
)
from controller.domain import ClusterRef, Decision

log = logging.getLogger("rayops.controller.apply")


class Applied(StrEnum):
    WRITTEN = "written"
    UNCHANGED = "unchanged"
    DRY_RUN = "dry_run"
    NOT_LEADER = "not_leader"
    BACKOFF = "backoff"
    CONFLICT = "conflict"
    PERSISTENT_CONFLICT = "persistent_conflict"
    UNAVAILABLE = "unavailable"
    REFUSED = "refused"
    INTERNAL = "internal"

    @property
    def ok(self) -> bool:
        """The cluster is as decided (or deliberately untouched): its decisions may be recorded."""
        return self in (Applied.WRITTEN, Applied.UNCHANGED, Applied.DRY_RUN)


@dataclass(frozen=True)
class ApplyOutcome:
    ref: ClusterRef
    status: Applied
    detail: str = ""


def changes(cluster: ManagedCluster, decisions: Sequence[Decision]) -> list[Decision]:
    """The decisions that would change the cluster if applied (dry-run ones never do)."""
    out = []
    for d in decisions:
        if d.dry_run:
            continue
        try:
            g = cluster.group(d.ref.group)
        except GroupNotFound:
            out.append(d)  # let the backend say what is wrong
            continue
        if d.mode == "owner":
            if d.target != g.replicas or set(d.remove) - set(g.pending_deletes):
                out.append(d)
        else:
            lo = g.min_replicas if d.min_replicas is None else d.min_replicas
            hi = g.max_replicas if d.max_replicas is None else d.max_replicas
            if (lo, hi) != (g.min_replicas, g.max_replicas):
                out.append(d)
    return out


def apply_cluster(
    backend: ScaleTarget,
    cluster: ManagedCluster,
    decisions: Sequence[Decision],
    *,
    dry_run: bool,
    may_act: Callable[[], bool],
) -> ApplyOutcome:
    ref = cluster.ref
    changing = changes(cluster, decisions)
    if not changing:
        return ApplyOutcome(ref, Applied.UNCHANGED)
    if dry_run:
        return ApplyOutcome(ref, Applied.DRY_RUN, "dry run: nothing applied")
    if not may_act():
        return ApplyOutcome(ref, Applied.NOT_LEADER, "not the leader any more: nothing applied")
    try:
        result = backend.apply(cluster, decisions)
    except PersistentConflict as e:
        return ApplyOutcome(ref, Applied.PERSISTENT_CONFLICT, str(e))
    except ConflictError as e:
        return ApplyOutcome(ref, Applied.CONFLICT, str(e))
    except BackendUnavailable as e:
        return ApplyOutcome(ref, Applied.UNAVAILABLE, str(e))
    except BackendError as e:
        return ApplyOutcome(ref, Applied.REFUSED, f"{type(e).__name__}: {e}")
    except Exception as e:  # a bug in a backend: surface it with its trace, keep the other clusters going
        log.exception("applying decisions to %s failed unexpectedly", ref)
        return ApplyOutcome(ref, Applied.INTERNAL, f"{type(e).__name__}: {e}")
    if result.backoff_until is not None:
        return ApplyOutcome(ref, Applied.BACKOFF, result.detail)
    return ApplyOutcome(ref, Applied.WRITTEN if result.written else Applied.UNCHANGED, result.detail)
