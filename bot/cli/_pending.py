"""A stand-in for subcommands whose issue has not landed yet: it says so instead of failing oddly."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def not_yet(what: str, issue: int) -> Callable[[argparse.Namespace], int]:
    def run(_args: argparse.Namespace) -> int:
        print(f"rayops: '{what}' is not available yet (it arrives with issue {issue}).", file=sys.stderr)
        return 2

    return run
