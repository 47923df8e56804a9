"""`rayops bot run --adapter slack|matrix|console`: one chat adapter.

A composition root: read settings (flags over `RAYOPS_*` variables), install log redaction, load
the policy directory, pick the backend (`bot.compose.build_runtime`: kuberay in a pod, local on a
laptop, memory for demos), build the bot, run the adapter. The console adapter with
`--backend memory` is the demo and test mode: clusters live only in this process, and
`--ready-on-create` makes them READY at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.adapters.runtime import HealthServer


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bot", help="The chat-ops bot.")
    bsub = p.add_subparsers(dest="bot_command", metavar="ACTION", required=True)
    run = bsub.add_parser(
        "run",
        help="Run one chat adapter.",
        description="Run one chat adapter. Settings come from flags, else RAYOPS_* variables.",
    )
    run.add_argument("--adapter", choices=["slack", "matrix", "console"], required=True)
    run.add_argument(
        "--backend",
        choices=["memory", "local", "kuberay"],
        help="where clusters live (default: $RAYOPS_BOT_BACKEND or local); memory is the demo and test mode",
    )
    run.add_argument(
        "--policies", type=Path, help="policy directory (default: $RAYOPS_POLICY_DIR or policies)"
    )
    run.add_argument("--state-dir", type=Path, help="state directory (default: ~/.local/state/rayops)")
    run.add_argument("--user", help="console user name (default: $RAYOPS_CONSOLE_USER or the login name)")
    run.add_argument(
        "--ready-on-create", action="store_true", help="memory backend: clusters are READY at once"
    )
    run.add_argument("--poll-interval", type=float, help="seconds between event polls (default 2)")
    run.add_argument(
        "--log-level",
        default=os.environ.get("RAYOPS_LOG_LEVEL") or "WARNING",
        help="log level on stderr (default: $RAYOPS_LOG_LEVEL or WARNING)",
    )
    run.set_defaults(func=run_bot)


def run_bot(args: argparse.Namespace) -> int:
    from bot.compose import SetupError, build_runtime, run_console
    from bot.redact import install_log_redaction
    from bot.settings import BotSettings, secret_values
    from controller.policy.loader import PolicyStore

    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    install_log_redaction(secret_values())
    try:
        settings = BotSettings.from_env(
            policy_dir=args.policies,
            state_dir=args.state_dir,
            backend=args.backend,
            console_user=args.user,
            poll_interval_s=args.poll_interval,
            ready_on_create=args.ready_on_create or None,
        )
    except ValueError as e:
        print(f"rayops: {e}", file=sys.stderr)
        return 2
    store = PolicyStore(str(settings.policy_dir))
    result = store.reload()
    if store.current is None:
        print(f"rayops: the policy directory {settings.policy_dir} is not usable:", file=sys.stderr)
        for err in result.errors:
            print(f"  {err}", file=sys.stderr)
        return 1
    try:  # the backend (memory | local | kuberay), its approvals, switch and event source
        runtime = build_runtime(settings, store)
    except SetupError as e:
        print(f"rayops: {e}", file=sys.stderr)
        return 2
    bot, events = runtime.bot, runtime.events
    try:
        if args.adapter == "console":
            try:
                health = _console_health()
            except ValueError as e:  # RAYOPS_HTTP_PORT is not a port
                print(f"rayops: {e}", file=sys.stderr)
                return 2
            return run_console(bot, events, sys.stdin, sys.stdout, store.reload, health)
        from bot.adapters.launch import run_chat  # Slack/Matrix settings come from the environment

        return run_chat(args.adapter, bot, events, store.reload)
    finally:
        runtime.close()


def _console_health() -> HealthServer | None:
    """`/healthz` and `/readyz` for the console adapter only where `RAYOPS_HTTP_PORT` is set (the image
    sets it; a laptop's console, beside `rayops up`'s controller on 8080, does not want a port)."""
    from bot.adapters.launch import health_server
    from bot.adapters.runtime import Readiness

    if not os.environ.get("RAYOPS_HTTP_PORT"):
        return None
    return health_server(os.environ, lambda: Readiness(True, "console adapter reading its input"))
