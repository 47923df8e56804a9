"""Step 1 of a tick: observe. Everything `decide` will need, gathered once, with no writes.

- the opted-in clusters and their groups and workers (the backend: one list);
- which ScalingPolicy applies to each group (`PolicySet.scaling_policy_for` with the cluster's labels and
  annotations); a group with none, or with an ambiguous or unknown one, is left alone with that reason;
- the signals every applicable policy needs, deduplicated across policies, fetched in **one** call for
  all groups of all clusters (so Prometheus queries do not grow with the number of clusters);
- per group: the samples under the policy's signal names, the pause, pin, Kueue and in-tree flags;
- the decision state saved on the cluster (`rayops.io/state`), or the in-memory one when the
  annotation is still what this process last saw (it is more recent: see controller/records.py).

Failures at the edge become data: the metrics layer returns "unavailable" samples, never raises; a
cluster list that fails raises `BackendError` to the caller, which skips the tick (nothing to decide on).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from controller import keys, records
from controller.annotations import decode_pin
from controller.backends.base import ManagedCluster, ManagedGroup, ScaleTarget
from controller.domain import ClusterRef, GroupObservation, GroupRef, Sample, SignalSpec
from controller.limits import ClusterLimits, limits_for
from controller.metrics.base import FetchResult, MetricsSource, MetricTarget
from controller.pause import PauseState
from controller.policy.loader import PolicySet
from controller.policy.model import ScalingPolicy
from controller.policy.selection import Ambiguous, UnknownPolicy
from controller.policy.signals import required_signals
from controller.policy.state import GroupState
from controller.scrub import Scrubber


@dataclass(frozen=True)
class GroupView:
    """One group ready to be decided: its policy, observation and saved state."""

    group: ManagedGroup
    policy: ScalingPolicy
    obs: GroupObservation
    state: GroupState


@dataclass(frozen=True)
class ClusterView:
    cluster: ManagedCluster
    groups: tuple[GroupView, ...]
    limits: ClusterLimits
    unmanaged: tuple[tuple[GroupRef, str], ...] = ()  # groups no policy applies to, and why

    @property
    def ref(self) -> ClusterRef:
        return self.cluster.ref


@dataclass(frozen=True)
class Observation:
    at: datetime
    clusters: tuple[ClusterView, ...]
    signals: tuple[SignalSpec, ...]
    fetch: FetchResult
    pause: PauseState

    @property
    def group_count(self) -> int:
        return sum(len(c.groups) for c in self.clusters)


@dataclass
class _Known:
    """What this process last saw in (or wrote to) one cluster's annotations, and what it announced."""

    state_text: str | None = None
    written_states: dict[str, GroupState] = field(default_factory=dict)  # as the annotation holds them
    live_states: dict[str, GroupState] = field(default_factory=dict)  # after this process's last tick
    decision_text: str | None = None
    annotated: dict[str, records.DecisionKey] = field(default_factory=dict)  # per group, as annotated
    reported: dict[str, records.DecisionKey] = field(default_factory=dict)  # per group, as announced


class AnnotationMemory:
    """The last decision and state per cluster, as written by this process or read from the cluster.

    Reading an annotation again only when its text differs from what we know keeps a steady tick free
    of JSON parsing, and lets a replica that was not the leader pick up what the leader wrote (and not
    announce again what the leader announced). The live state is newer than the annotated one while
    the state's signature is unchanged (controller/records.py), so it is what `decide` continues from.
    """

    def __init__(self) -> None:
        self._known: dict[ClusterRef, _Known] = {}
        self._lock = threading.Lock()

    def _sync(self, cluster: ManagedCluster) -> _Known:
        k = self._known.get(cluster.ref)
        if k is None:
            k = self._known[cluster.ref] = _Known()
        state_text = cluster.annotations.get(keys.ANN_STATE)
        if state_text != k.state_text:
            k.state_text = state_text
            k.written_states = records.decode_states(state_text)
            k.live_states = dict(k.written_states)
        decision_text = cluster.annotations.get(keys.ANN_DECISION)
        if decision_text != k.decision_text:
            k.decision_text = decision_text
            k.annotated = {
                d.ref.group: records.decision_key(d) for d in records.decode_decisions(decision_text)
            }
            k.reported = dict(k.annotated)
        return k

    def states(self, cluster: ManagedCluster) -> dict[str, GroupState]:
        with self._lock:
            return dict(self._sync(cluster).live_states)

    def annotated(
        self, cluster: ManagedCluster
    ) -> tuple[dict[str, records.DecisionKey], dict[str, GroupState]]:
        """(per-group decision keys, per-group states) as the cluster's annotations hold them."""
        with self._lock:
            k = self._sync(cluster)
            return dict(k.annotated), dict(k.written_states)

    def reported(self, cluster: ManagedCluster) -> dict[str, records.DecisionKey]:
        with self._lock:
            return dict(self._sync(cluster).reported)

    def after_tick(
        self,
        ref: ClusterRef,
        states: dict[str, GroupState],
        reported: dict[str, records.DecisionKey],
        wrote: tuple[str, str] | None,
        annotated: dict[str, records.DecisionKey] | None = None,
    ) -> None:
        """Record the tick's live states and announced keys; `wrote` is (decision text, state text)."""
        with self._lock:
            k = self._known.get(ref)
            if k is None:
                k = self._known[ref] = _Known()
            k.live_states = dict(states)
            k.reported.update(reported)
            if wrote is not None:
                k.decision_text, k.state_text = wrote
                k.written_states = dict(states)
                if annotated is not None:
                    k.annotated = dict(annotated)

    def forget_except(self, refs: set[ClusterRef]) -> None:
        with self._lock:
            for ref in list(self._known):
                if ref not in refs:
                    del self._known[ref]


