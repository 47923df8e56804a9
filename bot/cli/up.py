"""`rayops up`: Laptop mode: a real local Ray cluster, the controller and the console bot."""

from __future__ import annotations

import argparse

from bot.cli._pending import not_yet


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "up",
        help="Laptop mode: a real local Ray cluster, the controller and the console bot.",
        description="Laptop mode: a real local Ray cluster, the controller and the console bot.",
    )
    p.set_defaults(func=not_yet("rayops up", 6))
