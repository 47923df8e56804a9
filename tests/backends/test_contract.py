"""The backend contract (`contract.py`) over every backend, through each one's driver (`drivers.py`).

`backend_driver` cases run on every backend; `worker_driver` cases on the backends that model individual
workers (the in-memory backend keeps counts only, so it is not in `WORKER_DRIVERS`). A new backend adds
its factory to these tables, e.g. `"local": local_driver` from `driver_local.py`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.backends.contract import (
    test_a_busy_or_unknown_worker_is_never_removed,
    test_adoption_after_restart,
    test_annotations_merge_and_delete,
    test_concurrent_writer_elsewhere_keeps_its_change,
    test_concurrent_writer_on_the_same_field_is_a_conflict,
    test_create_get_list_delete,
    test_finished_removals_are_cleared,
    test_invalid_request_creates_nothing,
    test_release_hands_the_cluster_back,
    test_scale_down_removes_idle_workers_only,
    test_scale_up_and_no_write_without_change,
    test_unknown_cluster_or_group,
)
from tests.backends.driver_kuberay import kuberay_driver
from tests.backends.driver_local import local_driver
from tests.backends.driver_memory import memory_driver
from tests.backends.drivers import BackendDriver, DriverFactory, WorkerDriver, WorkerDriverFactory

DRIVERS: dict[str, DriverFactory] = {
    "kuberay": kuberay_driver,
    "local": local_driver,
    "memory": memory_driver,
}
WORKER_DRIVERS: dict[str, WorkerDriverFactory] = {"kuberay": kuberay_driver, "local": local_driver}

__all__ = [
    "test_a_busy_or_unknown_worker_is_never_removed",
    "test_adoption_after_restart",
    "test_annotations_merge_and_delete",
    "test_concurrent_writer_elsewhere_keeps_its_change",
    "test_concurrent_writer_on_the_same_field_is_a_conflict",
    "test_create_get_list_delete",
    "test_finished_removals_are_cleared",
    "test_invalid_request_creates_nothing",
    "test_release_hands_the_cluster_back",
    "test_scale_down_removes_idle_workers_only",
    "test_scale_up_and_no_write_without_change",
    "test_unknown_cluster_or_group",
]


@pytest.fixture(params=sorted(DRIVERS))
def backend_driver(request: pytest.FixtureRequest) -> Iterator[BackendDriver]:
    yield from DRIVERS[request.param](request)


@pytest.fixture(params=sorted(WORKER_DRIVERS))
def worker_driver(request: pytest.FixtureRequest) -> Iterator[WorkerDriver]:
    yield from WORKER_DRIVERS[request.param](request)
