"""Read the ScalingPolicies to replay from `--policy` files or directories.

Each document is checked on its own with the loader's parser and validator (so errors read exactly as
in `rayops policy check`: `path:line: field: what is wrong`), but not as a cross-referenced set: a
replay often compares two variants of one policy whose selectors overlap, which a live set refuses.
Other kinds in the files are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from controller.policy.model import ScalingPolicy
from controller.policy.source import SourceFile, decode, parse_documents
from controller.policy.validate import validate_document
from controller.simulate.trace import SimulationInputError


def load_policies(paths: Sequence[str | Path]) -> list[ScalingPolicy]:
    """Every ScalingPolicy in the given files (or `*.yaml`/`*.yml` files of the given directories)."""
    out: list[ScalingPolicy] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not files:
                raise SimulationInputError(f"{p}: no *.yaml policy files in this directory")
        else:
            files = [p]
        for f in files:
            found = _read_file(f)
            if not found and not p.is_dir():
                raise SimulationInputError(f"{f}: no ScalingPolicy document in this file")
            out.extend(found)
    names = [pol.name for pol in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SimulationInputError(f"two policies share the name {', '.join(dupes)}; names must be unique")
    if not out:
        raise SimulationInputError("no ScalingPolicy found in " + ", ".join(str(p) for p in paths))
    return out


def _read_file(path: Path) -> list[ScalingPolicy]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SimulationInputError(f"{path}: cannot read: {e.strerror or e}") from e
    text, err = decode(SourceFile(str(path), data))
    if text is None:
        raise SimulationInputError(str(err) if err else f"{path}: not UTF-8 text")
    docs, errors = parse_documents(str(path), text)
    out: list[ScalingPolicy] = []
    for doc in docs:
        model, problems = validate_document(doc)
        errors += problems
        if isinstance(model, ScalingPolicy):
            out.append(model)
    if errors:
        errors.sort()
        more = f" (and {len(errors) - 1} more; `rayops policy check` lists all)" if len(errors) > 1 else ""
        raise SimulationInputError(f"{errors[0]}{more}")
    return out
