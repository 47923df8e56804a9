"""Access-policy limits on every managed cluster, however it was created (issue 6 point 5).

The bot checks a person's limits when they ask for a cluster; a notebook, GitOps or a hand-written
RayCluster opted in with a label never passed that check, and a policy's `maxReplicas` may be far above
what one person may hold. So the loop caps each group before deciding:

- the cluster's profile (`rayops.io/profile`): each group at most the profile's `maxWorkers`;
- its requester (`rayops.io/requester`, an identity key such as `slack:U123` or `console:alice`): the
  merged limits of the AccessPolicy rules naming that user in the cluster's namespace (and profile),
  the most generous rule winning as in the bot (bot/authz.py): `workersPerCluster` over all groups,
  `gpusPerCluster` over the GPU groups.

An approver may have allowed more: a request over the limits that was approved leaves
`rayops.io/approved-limits` on the cluster (written by the bot), and the caps are then the larger of
it and the rule limits, so the approved size is not clamped back on the next tick. The profile's own
bounds stay hard (the bot refuses a request past them, approved or not).

Group subjects (a Slack or Kubernetes group) cannot be resolved here (membership lives with the chat
platform), so a requester known only through a group gets the profile caps alone. With no AccessPolicy
at all (laptop mode) only the profile caps apply, as the bot's console fallback allows everything.

The caps become the group's `maxReplicas` for `decide` (a copy of the policy), so scale-down to a cap
still removes idle workers only, with the usual reasons; the loop adds the reason and one
`LimitClamped` alert per incident.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from controller import keys
from controller.annotations import ApprovedLimits, decode_approved_limits
from controller.backends.base import ManagedCluster
from controller.policy.loader import PolicySet
from controller.policy.model import AccessLimits, AccessPolicy, Subject

# Subject kinds naming one user of one platform (identity key prefix).
_USER_KINDS = {
    "slackUser": "slack",
    "matrixUser": "matrix",
    "kubernetesUser": "kubernetes",
    "consoleUser": "console",
}


@dataclass(frozen=True)
class ClusterLimits:
    """What one cluster may hold; None: no limit from that source."""

    workers: int | None = None  # all worker groups together
    gpus: int | None = None  # GPUs of all GPU groups together
    per_group: Mapping[str, int] = field(default_factory=dict)  # the profile's maxWorkers per group
    subject: str | None = None  # the requester whose rules gave `workers`/`gpus`
    rules: str = ""  # which rules, for messages
    approved: ApprovedLimits | None = None  # an approval that raised `workers` or `gpus`

    @property
    def any(self) -> bool:
        return self.workers is not None or self.gpus is not None or bool(self.per_group)


def _user_matches(subject: Subject, platform: str, user: str) -> bool:
    kind_platform = _USER_KINDS.get(subject.kind)
    return kind_platform == platform and subject.value in ("*", user)


def _matching_limits(
    policies: Mapping[str, AccessPolicy], requester: str, namespace: str, profile: str | None
) -> tuple[AccessLimits | None, str]:
    platform, _, user = requester.partition(":")
    if not user:
        return None, ""
    merged: AccessLimits | None = None
    names: list[str] = []
    for name in sorted(policies):
        for i, rule in enumerate(policies[name].spec.rules):
            if not any(_user_matches(s, platform, user) for s in rule.subjects):
                continue
            if not any(fnmatch.fnmatchcase(namespace, p) for p in rule.namespaces):
                continue
            if profile is not None and not any(fnmatch.fnmatchcase(profile, p) for p in rule.profiles):
                continue
            lim = rule.limits
            merged = (
                lim
                if merged is None
                else AccessLimits(
                    clusters_per_user=max(merged.clusters_per_user, lim.clusters_per_user),
                    workers_per_cluster=max(merged.workers_per_cluster, lim.workers_per_cluster),
                    gpus_per_cluster=max(merged.gpus_per_cluster, lim.gpus_per_cluster),
                )
            )
            names.append(f"{name} rule {i + 1}")
    return merged, ", ".join(names)


def limits_for(cluster: ManagedCluster, policy_set: PolicySet) -> ClusterLimits:
    ann = cluster.annotations
    profile_name = ann.get(keys.ANN_PROFILE)
    per_group: dict[str, int] = {}
    profile = policy_set.cluster_profiles.get(profile_name) if profile_name else None
    if profile is not None:
        per_group = {g.name: g.max_workers for g in profile.spec.worker_groups}
    requester = ann.get(keys.ANN_REQUESTER)
    if not requester or not policy_set.access_policies:
        return ClusterLimits(per_group=per_group)
    merged, rules = _matching_limits(
        policy_set.access_policies, requester, cluster.ref.namespace, profile_name if profile else None
    )
    if merged is None:
        return ClusterLimits(per_group=per_group)
    workers, gpus = merged.workers_per_cluster, merged.gpus_per_cluster
    approved = decode_approved_limits(ann.get(keys.ANN_APPROVED_LIMITS))
    if approved is None or (approved.workers <= workers and approved.gpus <= gpus):
        return ClusterLimits(workers, gpus, per_group, requester, rules)
    return ClusterLimits(
        max(workers, approved.workers), max(gpus, approved.gpus), per_group, requester, rules, approved
    )


@dataclass
class CapBudget:
    """Hands out caps group by group so the cluster's totals stay within its limits.

    Groups are decided in order; each group may use what the limit leaves after the targets already
    decided for earlier groups and the current counts of later ones (which may only shrink). Whatever
    busy workers keep a group above its cap (they are never removed), the next groups see it.
    """

    limits: ClusterLimits
    gpus_per_worker: Mapping[str, float]
    counts: dict[str, int]  # current count per group, replaced by targets as groups are decided

    def cap(self, group: str) -> tuple[int | None, str]:
        """(cap on this group's workers or None, what set it)."""
        caps: list[tuple[int, str]] = []
        if group in self.limits.per_group:
            caps.append((self.limits.per_group[group], "the profile's maxWorkers"))
        others = sum(n for g, n in self.counts.items() if g != group)
        if self.limits.workers is not None:
            caps.append((max(0, self.limits.workers - others), self._label("workersPerCluster", "workers")))
        gpw = self.gpus_per_worker.get(group, 0.0)
        if self.limits.gpus is not None and gpw > 0:
            other_gpus = sum(
                n * self.gpus_per_worker.get(g, 0.0) for g, n in self.counts.items() if g != group
            )
            left = max(0.0, self.limits.gpus - other_gpus)
            caps.append((math.floor(left / gpw + 1e-9), self._label("gpusPerCluster", "gpus")))
        if not caps:
            return None, ""
        return min(caps, key=lambda c: c[0])

    def _label(self, rule_name: str, field_name: str) -> str:
        """`workersPerCluster 4`, or where an approval raised it `approved workers 6 (request ID by X)`."""
        value = getattr(self.limits, field_name)
        approved = self.limits.approved
        if approved is not None and getattr(approved, field_name) == value:
            via = f" (request {approved.request} by {approved.by})" if approved.request else ""
            return f"approved {field_name} {value}{via}"
        return f"{rule_name} {value}"

    def decided(self, group: str, target: int) -> None:
        self.counts[group] = target
