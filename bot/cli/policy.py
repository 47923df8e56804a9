"""`rayops policy check [PATH ...]`: validate a policy directory as one set, for people, pre-commit and CI.

Each PATH is a directory, or a file whose directory is then checked whole (pre-commit passes the
changed files; a reference or a duplicate name spans files, so checking one file alone would be
wrong). Every problem is printed as `path:line: field.path: message`, then one summary line per
directory. Exit codes: 0 every set is valid, 1 something is invalid or missing, 2 usage (argparse).
Input errors never produce a traceback: they are the subject of the command, not a crash.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

DEFAULT_DIR = "policies"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("policy", help="Policy documents (policies/).")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    check = psub.add_parser(
        "check",
        help="Validate every policy document in DIR (default: policies/) as one set.",
        description="Validate a policy directory as one set: every YAML document, cross-references, "
        "overlapping selectors, schedules and PromQL. A file argument checks its whole directory. "
        "Exit 0 when valid, 1 when not.",
    )
    check.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help=f"a policy directory, or files in one (default: {DEFAULT_DIR})",
    )
    check.set_defaults(func=run_check)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def directories(paths: list[str], err: TextIO) -> list[str] | None:
    """The directories to check, in order and without repeats; None after printing why not."""
    out: list[str] = []
    for p in paths or [DEFAULT_DIR]:
        if os.path.isdir(p):
            d = p
        elif os.path.isfile(p):
            d = os.path.dirname(p) or "."
        elif os.path.lexists(p) or os.path.exists(p):
            print(f"rayops policy check: {p}: not a directory or a file", file=err)
            return None
        else:
            print(f"rayops policy check: {p}: no such directory", file=err)
            return None
        if os.path.normpath(d) not in (os.path.normpath(x) for x in out):
            out.append(d)
    return out


def check(paths: list[str], out: TextIO, err: TextIO) -> int:
    from controller.policy.loader import check_directory

    dirs = directories(paths, err)
    if dirs is None:
        return 1
    code = 0
    for d in dirs:
        result = check_directory(d)
        for problem in (*result.errors, *result.warnings):
            print(problem, file=out)
        warned = f", {_plural(len(result.warnings), 'warning')}" if result.warnings else ""
        if result.errors:
            print(
                f"{d}: {_plural(len(result.errors), 'error')} in {_plural(result.files_with_errors, 'file')}"
                f"{warned}; the set is refused",
                file=out,
            )
            code = 1
        elif result.files == 0:
            print(f"{d}: no policy files (*.yaml, *.yml) to check", file=out)
            code = 1
        else:
            revision = result.policy_set.revision if result.policy_set else "-"
            print(
                f"{d}: {_plural(result.documents, 'document')} in {_plural(result.files, 'file')}, "
                f"0 errors{warned} (revision {revision})",
                file=out,
            )
    return code


def run_check(args: argparse.Namespace) -> int:
    return check(list(args.paths), sys.stdout, sys.stderr)
