"""Attribution of pending demand shapes to worker groups (controller/metrics/demand.py rules 1-4)."""

from __future__ import annotations

import pytest

from controller.domain import GroupRef
from controller.metrics.demand import (
    DemandKind,
    ShapeDemand,
    attribute_demand,
    fits,
    normalize_shape,
    placement_group_shapes,
)

CPU = GroupRef("ns", "c", "cpu")
BIGCPU = GroupRef("ns", "c", "bigcpu")
GPU = GroupRef("ns", "c", "gpu")
GROUPS = {
    CPU: {"CPU": 2.0, "memory": 8e9},
    BIGCPU: {"CPU": 16.0},
    GPU: {"CPU": 8.0, "GPU": 1.0},
}


def demand(shape: dict[str, float], count: int = 1) -> ShapeDemand:
    norm = normalize_shape(shape)
    assert norm is not None
    return ShapeDemand(norm, count)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ({"CPU": 1}, CPU),  # smallest fitting group
        ({"CPU": 4}, BIGCPU),  # does not fit the small one; GPU group avoided
        ({"CPU": 12}, BIGCPU),
        ({"GPU": 1, "CPU": 1}, GPU),  # GPU shapes only to GPU groups
        ({"CPU": 1, "memory": 4e9}, CPU),
        ({"CPU": 1, "memory": 16e9}, BIGCPU),  # memory checked where declared, ignored where not
        ({"CPU": 1, "accelerator_type:H200": 0.001, "GPU": 1}, GPU),  # GPU group without a declared type
    ],
)
def test_each_shape_goes_to_the_smallest_fitting_group(shape: dict[str, float], expected: GroupRef) -> None:
    result = attribute_demand([demand(shape, 3)], GROUPS)
    assert [g for g, ds in result.by_group.items() if ds] == [expected]
    assert result.unplaced == ()


def test_cpu_work_uses_a_gpu_group_only_when_nothing_else_fits() -> None:
    result = attribute_demand([demand({"CPU": 8}, 2)], {CPU: GROUPS[CPU], GPU: GROUPS[GPU]})
    assert result.by_group[GPU] == (demand({"CPU": 8}, 2),)
    assert result.amount(GPU, "CPU") == 16.0
    assert result.amount(CPU, "CPU") == 0.0


@pytest.mark.parametrize(
    "shape",
    [{"GPU": 2}, {"CPU": 64}, {"TPU": 1}, {"node:10.0.0.7": 0.01, "CPU": 1}],
)
def test_unfittable_shapes_are_reported_not_dropped(shape: dict[str, float]) -> None:
    d = demand(shape, 2)
    result = attribute_demand([demand({"CPU": 1}), d], GROUPS)
    assert result.unplaced == (d,)
    assert result.amount(CPU, "CPU") == 1.0


def test_amount_is_resource_times_count_over_the_groups_shapes() -> None:
    result = attribute_demand([demand({"CPU": 1, "GPU": 1}, 2), demand({"GPU": 0.5}, 4)], GROUPS)
    assert result.amount(GPU, "GPU") == 4.0
    assert result.amount(GPU, "CPU") == 2.0
    assert result.amount(CPU, "GPU") == 0.0
    assert set(result.by_group) == set(GROUPS)  # every group answered, with or without demand


def test_result_does_not_depend_on_group_order() -> None:
    ds = [demand({"CPU": 1}, 3), demand({"CPU": 4}), demand({"GPU": 1})]
    forward = attribute_demand(ds, GROUPS)
    backward = attribute_demand(ds, dict(reversed(list(GROUPS.items()))))
    assert dict(forward.by_group) == dict(backward.by_group)
    same_size = {GroupRef("ns", "c", "b"): {"CPU": 2.0}, GroupRef("ns", "c", "a"): {"CPU": 2.0}}
    assert [g.group for g, v in attribute_demand(ds[:1], same_size).by_group.items() if v] == ["a"]


def test_placement_groups_strict_pack_is_one_shape_others_per_bundle() -> None:
    bundles = [({"CPU": 1.0}, 2), ({"CPU": 1.0, "GPU": 1.0}, 1)]
    packed = placement_group_shapes(bundles, "STRICT_PACK", 3)
    assert packed == [ShapeDemand((("CPU", 3.0), ("GPU", 1.0)), 3, DemandKind.PLACEMENT_GROUP, "STRICT_PACK")]
    spread = placement_group_shapes(bundles, "strict_spread", 1)
    assert [(d.shape, d.count) for d in spread] == [((("CPU", 1.0),), 2), ((("CPU", 1.0), ("GPU", 1.0)), 1)]


def test_placement_group_resources_and_zero_amounts_are_normalised() -> None:
    assert normalize_shape({"CPU_group_0_4b8a1f2e3d4c5b6a7f8e9d0c1b2a3f4e": 1.0, "bundle": 0.001}) is None
    assert normalize_shape({"CPU_group_4b8a1f2e3d4c5b6a7f8e9d0c1b2a3f4e": 1.0}) is None
    assert normalize_shape({"GPU": 0.0, "CPU": 2}) == (("CPU", 2.0),)
    with pytest.raises(ValueError):
        normalize_shape({"CPU": float("nan")})


def test_fits_respects_every_asked_resource() -> None:
    assert fits((("CPU", 1.0), ("accel", 1.0)), {"CPU": 1, "accel": 2})
    assert not fits((("CPU", 1.0), ("accel", 1.0)), {"CPU": 1})
    assert not fits((("accelerator_type:H200", 0.001),), {"GPU": 1, "accelerator_type:A100": 1})
    assert fits((("accelerator_type:H200", 0.001),), {"GPU": 1, "accelerator_type:H200": 1})
