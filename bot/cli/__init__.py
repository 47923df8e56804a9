"""The `rayops` command line: one small composition root per subcommand (contracts.md section 1).

Each subcommand lives in its own module in this package and exposes `register(subparsers)`, which
adds its parser and sets `func` to a callable taking the parsed arguments and returning an exit code.
Modules import their heavy dependencies inside `func`, so `rayops --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bot.cli import botrun, controller, policy, simulate, up, version

SUBCOMMANDS = (up, controller, botrun, policy, simulate, version)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rayops",
        description="Policy-driven autoscaling and chat-ops for Ray clusters (KubeRay on OpenShift, "
        "or real local Ray in laptop mode).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    code: int = func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
