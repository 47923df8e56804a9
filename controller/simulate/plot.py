"""A PNG of demand vs ready capacity over time, one panel per policy and baseline.

Demand in each panel is that run's running + queued work in workers, so a backlog shows as demand above
capacity; the zero-wait demand of the trace (what the oracle follows) is drawn thin and grey in every
panel for comparison. Renders with matplotlib's Agg canvas through `Figure` (not pyplot): no display needed.
"""

from __future__ import annotations

from pathlib import Path

from controller.simulate.report import Report
from controller.simulate.trace import SimulationInputError


def write_plot(report: Report, path: str | Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend, faster import

    runs = list(report.results)
    oracle = next((r for r in runs if r.policy == "oracle"), None)
    span = max((r.run.end_s for r in runs), default=1.0)
    scale, unit = (3600.0, "h") if span > 3 * 3600 else (60.0, "min") if span > 300 else (1.0, "s")
    fig = Figure(figsize=(11, 1.9 * len(runs) + 0.8))
    axes = fig.subplots(len(runs), 1, sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], runs, strict=True):
        run = r.run
        xs = [t / scale for t in run.series_t]
        if oracle is not None and r is not oracle:
            ox = [t / scale for t in oracle.run.series_t]
            ax.step(ox, oracle.run.series_demand, where="post", color="0.7", lw=0.6, label="zero-wait demand")
        ax.fill_between(xs, run.series_demand, step="post", color="tab:orange", alpha=0.35, label="demand")
        ax.step(xs, run.series_ready, where="post", color="tab:blue", lw=1.0, label="ready workers")
        ax.set_ylabel("workers")
        ax.set_title(
            f"{r.policy}: {r.worker_hours:.2f} worker-h, p95 wait {r.queue_wait_p95_s:.1f} s, "
            f"{r.actions} actions, {r.flaps} flaps",
            fontsize=9,
            loc="left",
        )
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel(f"time since trace start ({unit})")
    fig.suptitle(f"demand vs ready capacity: {report.trace['name']}", fontsize=11)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png", dpi=90)
    except OSError as e:
        raise SimulationInputError(f"cannot write the plot to {path}: {e.strerror or e}") from e
