"""The KubeRay backend's informer cache (controller/backends/kuberay_cache.py) on the API stand-in.

What it must keep: once synced, the controller's listings ask the API nothing and say what a fresh list
would say; changes by others arrive through the watch; the backend's own writes are visible at once;
a watch that ends resumes, a 410 re-lists; and where watching is forbidden, listing works as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from controller.backends.base import ManagedCluster
from controller.backends.kube_api import Forbidden, KubeApi, WatchExpired
from controller.backends.kuberay import KubeRayBackend
from controller.backends.kuberay_cache import CacheSettings, slim_pod
from controller.domain import ClusterRef
from tests.backends.cache_sync import cache_current, wait_cache_current
from tests.backends.contract import owner_decision
from tests.backends.driver_kuberay import FAST_RETRY, NAMESPACE, KubeRayDriver
from tests.backends.drivers import GROUP
from tests.harness.kube import CONTROLLER_TOKEN, KUBE_TOKENS, load_sample
from tests.standins.kube_api import KubeApiServer
from tests.standins.kuberay_operator import FakeKubeRayOperator

CONTROLLER = KUBE_TOKENS[CONTROLLER_TOKEN]
QUICK = CacheSettings(backoff_s=0.05, max_backoff_s=0.2, first_sync_wait_s=5.0)


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture
def driver(kube_api: KubeApiServer, kuberay_operator: FakeKubeRayOperator) -> Iterator[KubeRayDriver]:
    yield KubeRayDriver(kube_api, kuberay_operator)


@pytest.fixture
def watching(driver: KubeRayDriver) -> Iterator[Callable[..., KubeRayBackend]]:
    """Controller backends with the cache on (stopped afterwards)."""
    made: list[KubeRayBackend] = []

    def make(
        settings: CacheSettings = QUICK, namespaces: tuple[str, ...] | None = (NAMESPACE,)
    ) -> KubeRayBackend:
        api = KubeApi(driver.server.client(CONTROLLER_TOKEN), FAST_RETRY, sleep=lambda _: None)
        backend = KubeRayBackend(
            api, driver.profiles, namespaces=namespaces, watch=True, cache_settings=settings
        )
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def listed_fresh(
    driver: KubeRayDriver, namespaces: tuple[str, ...] | None = (NAMESPACE,)
) -> list[ManagedCluster]:
    """What relisting says (the backend without a cache)."""
    api = KubeApi(driver.server.client(CONTROLLER_TOKEN), FAST_RETRY, sleep=lambda _: None)
    return KubeRayBackend(api, namespaces=namespaces).list_clusters_without_activity()


def clusters(driver: KubeRayDriver, *workers: int) -> list[ClusterRef]:
    refs = []
    for i, n in enumerate(workers):
        status = driver.backend.create(driver.request(f"c{i}", workers=n))
        refs.append(status.ref)
    for ref in refs:
        driver.settle(ref)
    return refs


def replicas(backend: KubeRayBackend, ref: ClusterRef) -> tuple[int, int]:
    """(replicas, workers seen) of the contract group, as the backend lists it."""
    [cluster] = [c for c in backend.list_clusters_without_activity() if c.ref == ref]
    group = cluster.group(GROUP)
    return group.replicas, len(group.workers)


def verbs(server: KubeApiServer, resource: str) -> list[str]:
    return [r.verb for r in server.resource_requests(CONTROLLER) if r.resource == resource]


# --- steady state -------------------------------------------------------------------------------


def test_after_sync_a_steady_listing_asks_the_api_nothing_and_equals_a_fresh_list(
    driver: KubeRayDriver, watching: Callable[..., KubeRayBackend]
) -> None:
    clusters(driver, 1, 2)
    backend = watching()
    first = backend.list_clusters_without_activity()  # waits for the first sync
    assert backend.cache is not None and backend.cache.ready()
    wait_cache_current(backend, driver.server)
    driver.server.clear_requests()
    again = backend.list_clusters_without_activity()
    assert driver.server.resource_requests(CONTROLLER) == []
    assert again == first == listed_fresh(driver)
    assert [c.ref.name for c in again] == ["c0", "c1"]
    assert again[0] is first[0]  # unchanged RayCluster and pods: the converted cluster is reused


def test_list_clusters_with_activity_comes_from_the_cache_too(
    driver: KubeRayDriver, watching: Callable[..., KubeRayBackend]
) -> None:
    [ref] = clusters(driver, 2)
    backend = watching()
    backend.activity = driver.activity
    wait_cache_current(backend, driver.server)
    backend.list_clusters()
    driver.server.clear_requests()
    [cluster] = backend.list_clusters()
    assert driver.server.resource_requests(CONTROLLER) == []
    assert driver.activity.asked[-1] == {ref: cluster.dashboard_url}
    assert {w.activity.value for w in cluster.group(GROUP).workers} == {"idle"}


def test_before_the_first_sync_it_lists_as_before(
    driver: KubeRayDriver, watching: Callable[..., KubeRayBackend]
) -> None:
    clusters(driver, 1)
    driver.server.inject_faults(None, count=None, verbs={"watch"}, delay=0.5)  # no sync for a while
    driver.server.inject_faults(None, count=2, verbs={"list"}, resource="pods", delay=1.0)
    backend = watching(CacheSettings(first_sync_wait_s=0.0))
    assert backend.list_clusters_without_activity() == listed_fresh(driver)
    assert "list" in verbs(driver.server, "rayclusters")


# --- changes by others, and our own writes -----------------------------------------------------


def test_changes_by_someone_else_appear_in_a_later_listing(
    driver: KubeRayDriver, watching: Callable[..., KubeRayBackend]
) -> None:
    [ref] = clusters(driver, 1)
    backend = watching()
    assert replicas(backend, ref) == (1, 1)
    driver.concurrent_count(ref, GROUP, 3)  # the RayCluster
    wait_for(lambda: replicas(backend, ref)[0] == 3)
    driver.settle(ref)  # the pods
    wait_for(lambda: replicas(backend, ref) == (3, 3))
    pod = driver.pods(ref, GROUP)[0]["metadata"]["name"]
    driver.operator.set_pod_phase(NAMESPACE, pod, "Pending", ready=False)
    wait_for(lambda: backend.list_clusters_without_activity()[0].group(GROUP).ready == 2)
    wait_cache_current(backend, driver.server)
    assert backend.list_clusters_without_activity() == listed_fresh(driver)


def test_a_cluster_opted_out_or_deleted_by_someone_else_disappears(
    driver: KubeRayDriver, watching: Callable[..., KubeRayBackend]
) -> None:
    a, b = clusters(driver, 1, 1)
    backend = watching()
    assert len(backend.list_clusters_without_activity()) == 2
    rc = driver.raw(a)
    assert rc is not None
    rc["metadata"]["labels"] = {}
    driver.server.put(rc)
    wait_for(lambda: [c.ref for c in backend.list_clusters_without_activity()] == [b])
    driver.server.delete_obj("rayclusters", b.namespace, b.name)
    wait_for(lambda: backend.list_clusters_without_activity() == [])


def test_the_backends_own_writes_are_visible_at_once(
    driver: KubeRayDriver, watching: Callable[..., KubeRayBackend]
) -> None:
    """With the watches stopped, only the write's answer can have reached the cache."""
    a, b = clusters(driver, 1, 1)
    backend = watching()
    backend.list_clusters_without_activity()
    assert backend.cache is not None
    backend.cache.stop()
    cluster = next(c for c in backend.list_clusters_without_activity() if c.ref == a)
    assert backend.apply(cluster, [owner_decision(cluster.group(GROUP), 3)]).written
    backend.set_annotations(a, {"rayops.io/paused": "true"})
    after = next(c for c in backend.list_clusters_without_activity() if c.ref == a)
    assert after.group(GROUP).replicas == 3 and after.annotations["rayops.io/paused"] == "true"
    assert after.version == driver.raw(a)["metadata"]["resourceVersion"]  # type: ignore[index]
    backend.delete(b)
    assert [c.ref for c in backend.list_clusters_without_activity()] == [a]
    backend.release(a)
    assert backend.list_clusters_without_activity() == []
    created = backend.create(driver.request("fresh", workers=0)).ref
    assert [c.ref for c in backend.list_clusters_without_activity()] == [created]


