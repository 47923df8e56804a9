"""What the backend contract suite needs from each implementation: a driver per backend.

The cases in `contract.py` speak only `ClusterBackend` and `ScaleTarget` to the backend under test. What the
two protocols cannot express (the platform catching up, a worker getting busy, another writer, a restart,
what really exists) the suite asks of a driver, which knows its platform:

- `kuberay` (`driver_kuberay.py`): the Kubernetes API stand-in with the fake KubeRay operator; Ray activity
  from a test double;
- `memory` (`driver_memory.py`): `controller/backends/memory.py`, counts without workers
  (`BackendDriver` only);
- `local` (`driver_local.py`, by the local backend's owner): real local Ray processes (laptop mode).

A driver that models individual workers implements `WorkerDriver`, and runs the worker-level cases too
(scale-down of idle workers only, finished removals, refusal to remove a busy worker). To add a driver,
write a factory `(pytest.FixtureRequest) -> Iterator[driver]` and list it in `test_contract.py`.

Every driver's backend must know `CONTRACT_PROFILE` (one CPU group `cpu`, 0 to 4 workers, 1 by default,
small enough for a laptop) and no profile named `MISSING_PROFILE`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import pytest

from controller.backends.base import ClusterBackend, ClusterRequest, ScaleTarget
from controller.domain import ClusterRef
from controller.policy.model import ClusterProfile

CONTRACT_PROFILE = ClusterProfile.model_validate(
    {
        "apiVersion": "rayops.io/v1alpha1",
        "kind": "ClusterProfile",
        "metadata": {"name": "contract-small"},
        "spec": {
            "description": "the backend contract suite's profile",
            "head": {"cpu": "1", "memory": "2Gi"},
            "workerGroups": [
                {
                    "name": "cpu",
                    "cpu": "1",
                    "memory": "1Gi",
                    "minWorkers": 0,
                    "defaultWorkers": 1,
                    "maxWorkers": 4,
                }
            ],
            "defaultTtl": "2h",
            "maxTtl": "1d",
        },
    }
)
GROUP = "cpu"
MISSING_PROFILE = "no-such-profile"
REQUESTER = "slack:U0CONTRACT"


class Backend(ScaleTarget, ClusterBackend, Protocol):
    """Both protocols, as every backend implements them (the suite uses both on one object)."""


class BackendDriver(Protocol):
    name: str
    namespace: str  # where the suite creates clusters ("local" in laptop mode)

    @property
    def backend(self) -> Backend:
        """The backend instance under test (a new one after `restart`)."""
        ...

    def request(
        self, name: str, workers: int | None = None, ttl_seconds: int | None = None
    ) -> ClusterRequest:
        """A request for `CONTRACT_PROFILE` in `namespace` (workers None: the profile's default)."""
        ...

    def settle(self, ref: ClusterRef) -> None:
        """Let the platform carry out what the backend asked (the operator reconciles, processes start or
        stop) until the cluster's workers match its target or it is gone; fails the test on a timeout."""
        ...

    def live_count(self, ref: ClusterRef, group: str) -> int:
        """Workers of `group` that exist now, as the platform (not the backend) sees them."""
        ...

    def exists(self, ref: ClusterRef) -> bool:
        """Whether anything of the cluster is left on the platform, opted in or not."""
        ...

    def annotations(self, ref: ClusterRef) -> dict[str, str]:
        """The cluster's annotations as stored, readable after `release` too."""
        ...

    def concurrent_count(self, ref: ClusterRef, group: str, replicas: int) -> None:
        """Another writer (a notebook's apply, kubectl) sets the group's count behind the backend's back."""
        ...

    def concurrent_annotation(self, ref: ClusterRef, key: str, value: str) -> None:
        """Another writer changes something that does not overlap with what the backend writes."""
        ...

    def restart(self) -> Backend:
        """Drop the backend instance and make a new one over the same platform state (a controller
        restart), which becomes `backend`."""
        ...


class WorkerDriver(BackendDriver, Protocol):
    """A driver whose backend models individual workers, with Ray activity."""

    def live_workers(self, ref: ClusterRef, group: str) -> set[str]:
        """Names of the workers of `group` that exist now (pods, processes), from the platform."""
        ...

    def set_busy(self, ref: ClusterRef, worker: str, busy: bool) -> None:
        """Make the worker run something (busy) or nothing (idle), as Ray will report it next."""
        ...


DriverFactory = Callable[[pytest.FixtureRequest], Iterator[BackendDriver]]
WorkerDriverFactory = Callable[[pytest.FixtureRequest], Iterator[WorkerDriver]]
