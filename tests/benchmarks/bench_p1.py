"""Benchmark P1 (issue 6): a burst on a laptop, `rayops up` against Ray's own autoscaler.

    .venv/bin/python -m tests.benchmarks.bench_p1 [--runs 3] [--system both|rayops|ray] [--out FILE]

From 0 workers, a driver submits 16 one-CPU tasks of 15 s each; the cluster is capped at 4 one-CPU
workers. Measured per run, from the submission:
- makespan: until the last task finished (the driver's own clock);
- time to capacity: until 4 workers are ALIVE (the cluster's dashboard, polled every 0.5 s);
- worker-seconds: ALIVE workers integrated over time until the cluster is back to 0 workers.

Systems, run alternately on the same machine (`--runs` each, median reported):
- `rayops`: `rayops up --no-console` as a subprocess, with its defaults (the `cpu-default` profile
  and ScalingPolicy from policies/, 2 s tick, local backend); Ctrl-C (SIGINT) at the end, as a
  person would stop it, which also stops its cluster;
- `ray`: Ray's autoscaler driving local workers through its fake multi-node provider with Ray's
  defaults (5 s loop, 60 s idle timeout, upscaling speed 1), as in
  docs/../running-real-components.md section 3.7: a 0-CPU head started with `RAY_FAKE_CLUSTER=1` and
  the autoscaling config below (validated first: the autoscaler logs a bad config at debug level
  only).

Not a test: a run takes 1.5-3 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

from controller import localray

TASKS, TASK_SECONDS, CAP = 16, 15.0, 4
REPO = Path(__file__).resolve().parents[2]
DRIVER = """
import json, sys, time
import ray
n, secs = int(sys.argv[1]), float(sys.argv[2])
ray.init(logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=1, max_retries=0)
def work(i):
    time.sleep(secs)
    return i