def test_a_watch_that_is_behind_does_not_undo_a_write() -> None:
    """Events older than what a write returned (the watch had not got there yet) are skipped."""
    from controller.backends.kuberay_cache import Informer

    def never() -> object:
        raise AssertionError("not listed")

    informer = Informer(
        "rayclusters",
        "test",
        never,
        never,
        lambda o: True,
        CacheSettings(),  # type: ignore[arg-type]
    )

    def rc(version: int, replicas: int) -> dict[str, object]:
        return {"metadata": {"namespace": "n", "name": "a", "resourceVersion": str(version)}, "r": replicas}

    informer.observe(rc(7, 3))  # our write's answer
    informer._apply("MODIFIED", rc(5, 1))  # the watch catching up
    assert informer.items() == [rc(7, 3)]
    informer._apply("MODIFIED", rc(9, 4))
    assert informer.items() == [rc(9, 4)]
    informer.forget(rc(9, 4))  # deleted by us
    informer._apply("MODIFIED", rc(9, 4))
    assert informer.items() == []


# --- watches ending, expiring, failing ---------------------------------------------------------


def test_a_watch_that_ends_resumes_from_its_resource_version_without_listing(
    driver: KubeRayDriver, watching: Callable[..., KubeRayBackend]
) -> None:
    [ref] = clusters(driver, 1)
    backend = watching(CacheSettings(watch_timeout_s=0.5, backoff_s=0.05, first_sync_wait_s=5.0))
    backend.list_clusters_without_activity()
    lists = verbs(driver.server, "rayclusters").count("list")
    wait_for(lambda: verbs(driver.server, "rayclusters").count("watch") >= 6)  # 2 selectors x 3 rounds
    driver.concurrent_count(ref, GROUP, 2)
    wait_for(lambda: replicas(backend, ref)[0] == 2)
    assert verbs(driver.server, "rayclusters").count("list") == lists


