"""Rendering and reading the manifests under deploy/ the way `oc apply -k` sees them.

`kubectl kustomize` is the same kustomize that `oc apply -k` embeds; it works offline. Rendering is cached
per directory because several test modules look at the same overlay.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCS = REPO / "docs" / "deploy.md"

# What a person applies: `oc apply -k deploy/overlays/<name>`, and deploy/managed-namespace per namespace.
OVERLAYS = ("crc", "moc")
APPLIED_DIRS = (*(f"deploy/overlays/{name}" for name in OVERLAYS), "deploy/managed-namespace")

Obj = dict[str, Any]


class KubectlMissing(RuntimeError):
    pass


@functools.lru_cache(maxsize=1)
def kubectl() -> str:
    """The kubectl binary (it embeds kustomize); missing or too old is an error, never a skip.

    The overlays use kustomize v5 features (components, `labels`, replacements); Debian 12's own
    `kubernetes-client` package is kubectl 1.20 with kustomize v2 and cannot render them.
    """
    found = shutil.which("kubectl")
    if found is None:
        raise KubectlMissing(
            "kubectl >= 1.27 is required to render deploy/ (it embeds kustomize v5 and works offline); "
            "see docs/deploy.md, 'Tests'"
        )
    proc = subprocess.run(
        [found, "version", "--client", "-o", "json"], capture_output=True, text=True, check=False
    )
    version = json.loads(proc.stdout or "{}").get("kustomizeVersion", "")
    major = re.match(r"v(\d+)\.", version)
    if major is None or int(major.group(1)) < 5:
        raise KubectlMissing(
            f"{found} embeds kustomize {version or 'unknown'}; deploy/ needs v5 (kubectl >= 1.27)"
        )
    return found


def render(directory: str | os.PathLike[str]) -> list[Obj]:
    """`kubectl kustomize DIR` as a list of objects (a fresh copy each call, safe to mutate)."""
    text = _render_text(str(Path(directory).resolve()))
    return [doc for doc in yaml.safe_load_all(text) if doc]


@functools.lru_cache(maxsize=32)
def _render_text(directory: str) -> str:
    proc = subprocess.run(
        [kubectl(), "kustomize", directory],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def render_applied(name: str) -> list[Obj]:
    return render(REPO / name)


def write_kustomization(directory: Path, body: Obj) -> Path:
    """A throw-away kustomization in `directory`; its paths must be relative (kustomize refuses absolute)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return directory


def relative(target: Path, start: Path) -> str:
    return os.path.relpath(target, start)


def load_yaml_documents(path: Path) -> list[Obj]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def yaml_files_under_deploy() -> list[Path]:
    """Every YAML file of deploy/ except deploy/laptop/ (someone else's)."""
    files = [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]
    return sorted(p for p in files if "laptop" not in p.relative_to(DEPLOY).parts)


def pod_templates(objs: list[Obj]) -> Iterator[tuple[str, Obj]]:
    """(`Kind/name`, pod spec) for every workload in a rendered list."""
    for obj in objs:
        kind = obj["kind"]
        spec = obj.get("spec") or {}
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            yield f"{kind}/{obj['metadata']['name']}", spec["template"]["spec"]
        elif kind == "CronJob":
            yield f"{kind}/{obj['metadata']['name']}", spec["jobTemplate"]["spec"]["template"]["spec"]
        elif kind == "Pod":
            yield f"{kind}/{obj['metadata']['name']}", spec


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def settings(objs: list[Obj]) -> dict[str, str]:
    """The data of the generated rayops-settings ConfigMap (its name carries a hash suffix)."""
    found = [
        o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("rayops-settings-")
    ]
    assert len(found) == 1, f"expected one rayops-settings-<hash> ConfigMap, found {len(found)}"
    data: dict[str, str] = found[0].get("data") or {}
    return data
