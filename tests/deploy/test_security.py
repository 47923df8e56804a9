"""Pod templates fit OpenShift's restricted-v2 SCC; settings, mounts, probes and Secrets are consistent."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.manifests import (
    APPLIED_DIRS,
    DEPLOY,
    Obj,
    find,
    load_yaml_documents,
    pod_templates,
    render_applied,
    settings,
)

OVERLAY_DIRS = ("deploy/overlays/crc", "deploy/overlays/moc")
HEALTH_PATHS = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}


def _all_pod_templates() -> list[tuple[str, str, Obj]]:
    return [(d, name, spec) for d in APPLIED_DIRS for name, spec in pod_templates(render_applied(d))]


def test_the_overlays_have_the_two_workloads() -> None:
    for overlay in OVERLAY_DIRS:
        names = sorted(name for name, _ in pod_templates(render_applied(overlay)))
        assert names == ["Deployment/rayops-bot", "Deployment/rayops-controller"], overlay


@pytest.mark.parametrize(("directory", "name", "spec"), _all_pod_templates())
def test_pod_template_is_restricted_v2_compatible(directory: str, name: str, spec: Obj) -> None:
    pod_sc = spec.get("securityContext") or {}
    assert pod_sc.get("runAsNonRoot") is True
    assert pod_sc.get("seccompProfile") == {"type": "RuntimeDefault"}
    # restricted-v2 assigns the UID (and fsGroup) from the namespace's range: fixing one breaks admission.
    for forbidden in ("runAsUser", "runAsGroup", "fsGroup", "supplementalGroups", "sysctls"):
        assert forbidden not in pod_sc, f"{name}: pod securityContext.{forbidden}"
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(field), f"{name}: {field}"
    for volume in spec.get("volumes") or []:
        allowed = {"configMap", "emptyDir", "secret", "projected", "downwardAPI", "persistentVolumeClaim"}
        assert set(volume) - {"name"} <= allowed, f"{name}: volume {volume['name']} type not allowed"
    containers = [*spec.get("initContainers", []), *spec["containers"]]
    for c in containers:
        sc = c.get("securityContext") or {}
        where = f"{name}/{c['name']}"
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("capabilities") == {"drop": ["ALL"]}, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("runAsNonRoot", True) is True, where
        assert "runAsUser" not in sc and "runAsGroup" not in sc, where
        assert not sc.get("privileged"), where
        assert all("hostPort" not in p for p in c.get("ports", [])), where
        resources = c.get("resources") or {}
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind) or {}), f"{where}: resources.{kind}"


@pytest.mark.parametrize(("directory", "name", "spec"), _all_pod_templates())
def test_writable_paths_are_volumes(directory: str, name: str, spec: Obj) -> None:
    """Read-only root filesystem: /tmp (caches, MPLCONFIGDIR, RAYOPS_STATE_DIR) must be an emptyDir."""
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for c in spec["containers"]:
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
        assert "/tmp" in mounts, f"{name}/{c['name']}"
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


@pytest.mark.parametrize(("directory", "name", "spec"), _all_pod_templates())
def test_probes_use_the_health_endpoints(directory: str, name: str, spec: Obj) -> None:
    for c in spec["containers"]:
        ports = {p["name"]: p["containerPort"] for p in c.get("ports") or []}
        for probe, path in HEALTH_PATHS.items():
            get = c[probe]["httpGet"]
            assert get["path"] == path, f"{name}: {probe}"
            assert get["port"] == "http" and ports["http"] == 8080, f"{name}: {probe}"


@pytest.mark.parametrize("overlay", OVERLAY_DIRS)
def test_controller_runs_two_replicas_with_a_lease_and_the_bot_one(overlay: str) -> None:
    objs = render_applied(overlay)
    controller = find(objs, "Deployment", "rayops-controller")
    bot = find(objs, "Deployment", "rayops-bot")
    assert controller["spec"]["replicas"] == 2
    assert controller["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert bot["spec"]["replicas"] == 1
    assert bot["spec"]["strategy"]["type"] == "Recreate"
    assert controller["spec"]["template"]["spec"]["containers"][0]["args"] == ["controller", "run"]
    assert bot["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["bot", "run"]
    env = {e["name"]: e for e in controller["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    pdb = find(objs, "PodDisruptionBudget", "rayops-controller")
    assert pdb["spec"]["selector"] == controller["spec"]["selector"]


@pytest.mark.parametrize("overlay", OVERLAY_DIRS)
def test_both_roles_read_policies_where_the_policy_configmap_is_mounted(overlay: str) -> None:
    objs = render_applied(overlay)
    policy_dir = settings(objs)["RAYOPS_POLICY_DIR"]
    for name, spec in pod_templates(objs):
        volumes = {v["name"]: v for v in spec["volumes"]}
        c = spec["containers"][0]
        assert {"configMapRef": {"name": settings_name(objs)}} in c["envFrom"], name
        mounts = [m for m in c["volumeMounts"] if m["mountPath"] == policy_dir]
        assert len(mounts) == 1, f"{name}: nothing mounted at RAYOPS_POLICY_DIR={policy_dir}"
        assert "subPath" not in mounts[0], "a subPath mount never sees ConfigMap updates"
        assert mounts[0].get("readOnly") is True
        source = volumes[mounts[0]["name"]]["configMap"]
        assert source["name"] == "rayops-policies", "fixed name, written by the policy repository's sync"
        assert source.get("optional") is True


def settings_name(objs: list[Obj]) -> str:
    return next(o["metadata"]["name"] for o in objs if o["metadata"]["name"].startswith("rayops-settings-"))


@pytest.mark.parametrize("overlay", OVERLAY_DIRS)
def test_no_secret_values_are_rendered_and_every_secret_reference_has_a_template(overlay: str) -> None:
    objs = render_applied(overlay)
    assert not [o for o in objs if o["kind"] == "Secret"], (
        "Secrets are created by people, never by an overlay"
    )
    templates = _secret_templates()
    for name, spec in pod_templates(objs):
        for c in spec["containers"]:
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref is None:
                    assert "TOKEN" not in env["name"] and "SECRET" not in env["name"], (
                        f"{name}: {env['name']}"
                    )
                    continue
                assert ref["name"] in templates, f"{name}: no template for Secret {ref['name']}"
                assert ref["key"] in templates[ref["name"]], f"{name}: template lacks {ref['key']}"


def _secret_templates() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in sorted((DEPLOY / "secrets").glob("*.template.yaml")):
        (doc,) = load_yaml_documents(path)
        assert doc["kind"] == "Secret"
        values = doc.get("stringData") or {}
        assert "data" not in doc
        assert all(v == "" for v in values.values()), f"{path}: templates never hold values"
        out[doc["metadata"]["name"]] = set(values)
    return out


def test_secret_templates_are_not_part_of_any_kustomization() -> None:
    secrets = (DEPLOY / "secrets").resolve()
    referenced: list[Path] = []
    for path in DEPLOY.rglob("kustomization.yaml"):
        (k,) = load_yaml_documents(path)
        entries = [*k.get("resources", []), *k.get("components", [])]
        entries += [p["path"] for p in k.get("patches", []) if "path" in p]
        for generator in [*k.get("configMapGenerator", []), *k.get("secretGenerator", [])]:
            entries += [*generator.get("files", []), *generator.get("envs", [])]
        referenced += [(path.parent / e).resolve() for e in entries]
    assert len(referenced) > 10
    assert [r for r in referenced if r.is_relative_to(secrets)] == []
    assert not any("secretGenerator" in p.read_text() for p in DEPLOY.rglob("kustomization.yaml"))