def test_410_gone_relists_and_the_state_is_right(
    driver: KubeRayDriver, watching: Callable[..., KubeRayBackend]
) -> None:
    a, b = clusters(driver, 1, 1)
    backend = watching(CacheSettings(watch_timeout_s=0.5, backoff_s=0.05, first_sync_wait_s=5.0))
    backend.list_clusters_without_activity()
    lists = verbs(driver.server, "rayclusters").count("list")
    gone = driver.server.inject_faults(410, count=None, verbs={"watch"}, resource="rayclusters")
    driver.concurrent_count(a, GROUP, 2)  # changed, and b deleted, while no watch can resume
    driver.server.delete_obj("rayclusters", b.namespace, b.name)
    wait_for(lambda: gone.hits >= 2)
    driver.server.store.compact()  # the history is gone too: only a list can tell
    driver.server.clear_faults()
    wait_for(lambda: verbs(driver.server, "rayclusters").count("list") > lists)
    wait_for(
        lambda: (
            [(c.ref, c.group(GROUP).replicas) for c in backend.list_clusters_without_activity()] == [(a, 2)]
        )
    )
    wait_cache_current(backend, driver.server)


def test_an_expired_resource_version_in_the_stream_is_watch_expired(kube_api: KubeApiServer) -> None:
    api = KubeApi(kube_api.client(CONTROLLER_TOKEN), FAST_RETRY)
    version = api.list_rayclusters_versioned(NAMESPACE, None).resource_version
    body = load_sample("ray-cluster.sample.yaml")
    body["metadata"] = {"name": "later", "namespace": NAMESPACE}
    kube_api.put(body)  # history after `version` ...
    kube_api.store.compact()  # ... that the server no longer keeps
    with pytest.raises(WatchExpired):
        list(api.watch_rayclusters(NAMESPACE, None, version, 5))


