"""The policy loader: every bad input gives its exact `path:line: field: message`, a set with any
error is refused whole, and the hot-reload store keeps the last good set and alerts once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.policy import loader as loader_module
from controller.policy.errors import PolicyError, PolicySetInvalid
from controller.policy.loader import (
    PolicySet,
    PolicyStore,
    ReloadStatus,
    check_directory,
    load_policy_set,
)
from controller.policy.model import ClusterProfile, ScalingPolicy
from controller.policy.source import SourceFile

REPO = Path(__file__).resolve().parents[2]


def policy(name: str, spec: str, kind: str = "ScalingPolicy") -> str:
    """A document whose spec starts on line 6: `spec:` is line 5."""
    return f"apiVersion: rayops.io/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}"


def write_files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).write_text(text)


def error_lines(root: Path) -> list[str]:
    result = check_directory(str(root))
    return [str(e).replace(str(root) + os.sep, "") for e in result.errors]


# (case id, files, the exact error lines, with the test directory's path removed wherever it occurs)
BAD_INPUTS: list[tuple[str, dict[str, str], list[str]]] = [
    (
        "unknown field typo",
        {"p.yaml": policy("p", "  maxReplicas: 3\n  minReplica: 1\n")},
        ["p.yaml:7: spec.minReplica: unknown field (got 'minReplica'; expected 'minReplicas')"],
    ),
    (
        "unknown field with no close match lists the known ones",
        {"p.yaml": policy("p", "  maxReplicas: 3\n  selector:\n    zone: a\n")},
        [
            "p.yaml:8: spec.selector.zone: unknown field "
            "(got 'zone'; expected one of namespaces, clusters, matchLabels)"
        ],
    ),
    (
        "wrong type: a quoted number",
        {"p.yaml": policy("p", '  maxReplicas: "5"\n')},
        ["p.yaml:6: spec.maxReplicas: wrong type (got '5'; expected an integer)"],
    ),
    (
        "wrong type: a YAML 1.1 boolean where a label value is expected",
        {"p.yaml": policy("p", "  maxReplicas: 3\n  selector:\n    matchLabels: {gpu: yes}\n")},
        [
            "p.yaml:8: spec.selector.matchLabels.gpu: wrong type "
            '(got yes; expected a string (quote it: "yes"))'
        ],
    ),
    (
        "nested list index path",
        {
            "p.yaml": policy(
                "p",
                "  maxReplicas: 3\n  behavior:\n    scaleDown:\n      policies:\n"
                "        - {type: Pods, value: 1, periodSeconds: 60}\n"
                "        - type: Pods\n          value: 1\n          periodSeconds: 0\n",
            )
        },
        ["p.yaml:13: spec.behavior.scaleDown.policies[1].periodSeconds: too small (got 0; expected >= 1)"],
    ),
    (
        "not an allowed value",
        {"p.yaml": policy("p", "  maxReplicas: 3\n  mode: onwer\n")},
        ["p.yaml:7: spec.mode: not an allowed value (got 'onwer'; expected 'owner' or 'bounds')"],
    ),
    (
        "missing field points at its parent",
        {"p.yaml": policy("p", "  minReplicas: 0\n")},
        ["p.yaml:5: spec.maxReplicas: missing required field (got nothing; expected an integer)"],
    ),
    (
        "min > max",
        {"p.yaml": policy("p", "  maxReplicas: 3\n  minReplicas: 5\n")},
        ["p.yaml:7: spec.minReplicas: minReplicas 5 > maxReplicas 3 (got 5; expected at most maxReplicas 3)"],
    ),
    (
        "unknown kind",
        {"p.yaml": policy("p", "  x: 1\n", kind="ScalingPolicie")},
        [
            "p.yaml:2: kind: unknown kind (got 'ScalingPolicie'; "
            "expected one of ScalingPolicy, ClusterProfile, AccessPolicy)"
        ],
    ),
    (
        "a document that is not a mapping",
        {"p.yaml": "- a\n- b\n"},
        [
            "p.yaml:1: document: a policy document must be a mapping "
            "(got a list; expected apiVersion, kind, metadata and spec)"
        ],
    ),
    (
        "duplicate key in one mapping",
        {"p.yaml": policy("p", "  maxReplicas: 3\n  maxReplicas: 4\n")},
        [
            "p.yaml:7: spec.maxReplicas: duplicate key "
            "(got 'maxReplicas' again, first on line 6; expected each key once)"
        ],
    ),
    (
        "duplicate names across files",
        {"a.yaml": policy("same", "  maxReplicas: 3\n"), "b.yaml": policy("same", "  maxReplicas: 3\n")},
        [
            "b.yaml:4: metadata.name: duplicate ScalingPolicy name (got 'same', already defined at "
            "a.yaml:4; expected a name used once per kind)"
        ],
    ),
    (
        "dangling profile -> policy reference",
        {
            "p.yaml": policy("cpu", "  maxReplicas: 3\n"),
            "profile.yaml": policy("small", "  scalingPolicy: cpu-defualt\n", kind="ClusterProfile"),
        },
        [
            "profile.yaml:6: spec.scalingPolicy: no ScalingPolicy named 'cpu-defualt' "
            "(got 'cpu-defualt'; expected one of cpu)"
        ],
    ),
    (
        "dangling access rule -> profile reference",
        {
            "a.yaml": policy("ops", "  rules:\n    - profiles: [small, huge]\n", kind="AccessPolicy"),
            "b.yaml": policy("small", "  scalingPolicy: null\n", kind="ClusterProfile"),
        },
        [
            "a.yaml:7: spec.rules[0].profiles[1]: no ClusterProfile named 'huge' "
            "(got 'huge'; expected one of small)"
        ],
    ),
    (
        "access rule glob matching no profile",
        {
            "a.yaml": policy("ops", "  rules:\n    - profiles: [small, 'gpu-*']\n", kind="AccessPolicy"),
            "b.yaml": policy("small", "  scalingPolicy: null\n", kind="ClusterProfile"),
        },
        [
            "a.yaml:7: spec.rules[0].profiles[1]: no ClusterProfile matches 'gpu-*' "
            "(got 'gpu-*'; expected one of small)"
        ],
    ),
    (
        "overlapping selectors at one priority",
        {
            "a.yaml": policy("a", "  maxReplicas: 3\n  selector: {namespaces: ['ray-*']}\n"),
            "b.yaml": policy("b", "  maxReplicas: 3\n  selector: {namespaces: ['*-prod']}\n"),
        },
        [
            "b.yaml:7: spec.selector: overlaps ScalingPolicy 'a' (a.yaml:4) at the same priority 0 "
            "(got both matching namespaces 'ray-*' and '*-prod'; clusters '*' and '*'; "
            "workerGroups '*' and '*'; expected a distinct spec.priority or a narrower selector)"
        ],
    ),
    (
        "window that never opens",
        {
            "p.yaml": policy(
                "p",
                "  maxReplicas: 3\n  schedules:\n"
                "    - name: feb30\n      cron: '0 0 30 2 *'\n      duration: 1h\n      maxReplicas: 1\n",
            )
        },
        [
            "p.yaml:9: spec.schedules[0].cron: the window never opens: no date matches "
            "(got '0 0 30 2 *'; expected a cron that fires, e.g. '0 20 * * 1-5')"
        ],
    ),
    (
        "bad timezone",
        {
            "p.yaml": policy(
                "p",
                "  maxReplicas: 3\n  schedules:\n"
                "    - {name: n, cron: '0 20 * * *', duration: 1h, timezone: America/NewYork,\n"
                "       maxReplicas: 1}\n",
            )
        },
        [
            "p.yaml:8: spec.schedules[0].timezone: unknown IANA timezone "
            "(got 'America/NewYork'; expected a name like America/New_York, Europe/Paris or UTC)"
        ],
    ),
    (
        "window bounds contradict the policy's",
        {
            "p.yaml": policy(
                "p",
                "  minReplicas: 2\n  maxReplicas: 3\n  schedules:\n"
                "    - {name: n, cron: '0 20 * * *', duration: 1h, maxReplicas: 1}\n",
            )
        },
        [
            "p.yaml:9: spec.schedules[0].maxReplicas: the window's maxReplicas 1 is below the policy's "
            "minReplicas 2 (got 1; expected at least 2, or a minReplicas in this schedule too)"
        ],
    ),
    (
        "unbalanced PromQL",
        {
            "p.yaml": policy(
                "p",
                "  maxReplicas: 3\n  signals:\n    - name: q\n      type: promql\n"
                "      query: sum by (namespace, ray_io_cluster, ray_io_group) (rate(q[5m])\n"
                "      target: {averageValue: 10}\n",
            )
        },
        [
            "p.yaml:10: spec.signals[0].query: unbalanced brackets: '(' at column 50 is never closed "
            "(got 'sum by (namespace, ray_io_cluster, ray_io_group) (rate(q[5m])'; expected a matching ')')"
        ],
    ),
    (
        "by clause lacking the mapping labels",
        {
            "p.yaml": policy(
                "p",
                "  maxReplicas: 3\n  signals:\n    - name: q\n      type: promql\n"
                "      query: sum by (ray_io_cluster) (my_queue_depth)\n      target: {averageValue: 10}\n",
            )
        },
        [
            "p.yaml:10: spec.signals[0].query: the outermost aggregation drops the mapping labels namespace, "
            "ray_io_group (got sum by (ray_io_cluster) (my_queue_depth); expected "
            "sum by (ray_io_cluster, namespace, ray_io_group) (my_queue_depth))"
        ],
    ),
    (
        "YAML syntax error with its line",
        {"p.yaml": policy("p", "  maxReplicas: 3\n  signals: [a, b\n  mode: owner\n")},
        [
            "p.yaml:8: yaml: expected ',' or ']', but got ':' at column 7, while parsing a flow sequence "
            "on line 7 (got 'mode: owner'; expected valid YAML)"
        ],
    ),
    (
        "not UTF-8",
        {},
        ["p.yaml:2: file: not UTF-8 text (got byte 0xff; expected UTF-8)"],
    ),
]


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gives_the_exact_error(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    write_files(tmp_path, files)
    if not files:  # the non-UTF-8 case
        (tmp_path / "p.yaml").write_bytes(b"apiVersion: rayops.io/v1alpha1\nkind: \xff\n")
    assert error_lines(tmp_path) == expected
    with pytest.raises(PolicySetInvalid) as info:
        load_policy_set(str(tmp_path))
    assert [str(e).replace(str(tmp_path) + os.sep, "") for e in info.value.errors] == expected


def test_several_errors_in_one_document_are_all_reported(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "p.yaml": policy(
                "p",
                "  maxReplicas: 3\n  mode: onwer\n  signals:\n"
                "    - {name: q, type: promql, query: sum(x), target: {averageValue: 1}}\n",
            )
        },
    )
    assert error_lines(tmp_path) == [
        "p.yaml:7: spec.mode: not an allowed value (got 'onwer'; expected 'owner' or 'bounds')",
        "p.yaml:9: spec.signals[0].query: the outermost aggregation drops the mapping labels namespace, "
        "ray_io_cluster, ray_io_group (got sum(x); "
        "expected sum by (namespace, ray_io_cluster, ray_io_group) (x))",
    ]


def test_one_bad_file_refuses_the_whole_set(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "a.yaml": policy("a", "  maxReplicas: 3\n"),
            "b.yaml": policy("b", "  maxReplicas: 3\n  priority: 1\n  paused: maybe\n"),
        },
    )
    result = check_directory(str(tmp_path))
    assert result.policy_set is None
    assert not result.ok
    assert [str(e) for e in result.errors] == [
        f"{tmp_path}/b.yaml:8: spec.paused: wrong type (got 'maybe'; expected true or false)"
    ]
    with pytest.raises(PolicySetInvalid, match=r"policy set refused, 1 error: .*b\.yaml:8: spec\.paused"):
        load_policy_set(str(tmp_path))


def test_multi_document_files_empty_documents_and_hidden_entries(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "both.yml": "# leading comment\n---\n"
            + policy("cpu", "  maxReplicas: 3\n")
            + "---\n---\n"
            + policy("small", "  scalingPolicy: cpu\n", kind="ClusterProfile"),
            ".swap.yaml": "not: [valid",
            "notes.txt": "not: [valid",
        },
    )
    (tmp_path / "..data").mkdir()
    (tmp_path / "..data" / "broken.yaml").write_text("not: [valid")
    (tmp_path / "sub.yaml").mkdir()  # a directory named like a policy file is not one
    ps = load_policy_set(str(tmp_path))
    assert isinstance(ps, PolicySet)
    assert sorted(ps.scaling_policies) == ["cpu"]
    assert isinstance(ps.cluster_profiles["small"], ClusterProfile)
    assert len(ps) == 2
    assert str(ps.source_of("ClusterProfile", "small")) == f"{tmp_path}/both.yml:11"
    assert check_directory(str(tmp_path)).documents == 2


def test_revision_changes_with_content_only(tmp_path: Path) -> None:
    write_files(tmp_path, {"a.yaml": policy("a", "  maxReplicas: 3\n")})
    first = load_policy_set(str(tmp_path)).revision
    assert load_policy_set(str(tmp_path)).revision == first
    write_files(tmp_path, {"a.yaml": policy("a", "  maxReplicas: 4\n")})
    assert load_policy_set(str(tmp_path)).revision != first


def test_missing_directory_is_an_error_not_an_exception(tmp_path: Path) -> None:
    result = check_directory(str(tmp_path / "nope"))
    assert [str(e) for e in result.errors] == [
        f"{tmp_path}/nope:0: directory: not found (expected a directory of policy files)"
    ]


def test_yaml_bomb_and_cyclic_alias_are_errors_with_lines(tmp_path: Path) -> None:
    """Aliases are shared, not copied: a billion-laughs document costs no more than its text."""
    levels = "".join(
        f"    {n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
    bomb = (
        "apiVersion: rayops.io/v1alpha1\nkind: ScalingPolicy\nmetadata:\n  name: bomb\n  annotations:\n"
        "    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + levels + "spec:\n  maxReplicas: 3\n"
        "  workerGroups: *i\n"
    )
    write_files(
        tmp_path,
        {"bomb.yaml": bomb, "cycle.yaml": policy("c", "  maxReplicas: 3\n  workerGroups: &g [*g]\n")},
    )
    lines = error_lines(tmp_path)
    assert lines[:2] == [
        "bomb.yaml:6: metadata.annotations.a: wrong type (got a list; expected a string)",
        "bomb.yaml:7: metadata.annotations.b: wrong type (got a list; expected a string)",
    ]
    assert "bomb.yaml:17: spec.workerGroups[8]: wrong type (got a list; expected a string)" in lines
    assert len([x for x in lines if x.startswith("bomb.yaml")]) == 18
    assert lines[-1] == "cycle.yaml:7: spec.workerGroups[0]: wrong type (got a list; expected a string)"


def test_always_open_window_is_a_warning_that_does_not_refuse(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "p.yaml": policy(
                "p",
                "  maxReplicas: 3\n  schedules:\n"
                "    - {name: n, cron: '0 * * * *', duration: 2h, maxReplicas: 1}\n",
            )
        },
    )
    result = check_directory(str(tmp_path))
    assert result.ok and result.policy_set is not None
    assert [str(w) for w in result.warnings] == [
        f"{tmp_path}/p.yaml:8: spec.schedules[0].duration: warning: the window never closes: a new one "
        "opens before the last ends (got '2h' after '0 * * * *'; expected a duration shorter than the "
        "time between starts, or no schedule)"
    ]
    assert result.policy_set.warnings == result.warnings


def test_policy_error_format() -> None:
    e = PolicyError("policies/a.yaml", 7, "spec.maxReplicas", "too small (got -1; expected >= 0)")
    assert str(e) == "policies/a.yaml:7: spec.maxReplicas: too small (got -1; expected >= 0)"
    w = PolicyError("a.yaml", 1, "spec", "odd (got x; expected y)", "warning")
    assert str(w) == "a.yaml:1: spec: warning: odd (got x; expected y)"


# --- The shipped policies -----------------------------------------------------------------------------


def test_shipped_policies_pass_without_warnings() -> None:
    result = check_directory(str(REPO / "policies"))
    assert result.errors == () and result.warnings == ()
    ps = result.policy_set
    assert ps is not None
    assert {"cpu-default", "gpu", "nights-and-weekends", "team-budget"} <= set(ps.scaling_policies)
    assert ps.cluster_profiles["cpu-default"].spec.scaling_policy == "cpu-default"


def test_every_shipped_file_opens_with_a_when_to_use_comment() -> None:
    for path in sorted((REPO / "policies").glob("*.yaml")):
        head = path.read_text().splitlines()[:3]
        assert head[0].startswith("# "), path.name
        assert "Use it" in path.read_text().split("apiVersion:")[0], path.name


def test_cpu_default_suits_laptop_mode() -> None:
    p = load_policy_set(str(REPO / "policies")).scaling_policies["cpu-default"]
    assert isinstance(p, ScalingPolicy)
    spec = p.spec
    assert spec.mode == "owner" and spec.min_replicas == 0 and 2 <= spec.max_replicas <= 8
    assert spec.behavior.scale_up.stabilization_window_seconds == 0
    assert 30 <= spec.behavior.scale_down.stabilization_window_seconds <= 60
    assert {s.type for s in spec.signals} == {"pendingDemand", "utilization"}


@pytest.mark.parametrize(
    ("labels", "group", "expected"),
    [
        ({}, "workers", "cpu-default"),
        ({}, "gpu", "gpu"),
        ({}, "train-gpu", "gpu"),
        ({"schedule": "nights-and-weekends"}, "workers", "nights-and-weekends"),
        ({"schedule": "nights-and-weekends"}, "gpu-a100", "nights-and-weekends"),
        ({"team": "nlp"}, "gpu", "team-budget"),
        ({"team": "nlp", "schedule": "nights-and-weekends"}, "workers", "team-budget"),
    ],
)
def test_shipped_policies_select_as_documented(labels: dict[str, str], group: str, expected: str) -> None:
    ps = load_policy_set(str(REPO / "policies"))
    chosen = ps.scaling_policy_for("ray-dev", "c1", labels, {}, group)
    assert isinstance(chosen, ScalingPolicy) and chosen.name == expected


# --- PolicyStore: hot reload --------------------------------------------------------------------------

_tick = [1_700_000_000_000_000_000]


def put(path: Path, text: str) -> None:
    """Write and give the file a fresh mtime, so a rewrite within the file system's clock
    resolution is still seen as a change."""
    path.write_text(text)
    _tick[0] += 1_000_000_000
    os.utime(path, ns=(_tick[0], _tick[0]))


VALID = policy("a", "  maxReplicas: 3\n")
VALID_2 = policy("a", "  maxReplicas: 5\n")
INVALID = policy("a", "  maxReplicas: -1\n")
INVALID_2 = policy("a", "  maxReplicas: 3\n  typo: 1\n")


def test_store_keeps_last_good_alerts_once_and_recovers_once(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    put(f, VALID)
    store = PolicyStore(str(tmp_path))
    assert store.current is None
    first = store.reload()
    assert first.status is ReloadStatus.LOADED and first.changed and not first.newly_invalid
    good = store.current
    assert good is not None and good.scaling_policies["a"].spec.max_replicas == 3

    put(f, INVALID)
    refused = store.reload()
    assert refused.status is ReloadStatus.REFUSED and refused.newly_invalid and not refused.changed
    assert [str(e) for e in refused.errors] == [
        f"{tmp_path}/a.yaml:6: spec.maxReplicas: too small (got -1; expected >= 0)"
    ]
    assert store.current is good and refused.current is good and store.invalid

    again = [store.reload() for _ in range(3)]
    assert [r.status for r in again] == [ReloadStatus.UNCHANGED] * 3
    assert not any(r.newly_invalid for r in again)
    assert all(r.errors == refused.errors for r in again)

    put(f, INVALID_2)  # a different mistake is the same incident: no second alert
    other = store.reload()
    assert other.status is ReloadStatus.REFUSED and not other.newly_invalid
    assert [e.field for e in other.errors] == ["spec.typo"]
    assert store.current is good

    put(f, VALID_2)
    fixed = store.reload()
    assert fixed.status is ReloadStatus.LOADED and fixed.recovered and fixed.errors == ()
    assert store.current is not None and store.current.scaling_policies["a"].spec.max_replicas == 5
    assert not store.invalid and store.errors == ()
    after = store.reload()
    assert after.status is ReloadStatus.UNCHANGED and not after.recovered


def test_store_unchanged_directory_is_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    put(tmp_path / "a.yaml", VALID)
    store = PolicyStore(str(tmp_path))
    store.reload()
    reads: list[str] = []
    real = loader_module.read_directory

    def counting(directory: str) -> tuple[list[SourceFile], list[PolicyError]]:
        reads.append(directory)
        return real(directory)

    monkeypatch.setattr(loader_module, "read_directory", counting)
    for _ in range(5):
        assert store.reload().status is ReloadStatus.UNCHANGED
    assert reads == []
    put(tmp_path / "a.yaml", VALID_2)
    assert store.reload().status is ReloadStatus.LOADED
    assert reads == [str(tmp_path)]


def test_store_invalid_from_the_start_has_no_set_and_alerts_once(tmp_path: Path) -> None:
    put(tmp_path / "a.yaml", INVALID)
    store = PolicyStore(str(tmp_path))
    results = [store.reload() for _ in range(3)]
    assert [r.newly_invalid for r in results] == [True, False, False]
    assert all(r.current is None for r in results)
    put(tmp_path / "a.yaml", VALID)
    ok = store.reload()
    assert ok.status is ReloadStatus.LOADED and ok.recovered


def test_store_reverting_to_the_good_content_recovers_without_a_change(tmp_path: Path) -> None:
    put(tmp_path / "a.yaml", VALID)
    store = PolicyStore(str(tmp_path))
    store.reload()
    put(tmp_path / "a.yaml", INVALID)
    store.reload()
    put(tmp_path / "a.yaml", VALID)
    back = store.reload()
    assert back.status is ReloadStatus.UNCHANGED and back.recovered and not back.changed


def test_store_survives_the_directory_disappearing(tmp_path: Path) -> None:
    d = tmp_path / "p"
    d.mkdir()
    put(d / "a.yaml", VALID)
    store = PolicyStore(str(d))
    store.reload()
    good = store.current
    (d / "a.yaml").unlink()
    d.rmdir()
    gone = store.reload()
    assert gone.status is ReloadStatus.REFUSED and gone.newly_invalid and store.current is good
    assert [e.field for e in gone.errors] == ["directory"]


def _configmap_version(root: Path, stamp: str, files: dict[str, str]) -> None:
    """What the kubelet does on a ConfigMap update: write a new timestamped directory, point a
    temporary link at it, and rename that link over `..data` in one atomic step."""
    version = root / f"..{stamp}"
    version.mkdir()
    for name, text in files.items():
        (version / name).write_text(text)
    tmp = root / "..data_tmp"
    tmp.symlink_to(version.name)
    os.replace(tmp, root / "..data")
    for name in files:
        link = root / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")


def test_store_follows_a_configmap_data_swap(tmp_path: Path) -> None:
    _configmap_version(tmp_path, "2026_05_01_12_00_00.000000001", {"cpu.yaml": VALID})
    store = PolicyStore(str(tmp_path))
    first = store.reload()
    assert first.status is ReloadStatus.LOADED
    assert first.current is not None and first.current.scaling_policies["a"].spec.max_replicas == 3
    assert store.reload().status is ReloadStatus.UNCHANGED

    _configmap_version(tmp_path, "2026_05_01_12_01_00.000000002", {"cpu.yaml": VALID_2})
    swapped = store.reload()
    assert swapped.status is ReloadStatus.LOADED
    assert store.current is not None and store.current.scaling_policies["a"].spec.max_replicas == 5

    _configmap_version(tmp_path, "2026_05_01_12_02_00.000000003", {"cpu.yaml": INVALID})
    refused = store.reload()
    assert refused.status is ReloadStatus.REFUSED and refused.newly_invalid
    assert [str(e) for e in refused.errors] == [
        f"{tmp_path}/cpu.yaml:6: spec.maxReplicas: too small (got -1; expected >= 0)"
    ]
    assert store.current is not None and store.current.scaling_policies["a"].spec.max_replicas == 5
