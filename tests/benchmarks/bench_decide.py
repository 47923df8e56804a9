"""Benchmark of the pure decision function (issue 3): CPU time per controller tick for 3,000 groups.

    .venv/bin/python -m tests.benchmarks.bench_decide [--groups 3000] [--ticks 40]

Each group gets one of the shipped policies (policies/*.yaml: cpu-default, gpu, nights-and-weekends,
team-budget), a worker list of 0-16 workers with mixed activity, and samples for its signals that
wander from tick to tick (seeded). Every tick decides all groups, 15 s apart, threading each group's
GroupState; the backend "applies" each decision. A second measurement adds what the live loop adds
around `decide`: reading the state from its JSON annotation and writing it back. The first tick
(empty states) is reported apart. Time is `time.process_time()` (CPU, not wall), so other load on
the machine barely matters. Prints one markdown row; not a test, it asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from controller.domain import Activity, GroupObservation, GroupRef, Sample, Worker
from controller.policy.decide import decide
from controller.policy.model import PendingDemandSignal, ScalingPolicy, UtilizationSignal
from controller.policy.state import GroupState

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)  # a Friday, so the weekend schedule opens during a long run


def load_policies() -> list[ScalingPolicy]:
    out = []
    for path in sorted((ROOT / "policies").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "ScalingPolicy":
                out.append(ScalingPolicy.model_validate(doc))
    return out


@dataclass
class Group:
    policy: ScalingPolicy
    ref: GroupRef
    current: int
    demand: float  # pending work, in units of the signal's resource
    load: float  # utilization percent
    state: GroupState
    state_json: str


def observe(g: Group, rng: random.Random, now: datetime) -> GroupObservation:
    busy = min(g.current, int(g.current * g.load / 100))
    workers = tuple(
        Worker(
            f"{g.ref.cluster}-{g.ref.group}-{i}",
            Activity.BUSY if i < busy else Activity.IDLE,
            ready=i < g.current - (1 if rng.random() < 0.1 else 0),
            started_at=now - timedelta(seconds=60 * (i + 1)),
        )
        for i in range(g.current)
    )
    samples = {}
    for sig in g.policy.spec.signals:
        if rng.random() < 0.01:
            samples[sig.name] = Sample.missing("timeout", "bench")
        elif isinstance(sig, PendingDemandSignal):
            samples[sig.name] = Sample.ok(g.demand, now, "bench")
        elif isinstance(sig, UtilizationSignal):
            samples[sig.name] = Sample.ok(g.load, now, "bench")
        else:
            samples[sig.name] = Sample.ok(g.demand * 10, now, "bench")
    return GroupObservation(
        ref=g.ref,
        current=g.current,
        min_replicas=g.policy.spec.min_replicas,
        max_replicas=g.policy.spec.max_replicas,
        ready=sum(1 for w in workers if w.ready),
        workers=workers,
        samples=samples,
        worker_resources={"CPU": 4.0, "GPU": 1.0} if "gpu" in g.policy.name else {"CPU": 4.0},
    )


def make_groups(n: int, rng: random.Random) -> list[Group]:
    policies = load_policies()
    return [
        Group(
            policy=policies[i % len(policies)],
            ref=GroupRef(f"ns-{i // 100}", f"cluster-{i // 3}", f"group-{i % 3}"),
            current=rng.randint(0, 16),
            demand=0.0,
            load=rng.uniform(0, 100),
            state=GroupState.empty(),
            state_json="",
        )
        for i in range(n)
    ]


def wander(g: Group, rng: random.Random) -> None:
    g.demand = max(0.0, g.demand + rng.uniform(-3, 3)) if rng.random() < 0.8 else 0.0
    g.load = min(100.0, max(0.0, g.load + rng.uniform(-15, 15)))


def tick(groups: list[Group], rng: random.Random, now: datetime, with_json: bool) -> float:
    """Decide every group once; return the CPU seconds spent in decide (and the JSON, if asked)."""
    observations = [observe(g, rng, now) for g in groups]
    spent = 0.0
    for g, obs in zip(groups, observations, strict=True):
        t0 = time.process_time()
        if with_json:
            state = GroupState.from_json(g.state_json)
            decision, g.state = decide(g.policy, obs, state, now)
            g.state_json = g.state.to_json()
        else:
            decision, g.state = decide(g.policy, obs, g.state, now)
        spent += time.process_time() - t0
        g.current = decision.target
        wander(g, rng)
    return spent


def run(n_groups: int, n_ticks: int, with_json: bool) -> tuple[float, list[float], int]:
    rng = random.Random(3)
    groups = make_groups(n_groups, rng)
    first = tick(groups, rng, START, with_json)
    rest = [tick(groups, rng, START + timedelta(seconds=15 * i), with_json) for i in range(1, n_ticks)]
    largest_state = max(len(g.state.to_json()) for g in groups)
    return first, rest, largest_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=3000)
    parser.add_argument("--ticks", type=int, default=40)
    args = parser.parse_args()
    plain = run(args.groups, args.ticks, with_json=False)
    stored = run(args.groups, args.ticks, with_json=True)
    print(
        "| groups | ticks | first tick CPU s | CPU s / tick (median) | p95 | µs / decision "
        "| with state JSON: CPU s / tick (median) | largest state (bytes) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    med = statistics.median(plain[1])
    p95 = statistics.quantiles(plain[1], n=20)[-1]
    print(
        f"| {args.groups} | {args.ticks} | {plain[0]:.3f} | {med:.3f} | {p95:.3f} | "
        f"{med / args.groups * 1e6:.0f} | {statistics.median(stored[1]):.3f} | {stored[2]} |"
    )


if __name__ == "__main__":
    main()
