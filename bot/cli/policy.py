"""`rayops policy check [DIR]`: validate every policy document."""

from __future__ import annotations

import argparse

from bot.cli._pending import not_yet


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("policy", help="Policy documents (policies/).")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    check = psub.add_parser("check", help="Validate every policy document in DIR (default: policies/).")
    check.add_argument("dir", nargs="?", default="policies")
    check.set_defaults(func=not_yet("rayops policy check", 3))
