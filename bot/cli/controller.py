"""`rayops controller run`: the autoscaling controller daemon (Kubernetes or local backend).

A composition root: settings from flags over `RAYOPS_*` variables (controller/settings.py, docs/deploy.md
section 3), log redaction installed before anything can log a token, then `controller.daemon` builds
the backend, metrics sources, event sinks, leader election and HTTP endpoints. SIGTERM and SIGINT stop
it cleanly: the running tick finishes, the Lease (or the laptop lock) is released so the other replica
takes over at once.

`--once` runs a single tick as if leader (no election, no endpoints) and prints what it decided: for
trying a policy change against a live fleet, with `--dry-run` so nothing is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("controller", help="The autoscaling controller daemon.")
    csub = p.add_subparsers(dest="controller_command", metavar="ACTION", required=True)
    run = csub.add_parser(
        "run",
        help="Run the controller (Kubernetes or local backend, from config).",
        description="Run the controller. Settings come from flags, else RAYOPS_* variables "
        "(docs/deploy.md section 3).",
    )
    add_settings_flags(run)
    run.add_argument("--once", action="store_true", help="one tick as leader, print the decisions, exit")
    run.set_defaults(func=run_controller)


def add_settings_flags(p: argparse.ArgumentParser, backend: bool = True) -> None:
    """Flags shared with `rayops up`; None means "not given" so the environment decides."""
    if backend:
        p.add_argument("--backend", choices=["kuberay", "local"], help="default $RAYOPS_BACKEND or kuberay")
        p.add_argument("--namespaces", help="managed namespaces, comma-separated (kuberay)")
        p.add_argument("--kubeconfig", help="default: in-cluster, else $KUBECONFIG or ~/.kube/config")
        p.add_argument("--lease-name", help="default $RAYOPS_LEASE_NAME or rayops-controller")
    p.add_argument("--policies", type=Path, help="policy directory (default $RAYOPS_POLICY_DIR or policies)")
    p.add_argument("--state-dir", type=Path, help="laptop state directory (default ~/.local/state/rayops)")
    p.add_argument("--tick", type=float, help="seconds between ticks (default 15 on Kubernetes, 2 local)")
    p.add_argument("--dry-run", action="store_true", default=None, help="decide and report, write nothing")
    p.add_argument("--paused", action="store_true", default=None, help="start with all scaling paused")
    p.add_argument("--http-port", help="port for /metrics /healthz /readyz (default 8080; 0 any; off)")
    p.add_argument("--http-host", help="default 127.0.0.1 (0.0.0.0 in a pod)")
    p.add_argument("--prometheus-url", help="default $RAYOPS_PROMETHEUS_URL (empty: none)")
    p.add_argument("--log-level", help="default $RAYOPS_LOG_LEVEL or INFO")


def settings_from(args: argparse.Namespace, **fixed: Any) -> Any:
    from controller.settings import ControllerSettings

    return ControllerSettings.from_env(
        backend=fixed.get("backend", getattr(args, "backend", None)),
        namespaces=getattr(args, "namespaces", None),
        kubeconfig=getattr(args, "kubeconfig", None),
        lease_name=getattr(args, "lease_name", None),
        policy_dir=args.policies,
        state_dir=args.state_dir,
        tick_seconds=args.tick,
        dry_run=args.dry_run,
        paused=args.paused,
        http_port=fixed.get("http_port", args.http_port),
        http_host=args.http_host,
        prometheus_url=args.prometheus_url,
        log_level=args.log_level,
    )


def setup_logging(level: str, secrets: list[str]) -> None:
    """Logs to stderr, every record redacted (tokens never reach a log line, whatever logs them)."""
    from bot.redact import install_log_redaction

    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("urllib3", "kubernetes.client.rest", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.getLogger().level, logging.WARNING))
    install_log_redaction(secrets)


def run_controller(args: argparse.Namespace) -> int:
    from controller.daemon import build_controller
    from controller.leader import AlwaysLeader
    from controller.settings import secret_values

    try:
        settings = settings_from(args)
    except ValueError as e:
        print(f"rayops: {e}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, secret_values(settings))
    if args.once:
        controller = build_controller(settings, elector=AlwaysLeader(), serve=False, watch=False)
        try:
            report = controller.run_once()
        finally:
            controller.stop()
        for d in report.decisions:
            reasons = "; ".join(r.message for r in d.reasons)
            print(f"{d.ref}: {d.action} {d.current} -> {d.target} ({reasons})")
        summary = {"outcome": report.outcome, "clusters": report.clusters, "writes": report.writes}
        print(json.dumps(summary | {"errors": dict(report.errors)}))
        return 0 if report.outcome == "success" else 1
    controller = build_controller(settings)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("rayops.controller").info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    controller.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        controller.stop()
    return 0
