"""Benchmark of `rayops simulate` (issue 3): the example policies beside the four baselines.

    .venv/bin/python -m tests.benchmarks.bench_simulate [--out DIR] [--max-replicas 64] [--quick]

Traces: the Azure LLM inference code trace (tests/fixtures/traces, CC BY 4.0) and the seeded synthetic
traces diurnal, bursts, steps and long idle (seed 1). Default model parameters (1-CPU workers, 30 s
start-up, 15 s policy interval); `--max-replicas` (64) lifts the laptop-sized caps of the example
policies (cpu-default has 4) for policies and baselines alike, since every trace peaks far above them.

Prints, in markdown: one table per trace; the goals of issue 3 for the default policy (cpu-default):
<= 0.9x the worker-hours of ray-like at equal or lower p95 queue wait, <= 0.6x static-peak, <= 1.15x the
oracle, <= 1 flap per hour; and the trade-off curve of cpu-default's scale-down stabilization window,
with and without its utilization signal. Not a test: it asserts nothing and takes a minute or two.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from controller.policy.model import ScalingPolicy
from controller.simulate.model import Model
from controller.simulate.plot import write_plot
from controller.simulate.policies import load_policies
from controller.simulate.report import PolicyResult, Report
from controller.simulate.run import simulate
from controller.simulate.synthetic import GENERATORS
from controller.simulate.trace import Trace, read_trace

REPO = Path(__file__).resolve().parents[2]
AZURE = REPO / "tests" / "fixtures" / "traces" / "AzureLLMInferenceTrace_code.csv"
DEFAULT = "cpu-default"
WINDOWS = (0, 30, 60, 120, 300, 600)


def traces() -> list[Trace]:
    return [read_trace(AZURE), *(make(1) for make in GENERATORS.values())]


# The three families of the sweep: (name, keep the utilization signal, keep the scale-up rate limit,
# decision interval in seconds)
FAMILIES = (
    ("cpu-default", True, True, 15.0),
    ("pending only", False, True, 15.0),
    ("pending only, 5 s, no up limit", False, False, 5.0),
)


def variant(window: int, utilization: bool, up_limit: bool) -> ScalingPolicy:
    """cpu-default with another scale-down window, with or without its utilization signal and its
    scale-up rate policies."""
    doc = copy.deepcopy(yaml.safe_load((REPO / "policies" / f"{DEFAULT}.yaml").read_text()))
    doc["metadata"]["name"] = f"w{window}"
    doc["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] = window
    if not utilization:
        doc["spec"]["signals"] = [s for s in doc["spec"]["signals"] if s["type"] != "utilization"]
    if not up_limit:
        doc["spec"]["behavior"]["scaleUp"]["policies"] = []  # an explicit empty list: no limit
    return ScalingPolicy.model_validate(doc)


@dataclass(frozen=True)
class Goals:
    trace: str
    hours: float
    x_ray: float
    p95: float
    ray_p95: float
    x_static: float
    x_oracle: float
    flaps_per_h: float

    @property
    def met(self) -> list[str]:
        return [
            "ray-like" if self.x_ray <= 0.9 and self.p95 <= self.ray_p95 else "",
            "static-peak" if self.x_static <= 0.6 else "",
            "oracle" if self.x_oracle <= 1.15 else "",
            "flaps" if self.flaps_per_h <= 1 else "",
        ]


def goals(rep: Report, tr: Trace, name: str = DEFAULT) -> Goals:
    r, ray = rep.result(name), rep.result("ray-like")
    return Goals(
        tr.name,
        r.worker_hours,
        r.worker_hours / ray.worker_hours,
        r.queue_wait_p95_s,
        ray.queue_wait_p95_s,
        r.worker_hours / rep.result("static-peak").worker_hours,
        r.worker_hours / rep.result("oracle").worker_hours,
        r.flaps / tr.span_hours,
    )


def goals_table(rows: Sequence[Goals], best: Sequence[str]) -> str:
    out = [
        "| trace | worker-h | x ray-like (<= 0.9) | p95 s (ray-like) | x static-peak (<= 0.6) "
        "| x oracle (<= 1.15) | flaps/h (<= 1) | goals met | cheapest sweep point at <= ray-like's p95 |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for g, b in zip(rows, best, strict=True):
        met = ", ".join(m for m in g.met if m) or "none"
        out.append(
            f"| {g.trace} | {g.hours:.2f} | {g.x_ray:.2f} | {g.p95:.1f} ({g.ray_p95:.1f}) | {g.x_static:.2f} "
            f"| {g.x_oracle:.2f} | {g.flaps_per_h:.2f} | {met} | {b} |"
        )
    return "\n".join(out)


def sweep(tr: Trace, rep: Report, model: Model, windows: Sequence[int]) -> tuple[str, str]:
    """Worker-hours (as x ray-like) against p95 wait and flaps per hour, per scale-down window; and
    the cheapest point at or under ray-like's p95."""
    ray = rep.result("ray-like")
    cols: list[list[str]] = [[str(w)] for w in windows]
    best: tuple[float, str] | None = None
    for name, util, up_limit, interval in FAMILIES:
        swept = simulate(
            tr,
            [variant(w, util, up_limit) for w in windows],
            replace(model, policy_interval_s=interval),
            baselines=(),
        )
        for row, w in zip(cols, windows, strict=True):
            r: PolicyResult = swept.result(f"w{w}")
            x = r.worker_hours / ray.worker_hours
            if r.queue_wait_p95_s <= ray.queue_wait_p95_s and (best is None or x < best[0]):
                best = (x, f"{x:.2f}x at p95 {r.queue_wait_p95_s:.1f} s ({name}, window {w} s)")
            row += [
                f"{r.worker_hours / ray.worker_hours:.2f}",
                f"{r.queue_wait_p95_s:.1f}",
                f"{r.flaps / tr.span_hours:.1f}",
            ]
    head = " | ".join(f"{name}: x ray-like | p95 s | flaps/h" for name, *_ in FAMILIES)
    out = [
        f"**{tr.name}** (ray-like: {ray.worker_hours:.2f} worker-h, p95 {ray.queue_wait_p95_s:.1f} s, "
        f"{ray.flaps / tr.span_hours:.1f} flaps/h; oracle {rep.result('oracle').worker_hours:.2f} worker-h)",
        "",
        f"| scale-down window s | {head} |",
        "|---:|" + "---:|" * (3 * len(FAMILIES)),
    ]
    out += ["| " + " | ".join(row) + " |" for row in cols]
    return "\n".join(out), (best[1] if best else "none")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="also write each trace's JSON report and PNG plot here")
    ap.add_argument("--max-replicas", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="only windows 30 and 300 in the sweep")
    args = ap.parse_args(argv)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    policies = load_policies([REPO / "policies"])
    model = Model(max_replicas=args.max_replicas)
    windows = (30, 300) if args.quick else WINDOWS
    started = time.monotonic()
    goal_rows: list[Goals] = []
    sweeps: list[str] = []
    best: list[str] = []
    for tr in traces():
        t0 = time.monotonic()
        rep = simulate(tr, policies, model)
        print(f"### {tr.name}\n")
        print(rep.to_markdown())
        print(f"({time.monotonic() - t0:.1f} s)\n")
        if args.out:
            (args.out / f"{tr.name}.json").write_text(rep.to_json())
            write_plot(rep, args.out / f"{tr.name}.png")
        goal_rows.append(goals(rep, tr))
        table, cheapest = sweep(tr, rep, model, windows)
        sweeps.append(table)
        best.append(cheapest)
    print(f"### Goals for {DEFAULT}\n")
    print(goals_table(goal_rows, best) + "\n")
    print(f"### Trade-off: {DEFAULT}'s scale-down stabilization window\n")
    print("\n\n".join(sweeps) + "\n")
    print(f"(total {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
