"""Policy delivery: the policy repository's kustomization yields the fixed-name ConfigMap the pods mount.

The reload itself (kubelet's atomic `..data` symlink swap seen by the loader) is tested with the loader in
tests/policy/; here: the name, namespace and shape of what the GitOps sync writes, against what the
Deployments mount.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

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