t0 = time.time()
refs = [work.remote(i) for i in range(n)]
ray.get(refs)
print(json.dumps({"t0": t0, "done": time.time()}), flush=True)
"""


def ray_autoscaler_config(gcs_port: int) -> dict[str, Any]:
    """running-real-components.md section 3.7, verbatim apart from the GCS port."""
    return {
        "cluster_name": "baseline",
        "max_workers": CAP,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 1.0,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": f"127.0.0.1:{gcs_port}",
        },
        "auth": {},
        "docker": {},
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "ray.worker.cpu": {
                "resources": {"CPU": 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": CAP,
            },
        },
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


@dataclass
class Run:
    system: str
    makespan_s: float = float("nan")
    time_to_capacity_s: float | None = None
    worker_seconds: float = float("nan")
    back_to_zero_s: float | None = None
    peak_workers: int = 0
    timeline: list[tuple[float, int]] = field(default_factory=list)


def alive_workers(dashboard: str) -> int:
    url = f"{dashboard}/api/v0/nodes?limit=1000&filter_keys=state&filter_predicates=%3D&filter_values=ALIVE"
    with urllib.request.urlopen(url, timeout=5) as r:
        nodes = json.load(r)["data"]["result"]["result"]
    return sum(1 for n in nodes if not n.get("is_head_node") and (n.get("resources_total") or {}).get("CPU"))


class Sampler:
    """Polls the number of ALIVE workers every 0.5 s in a thread."""

    def __init__(self, dashboard: str) -> None:
        self.dashboard = dashboard
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.samples.append((time.time(), alive_workers(self.dashboard)))
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def drive(address: str) -> dict[str, float]:
    env = dict(os.environ) | localray.DRIVER_ENV | {"RAY_ADDRESS": address}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DRIVER), str(TASKS), str(TASK_SECONDS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"driver failed ({proc.returncode}): {proc.stderr[-2000:]}")
    for line in reversed(proc.stdout.splitlines()):  # Ray may print its own lines around ours
        with contextlib.suppress(ValueError):
            result = json.loads(line)
            if isinstance(result, dict) and "t0" in result:
                return {"t0": float(result["t0"]), "done": float(result["done"])}
    raise RuntimeError(f"the driver printed no result: {proc.stdout[-2000:]}")


def measure(system: str, address: str, dashboard: str, settle_timeout_s: float = 400.0) -> Run:
    sampler = Sampler(dashboard)
    try:
        times = drive(address)
        deadline = time.time() + settle_timeout_s
        while time.time() < deadline:
            if sampler.samples and sampler.samples[-1][0] > times["done"] and sampler.samples[-1][1] == 0:
                break
            time.sleep(0.5)
    finally:
        sampler.stop()
    t0, done = times["t0"], times["done"]
    run = Run(system, makespan_s=round(done - t0, 1))
    samples = [(t, n) for t, n in sampler.samples if t >= t0]
    run.timeline = [(round(t - t0, 1), n) for t, n in samples]
    run.peak_workers = max((n for _, n in samples), default=0)
    run.time_to_capacity_s = next((round(t - t0, 1) for t, n in samples if n >= CAP), None)
    zero = next((t for t, n in samples if t > done and n == 0), None)
    run.back_to_zero_s = round(zero - t0, 1) if zero is not None else None
    end = zero if zero is not None else samples[-1][0]
    total = 0.0
    for (ta, na), (tb, _) in itertools.pairwise(samples):
        if ta >= end:
            break
        total += na * (min(tb, end) - ta)
    run.worker_seconds = round(total, 0)
    return run


def run_ray(workdir: Path) -> Run:
    from ray.autoscaler._private.util import validate_config

    ports = localray.HeadPorts.allocate()
    config = ray_autoscaler_config(ports.gcs)
    validate_config(config)
    path = workdir / "autoscaler.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "5"}
    with mock.patch.object(localray.HeadPorts, "allocate", return_value=ports):
        head = localray.start_head(
            num_cpus=0, env=env, extra_args=[f"--autoscaling-config={path}"], attempts=1, timeout_s=180
        )
    try:
        return measure("ray", head.gcs_address, head.dashboard_url)
    finally:
        localray.stop_head(head, timeout_s=60)


def run_rayops(workdir: Path) -> Run:
    state = workdir / "state"
    name = "p1"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYOPS_")}
    log = (workdir / "rayops-up.out").open("wb")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "bot", "up", "--no-console", "--state-dir", str(state), "--name", name),
            *("--http-port", "off", "--policies", str(REPO / "policies")),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
    )
    try:
        record = state / "clusters" / name / "cluster.json"
        deadline = time.time() + 240
        address = dashboard = None
        while time.time() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                head = json.loads(record.read_text())["head"]
                if head and (workdir / "rayops-up.out").read_text().find("is up;") >= 0:
                    address = f"127.0.0.1:{head['ports']['gcs']}"
                    dashboard = f"http://127.0.0.1:{head['ports']['dashboard']}"
                    break
            time.sleep(0.5)
        if address is None or dashboard is None:
            raise RuntimeError(f"rayops up did not come up; see {workdir / 'rayops-up.out'}")
        return measure("rayops", address, dashboard)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def summarize(runs: Sequence[Run]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for system in ("rayops", "ray"):
        mine = [r for r in runs if r.system == system]
        if not mine:
            continue

        def med(get: Callable[[Run], float | None], mine: list[Run] = mine) -> float | None:
            values = [v for v in (get(r) for r in mine) if v is not None]
            return round(statistics.median(values), 1) if values else None

        out[system] = {
            "runs": len(mine),
            "makespan_s": med(lambda r: r.makespan_s),
            "time_to_capacity_s": med(lambda r: r.time_to_capacity_s),
            "worker_seconds": med(lambda r: r.worker_seconds),
            "back_to_zero_s": med(lambda r: r.back_to_zero_s),
        }
    if "rayops" in out and "ray" in out:
        ours, theirs = out["rayops"], out["ray"]
        out["ratios"] = {
            "makespan": round(ours["makespan_s"] / theirs["makespan_s"], 2),
            "worker_seconds": round(ours["worker_seconds"] / theirs["worker_seconds"], 2),
            "goal": "makespan <= 0.85x and worker-seconds <= 0.7x Ray's",
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--system", choices=["both", "rayops", "ray"], default="both")
    p.add_argument("--out", type=Path, help="write every run (with its timeline) as JSON here")
    args = p.parse_args(argv)
    systems = ["rayops", "ray"] if args.system == "both" else [args.system]
    runs: list[Run] = []
    for i in range(args.runs):
        for system in systems:
            workdir = Path(tempfile.mkdtemp(prefix=f"p1-{system}-"))
            started = time.time()
            run = run_rayops(workdir) if system == "rayops" else run_ray(workdir)
            runs.append(run)
            brief = {k: v for k, v in asdict(run).items() if k != "timeline"}
            print(
                f"run {i + 1} {system} ({time.time() - started:.0f} s): {json.dumps(brief)}", file=sys.stderr
            )
    summary = summarize(runs)
    if args.out is not None:
        args.out.write_text(json.dumps({"summary": summary, "runs": [asdict(r) for r in runs]}, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
