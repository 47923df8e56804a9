"""The in-memory backend keeps to the ClusterBackend/ScaleTarget semantics the real ones have."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controller import keys
from controller.backends.base import (
    AlreadyExists,
    BackendUnavailable,
    ClusterNotFound,
    ClusterRequest,
    ConflictError,
    GroupStatus,
    InvalidProfile,
    ModeRefused,
    NotManaged,
)
from controller.backends.memory import MemoryBackend, decode_pin, encode_pin
from controller.domain import Action, ClusterRef, Decision, GroupRef, ManualPin
from tests.bot.conftest import T0, Clock, fixture_policy_set

REF = ClusterRef("ns", "demo")


@pytest.fixture
def be() -> MemoryBackend:
    return MemoryBackend(fixture_policy_set().cluster_profiles, clock=Clock())


def test_create_renders_the_profile(be: MemoryBackend) -> None:
    s = be.create(ClusterRequest("demo", "ns", "gpu", "slack:U1", workers=2, gpus=1, ttl_seconds=3600))
    assert {g.name: (g.desired, g.max_replicas) for g in s.groups} == {"workers": (2, 4), "gpu": (1, 4)}
    assert s.groups[1].resources == {"CPU": 4.0, "GPU": 1.0}
    assert s.expires_at == T0 + timedelta(hours=1)
    assert s.annotations[keys.ANN_REQUESTER] == "slack:U1"
    assert s.annotations[keys.ANN_POLICY] == "cpu-default"
    assert s.state == "STARTING" and s.managed
    assert be.list() == [s] and be.list("other") == []


@pytest.mark.parametrize(
    "request_, error",
    [
        (ClusterRequest("Demo", "ns", "small", "u"), "lowercase letters"),
        (ClusterRequest("a" * 55, "ns", "small", "u"), "at most 54"),
        (ClusterRequest("demo", "Bad_NS", "small", "u"), "namespace"),
        (ClusterRequest("demo", "ns", "nope", "u"), "no profile named nope"),
        (ClusterRequest("demo", "ns", "small", "u", workers=9), "takes 0 to 8 workers"),
        (ClusterRequest("demo", "ns", "small", "u", gpus=1), "no GPU worker group"),
        (ClusterRequest("demo", "ns", "small", "u", ttl_seconds=3 * 86400), "at most 2d"),
    ],
)
def test_create_refuses_what_the_api_would(be: MemoryBackend, request_: ClusterRequest, error: str) -> None:
    with pytest.raises(InvalidProfile, match=error):
        be.create(request_)
    assert be.snapshot() == {}


def test_errors(be: MemoryBackend) -> None:
    be.create(ClusterRequest("demo", "ns", "small", "u"))
    with pytest.raises(AlreadyExists):
        be.create(ClusterRequest("demo", "ns", "small", "u"))
    with pytest.raises(ClusterNotFound):
        be.get(ClusterRef("ns", "nope"))
    with pytest.raises(ClusterNotFound):
        be.delete(ClusterRef("ns", "nope"))
    be.fail_next("get", BackendUnavailable("timeout"))
    with pytest.raises(BackendUnavailable):
        be.get(REF)
    assert be.get(REF).ref == REF


def test_annotations_pins_and_release(be: MemoryBackend) -> None:
    be.create(ClusterRequest("demo", "ns", "small", "u"))
    pin = ManualPin("workers", 3, T0 + timedelta(hours=1), "slack:U1")
    be.set_annotations(REF, {keys.ANN_MANUAL_REPLICAS: encode_pin(pin), keys.ANN_PAUSED: "true"})
    s = be.get(REF)
    assert s.pin == pin and s.paused
    be.set_annotations(REF, {keys.ANN_PAUSED: None})
    assert not be.get(REF).paused
    with pytest.raises(Exception, match="at most"):
        be.set_annotations(REF, {keys.ANN_STATE: "x" * (keys.MAX_ANNOTATION_BYTES + 1)})
    be.release(REF)
    assert be.list() == [] and be.exists(REF)
    with pytest.raises(NotManaged):
        be.get(REF)
    with pytest.raises(NotManaged):
        be.set_annotations(REF, {keys.ANN_PAUSED: "true"})


@pytest.mark.parametrize(
    "text", [None, "", "nope", "{}", '{"group": "w", "replicas": -1}', '{"group": 1, "replicas": 2}', "[1]"]
)
def test_malformed_pins_are_ignored(text: str | None) -> None:
    assert decode_pin(text) is None


def test_scale_target_view_and_guarded_apply(be: MemoryBackend) -> None:
    be.create(ClusterRequest("demo", "ns", "small", "u"))
    (mc,) = be.list_clusters()
    assert mc.group("workers").replicas == 1
    d = Decision(GroupRef("ns", "demo", "workers"), "p", "owner", 1, 3, Action.UP, ())
    assert be.apply(mc, [d]).written
    assert be.get(REF).groups[0].desired == 3
    with pytest.raises(ConflictError):
        be.apply(mc, [d])  # read before the write above: stale
    (fresh,) = be.list_clusters()
    assert not be.apply(fresh, [d]).written  # nothing to change: no write
    bounds = Decision(
        GroupRef("ns", "demo", "workers"),
        "p",
        "bounds",
        3,
        3,
        Action.HOLD,
        (),
        min_replicas=1,
        max_replicas=5,
    )
    assert be.apply(fresh, [bounds]).written
    g = be.get(REF).groups[0]
    assert (g.min_replicas, g.max_replicas, g.desired) == (1, 5, 3)


def test_owner_mode_is_refused_with_in_tree_autoscaling(be: MemoryBackend) -> None:
    be.add_cluster(
        REF, (GroupStatus("w", 1, 1, 0, 4),), labels={keys.LABEL_MANAGED: "true"}, in_tree_autoscaling=True
    )
    (mc,) = be.list_clusters()
    with pytest.raises(ModeRefused):
        be.apply(mc, [Decision(GroupRef("ns", "demo", "w"), "p", "owner", 1, 2, Action.UP, ())])


def test_unmanaged_clusters_are_invisible(be: MemoryBackend) -> None:
    be.add_cluster(REF, (GroupStatus("w", 1, 1, 0, 4),))
    assert be.list() == [] and be.list_clusters() == []
    with pytest.raises(NotManaged):
        be.delete(REF)
    with pytest.raises(AlreadyExists):
        be.create(ClusterRequest("demo", "ns", "small", "u"))


def test_another_writer_makes_earlier_reads_stale(be: MemoryBackend) -> None:
    be.create(ClusterRequest("demo", "ns", "small", "u"))
    (mc,) = be.list_clusters()
    be.write_as_another(REF, group="workers", replicas=2, annotations={"team": "x"})
    assert be.raw_annotations(REF)["team"] == "x" and be.get(REF).groups[0].desired == 2
    with pytest.raises(ConflictError):
        be.apply(mc, [Decision(GroupRef("ns", "demo", "workers"), "p", "owner", 1, 3, Action.UP, ())])
    be.make_ready(REF)
    assert be.ready_count(REF, "workers") == 2 and be.ready_count(REF, "nope") == 0
