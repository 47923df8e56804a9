"""The backend contract: cases every backend passes unchanged, written against the two protocols only.

`test_contract.py` runs them over every driver (`drivers.py`): `backend_driver` cases over all backends,
`worker_driver` cases over the backends that model individual workers. A case reaches the platform only
through its driver, never through a backend's own helpers, so a fake cannot pass by knowing itself.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from controller import keys
from controller.backends.base import (
    AlreadyExists,
    ClusterNotFound,
    ClusterState,
    ConflictError,
    GroupNotFound,
    InvalidProfile,
    ManagedCluster,
    ManagedGroup,
    NotManaged,
    UnsafeRemoval,
)
from controller.domain import Action, Activity, ClusterRef, Decision, GroupRef, Reason, ReasonCode
from tests.backends.drivers import GROUP, MISSING_PROFILE, REQUESTER, Backend, BackendDriver, WorkerDriver


def unique_name() -> str:
    return f"ct-{uuid.uuid4().hex[:8]}"


def owner_decision(group: ManagedGroup, target: int, remove: tuple[str, ...] = ()) -> Decision:
    """What the decision function hands the backend in owner mode (the suite picks the victims)."""
    action = Action.UP if target > group.replicas else Action.DOWN if target < group.replicas else Action.HOLD
    return Decision(
        ref=group.ref,
        policy="contract",
        mode="owner",
        current=group.replicas,
        target=target,
        action=action,
        reasons=(Reason(ReasonCode.SIGNAL_PROPOSAL, f"the contract suite asks for {target}"),),
        remove=remove,
    )


def find(backend: Backend, ref: ClusterRef) -> ManagedCluster:
    found = [c for c in backend.list_clusters() if c.ref == ref]
    assert len(found) == 1, f"{ref} listed {len(found)} times"
    return found[0]


def make_cluster(driver: BackendDriver, workers: int) -> ClusterRef:
    status = driver.backend.create(driver.request(unique_name(), workers=workers))
    driver.settle(status.ref)
    assert driver.live_count(status.ref, GROUP) == workers
    return status.ref


# --- backend_driver: every backend ---------------------------------------------------------------


def test_create_get_list_delete(backend_driver: BackendDriver) -> None:
    d, before = backend_driver, datetime.now(UTC)
    created = d.backend.create(d.request(unique_name(), workers=2))
    ref = created.ref
    assert ref == ClusterRef(d.namespace, ref.name)
    assert created.requester == REQUESTER and created.profile == "contract-small" and created.managed
    assert created.state in (ClusterState.STARTING, ClusterState.READY)
    assert created.expires_at is not None
    assert before + timedelta(hours=2) - timedelta(seconds=5) <= created.expires_at
    assert created.expires_at <= datetime.now(UTC) + timedelta(hours=2, seconds=5)
    assert [(g.name, g.desired, g.min_replicas, g.max_replicas) for g in created.groups] == [(GROUP, 2, 0, 4)]

    d.settle(ref)
    got = d.backend.get(ref)
    assert got.ref == ref and got.requester == REQUESTER
    assert got.annotations[keys.ANN_REQUESTER] == REQUESTER
    assert [(g.name, g.desired) for g in got.groups] == [(GROUP, 2)]
    assert d.live_count(ref, GROUP) == 2
    assert ref in [s.ref for s in d.backend.list()]
    assert ref in [s.ref for s in d.backend.list(d.namespace)]
    assert ref not in [s.ref for s in d.backend.list("elsewhere")]
    assert ref in [c.ref for c in d.backend.list_clusters()]

    with pytest.raises(AlreadyExists, match=ref.name):
        d.backend.create(d.request(ref.name))

    d.backend.delete(ref)
    with pytest.raises(ClusterNotFound):
        d.backend.get(ref)
    d.settle(ref)
    assert not d.exists(ref)
    assert d.live_count(ref, GROUP) == 0
    assert ref not in [c.ref for c in d.backend.list_clusters()]


def test_scale_up_and_no_write_without_change(backend_driver: BackendDriver) -> None:
    d = backend_driver
    ref = make_cluster(d, 1)
    group = find(d.backend, ref).group(GROUP)
    assert (group.replicas, group.min_replicas, group.max_replicas) == (1, 0, 4)

    result = d.backend.apply(find(d.backend, ref), [owner_decision(group, 3)])
    assert result.written and result.cluster == ref
    d.settle(ref)
    assert d.live_count(ref, GROUP) == 3
    again = find(d.backend, ref)
    assert again.group(GROUP).replicas == 3
    assert not d.backend.apply(again, [owner_decision(again.group(GROUP), 3)]).written
    assert [(g.name, g.desired) for g in d.backend.get(ref).groups] == [(GROUP, 3)]


def test_concurrent_writer_on_the_same_field_is_a_conflict(backend_driver: BackendDriver) -> None:
    d = backend_driver
    ref = make_cluster(d, 1)
    stale = find(d.backend, ref)
    d.concurrent_count(ref, GROUP, 2)
    with pytest.raises(ConflictError):
        d.backend.apply(stale, [owner_decision(stale.group(GROUP), 3)])
    fresh = find(d.backend, ref)
    assert fresh.group(GROUP).replicas == 2  # the other writer's value, re-read
    assert d.backend.apply(fresh, [owner_decision(fresh.group(GROUP), 3)]).written
    d.settle(ref)
    assert d.live_count(ref, GROUP) == 3


def test_concurrent_writer_elsewhere_keeps_its_change(backend_driver: BackendDriver) -> None:
    """A change that does not overlap survives: the write goes through, or conflicts and goes through
    after a re-read; either way nothing the other writer did is lost."""
    d = backend_driver
    ref = make_cluster(d, 1)
    stale = find(d.backend, ref)
    d.concurrent_annotation(ref, "example.com/note", "set by someone else")
    try:
        d.backend.apply(stale, [owner_decision(stale.group(GROUP), 2)])
    except ConflictError:
        fresh = find(d.backend, ref)
        assert d.backend.apply(fresh, [owner_decision(fresh.group(GROUP), 2)]).written
    assert find(d.backend, ref).group(GROUP).replicas == 2
    assert d.annotations(ref)["example.com/note"] == "set by someone else"


def test_unknown_cluster_or_group(backend_driver: BackendDriver) -> None:
    d = backend_driver
    missing = ClusterRef(d.namespace, "no-such-cluster")
    for call in (
        lambda: d.backend.get(missing),
        lambda: d.backend.delete(missing),
        lambda: d.backend.release(missing),
        lambda: d.backend.set_annotations(missing, {keys.ANN_PAUSED: "true"}),
    ):
        with pytest.raises(ClusterNotFound, match="no-such-cluster"):
            call()
    ref = make_cluster(d, 1)
    cluster = find(d.backend, ref)
    with pytest.raises(GroupNotFound, match="no-such-group"):
        cluster.group("no-such-group")
    ghost = ManagedGroup(GroupRef(ref.namespace, ref.name, "no-such-group"), 1, 0, 4, 1)
    with pytest.raises(GroupNotFound, match="no-such-group"):
        d.backend.apply(cluster, [owner_decision(ghost, 2)])
    d.backend.delete(ref)
    d.settle(ref)
    with pytest.raises(ClusterNotFound):
        d.backend.apply(cluster, [owner_decision(cluster.group(GROUP), 2)])


@pytest.mark.parametrize(
    ("name", "profile", "workers", "ttl", "message"),
    [
        ("Not_A_Name", None, None, None, "name"),
        (None, MISSING_PROFILE, None, None, MISSING_PROFILE),
        (None, None, 5, None, "0 to 4"),
        (None, None, None, 7 * 24 * 3600, "time-to-live"),
    ],
    ids=["bad-name", "unknown-profile", "too-many-workers", "ttl-over-max"],
)
def test_invalid_request_creates_nothing(
    backend_driver: BackendDriver,
    name: str | None,
    profile: str | None,
    workers: int | None,
    ttl: int | None,
    message: str,
) -> None:
    d = backend_driver
    request = d.request(name or unique_name(), workers=workers, ttl_seconds=ttl)
    if profile is not None:
        request = dataclasses.replace(request, profile=profile)
    before = [s.ref for s in d.backend.list()]
    with pytest.raises(InvalidProfile, match=message):
        d.backend.create(request)
    ref = ClusterRef(request.namespace, request.name)
    d.settle(ref)
    assert not d.exists(ref)
    assert [s.ref for s in d.backend.list()] == before


def test_adoption_after_restart(backend_driver: BackendDriver) -> None:
    d = backend_driver
    ref = make_cluster(d, 2)
    seen = find(d.backend, ref)
    restarted = d.restart()
    adopted = find(restarted, ref)
    assert adopted.group_names == seen.group_names
    assert adopted.group(GROUP).replicas == 2
    assert {w.name for w in adopted.group(GROUP).workers} == {w.name for w in seen.group(GROUP).workers}
    assert restarted.get(ref).requester == REQUESTER
    assert restarted.apply(adopted, [owner_decision(adopted.group(GROUP), 3)]).written
    d.settle(ref)
    assert d.live_count(ref, GROUP) == 3


def test_annotations_merge_and_delete(backend_driver: BackendDriver) -> None:
    d = backend_driver
    ref = make_cluster(d, 0)
    d.backend.set_annotations(ref, {keys.ANN_PAUSED: "true", keys.ANN_STATE: '{"v": 1}'})
    status = d.backend.get(ref)
    assert status.paused and status.annotations[keys.ANN_STATE] == '{"v": 1}'
    assert status.requester == REQUESTER  # untouched keys stay
    d.backend.set_annotations(ref, {keys.ANN_PAUSED: None, keys.ANN_STATE: '{"v": 2}'})
    status = d.backend.get(ref)
    assert not status.paused and keys.ANN_PAUSED not in status.annotations
    assert d.annotations(ref)[keys.ANN_STATE] == '{"v": 2}'


def test_release_hands_the_cluster_back(backend_driver: BackendDriver) -> None:
    d = backend_driver
    ref = make_cluster(d, 1)
    d.backend.set_annotations(ref, {keys.ANN_PAUSED: "true"})
    d.backend.release(ref)
    assert d.exists(ref)  # released, not deleted
    assert not [k for k in d.annotations(ref) if k.startswith(keys.PREFIX)]
    assert ref not in [s.ref for s in d.backend.list()]
    assert ref not in [c.ref for c in d.backend.list_clusters()]
    for call in (
        lambda: d.backend.get(ref),
        lambda: d.backend.set_annotations(ref, {keys.ANN_PAUSED: "true"}),
        lambda: d.backend.delete(ref),
        lambda: d.backend.release(ref),
    ):
        with pytest.raises(NotManaged):
            call()
    d.settle(ref)
    assert d.live_count(ref, GROUP) == 1  # its workers keep running


# --- worker_driver: backends with individual workers ---------------------------------------------


def test_scale_down_removes_idle_workers_only(worker_driver: WorkerDriver) -> None:
    d = worker_driver
    ref = make_cluster(d, 3)
    workers = sorted(d.live_workers(ref, GROUP))
    busy = workers[1]
    for w in workers:
        d.set_busy(ref, w, w == busy)
    group = find(d.backend, ref).group(GROUP)
    activity = {w.name: w.activity for w in group.workers}
    assert activity == {w: Activity.BUSY if w == busy else Activity.IDLE for w in workers}
    idle = tuple(w.name for w in group.workers if w.activity == Activity.IDLE)
    assert d.backend.apply(find(d.backend, ref), [owner_decision(group, 1, idle)]).written
    d.settle(ref)
    assert d.live_workers(ref, GROUP) == {busy}


def test_finished_removals_are_cleared(worker_driver: WorkerDriver) -> None:
    d = worker_driver
    ref = make_cluster(d, 2)
    group = find(d.backend, ref).group(GROUP)
    victim = sorted(w.name for w in group.workers)[0]
    d.backend.apply(find(d.backend, ref), [owner_decision(group, 1, (victim,))])
    d.settle(ref)
    assert victim not in d.live_workers(ref, GROUP)
    d.backend.finish_removals(find(d.backend, ref))
    after = find(d.backend, ref).group(GROUP)
    assert after.pending_deletes == ()
    assert after.replicas == 1 and d.live_count(ref, GROUP) == 1
    assert not d.backend.finish_removals(find(d.backend, ref)).written  # nothing left to clear


def test_a_busy_or_unknown_worker_is_never_removed(worker_driver: WorkerDriver) -> None:
    d = worker_driver
    ref = make_cluster(d, 2)
    workers = sorted(d.live_workers(ref, GROUP))
    d.set_busy(ref, workers[0], True)
    group = find(d.backend, ref).group(GROUP)
    with pytest.raises(UnsafeRemoval, match=workers[0]):
        d.backend.apply(find(d.backend, ref), [owner_decision(group, 1, (workers[0],))])
    with pytest.raises(UnsafeRemoval):  # fewer victims than the reduction: someone else would pick
        d.backend.apply(find(d.backend, ref), [owner_decision(group, 0, (workers[1],))])
    d.settle(ref)
    assert d.live_workers(ref, GROUP) == set(workers)
    assert find(d.backend, ref).group(GROUP).replicas == 2
