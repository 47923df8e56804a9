"""Policy delivery: the policy repository's kustomization yields the fixed-name ConfigMap the pods mount.

The loader's own swap tests live in tests/policy/; here: the name, namespace and shape of what the GitOps
sync writes, against what the Deployments mount, and the whole path once end to end (rendered ConfigMap,
kubelet-style projection at RAYOPS_POLICY_DIR, the loader's reload).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from controller.policy.loader import PolicyStore, ReloadStatus
from tests.deploy.manifests import DEPLOY, REPO, find, pod_templates, render, render_applied, settings

TEMPLATE = DEPLOY / "policy-repo" / "kustomization.yaml"
CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
# contracts.md section 2, used when the repository's policies/ has no documents yet.
CANONICAL = """\
apiVersion: rayops.io/v1alpha1
kind: ScalingPolicy
metadata:
  name: cpu-default
spec:
  selector: {namespaces: ["ray-*"]}
  workerGroups: ["*"]
  mode: owner
  minReplicas: 0
  maxReplicas: 8
"""


def _policy_repo(tmp_path: Path) -> tuple[Path, list[str]]:
    """A policy repository laid out as docs/deploy.md says: the template next to the documents."""
    repo = tmp_path / "policies"
    documents = sorted(p for p in (REPO / "policies").glob("*.y*ml") if p.is_file())
    repo.mkdir()
    if documents:
        for doc in documents:
            shutil.copy(doc, repo / doc.name)
    else:
        (repo / "cpu-default.yaml").write_text(CANONICAL)
    names = sorted(p.name for p in repo.iterdir())
    text = TEMPLATE.read_text()
    listed = "".join(f"      - {n}\n" for n in names)
    text = re.sub(r"(    files:\n(?:      #.*\n)*)(      - .*\n)+", lambda m: m.group(1) + listed, text)
    (repo / "kustomization.yaml").write_text(text)
    return repo, names


def test_policy_repository_renders_one_fixed_name_configmap(tmp_path: Path) -> None:
    repo, names = _policy_repo(tmp_path)
    objs = render(repo)
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [("ConfigMap", "rayops-policies")]
    data = objs[0]["data"]
    assert sorted(data) == names
    assert all(CONFIGMAP_KEY.match(k) for k in data)
    assert sum(len(v.encode()) for v in data.values()) < 1024 * 1024, "a ConfigMap holds at most 1 MiB"
    for name in names:
        assert data[name] == (repo / name).read_text()


@pytest.mark.parametrize("overlay", ["deploy/overlays/crc", "deploy/overlays/moc"])
def test_the_synced_configmap_is_the_one_the_pods_mount(overlay: str, tmp_path: Path) -> None:
    repo, _ = _policy_repo(tmp_path)
    (policies,) = render(repo)
    objs = render_applied(overlay)
    namespace = find(objs, "Deployment", "rayops-controller")["metadata"]["namespace"]
    assert policies["metadata"]["namespace"] == namespace, "set the template's namespace to the overlay's"
    policy_dir = settings(objs)["RAYOPS_POLICY_DIR"]
    for name, spec in pod_templates(objs):
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == policy_dir]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert volume["configMap"]["name"] == policies["metadata"]["name"], name


def test_no_overlay_generates_or_ships_the_policy_configmap() -> None:
    """Policies come only from the policy repository's sync; an overlay writing them too would fight it."""
    for overlay in ("deploy/overlays/crc", "deploy/overlays/moc"):
        assert not [o for o in render_applied(overlay) if o["metadata"]["name"].startswith("rayops-policies")]


def _kubelet_projection(root: Path, stamp: str, data: dict[str, str]) -> None:
    """A ConfigMap volume update as the kubelet's atomic writer does it: new `..<timestamp>` directory,
    `..data` swapped by one rename, visible files as symlinks through `..data`, old version removed."""
    root.mkdir(parents=True, exist_ok=True)
    old = os.readlink(root / "..data") if (root / "..data").is_symlink() else None
    version = root / f"..{stamp}"
    version.mkdir()
    for key, text in data.items():
        (version / key).write_text(text)
    (root / "..data_tmp").symlink_to(version.name)
    os.replace(root / "..data_tmp", root / "..data")
    for entry in root.iterdir():
        if not entry.name.startswith("..") and entry.name not in data:
            entry.unlink()
    for key in data:
        if not (root / key).is_symlink():
            (root / key).symlink_to(f"..data/{key}")
    if old is not None:
        shutil.rmtree(root / old)


def test_the_pods_reload_the_synced_policies_without_a_restart(tmp_path: Path) -> None:
    """End to end: the ConfigMap rendered from the policy repository, projected at RAYOPS_POLICY_DIR the way
    the kubelet writes it, read by the loader the controller and the bot run; then two merged changes."""
    repo, _ = _policy_repo(tmp_path)
    (configmap,) = render(repo)
    data: dict[str, str] = dict(configmap["data"])
    policy_dir = settings(render_applied("deploy/overlays/crc"))["RAYOPS_POLICY_DIR"]
    mount = tmp_path / "pod" / policy_dir.lstrip("/")
    _kubelet_projection(mount, "2026_11_26_10_00_00.000000001", data)
    store = PolicyStore(str(mount))
    first = store.reload()
    assert first.status is ReloadStatus.LOADED, [str(e) for e in first.errors]
    assert first.current is not None
    assert set(first.current.scaling_policies) >= {"cpu-default"}
    cap = first.current.scaling_policies["cpu-default"].spec.max_replicas

    key = next(k for k, v in data.items() if "name: cpu-default" in v and "kind: ScalingPolicy" in v)
    data[key] = re.sub(r"(?m)^  maxReplicas: \d+$", f"  maxReplicas: {cap + 2}", data[key], count=1)
    _kubelet_projection(mount, "2026_11_26_10_01_00.000000002", data)
    changed = store.reload()
    assert changed.status is ReloadStatus.LOADED
    assert (
        store.current is not None
        and store.current.scaling_policies["cpu-default"].spec.max_replicas == cap + 2
    )

    data[key] = re.sub(r"(?m)^  maxReplicas: \d+$", "  maxReplicas: -1", data[key], count=1)
    _kubelet_projection(mount, "2026_11_26_10_02_00.000000003", data)
    refused = store.reload()
    assert refused.status is ReloadStatus.REFUSED and refused.newly_invalid
    assert (
        store.current is not None
        and store.current.scaling_policies["cpu-default"].spec.max_replicas == cap + 2
    )