def _select(policy_set: PolicySet, cluster: ManagedCluster, group: ManagedGroup) -> ScalingPolicy | str:
    sel = policy_set.scaling_policy_for(
        cluster.ref.namespace, cluster.ref.name, cluster.labels, cluster.annotations, group.ref.group
    )
    if isinstance(sel, Ambiguous | UnknownPolicy):
        return sel.reason
    if sel is None:
        return "no ScalingPolicy matches this group"
    return sel


def _observation(
    cluster: ManagedCluster,
    group: ManagedGroup,
    policy: ScalingPolicy,
    fetch: FetchResult,
    pause: PauseState,
    scrub: Scrubber,
) -> GroupObservation:
    ann = cluster.annotations
    samples: dict[str, Sample] = {
        s.name: scrub.sample(fetch.get(group.ref, s.spec())) for s in policy.spec.signals
    }
    return GroupObservation(
        ref=group.ref,
        current=group.replicas,
        min_replicas=group.min_replicas,
        max_replicas=group.max_replicas,
        ready=group.ready,
        workers=group.workers,
        pending_deletes=group.pending_deletes,
        samples=samples,
        worker_resources=dict(group.worker_resources),
        paused=ann.get(keys.ANN_PAUSED) == "true",
        global_pause=pause.paused,
        pin=decode_pin(ann.get(keys.ANN_MANUAL_REPLICAS)),
        kueue_queue=cluster.kueue_queue,
        in_tree_autoscaling=cluster.in_tree_autoscaling,
    )


def observe(
    backend: ScaleTarget,
    metrics: MetricsSource,
    policy_set: PolicySet,
    memory: AnnotationMemory,
    pause: PauseState,
    now: datetime,
    clusters: Sequence[ManagedCluster] | None = None,
    scrub: Scrubber | None = None,
) -> Observation:
    """Gather one tick's inputs. `clusters` skips the backend list (a caller that already listed).

    Causes of unavailable samples go through `scrub`: they end up in decisions, annotations and events.
    """
    scrub = scrub or Scrubber()
    listed = list(backend.list_clusters()) if clusters is None else list(clusters)
    selected: list[
        tuple[ManagedCluster, list[tuple[ManagedGroup, ScalingPolicy]], list[tuple[GroupRef, str]]]
    ] = []
    signals: dict[SignalSpec, None] = {}
    targets: list[MetricTarget] = []
    for cluster in listed:
        chosen: list[tuple[ManagedGroup, ScalingPolicy]] = []
        skipped: list[tuple[GroupRef, str]] = []
        held = pause.paused or cluster.annotations.get(keys.ANN_PAUSED) == "true"
        for group in cluster.groups:
            policy = _select(policy_set, cluster, group)
            if isinstance(policy, str):
                skipped.append((group.ref, policy))
                continue
            chosen.append((group, policy))
            if held or policy.spec.paused or policy.spec.mode == "bounds":
                continue  # decide reads no signal here: do not ask dashboards or Prometheus for it
            wanted = required_signals(policy)
            if wanted:
                signals.update(dict.fromkeys(wanted))
                targets.append(MetricTarget(group.ref, dict(group.worker_resources), cluster.dashboard_url))
        selected.append((cluster, chosen, skipped))
    fetch = metrics.fetch(targets, list(signals), now) if targets and signals else FetchResult()
    views: list[ClusterView] = []
    for cluster, chosen, skipped in selected:
        states = memory.states(cluster)
        groups = tuple(
            GroupView(
                group,
                policy,
                _observation(cluster, group, policy, fetch, pause, scrub),
                states.get(group.ref.group, GroupState.empty()),
            )
            for group, policy in chosen
        )
        views.append(ClusterView(cluster, groups, limits_for(cluster, policy_set), tuple(skipped)))
    memory.forget_except({c.ref for c in listed})
    return Observation(now, tuple(views), tuple(signals), fetch, pause)


def with_cluster(view: ClusterView, cluster: ManagedCluster) -> ClusterView:
    """The view of the same cluster listed again (with node activity): groups take its workers;
    policies, samples and states stay as observed this tick."""
    groups = {g.ref.group: g for g in cluster.groups}
    out = []
    for g in view.groups:
        fresh = groups.get(g.group.ref.group)
        if fresh is None:
            out.append(g)
            continue
        obs = replace(g.obs, workers=fresh.workers, ready=fresh.ready, pending_deletes=fresh.pending_deletes)
        out.append(replace(g, group=fresh, obs=obs))
    return replace(view, cluster=cluster, groups=tuple(out))
