"""`rayops simulate`: Replay a demand trace through a policy and the baselines."""

from __future__ import annotations

import argparse

from bot.cli._pending import not_yet


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "simulate",
        help="Replay a demand trace through a policy and the baselines.",
        description="Replay a demand trace through a policy and the baselines.",
    )
    p.set_defaults(func=not_yet("rayops simulate", 3))