def test_a_watch_closed_from_another_thread_ends_at_once(kube_api: KubeApiServer) -> None:
    api = KubeApi(kube_api.client(CONTROLLER_TOKEN), FAST_RETRY)
    version = api.list_pods_versioned(NAMESPACE, "ray.io/cluster").resource_version
    stream = api.watch_pods(NAMESPACE, "ray.io/cluster", version, 30)
    threading.Timer(0.2, stream.close).start()
    started = time.monotonic()
    assert list(stream) == []
    assert time.monotonic() - started < 5


def test_a_failing_watch_is_retried_with_backoff(
    driver: KubeRayDriver, watching: Callable[..., KubeRayBackend]
) -> None:
    [ref] = clusters(driver, 1)
    backend = watching(CacheSettings(watch_timeout_s=0.5, backoff_s=0.05, first_sync_wait_s=5.0))
    backend.list_clusters_without_activity()
    broken = driver.server.inject_faults(503, count=4, verbs={"watch"}, resource="rayclusters")
    wait_for(lambda: broken.hits == 4)
    driver.concurrent_count(ref, GROUP, 2)
    wait_for(lambda: replicas(backend, ref)[0] == 2)


# --- where watching is not possible ------------------------------------------------------------


def test_watch_forbidden_falls_back_to_listing_with_one_log_line(
    driver: KubeRayDriver, watching: Callable[..., KubeRayBackend], caplog: pytest.LogCaptureFixture
) -> None:
    [ref] = clusters(driver, 1)
    driver.server.authorizer = lambda r: r.verb != "watch"
    backend = watching()
    with caplog.at_level(logging.WARNING, logger="rayops.kuberay"):
        assert backend.list_clusters_without_activity() == listed_fresh(driver)
        driver.concurrent_count(ref, GROUP, 2)
        assert replicas(backend, ref)[0] == 2  # listed, so at once
    assert backend.cache is None
    warned = [r for r in caplog.records if "cannot watch" in r.getMessage()]
    assert len(warned) == 1 and "forbidden" in warned[0].getMessage()
    driver.server.clear_requests()
    backend.list_clusters_without_activity()
    assert set(verbs(driver.server, "rayclusters")) == {"list"}


def test_watch_open_errors_are_typed(kube_api: KubeApiServer) -> None:
    kube_api.authorizer = lambda r: r.verb != "watch"
    api = KubeApi(kube_api.client(CONTROLLER_TOKEN), FAST_RETRY)
    with pytest.raises(Forbidden):
        api.watch_rayclusters(NAMESPACE, None, "1", 5)


# --- what is kept -------------------------------------------------------------------------------


def test_a_cached_pod_keeps_what_the_controller_reads(driver: KubeRayDriver) -> None:
    [ref] = clusters(driver, 1)
    head = driver.server.list_objs("pods", ref.namespace, f"ray.io/cluster={ref.name},ray.io/node-type=head")[
        0
    ]
    head["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    slim = slim_pod(head)
    assert slim["metadata"] == {k: v for k, v in head["metadata"].items() if k != "managedFields"}
    assert slim["status"] == head["status"]
    assert slim["spec"] == {"containers": [{"name": c["name"]} for c in head["spec"]["containers"]]}


def test_all_namespaces(driver: KubeRayDriver, watching: Callable[..., KubeRayBackend]) -> None:
    clusters(driver, 1)
    backend = watching(namespaces=None)
    assert backend.list_clusters_without_activity() == listed_fresh(driver, None)
    wait_cache_current(backend, driver.server)
    assert cache_current(backend, driver.server)
