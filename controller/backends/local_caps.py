"""How many local clusters and workers this machine can hold (contracts.md section 7).

A laptop that starts one Ray node too many swaps or gets OOM-killed, taking the user's editor with it,
so the local backend refuses up front: `CapacityExceeded` (permanent until something is deleted) when
the clusters and workers asked for would exceed the cap derived from the machine, and
`BackendUnavailable` (transient) when the cap allows them but the memory available right now does not.

Costs per node come from measurements on Ray 2.60 (running-real-components.md section 8): a head about
1.5 GiB (services plus raylet group), a worker about 0.45 GiB (its processes plus `ray start --block`),
before any task runs. CPUs are logical CPUs offered to Ray; oversubscribing them is allowed up to a
factor, because idle nodes cost little CPU but Ray schedules by these numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from controller.backends.base import BackendUnavailable, CapacityExceeded

__all__ = ["GIB", "LocalCaps", "Usage", "read_meminfo"]

GIB = 1024**3
HEAD_BYTES = int(1.5 * GIB)
WORKER_BYTES = int(0.45 * GIB)
RESERVE_BYTES = GIB // 2  # kept free for the user's own programs when checking available memory


def read_meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """`/proc/meminfo` in bytes (`MemTotal`, `MemAvailable`, ...); empty where there is none."""
    out: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[name.strip()] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


@dataclass(frozen=True)
class Usage:
    """Local Ray nodes, counted: existing ones, or the ones a request adds."""

    clusters: int = 0
    workers: int = 0
    worker_cpus: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.clusters + other.clusters, self.workers + other.workers, self.worker_cpus + other.worker_cpus
        )


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


@dataclass(frozen=True)
class LocalCaps:
    """The cap on local clusters and workers, with where it came from (`basis`, for messages).

    `memory_bytes` bounds heads x `head_bytes` + workers x `worker_bytes`; `cpus` bounds the logical
    CPUs all workers offer together; `max_clusters`/`max_workers` are optional hard counts on top.
    `check_available` also compares what a start adds with `MemAvailable` right now.
    """

    memory_bytes: int
    cpus: float
    head_bytes: int = HEAD_BYTES
    worker_bytes: int = WORKER_BYTES
    max_clusters: int | None = None
    max_workers: int | None = None
    check_available: bool = True
    basis: str = "configured"

    @classmethod
    def from_machine(
        cls,
        memory_fraction: float = 0.6,
        cpu_factor: float = 2.0,
        meminfo: dict[str, int] | None = None,
        cpu_count: int | None = None,
        **overrides: object,
    ) -> LocalCaps:
        """Caps from this machine: `memory_fraction` of MemTotal, `cpu_factor` x the CPU count."""
        info = read_meminfo() if meminfo is None else meminfo
        total = info.get("MemTotal", 8 * GIB)
        cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
        caps = cls(
            memory_bytes=int(total * memory_fraction),
            cpus=cpus * cpu_factor,
            basis=(
                f"{memory_fraction:.0%} of this machine's {_gib(total)} memory, "
                f"{cpu_factor:g} x its {cpus} CPUs"
            ),
        )
        return replace(caps, **overrides)  # type: ignore[arg-type]

    def cost(self, usage: Usage) -> int:
        return usage.clusters * self.head_bytes + usage.workers * self.worker_bytes

    def check(self, current: Usage, add: Usage) -> None:
        """Raise CapacityExceeded when `current + add` is over any cap; the message says which and why."""
        total = current + add
        what = f"{total.clusters} cluster(s) and {total.workers} worker(s)"
        fix = "delete a local cluster or scale one down, or raise the cap (LocalCaps)"
        if self.max_clusters is not None and add.clusters and total.clusters > self.max_clusters:
            raise CapacityExceeded(
                f"local capacity: at most {self.max_clusters} local clusters "
                f"(asked for {total.clusters}); {fix}"
            )
        if self.max_workers is not None and add.workers and total.workers > self.max_workers:
            raise CapacityExceeded(
                f"local capacity: at most {self.max_workers} local workers in all "
                f"(asked for {total.workers}); {fix}"
            )
        if (add.clusters or add.workers) and self.cost(total) > self.memory_bytes:
            raise CapacityExceeded(
                f"local capacity: {what} need about {_gib(self.cost(total))} of memory "
                f"(a head ~{self.head_bytes / GIB:.2f} GiB, a worker ~{self.worker_bytes / GIB:.2f} GiB), "
                f"over the cap of "
                f"{_gib(self.memory_bytes)} ({self.basis}); {fix}"
            )
        if add.worker_cpus and total.worker_cpus > self.cpus:
            raise CapacityExceeded(
                f"local capacity: workers would offer {total.worker_cpus:g} CPUs in all, over the cap of "
                f"{self.cpus:g} ({self.basis}); {fix}"
            )

    def check_now(self, add: Usage, meminfo: dict[str, int] | None = None) -> None:
        """Raise BackendUnavailable when starting `add` now would eat the memory kept for the user."""
        if not self.check_available or not (add.clusters or add.workers):
            return
        info = read_meminfo() if meminfo is None else meminfo
        available = info.get("MemAvailable")
        if available is None:
            return
        needed = self.cost(add) + RESERVE_BYTES
        if needed > available:
            raise BackendUnavailable(
                f"only {_gib(available)} of memory is available now; starting "
                f"{add.clusters} head(s) and {add.workers} worker(s) needs about {_gib(needed)} "
                f"(with {_gib(RESERVE_BYTES)} kept free); retried later"
            )
