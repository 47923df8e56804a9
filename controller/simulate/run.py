"""One simulation: every policy and the four baselines over the same trace, into one `Report`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from controller.policy.model import PromQLSignal, ScalingPolicy
from controller.simulate.baselines import HpaLike, RayLike, StaticPeak, oracle_run
from controller.simulate.engine import Engine
from controller.simulate.model import Controller, Model
from controller.simulate.policy_runner import PolicyController, with_max_replicas
from controller.simulate.report import PolicyResult, Report
from controller.simulate.trace import SimulationInputError, Trace

BASELINES = ("static-peak", "ray-like", "hpa-like", "oracle")


def simulate(
    trace: Trace,
    policies: Sequence[ScalingPolicy],
    model: Model | None = None,
    baselines: Sequence[str] = BASELINES,
    notes: Sequence[str] = (),
) -> Report:
    """Replay `trace` through each policy (via `decide`) and the chosen baselines.

    `model.max_replicas`, when set, overrides every policy's maxReplicas and caps the baselines; when
    not set the baselines are capped at the largest maxReplicas of the policies (uncapped without any).
    """
    model = (model or Model()).for_trace(trace)
    for name in (p.name for p in policies):
        if name in BASELINES:
            raise SimulationInputError(
                f"policy name '{name}' clashes with a baseline; rename it for the replay"
            )
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise SimulationInputError(f"unknown baseline(s) {', '.join(unknown)}; known: {', '.join(BASELINES)}")
    run_policies = [_for_replay(p, model.max_replicas) for p in policies]
    base_model = model
    if model.max_replicas is None and run_policies:
        base_model = replace(model, max_replicas=max(p.spec.max_replicas for p in run_policies))
    all_notes = list(trace.notes) + list(notes)
    for p in policies:
        promql = [s.name for s in p.spec.signals if isinstance(s, PromQLSignal)]
        if promql:
            all_notes.append(
                f"{p.name}: promql signal(s) {', '.join(promql)} are unavailable in simulation "
                "(a trace carries no such series); onMissingData applies"
            )
        if p.spec.dry_run:
            all_notes.append(f"{p.name}: dryRun is ignored in simulation (the replay shows what it would do)")
    gpus = model.worker_gpus or 0.0
    results: list[PolicyResult] = []
    for p in run_policies:
        ctl = PolicyController(p, model, trace.start, trace.name)
        results.append(_run(trace, ctl, model, "policy", gpus))
    controllers: dict[str, Controller] = {
        "static-peak": StaticPeak(trace, base_model),
        "ray-like": RayLike(base_model),
        "hpa-like": HpaLike(base_model),
    }
    for name in BASELINES:
        if name not in baselines:
            continue
        if name == "oracle":
            results.append(PolicyResult.from_run(oracle_run(trace, base_model), "baseline", gpus, None))
        else:
            results.append(_run(trace, controllers[name], base_model, "baseline", gpus))
    for r in results:
        all_notes.extend(f"{r.policy}: {n}" for n in r.run.notes)
    trace_info = {
        "name": trace.name,
        "source": trace.source,
        "tasks": len(trace.tasks),
        "span_s": round(trace.end_s, 6),
        "start": trace.start.isoformat(),
    }
    model_info = base_model.to_dict()
    return Report(trace=trace_info, model=model_info, results=tuple(results), notes=tuple(all_notes))


def _for_replay(policy: ScalingPolicy, max_replicas: int | None) -> ScalingPolicy:
    p = with_max_replicas(policy, max_replicas)
    if p.spec.dry_run:
        p = p.model_copy(update={"spec": p.spec.model_copy(update={"dry_run": False})})
    return p


def _run(trace: Trace, ctl: Controller, model: Model, kind: str, gpus: float) -> PolicyResult:
    run = Engine(trace, ctl, model).run()
    return PolicyResult.from_run(run, kind, gpus, ctl.interval_s)
