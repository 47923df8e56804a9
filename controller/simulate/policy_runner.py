"""Drive a ScalingPolicy through the controller's own pure decision function inside the engine.

Each decision builds the `GroupObservation` the live controller would build for the simulated group,
calls `controller.policy.decide.decide` (the same function, not a re-implementation), threads its
`GroupState`, and hands the decision's target and removals back to the engine.

What the simulated group can report:
- pendingDemand (CPU or GPU): the queued tasks' CPUs (GPUs), as Ray's dashboard reports resource
  demand it cannot place;
- utilization (CPU or GPU): busy / ready CPUs (GPUs) x 100 over ready workers; not measurable with no
  ready worker (reported unavailable, as Prometheus would have no series);
- workers with IDLE / BUSY activity (a worker still starting runs nothing: IDLE and not ready, so
  `decide` may cancel it first, as it would a pending pod);
- promql signals and other resources: unavailable ("not modelled by the simulator"), since a trace has
  no such series; the policy's `onMissingData` then applies exactly as it would live.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta

from controller.domain import Activity, Decision, GroupObservation, GroupRef, Sample, Worker
from controller.policy.model import PendingDemandSignal, ScalingPolicy, UtilizationSignal
from controller.simulate.baselines import RAY_INTERVAL_S, ray_command
from controller.simulate.model import Command, GroupView, Model

SOURCE = "simulation"


def with_max_replicas(policy: ScalingPolicy, max_replicas: int | None) -> ScalingPolicy:
    """The policy with `--max-replicas` applied (minReplicas lowered with it if needed)."""
    if max_replicas is None:
        return policy
    spec = policy.spec.model_copy(
        update={"max_replicas": max_replicas, "min_replicas": min(policy.spec.min_replicas, max_replicas)}
    )
    return policy.model_copy(update={"spec": spec})


def group_ref(trace_name: str) -> GroupRef:
    cluster = re.sub(r"[^a-z0-9-]+", "-", trace_name.lower()).strip("-")[:63] or "trace"
    return GroupRef("simulation", cluster, "workers")


def observation(
    policy: ScalingPolicy,
    view: GroupView,
    ref: GroupRef,
    now: datetime,
    start: datetime,
    bounds: tuple[int, int] | None = None,
) -> GroupObservation:
    """The observation the live controller would build for the simulated group (`bounds`: the
    minReplicas/maxReplicas last written, in bounds mode)."""
    m: Model = view.model
    ready = view.ready
    samples: dict[str, Sample] = {}
    for sig in policy.spec.signals:
        res = getattr(sig, "resource", None)
        if isinstance(sig, PendingDemandSignal) and res in ("CPU", "GPU"):
            value = view.queued_cpus if res == "CPU" else view.queued_gpus
            samples[sig.name] = Sample.ok(value, now, SOURCE)
        elif isinstance(sig, UtilizationSignal) and res in ("CPU", "GPU"):
            per_worker = m.worker_cpus if res == "CPU" else (m.worker_gpus or 0.0)
            busy = view.running_cpus if res == "CPU" else view.running_gpus
            if ready == 0 or per_worker == 0:
                samples[sig.name] = Sample.missing("no ready worker to measure", SOURCE, now)
            else:
                samples[sig.name] = Sample.ok(100.0 * busy / (ready * per_worker), now, SOURCE)
        else:
            samples[sig.name] = Sample.missing(
                f"{sig.type} signal not modelled by the simulator", SOURCE, now
            )
    resources = {"CPU": m.worker_cpus}
    if m.worker_gpus:
        resources["GPU"] = m.worker_gpus
    workers = tuple(
        Worker(
            name=w.name,
            activity=Activity.BUSY if w.busy else Activity.IDLE,
            ready=w.ready,
            node_id=w.name if w.ready else None,
            started_at=start + timedelta(seconds=w.created_s),
        )
        for w in view.workers
    )
    return GroupObservation(
        ref=ref,
        current=view.count,
        min_replicas=bounds[0] if bounds else policy.spec.min_replicas,
        max_replicas=bounds[1] if bounds else policy.spec.max_replicas,
        ready=ready,
        workers=workers,
        samples=samples,
        worker_resources=resources,
    )


class PolicyController:
    """The engine's view of one policy: `decide` every `policy_interval_s`, state threaded between.

    Owner mode: the decision's target and removals are applied as they are. Bounds mode: `decide`
    writes `minReplicas`/`maxReplicas` and Ray's own autoscaler picks the count inside them, so the
    group runs the `ray-like` baseline (every 5 s) within the bounds of the latest decision.
    """

    def __init__(self, policy: ScalingPolicy, model: Model, start: datetime, trace_name: str) -> None:
        from controller.policy.state import GroupState

        self.policy = policy
        self.name = policy.name
        self.bounds_mode = policy.spec.mode == "bounds"
        self.decide_every = model.policy_interval_s
        self.interval_s: float | None = RAY_INTERVAL_S if self.bounds_mode else model.policy_interval_s
        self.start = start
        self.ref = group_ref(trace_name)
        self.state = GroupState.empty()
        self.bounds = (min(policy.spec.min_replicas, policy.spec.max_replicas), policy.spec.max_replicas)
        self.next_decide = 0.0
        self.reasons: Counter[str] = Counter()
        self.last: Decision | None = None

    def initial(self) -> int:
        return self.bounds[0]

    def step(self, view: GroupView) -> Command:
        if not self.bounds_mode:
            decision = self._decide(view)
            return Command(decision.target, decision.remove)
        if view.t >= self.next_decide - 1e-9:
            decision = self._decide(view)
            if decision.min_replicas is not None and decision.max_replicas is not None:
                self.bounds = (decision.min_replicas, decision.max_replicas)
            self.next_decide = view.t + self.decide_every
        return ray_command(view, *self.bounds)

    def _decide(self, view: GroupView) -> Decision:
        from controller.policy.decide import decide

        now = self.start + timedelta(seconds=view.t)
        bounds = self.bounds if self.bounds_mode else None
        obs = observation(self.policy, view, self.ref, now, self.start, bounds)
        decision, self.state = decide(self.policy, obs, self.state, now)
        self.last = decision
        self.reasons.update(str(c) for c in decision.codes)
        return decision
