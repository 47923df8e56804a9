"""Access policy evaluation: who a person is to rayops, and whether they may run a command.

`AccessView` merges every AccessPolicy document of the policy set; `grant_for(identity)` turns it
into a `Grant` (the namespaces, profiles, limits and roles of the rules naming that identity);
`check` is the single place that decides whether a parsed command may run, before any handler
does. A refusal is a sentence saying why and what to do. Limits are not refusals: a request over
them waits for an approver (`over_limits`).

With no AccessPolicy document at all, only the console user is known (laptop mode: everything is
theirs); chat users are refused until DevOps writes a policy.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from bot.adapters.base import Platform
from bot.commands.table import Access, CommandSpec, Kind
from controller.backends.base import ClusterStatus
from controller.policy.durations import format_duration, parse_duration
from controller.policy.model import AccessPolicy, Subject


@dataclass(frozen=True)
class Identity:
    """A person as a platform knows them; `key` (`slack:U123`) is what annotations and audit keep."""

    platform: Platform
    user_id: str
    display: str = ""
    groups: frozenset[str] = frozenset()

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.user_id}"

    @property
    def shown(self) -> str:
        return f"{self.display} ({self.key})" if self.display and self.display != self.user_id else self.key

    @staticmethod
    def from_key(key: str, display: str = "") -> Identity | None:
        platform, _, user = key.partition(":")
        try:
            return Identity(Platform(platform), user, display) if user else None
        except ValueError:
            return None


@dataclass(frozen=True)
class Limits:
    clusters_per_user: int
    workers_per_cluster: int
    gpus_per_cluster: int
    max_ttl: timedelta | None = None

    def merge(self, other: Limits) -> Limits:
        """The more generous of two rules, field by field (rules add rights, never take them)."""
        ttl = None if self.max_ttl is None or other.max_ttl is None else max(self.max_ttl, other.max_ttl)
        return Limits(
            max(self.clusters_per_user, other.clusters_per_user),
            max(self.workers_per_cluster, other.workers_per_cluster),
            max(self.gpus_per_cluster, other.gpus_per_cluster),
            ttl,
        )


UNLIMITED = Limits(10**6, 10**6, 10**6, None)


@dataclass(frozen=True)
class RuleGrant:
    namespaces: tuple[str, ...]
    profiles: tuple[str, ...]
    limits: Limits
    devops: bool
    source: str  # "policy-name rule N", for whoami and refusals

    def covers_namespace(self, namespace: str) -> bool:
        return any(fnmatch.fnmatchcase(namespace, p) for p in self.namespaces)

    def covers_profile(self, profile: str) -> bool:
        return any(fnmatch.fnmatchcase(profile, p) for p in self.profiles)


@dataclass(frozen=True)
class Grant:
    identity: Identity
    rules: tuple[RuleGrant, ...] = ()
    approver: bool = False

    @property
    def known(self) -> bool:
        return bool(self.rules) or self.approver

    @property
    def devops(self) -> bool:
        return any(r.devops for r in self.rules)

    def may_see(self, namespace: str) -> bool:
        return any(r.covers_namespace(namespace) for r in self.rules)

    def devops_in(self, namespace: str) -> bool:
        return any(r.devops and r.covers_namespace(namespace) for r in self.rules)

    def rules_for(self, namespace: str, profile: str | None = None) -> list[RuleGrant]:
        return [
            r
            for r in self.rules
            if r.covers_namespace(namespace) and (profile is None or r.covers_profile(profile))
        ]

    def limits_for(self, namespace: str, profile: str) -> Limits | None:
        rules = self.rules_for(namespace, profile)
        if not rules:
            return None
        out = rules[0].limits
        for r in rules[1:]:
            out = out.merge(r.limits)
        return out

    def default_namespace(self) -> str | None:
        """The first namespace a rule names literally (a glob names no particular namespace)."""
        for r in self.rules:
            for ns in r.namespaces:
                if not any(c in ns for c in "*?["):
                    return ns
        return None

    def default_profile(self, namespace: str, known: Sequence[str]) -> str | None:
        """The first existing profile, in rule order, that the person may use in `namespace`."""
        for r in self.rules_for(namespace):
            for pattern in r.profiles:
                for name in known:
                    if fnmatch.fnmatchcase(name, pattern):
                        return name
        return None

    @property
    def visible_patterns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(ns for r in self.rules for ns in r.namespaces))


_GROUP_KINDS = {"slackGroup": Platform.SLACK, "kubernetesGroup": Platform.KUBERNETES}
_USER_KINDS = {
    "slackUser": Platform.SLACK,
    "matrixUser": Platform.MATRIX,
    "kubernetesUser": Platform.KUBERNETES,
    "consoleUser": Platform.CONSOLE,
}


def subject_matches(subject: Subject, identity: Identity) -> bool:
    kind, value = subject.kind, subject.value
    if kind in _USER_KINDS:
        return _USER_KINDS[kind] is identity.platform and value in ("*", identity.user_id)
    platform = _GROUP_KINDS[kind]
    return platform is identity.platform and (value == "*" or value in identity.groups)


@dataclass(frozen=True)
class AccessView:
    """Every AccessPolicy of one policy set, merged: rules concatenated in document-name order,
    approvers united; per platform, the DevOps channel of the first document naming one; the
    shortest request expiry."""

    policies: tuple[AccessPolicy, ...] = ()
    console_fallback: bool = field(default=True)

    @staticmethod
    def of(policies: Iterable[AccessPolicy]) -> AccessView:
        return AccessView(tuple(sorted(policies, key=lambda p: p.name)))

    @property
    def needs_groups(self) -> bool:
        return any(
            s.kind in _GROUP_KINDS
            for p in self.policies
            for s in [*p.spec.approvers, *(s for r in p.spec.rules for s in r.subjects)]
        )

    @property
    def request_expiry(self) -> timedelta:
        if not self.policies:
            return timedelta(hours=24)
        return min(parse_duration(p.spec.request_expiry) for p in self.policies)

    def devops_channel(self, platform: Platform) -> str | None:
        for p in self.policies:
            if platform is Platform.SLACK and p.spec.devops.slack is not None:
                return p.spec.devops.slack.channel
            if platform is Platform.MATRIX and p.spec.devops.matrix is not None:
                return p.spec.devops.matrix.room
        return None

    def grant_for(self, identity: Identity) -> Grant:
        if not self.policies:
            if self.console_fallback and identity.platform is Platform.CONSOLE:
                everything = RuleGrant(("*",), ("*",), UNLIMITED, True, "laptop default (no AccessPolicy)")
                return Grant(identity, (everything,), approver=True)
            return Grant(identity)
        rules: list[RuleGrant] = []
        approver = False
        for p in self.policies:
            if any(subject_matches(s, identity) for s in p.spec.approvers):
                approver = True
            for i, r in enumerate(p.spec.rules):
                if r.namespaces and any(subject_matches(s, identity) for s in r.subjects):
                    lim = r.limits
                    rules.append(
                        RuleGrant(
                            tuple(r.namespaces),
                            tuple(r.profiles),
                            Limits(
                                lim.clusters_per_user,
                                lim.workers_per_cluster,
                                lim.gpus_per_cluster,
                                parse_duration(lim.max_ttl) if lim.max_ttl else None,
                            ),
                            r.devops,
                            f"{p.name} rule {i + 1}",
                        )
                    )
                    approver = approver or r.devops
        return Grant(identity, tuple(rules), approver)


def unknown_user(identity: Identity) -> str:
    return (
        f"I don't know you ({identity.key}): no access rule names you. Ask DevOps to add "
        f"`{identity.key}` to an AccessPolicy."
    )


def check(
    grant: Grant,
    spec: CommandSpec,
    target: ClusterStatus | None,
    namespace: str | None = None,
    profile: str | None = None,
) -> str | None:
    """Why `grant` may not run `spec` (on `target`, or creating in `namespace` with `profile`), or
    None when it may. The only authorization decision in the bot."""
    if spec.access is Access.ANYONE:
        return None
    if not grant.known:
        return unknown_user(grant.identity)
    if spec.access is Access.APPROVER:
        return None if grant.approver else "only approvers may approve or deny requests"
    if spec.access is Access.DEVOPS and target is None:
        return None if grant.devops else f"`{spec.name}` is for DevOps only"
    if spec.name == "create" and namespace is not None:
        if not grant.rules_for(namespace):
            return f"you may not use namespace {namespace}" + _your_namespaces(grant)
        if profile is not None and not grant.rules_for(namespace, profile):
            allowed = sorted({p for r in grant.rules_for(namespace) for p in r.profiles})
            return (
                f"you may not use profile {profile} in {namespace} (allowed: {', '.join(allowed) or 'none'})"
            )
        return None
    if namespace is not None and target is None and not grant.may_see(namespace):
        return f"you may not use namespace {namespace}" + _your_namespaces(grant)
    if target is None:
        return None
    ns = target.ref.namespace
    if not grant.may_see(ns):
        return f"you may not use namespace {ns}" + _your_namespaces(grant)
    if spec.access is Access.DEVOPS:
        return None if grant.devops_in(ns) else f"`{spec.name}` is for DevOps only"
    if spec.access is Access.OWNER:
        if target.requester == grant.identity.key or grant.devops_in(ns):
            return None
        owner = target.requester or "nobody (it was not requested through rayops)"
        return f"only its requester, {owner}, or DevOps may change {target.ref.name}"
    return None


def _your_namespaces(grant: Grant) -> str:
    return f" (yours: {', '.join(grant.visible_patterns)})" if grant.visible_patterns else ""


def over_limits(
    limits: Limits,
    *,
    workers: int = 0,
    gpus: int = 0,
    ttl: timedelta | None = None,
    clusters_after: int = 0,
) -> list[str]:
    """Each limit a request would exceed, as a phrase (`workers 8 > 4`); empty when within."""
    out = []
    if clusters_after > limits.clusters_per_user:
        out.append(f"clusters {clusters_after} > {limits.clusters_per_user}")
    if workers > limits.workers_per_cluster:
        out.append(f"workers {workers} > {limits.workers_per_cluster}")
    if gpus > limits.gpus_per_cluster:
        out.append(f"GPUs {gpus} > {limits.gpus_per_cluster}")
    if ttl is not None and limits.max_ttl is not None and ttl > limits.max_ttl:
        out.append(f"time-to-live {format_duration(ttl)} > {format_duration(limits.max_ttl)}")
    return out


def describe(grant: Grant) -> list[str]:
    """Lines for `whoami`."""
    if not grant.known:
        return [unknown_user(grant.identity)]
    lines = []
    for r in grant.rules:
        lim = r.limits
        ttl = format_duration(lim.max_ttl) if lim.max_ttl else "profile's"
        limits = (
            "no limits"
            if lim == UNLIMITED
            else f"{lim.clusters_per_user} clusters, {lim.workers_per_cluster} workers and "
            f"{lim.gpus_per_cluster} GPUs per cluster, time-to-live {ttl}"
        )
        lines.append(
            f"{r.source}: namespaces {', '.join(r.namespaces)}; profiles {', '.join(r.profiles) or 'none'}; "
            f"{limits}" + ("; DevOps" if r.devops else "")
        )
    if grant.approver:
        lines.append("you may approve and deny requests")
    return lines


def cluster_param(spec: CommandSpec) -> bool:
    return any(p.kind is Kind.CLUSTER for p in spec.params)
