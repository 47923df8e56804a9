"""Every kustomization renders offline and every object it yields passes the real schema of its kind."""

from __future__ import annotations

import copy
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy import schemas
from tests.deploy.manifests import (
    APPLIED_DIRS,
    DEPLOY,
    REPO,
    Obj,
    load_yaml_documents,
    relative,
    render,
    render_applied,
    write_kustomization,
    yaml_files_under_deploy,
)

KUSTOMIZE_KINDS = {"Kustomization", "Component"}
# YAML under deploy/ that is not a Kubernetes object at all (checked by its own tests).
NOT_KUBERNETES = {DEPLOY / "slack" / "app-manifest.yaml"}


@pytest.mark.parametrize("directory", APPLIED_DIRS)
def test_every_applied_kustomization_renders_and_validates(directory: str) -> None:
    objs = render_applied(directory)
    assert objs, f"{directory} rendered nothing"
    failures = {schemas.describe(o): errs for o in objs if (errs := schemas.validate(o))}
    assert failures == {}


def test_optional_components_render_and_validate(tmp_path: Path) -> None:
    """Each optional component, on top of the crc overlay, renders valid objects and changes what it says."""
    crc = relative(DEPLOY / "overlays" / "crc", tmp_path)
    components = DEPLOY / "components"
    write_kustomization(
        tmp_path,
        {
            "resources": [crc],
            "components": [relative(components / name, tmp_path) for name in ("matrix", "multi-namespace")],
        },
    )
    objs = render(tmp_path)
    failures = {schemas.describe(o): errs for o in objs if (errs := schemas.validate(o))}
    assert failures == {}
    bot = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "rayops-bot")
    container = bot["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["bot", "run", "--adapter", "matrix"]
    env_names = {e["name"] for e in container["env"]}
    assert {"MATRIX_HOMESERVER", "MATRIX_USER_ID", "MATRIX_ACCESS_TOKEN"} <= env_names
    assert not any(name.startswith("SLACK_") for name in env_names)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert ("ClusterRole", "rayops-controller-clusters") in kinds
    assert ("Role", "rayops-controller-clusters") not in kinds
    assert not any(k == "ClusterRoleBinding" for k, _ in kinds), (
        "the ClusterRole variant must not bind cluster-wide"
    )


def test_managed_namespace_follows_its_parameters(tmp_path: Path) -> None:
    """Edit the two parameters as docs/deploy.md says (in a copy of the folders), with the network policy."""
    for folder in ("managed-namespace", "ray-podmonitor"):
        shutil.copytree(DEPLOY / folder, tmp_path / folder)
    kustomization = tmp_path / "managed-namespace" / "kustomization.yaml"
    text = kustomization.read_text()
    text = text.replace("namespace: ray-team-a", "namespace: team-b", 1)
    text = text.replace("# components:\n#   - network-policy", "components:\n  - network-policy", 1)
    kustomization.write_text(text)
    params = tmp_path / "managed-namespace" / "params.yaml"
    params.write_text(params.read_text().replace("rayopsNamespace: rayops", "rayopsNamespace: ops-tools"))

    objs = render(tmp_path / "managed-namespace")
    assert {o["metadata"]["namespace"] for o in objs} == {"team-b"}
    assert not any(o["kind"] == "ConfigMap" for o in objs), "the params object is local-config, never applied"
    bindings = [o for o in objs if o["kind"] == "RoleBinding"]
    assert len(bindings) == 2
    for binding in bindings:
        assert [s["namespace"] for s in binding["subjects"]] == ["ops-tools"]
    heads = next(o for o in objs if o["metadata"]["name"] == "rayops-to-ray-heads")
    selector = heads["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]
    assert selector == {"kubernetes.io/metadata.name": "ops-tools"}
    failures = {schemas.describe(o): errs for o in objs if (errs := schemas.validate(o))}
    assert failures == {}


def test_moc_overlay_follows_its_parameters(tmp_path: Path) -> None:
    """Namespace and Route host edited where the overlay says, in a copy of deploy/."""
    shutil.copytree(DEPLOY, tmp_path / "deploy", ignore=shutil.ignore_patterns("laptop"))
    moc = tmp_path / "deploy" / "overlays" / "moc"
    kustomization = moc / "kustomization.yaml"
    kustomization.write_text(
        kustomization.read_text().replace("\nnamespace: rayops\n", "\nnamespace: ai-ops\n", 1)
    )
    params = moc / "params.yaml"
    params.write_text(
        params.read_text().replace("rayops-slack.apps.example-moc-cluster.org", "bot.apps.moc.example")
    )

    objs = render(moc)
    namespaced = [o for o in objs if o["kind"] not in ("ClusterRole", "ClusterRoleBinding")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"ai-ops"}
    route = next(o for o in objs if o["kind"] == "Route")
    assert route["spec"]["host"] == "bot.apps.moc.example"
    subjects = [s for o in objs if o["kind"].endswith("Binding") for s in o["subjects"]]
    assert subjects and {s["namespace"] for s in subjects} == {"ai-ops"}
    assert not any(o["metadata"]["name"] == "rayops-moc-params" for o in objs), "local-config, never applied"


def test_every_yaml_object_under_deploy_is_validated() -> None:
    """Files that are not rendered by an overlay (ODH examples, Secret templates) are checked one by one."""
    checked = 0
    for path in yaml_files_under_deploy():
        if path in NOT_KUBERNETES or path.name.endswith(".patch.yaml"):
            continue  # patches are checked through the renders that apply them
        for doc in load_yaml_documents(path):
            assert "apiVersion" in doc and "kind" in doc, f"{path}: a YAML document that is not an object"
            if doc["kind"] in KUSTOMIZE_KINDS:
                continue
            if (
                doc.get("metadata", {}).get("annotations", {}).get("config.kubernetes.io/local-config")
                == "true"
            ):
                continue
            assert schemas.validate(doc) == [], f"{path}: {schemas.describe(doc)}"
            checked += 1
    assert checked >= 20


def test_raycluster_examples_validate_against_the_kuberay_crd() -> None:
    clusters = [
        (path, doc)
        for path in yaml_files_under_deploy()
        if path not in NOT_KUBERNETES and not path.name.endswith(".patch.yaml")
        for doc in load_yaml_documents(path)
        if doc.get("kind") == "RayCluster"
    ]
    assert clusters, "deploy/odh has at least one RayCluster example"
    for path, doc in clusters:
        assert schemas.is_custom(doc)
        assert schemas.validate(doc) == [], path


def test_kubernetes_validate_cli_reads_stdin_and_passes_every_builtin_object() -> None:
    """The pipeline of docs/deploy.md: `kubectl kustomize ... | kubernetes-validate --strict -`.

    Without the trailing `-` the tool prints its usage and exits 0; with a CRD kind it only warns. So this
    counts one "passed" line per built-in object and accepts warnings only for the kinds checked above.
    """
    objs = [o for d in APPLIED_DIRS for o in render_applied(d)]
    builtin = [o for o in objs if not schemas.is_custom(o)]
    cli = Path(sys.executable).with_name("kubernetes-validate")
    proc = subprocess.run(
        [str(cli), "-k", schemas.KUBE_VERSIONS[0], "--strict", "-"],
        input=yaml.safe_dump_all(objs),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed = [line for line in proc.stdout.splitlines() if line.startswith("INFO") and " passed " in line]
    assert len(passed) == len(builtin), proc.stdout
    warned = set(re.findall(r"Couldn't find schema for kind (\w+)", proc.stdout))
    assert warned == {o["kind"] for o in objs if schemas.is_custom(o)}


# ----- the validators themselves: a check that cannot fail proves nothing -----


def _crc_object(kind: str, name: str) -> Obj:
    objs = render_applied("deploy/overlays/crc")
    return copy.deepcopy(next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name))


def test_builtin_validation_rejects_unknown_fields_and_wrong_types() -> None:
    deployment = _crc_object("Deployment", "rayops-controller")
    deployment["spec"]["replica"] = 2
    assert schemas.validate(deployment)
    deployment = _crc_object("Deployment", "rayops-controller")
    deployment["spec"]["replicas"] = "two"
    assert any("replicas" in e for e in schemas.validate(deployment))


def test_custom_validation_rejects_unknown_fields_wrong_values_and_cel_violations() -> None:
    monitor = _crc_object("PodMonitor", "rayops-ray-nodes")
    monitor["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["targetLabelz"] = "x"
    assert any("targetLabelz" in e for e in schemas.validate(monitor))
    monitor = _crc_object("PodMonitor", "rayops-ray-nodes")
    monitor["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["action"] = "rename"
    assert any("action" in e for e in schemas.validate(monitor))
    route = next(o for o in render_applied("deploy/overlays/moc") if o["kind"] == "Route")
    route["spec"]["tls"] = {"termination": "passthrough", "insecureEdgeTerminationPolicy": "Allow"}
    assert any("CEL" in e for e in schemas.validate(route))


def test_a_kind_without_schema_fails_instead_of_passing() -> None:
    unknown = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "x"}}
    with pytest.raises(schemas.NoSchema):
        schemas.validate(unknown)


def test_an_unreviewed_cel_rule_fails_instead_of_passing() -> None:
    route = copy.deepcopy(next(o for o in render_applied("deploy/overlays/moc") if o["kind"] == "Route"))
    route["spec"]["httpHeaders"] = {
        "actions": {"request": [{"name": "X-Test", "action": {"type": "Set", "set": {"value": "1"}}}]}
    }
    with pytest.raises(schemas.NoSchema):
        schemas.validate(route)


def test_crd_fixtures_are_the_attributed_upstream_files() -> None:
    """tests/fixtures/crds/README.md records each file's git blob SHA-1; the copies must still match."""
    folder = REPO / "tests" / "fixtures" / "crds"
    readme = (folder / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]+\.yaml)` \|.*\| `([0-9a-f]{40})` \|$", readme, flags=re.M)
    assert len(rows) == 5
    for name, blob in rows:
        data = (folder / name).read_bytes()
        assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == blob, name
