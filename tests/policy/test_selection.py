"""The selection rule (annotation, then highest priority, a tie is an error) and the static overlap
check that makes a tie impossible in a valid set."""

from __future__ import annotations

import fnmatch
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.keys import ANN_POLICY
from controller.policy.model import ScalingPolicy
from controller.policy.selection import (
    Ambiguous,
    UnknownPolicy,
    globs_overlap,
    select_policy,
    selectors_overlap,
)


def sp(name: str, priority: int = 0, groups: list[str] | None = None, **selector: Any) -> ScalingPolicy:
    return ScalingPolicy.model_validate(
        {
            "apiVersion": "rayops.io/v1alpha1",
            "kind": "ScalingPolicy",
            "metadata": {"name": name},
            "spec": {
                "maxReplicas": 4,
                "priority": priority,
                "workerGroups": groups or ["*"],
                "selector": selector,
            },
        }
    )


DEFAULT = sp("default")
GPU = sp("gpu", priority=10, groups=["gpu*"])
TEAM = sp("team", priority=20, matchLabels={"team": "nlp"})
PROD = sp("prod", priority=20, namespaces=["prod-*"])
PINNED_ONLY = sp("special", priority=99, namespaces=[])
ALL = [DEFAULT, GPU, TEAM, PROD, PINNED_ONLY]


@pytest.mark.parametrize(
    ("namespace", "labels", "annotations", "group", "expected"),
    [
        ("dev", {}, {}, "workers", "default"),
        ("dev", {}, {}, "gpu-a100", "gpu"),
        ("dev", {"team": "nlp", "other": "x"}, {}, "gpu", "team"),  # higher priority wins
        ("dev", {"team": "cv"}, {}, "workers", "default"),  # label value must match
        ("prod-eu", {}, {}, "workers", "prod"),
        ("dev", {}, {ANN_POLICY: "gpu"}, "gpu-1", "gpu"),
        ("prod-eu", {"team": "nlp"}, {ANN_POLICY: "default"}, "workers", "default"),  # annotation wins
        ("dev", {}, {ANN_POLICY: " special "}, "workers", "special"),  # an annotation-only policy
    ],
)
def test_selection_rule(
    namespace: str, labels: dict[str, str], annotations: dict[str, str], group: str, expected: str
) -> None:
    chosen = select_policy(ALL, namespace, "c1", labels, annotations, group)
    assert isinstance(chosen, ScalingPolicy) and chosen.name == expected


def test_same_priority_tie_is_ambiguous_never_a_silent_pick() -> None:
    chosen = select_policy(ALL, "prod-eu", "c1", {"team": "nlp"}, {}, "workers")
    assert chosen == Ambiguous(("prod", "team"), 20)
    assert chosen.reason == (
        "ambiguous policy: prod, team all match at priority 20; give one a higher priority, "
        f"narrow a selector, or set the {ANN_POLICY} annotation"
    )


def test_annotation_naming_a_missing_policy_applies_nothing() -> None:
    chosen = select_policy(ALL, "dev", "c1", {}, {ANN_POLICY: "gpu-old"}, "workers")
    assert isinstance(chosen, UnknownPolicy)
    assert chosen.reason == (
        f"{ANN_POLICY} names ScalingPolicy 'gpu-old', which does not exist "
        "(known: default, gpu, prod, special, team)"
    )


def test_annotated_policy_still_filters_groups() -> None:
    assert select_policy(ALL, "dev", "c1", {}, {ANN_POLICY: "gpu"}, "workers") is None


def test_no_match_is_none() -> None:
    assert select_policy([GPU, TEAM], "dev", "c1", {}, {}, "workers") is None
    assert select_policy([], "dev", "c1", {}, {}, "workers") is None


def test_cluster_globs() -> None:
    p = sp("only-big", clusters=["big-*", "huge"])
    assert select_policy([p], "ns", "big-1", {}, {}, "w") == p
    assert select_policy([p], "ns", "huge", {}, {}, "w") == p
    assert select_policy([p], "ns", "huger", {}, {}, "w") is None


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("*", "anything", True),
        ("ray-*", "ray-prod", True),
        ("ray-*", "*-prod", True),  # ray-prod
        ("ray-*", "spark-*", False),
        ("a*", "*b", True),
        ("a?c", "abc", True),
        ("a?c", "ab", False),
        ("abc", "abd", False),
        ("gpu*", "cpu*", False),
        ("*gpu", "*cpu", False),
        ("*x*", "*y*", True),  # xy
        ("[ab]x", "cx", True),  # character classes count as "any": the safe side
        ("", "", True),
        ("", "*", True),
        ("", "a", False),
    ],
)
def test_globs_overlap(a: str, b: str, overlap: bool) -> None:
    assert globs_overlap(a, b) is overlap
    assert globs_overlap(b, a) is overlap


_GLOB = st.text(alphabet="ab*?", max_size=4)


@settings(max_examples=400, deadline=None)
@given(_GLOB, _GLOB)
def test_globs_overlap_is_exact_without_classes(a: str, b: str) -> None:
    """True exactly when a common string exists; over this alphabet one exists of length at most
    len(a) + len(b) if any does (each star can make do with the other side's characters)."""
    witnesses = ("".join(w) for n in range(len(a) + len(b) + 1) for w in itertools.product("ab", repeat=n))
    exists = any(fnmatch.fnmatchcase(w, a) and fnmatch.fnmatchcase(w, b) for w in witnesses)
    assert globs_overlap(a, b) is exists


def test_selectors_overlap_names_what_both_match() -> None:
    assert selectors_overlap(DEFAULT.spec, PROD.spec) == (
        "namespaces '*' and 'prod-*'; clusters '*' and '*'; workerGroups '*' and '*'"
    )
    assert selectors_overlap(TEAM.spec, sp("x", matchLabels={"tier": "gold"}).spec) == (
        "namespaces '*' and '*'; clusters '*' and '*'; workerGroups '*' and '*'; labels team=nlp, tier=gold"
    )


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (TEAM, sp("cv", priority=20, matchLabels={"team": "cv"})),  # conflicting label value
        (PROD, sp("dev", priority=20, namespaces=["dev-*"])),
        (GPU, sp("cpu", priority=10, groups=["cpu*"])),
        (PINNED_ONLY, DEFAULT),  # an empty namespace list matches nothing
        (sp("a", clusters=["a-*"]), sp("b", clusters=["b-*"])),
    ],
)
def test_provably_disjoint_selectors(a: ScalingPolicy, b: ScalingPolicy) -> None:
    assert selectors_overlap(a.spec, b.spec) is None
    assert selectors_overlap(b.spec, a.spec) is None
