"""Which ScalingPolicy applies to a worker group, and the static check that keeps the answer unique.

The selection rule, for a RayCluster (namespace, name, labels, annotations) and one of its groups:

1. **The annotation wins.** If the cluster carries `rayops.io/policy: NAME`, the ScalingPolicy NAME
   applies to each group of the cluster that its `workerGroups` globs match, whatever its selector
   says; the cluster's other groups get no policy. If no ScalingPolicy NAME exists, no policy
   applies and the result is `UnknownPolicy` with the reason (never a fallback to the selectors: the
   owner asked for something specific).
2. **Otherwise the selectors decide.** A policy is a candidate when its selector matches the cluster
   (a `namespaces` glob matches the namespace, a `clusters` glob the name, every `matchLabels` pair
   is among the cluster's labels) and a `workerGroups` glob matches the group. The candidate with
   the highest `priority` applies.
3. **A tie is an error, not a choice.** Two or more candidates at the highest priority give
   `Ambiguous`: no policy applies, and the reason names them. `rayops policy check` rejects sets
   where this could happen (`overlap`), so at run time it needs a set that slipped past the check.
4. No candidate: `None`; the group is not autoscaled.

Globs are shell-style (`*`, `?`, `[abc]`) and case-sensitive, matched with `fnmatch.fnmatchcase`.
An empty `namespaces` list matches nothing: a policy meant only for the annotation.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from controller.keys import ANN_POLICY
from controller.policy.model import ScalingPolicy, ScalingPolicySpec


@dataclass(frozen=True)
class Ambiguous:
    """Several policies match at the same highest priority; none applies until the set is fixed."""

    candidates: tuple[str, ...]
    priority: int

    @property
    def reason(self) -> str:
        names = ", ".join(self.candidates)
        return (
            f"ambiguous policy: {names} all match at priority {self.priority}; give one a higher "
            f"priority, narrow a selector, or set the {ANN_POLICY} annotation"
        )


@dataclass(frozen=True)
class UnknownPolicy:
    """The cluster's `rayops.io/policy` annotation names a ScalingPolicy the set does not have."""

    name: str
    known: tuple[str, ...]

    @property
    def reason(self) -> str:
        return (
            f"{ANN_POLICY} names ScalingPolicy '{self.name}', which does not exist "
            f"(known: {', '.join(self.known) or 'none'})"
        )


Selection = ScalingPolicy | Ambiguous | UnknownPolicy | None


def matches_any(value: str, globs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, g) for g in globs)


def selector_matches(
    spec: ScalingPolicySpec, namespace: str, cluster: str, labels: Mapping[str, str]
) -> bool:
    sel = spec.selector
    return (
        matches_any(namespace, sel.namespaces)
        and matches_any(cluster, sel.clusters)
        and all(labels.get(k) == v for k, v in sel.match_labels.items())
    )


def select_policy(
    policies: Iterable[ScalingPolicy],
    namespace: str,
    cluster: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    group: str,
) -> Selection:
    """Apply the rule in this module's docstring; pure, so the controller, the bot's `explain` and
    the simulator agree."""
    by_name = {p.name: p for p in policies}
    pinned = annotations.get(ANN_POLICY)
    if pinned is not None:
        pinned = pinned.strip()
        policy = by_name.get(pinned)
        if policy is None:
            return UnknownPolicy(pinned, tuple(sorted(by_name)))
        return policy if matches_any(group, policy.spec.worker_groups) else None
    candidates = [
        p
        for p in by_name.values()
        if selector_matches(p.spec, namespace, cluster, labels) and matches_any(group, p.spec.worker_groups)
    ]
    if not candidates:
        return None
    top = max(p.spec.priority for p in candidates)
    best = sorted(p.name for p in candidates if p.spec.priority == top)
    if len(best) > 1:
        return Ambiguous(tuple(best), top)
    return by_name[best[0]]


# --- Static overlap ------------------------------------------------------------------------------

_STAR = "*"
_ANY = "?"


def _units(glob: str) -> tuple[str, ...]:
    """A glob as units: `*`, `?` (any one character; a `[...]` class counts as one, conservatively)
    and literal characters, each literal prefixed with `=` so it cannot be mistaken for a wildcard."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if c == "*":
            if not out or out[-1] != _STAR:
                out.append(_STAR)
        elif c == "?":
            out.append(_ANY)
        elif c == "[":
            close = glob.find("]", i + 2 if glob[i + 1 : i + 2] in ("!", "]") else i + 1)
            if close == -1:
                out.append("=[")
            else:
                out.append(_ANY)
                i = close
        else:
            out.append("=" + c)
        i += 1
    return tuple(out)


def globs_overlap(a: str, b: str) -> bool:
    """Whether some string matches both globs. Exact for `*`, `?` and literals; a character class
    is treated as "any character", so the answer errs towards "overlap" (the safe side)."""
    pa, pb = _units(a), _units(b)

    @cache
    def go(i: int, j: int) -> bool:
        if i == len(pa) and j == len(pb):
            return True
        if i < len(pa) and pa[i] == _STAR:
            return go(i + 1, j) or (j < len(pb) and go(i, j + 1))
        if j < len(pb) and pb[j] == _STAR:
            return go(i, j + 1) or (i < len(pa) and go(i + 1, j))
        if i < len(pa) and j < len(pb):
            x, y = pa[i], pb[j]
            return (_ANY in (x, y) or x == y) and go(i + 1, j + 1)
        return False

    return go(0, 0)


def _overlapping_pair(xs: Sequence[str], ys: Sequence[str]) -> tuple[str, str] | None:
    for x in xs:
        for y in ys:
            if globs_overlap(x, y):
                return x, y
    return None


def selectors_overlap(a: ScalingPolicySpec, b: ScalingPolicySpec) -> str | None:
    """A sentence saying what both policies can match, or None when they are provably disjoint
    (some dimension has no common value, or matchLabels demand different values for one key)."""
    for key, value in a.selector.match_labels.items():
        other = b.selector.match_labels.get(key)
        if other is not None and other != value:
            return None
    parts = []
    for what, xs, ys in (
        ("namespaces", a.selector.namespaces, b.selector.namespaces),
        ("clusters", a.selector.clusters, b.selector.clusters),
        ("workerGroups", a.worker_groups, b.worker_groups),
    ):
        pair = _overlapping_pair(xs, ys)
        if pair is None:
            return None
        parts.append(f"{what} '{pair[0]}' and '{pair[1]}'")
    labels = {**a.selector.match_labels, **b.selector.match_labels}
    if labels:
        parts.append("labels " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    return "; ".join(parts)
