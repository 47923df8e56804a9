"""`rayops controller run`: the autoscaling controller daemon."""

from __future__ import annotations

import argparse

from bot.cli._pending import not_yet


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("controller", help="The autoscaling controller daemon.")
    csub = p.add_subparsers(dest="controller_command", metavar="ACTION", required=True)
    run = csub.add_parser("run", help="Run the controller (Kubernetes or local backend, from config).")
    run.set_defaults(func=not_yet("rayops controller run", 6))
