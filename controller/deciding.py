"""Step 2 of a tick: decide. Issue 3's pure `decide` for every observed group, nothing else.

What this step adds around the pure function, all without I/O:
- the policy a group is decided with may be a *variant* of the one selected: with `dryRun: true` when
  the controller runs with `--dry-run` (so `decide` records no scale events for changes never made,
  and says DRY_RUN), and with `maxReplicas` lowered to the cluster's access-policy cap
  (controller/limits.py; schedules' caps lowered too, so no window can lift it). Variants are cached
  per policy-set revision;
- groups of one cluster are decided in order, each within what the cluster's limits leave
  (`CapBudget`);
- a bug in `decide` for one group is contained: that group holds (no decision, its state kept), the
  error is logged with its trace and counted, every other group is decided;
- `needs_activity`: whether a cluster listed without node activity must be decided again with it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from controller.domain import Activity, Decision, GroupRef, Reason, ReasonCode
from controller.limits import CapBudget
from controller.observe import ClusterView, GroupView, Observation
from controller.policy.decide import decide
from controller.policy.model import ScalingPolicy
from controller.policy.state import GroupState

log = logging.getLogger("rayops.controller.decide")


@dataclass(frozen=True)
class GroupOutcome:
    view: GroupView
    decision: Decision
    state: GroupState
    cap: int | None = None  # the access/profile cap in force (None: only the policy's bounds)
    cap_source: str = ""

    @property
    def ref(self) -> GroupRef:
        return self.view.obs.ref

    @property
    def beyond_cap(self) -> bool:
        """The group runs more workers than its cap allows (it is being clamped)."""
        return self.cap is not None and self.view.obs.current > self.cap


@dataclass(frozen=True)
class ClusterOutcome:
    view: ClusterView
    groups: tuple[GroupOutcome, ...]
    failed: tuple[tuple[GroupRef, str], ...] = ()  # groups `decide` raised for (a bug)

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return tuple(g.decision for g in self.groups)


@dataclass
class PolicyVariants:
    """Cached copies of policies with dry-run set and/or a lower cap, per policy-set revision."""

    revision: str | None = None
    cache: dict[tuple[str, bool, int | None], ScalingPolicy] = field(default_factory=dict)

    def get(self, policy: ScalingPolicy, revision: str, dry_run: bool, cap: int | None) -> ScalingPolicy:
        spec = policy.spec
        if not lowers(policy, cap):
            cap = None  # the policy is already within the cap
        if not (dry_run and not spec.dry_run) and cap is None:
            return policy
        if revision != self.revision:
            self.revision, self.cache = revision, {}
        key = (policy.name, dry_run, cap)
        found = self.cache.get(key)
        if found is None:
            update: dict[str, object] = {}
            if dry_run:
                update["dry_run"] = True
            if cap is not None:
                update["max_replicas"] = min(spec.max_replicas, cap)
                update["min_replicas"] = min(spec.min_replicas, cap)
                update["schedules"] = [
                    s.model_copy(
                        update={
                            "max_replicas": None if s.max_replicas is None else min(s.max_replicas, cap),
                            "min_replicas": None if s.min_replicas is None else min(s.min_replicas, cap),
                        }
                    )
                    for s in spec.schedules
                ]
            found = policy.model_copy(update={"spec": spec.model_copy(update=update)})
            self.cache[key] = found
        return found


def lowers(policy: ScalingPolicy, cap: int | None) -> bool:
    """Whether `cap` is below what the policy (or one of its schedules) would allow."""
    spec = policy.spec
    return cap is not None and (
        cap < spec.max_replicas
        or any(s.max_replicas is not None and s.max_replicas > cap for s in spec.schedules)
    )


def decide_cluster(
    view: ClusterView, now: datetime, variants: PolicyVariants, revision: str, dry_run: bool
) -> ClusterOutcome:
    counts = {g.obs.ref.group: g.obs.current for g in view.groups}
    gpus = {g.obs.ref.group: float(g.obs.worker_resources.get("GPU", 0.0)) for g in view.groups}
    budget = CapBudget(view.limits, gpus, counts)
    outcomes: list[GroupOutcome] = []
    failed: list[tuple[GroupRef, str]] = []
    for g in view.groups:
        group = g.obs.ref.group
        cap, source = budget.cap(group) if view.limits.any else (None, "")
        policy = variants.get(g.policy, revision, dry_run, cap)
        try:
            decision, state = decide(policy, g.obs, g.state, now)
        except Exception as e:  # a bug in the pure function: hold this group, keep deciding the rest
            log.exception("decide failed for %s (policy %s)", g.obs.ref, g.policy.name)
            failed.append((g.obs.ref, f"{type(e).__name__}: {e}"))
            continue
        if cap is not None and lowers(g.policy, cap) and ReasonCode.AT_MAX in decision.codes:
            decision = replace(decision, reasons=(*decision.reasons, _limit_reason(cap, source, view)))
        budget.decided(group, decision.target)
        outcomes.append(GroupOutcome(g, decision, state, cap, source))
    return ClusterOutcome(view, tuple(outcomes), tuple(failed))


def _limit_reason(cap: int, source: str, view: ClusterView) -> Reason:
    who = view.limits.subject
    data: Mapping[str, str | int | None] = {
        "cap": cap,
        "source": source,
        "subject": who,
        "rules": view.limits.rules,
    }
    whose = f" for {who}" if who and "PerCluster" in source else ""
    return Reason(ReasonCode.AT_MAX, f"access limit: at most {cap} here ({source}{whose})", dict(data))


def decide_all(
    observation: Observation, variants: PolicyVariants, revision: str, dry_run: bool
) -> list[ClusterOutcome]:
    return [decide_cluster(c, observation.at, variants, revision, dry_run) for c in observation.clusters]


def needs_activity(
    outcome: ClusterOutcome, now: datetime, variants: PolicyVariants, revision: str, dry_run: bool
) -> bool:
    """Whether knowing which workers are idle could change this cluster's decisions.

    A decision is monotone in idleness: a worker known idle can only lower what pending demand
    proposes (it is not "in use") and widen the choice of workers to remove; it never raises a
    target. So when deciding as if every UNKNOWN worker were idle gives the same targets and
    removals as deciding with all of them busy (the outcome at hand), the real answer lies between
    the two and is the same: no dashboard needs asking. It differs when the cluster could scale down.
    """
    if not any(w.activity == Activity.UNKNOWN for g in outcome.view.groups for w in g.obs.workers):
        return False
    hopeful = decide_cluster(assume_idle(outcome.view), now, variants, revision, dry_run)
    return _moves(hopeful) != _moves(outcome)


def _moves(outcome: ClusterOutcome) -> list[tuple[GroupRef, int, tuple[str, ...]]]:
    return [(d.ref, d.target, d.remove) for d in outcome.decisions]


def assume_idle(view: ClusterView) -> ClusterView:
    """The view with every worker of unknown activity taken for idle (a what-if, never applied)."""

    def idle(g: GroupView) -> GroupView:
        workers = tuple(
            replace(w, activity=Activity.IDLE) if w.activity == Activity.UNKNOWN else w for w in g.obs.workers
        )
        return replace(g, obs=replace(g.obs, workers=workers))

    return replace(view, groups=tuple(idle(g) for g in view.groups))
