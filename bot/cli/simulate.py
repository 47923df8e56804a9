"""`rayops simulate`: replay a demand trace through policies and the four baselines (contracts.md 8).

    rayops simulate --policy FILE [--policy FILE ...] --trace FILE [options]
    rayops simulate --policy FILE --from-prometheus URL --start now-7d --end now [--cluster NS/NAME]

Prints a text table; `--json`, `--markdown` and `--plot` write the other forms. Input errors (a bad trace
row, an invalid policy, an unreachable Prometheus, an unwritable output) print one line and exit 1: a
traceback is only ever a bug.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.simulate.trace import Trace

EPILOG = """\
trace formats: CSV `timestamp,tasks,duration_s[,cpus][,gpus]` (timestamp in seconds from the start or
ISO 8601), the Azure LLM inference format `TIMESTAMP,ContextTokens,GeneratedTokens`, or
`synthetic:KIND[:SEED]` with KIND one of diurnal, bursts, steps, long-idle.
baselines: static-peak, ray-like, hpa-like, oracle (always run beside the policies).
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "simulate",
        help="Replay a demand trace through a policy and the baselines.",
        description="Replay a demand trace through policies (the controller's own decision function)\n"
        "and the baselines static-peak, ray-like, hpa-like and oracle; report cost against queue wait.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--policy",
        action="append",
        required=True,
        metavar="FILE",
        help="policy file or directory (repeatable)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace", metavar="FILE", help="trace file (see below), or synthetic:KIND[:SEED]")
    src.add_argument("--from-prometheus", metavar="URL", help="rebuild demand from this Prometheus' history")
    p.add_argument("--start", help="with --from-prometheus: ISO 8601, Unix seconds, now or now-7d")
    p.add_argument("--end", default="now", help="with --from-prometheus (default: now)")
    p.add_argument("--step", default="15s", help="with --from-prometheus: resolution (default 15s)")
    p.add_argument("--query", help="with --from-prometheus: PromQL for the demand level (one series)")
    p.add_argument("--cluster", metavar="NS/NAME", help="with --from-prometheus: restrict the default query")
    p.add_argument(
        "--startup", type=float, default=30.0, metavar="S", help="worker start-up delay (30; 5 for laptop)"
    )
    p.add_argument("--worker-cpus", type=float, default=1.0, metavar="N", help="CPUs per worker (1)")
    p.add_argument(
        "--worker-gpus",
        type=float,
        default=None,
        metavar="N",
        help="GPUs per worker (1 if the trace has GPU tasks, else 0)",
    )
    p.add_argument("--interval", type=float, default=15.0, metavar="S", help="policy decision interval (15)")
    p.add_argument(
        "--max-replicas",
        type=int,
        default=None,
        metavar="N",
        help="override every policy's maxReplicas and cap the baselines",
    )
    p.add_argument(
        "--task-cpus", type=float, default=1.0, metavar="N", help="with --from-prometheus: CPUs per task (1)"
    )
    p.add_argument(
        "--azure-model",
        metavar="A,B,C",
        help="Azure duration model: A + B*ContextTokens + C*GeneratedTokens seconds (0.5,0.0005,0.05)",
    )
    p.add_argument("--json", metavar="OUT", help="write the JSON report here")
    p.add_argument("--markdown", metavar="OUT", help="write a markdown table here")
    p.add_argument("--plot", metavar="OUT.png", help="write a PNG of demand vs ready capacity here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from controller.simulate.trace import SimulationInputError

    try:
        return _run(args)
    except SimulationInputError as e:
        print(f"rayops simulate: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from controller.simulate.engine import Model
    from controller.simulate.policies import load_policies
    from controller.simulate.run import simulate
    from controller.simulate.trace import SimulationInputError

    for flag, value, ok in (
        ("--startup", args.startup, args.startup >= 0),
        ("--worker-cpus", args.worker_cpus, args.worker_cpus > 0),
        ("--worker-gpus", args.worker_gpus, args.worker_gpus is None or args.worker_gpus >= 0),
        ("--interval", args.interval, args.interval > 0),
        ("--max-replicas", args.max_replicas, args.max_replicas is None or args.max_replicas >= 0),
        ("--task-cpus", args.task_cpus, args.task_cpus > 0),
    ):
        if not ok:
            raise SimulationInputError(f"{flag} {value}: out of range")
    for path in (args.json, args.markdown, args.plot):  # fail before a long replay, not after it
        if path and not Path(path).resolve().parent.is_dir():
            raise SimulationInputError(f"cannot write {path}: its directory does not exist")
    policies = load_policies(args.policy)
    trace = _trace(args)
    model = Model(
        startup_s=args.startup,
        worker_cpus=args.worker_cpus,
        worker_gpus=args.worker_gpus,
        policy_interval_s=args.interval,
        max_replicas=args.max_replicas,
    )
    report = simulate(trace, policies, model)
    print(report.to_text(), end="")
    for path, text in ((args.json, report.to_json), (args.markdown, report.to_markdown)):
        if path:
            _write(path, text())
    if args.plot:
        from controller.simulate.plot import write_plot

        write_plot(report, args.plot)
    return 0


def _trace(args: argparse.Namespace) -> Trace:
    from controller.simulate.trace import AzureDurationModel, SimulationInputError, read_trace

    prom_only = [
        f for f, v in (("--start", args.start), ("--query", args.query), ("--cluster", args.cluster)) if v
    ]
    if args.trace:
        if prom_only:
            raise SimulationInputError(f"{', '.join(prom_only)} only apply with --from-prometheus")
        if args.trace.startswith("synthetic:"):
            return _synthetic(args.trace)
        azure = AzureDurationModel.parse(args.azure_model) if args.azure_model else None
        return read_trace(args.trace, azure_model=azure)
    from controller.simulate.prometheus_history import parse_time, trace_from_prometheus

    if not args.start:
        raise SimulationInputError("--from-prometheus needs --start (e.g. --start now-7d)")
    return trace_from_prometheus(
        args.from_prometheus,
        parse_time(args.start),
        parse_time(args.end),
        step=args.step,
        query=args.query,
        cluster=args.cluster,
        task_cpus=args.task_cpus,
    )


def _synthetic(spec: str) -> Trace:
    from controller.simulate.synthetic import GENERATORS
    from controller.simulate.trace import SimulationInputError

    parts = spec.split(":")
    kind = parts[1] if len(parts) > 1 else ""
    if kind not in GENERATORS or len(parts) > 3:
        raise SimulationInputError(
            f"--trace {spec}: expected synthetic:KIND[:SEED], KIND one of {', '.join(GENERATORS)}"
        )
    try:
        seed = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise SimulationInputError(f"--trace {spec}: the seed must be a whole number") from None
    return GENERATORS[kind](seed)


def _write(path: str, text: str) -> None:
    from controller.simulate.trace import SimulationInputError

    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise SimulationInputError(f"cannot write {path}: {e.strerror or e}") from e
