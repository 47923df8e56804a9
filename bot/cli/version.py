"""`rayops version`: versions of rayops, Ray and the Kubernetes client."""

from __future__ import annotations

import argparse
from importlib import metadata


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """Read from package metadata, so it works without importing Ray (slow, and absent on Kubernetes)."""
    return {
        name: _version(dist)
        for name, dist in (("rayops", "rayops"), ("ray", "ray"), ("kubernetes", "kubernetes"))
    }


def run(_args: argparse.Namespace) -> int:
    for name, ver in versions().items():
        print(f"{name} {ver}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("version", help="Print the versions of rayops, Ray and the Kubernetes client.")
    p.set_defaults(func=run)
