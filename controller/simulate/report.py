"""Metrics per run and the three report forms: a text table, a markdown table and JSON (contracts.md 8).

Definitions (printed with every report, so a number is never ambiguous):
- `worker_hours`: the integral of ready workers over the run (autoscaling-anchors.md 6.1), from 0 to the
  trace's end, or later if the run still had tasks queued or running then (until the last one finished).
  `gpu_hours` = worker_hours x GPUs per worker.
- `queue_wait_pXX_s`: nearest-rank percentiles over all tasks of (start - arrival); a task that never
  started is counted with its wait up to the end of the run.
- `unserved_demand_s`: the integral of queued demand, in workers, over time (worker-seconds of demand
  that waited): the "unserved demand x time" of the anchors.
- `actions`: decisions that changed the worker count (adding 4 workers at once is one action).
- `flaps`: scale-ups that come within W = 10 min of a scale-down, with no action in between: a removal
  regretted soon after. The other reversal (down after up) is not counted: scaling in after a burst
  is the intended behaviour, not instability.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.simulate.model import RunResult

FLAP_WINDOW_S = 600.0
FIELDS = (
    "policy",
    "worker_hours",
    "gpu_hours",
    "queue_wait_p50_s",
    "queue_wait_p95_s",
    "queue_wait_p99_s",
    "unserved_demand_s",
    "actions",
    "flaps",
)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p % of the values at or below it."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered) - 1e-9))
    return ordered[rank - 1]


def count_flaps(actions: Sequence[tuple[float, int]], window_s: float = FLAP_WINDOW_S) -> int:
    flaps = 0
    for (t0, d0), (t1, d1) in itertools.pairwise(actions):
        if d0 < 0 < d1 and t1 - t0 <= window_s:
            flaps += 1
    return flaps


@dataclass(frozen=True)
class PolicyResult:
    """One row of the report."""

    policy: str
    kind: str  # "policy" or "baseline"
    worker_hours: float
    gpu_hours: float
    queue_wait_p50_s: float
    queue_wait_p95_s: float
    queue_wait_p99_s: float
    unserved_demand_s: float
    actions: int
    flaps: int
    decision_interval_s: float | None
    unfinished_tasks: int
    max_wait_s: float
    run: RunResult = field(repr=False, compare=False)

    @staticmethod
    def from_run(
        run: RunResult, kind: str, worker_gpus: float, decision_interval_s: float | None
    ) -> PolicyResult:
        wh = run.ready_seconds / 3600.0
        return PolicyResult(
            policy=run.name,
            kind=kind,
            worker_hours=wh,
            gpu_hours=wh * worker_gpus,
            queue_wait_p50_s=percentile(run.waits, 50),
            queue_wait_p95_s=percentile(run.waits, 95),
            queue_wait_p99_s=percentile(run.waits, 99),
            unserved_demand_s=run.unserved_demand_s,
            actions=len(run.actions),
            flaps=count_flaps(run.actions),
            decision_interval_s=decision_interval_s,
            unfinished_tasks=run.unfinished,
            max_wait_s=max(run.waits, default=0.0),
            run=run,
        )

    def row(self, model: Mapping[str, object]) -> dict[str, Any]:
        """The JSON object of contracts.md section 8: its fields, then this run's model parameters."""
        d: dict[str, Any] = {f: getattr(self, f) for f in FIELDS}
        for f in FIELDS[1:7]:
            d[f] = round(d[f], 6)
        d["unfinished_tasks"] = self.unfinished_tasks
        d["model"] = {**model, "decision_interval_s": self.decision_interval_s}
        return d


@dataclass(frozen=True)
class Report:
    trace: Mapping[str, object]
    model: Mapping[str, object]
    results: tuple[PolicyResult, ...]
    notes: tuple[str, ...] = ()

    def result(self, name: str) -> PolicyResult:
        for r in self.results:
            if r.policy == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace": dict(self.trace),
            "model": dict(self.model),
            "definitions": DEFINITIONS,
            "notes": list(self.notes),
            "results": [r.row(self.model) for r in self.results],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def _table(self) -> tuple[list[str], list[list[str]]]:
        head = ["policy", "worker-h", "GPU-h", "wait p50 s", "wait p95 s", "wait p99 s", "unserved s"]
        head += ["actions", "flaps", "vs oracle"]
        oracle = next((r for r in self.results if r.policy == "oracle"), None)
        rows = []
        for r in self.results:
            ratio = (
                f"{r.worker_hours / oracle.worker_hours:.2f}x"
                if oracle is not None and oracle.worker_hours > 0
                else "-"
            )
            rows.append(
                [
                    r.policy + ("" if r.kind == "policy" else " *"),
                    f"{r.worker_hours:.3f}",
                    f"{r.gpu_hours:.3f}",
                    f"{r.queue_wait_p50_s:.1f}",
                    f"{r.queue_wait_p95_s:.1f}",
                    f"{r.queue_wait_p99_s:.1f}",
                    f"{r.unserved_demand_s:.0f}",
                    str(r.actions),
                    str(r.flaps),
                    ratio,
                ]
            )
        return head, rows

    def header_lines(self) -> list[str]:
        t = self.trace
        m = self.model
        span = t["span_s"]
        hours = span / 3600 if isinstance(span, int | float) else 0.0
        lines = [
            f"trace {t['name']} ({t['source']}): {t['tasks']} tasks over {hours:.2f} h from {t['start']}",
            "model: "
            + ", ".join(f"{k}={v}" for k, v in m.items() if v is not None and k != "idle_removal")
            + ", idle worker removal immediate once decided",
        ]
        lines += [f"note: {n}" for n in self.notes]
        return lines

    def to_text(self) -> str:
        head, rows = self._table()
        widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]

        def fmt(cells: list[str]) -> str:
            return "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )

        out = [*self.header_lines(), "", fmt(head), fmt(["-" * w for w in widths])]
        out += [fmt(r) for r in rows]
        out.append("* baseline (contracts.md section 8); flaps = scale-ups within 10 min of a scale-down")
        return "\n".join(out) + "\n"

    def to_markdown(self) -> str:
        head, rows = self._table()
        out = [f"- {line}" for line in self.header_lines()] + [""]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|")
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out.append("")
        out.append("\\* baseline (contracts.md section 8); flaps = scale-ups within 10 min of a scale-down")
        return "\n".join(out) + "\n"


DEFINITIONS = {
    "worker_hours": "integral of ready workers over [0, end of run]; the run ends at the trace's end, "
    "or when its last task finishes if later",
    "gpu_hours": "worker_hours x GPUs per worker",
    "queue_wait_pXX_s": "nearest-rank percentile over tasks of start - arrival "
    "(unstarted tasks: up to the end)",
    "unserved_demand_s": "integral over time of queued demand in workers (worker-seconds of waiting demand)",
    "actions": "decisions that changed the worker count",
    "flaps": f"scale-ups within {FLAP_WINDOW_S:g} s of the preceding scale-down (a regretted removal)",
    "oracle": "lower bound for zero queue wait: integral of ceil(concurrent demand / worker shape), "
    "no start-up delay, perfect packing, uncapped",
}
