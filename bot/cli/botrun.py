"""`rayops bot run --adapter slack|matrix|console`: one chat adapter."""

from __future__ import annotations

import argparse

from bot.cli._pending import not_yet


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bot", help="The chat-ops bot.")
    bsub = p.add_subparsers(dest="bot_command", metavar="ACTION", required=True)
    run = bsub.add_parser("run", help="Run one chat adapter.")
    run.add_argument("--adapter", choices=["slack", "matrix", "console"], required=True)
    run.set_defaults(func=not_yet("rayops bot run", 7))
