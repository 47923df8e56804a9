"""docs/deploy.md stays true: its YAML validates and renders, the paths and commands it names exist, its
settings table covers every variable the manifests set; and the Slack app manifest fits the bot."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.deploy import schemas
from tests.deploy.manifests import (
    DEPLOY,
    DOCS,
    REPO,
    find,
    pod_templates,
    relative,
    render,
    render_applied,
    settings,
)

_FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.M | re.S)
REMOTE_MOC = "https://github.com/ORG/rayops//deploy/overlays/moc?ref=v0.1.0"


def _blocks(language: str) -> list[str]:
    text = DOCS.read_text()
    return [
        "\n".join(line[len(indent) :] for line in body.splitlines())
        for indent, lang, body in _FENCE.findall(text)
        if lang == language
    ]


def test_docs_yaml_blocks_validate_or_render() -> None:
    blocks = _blocks("yaml")
    assert blocks
    for block in blocks:
        for doc in yaml.safe_load_all(block):
            assert "apiVersion" in doc and "kind" in doc
            if doc["kind"] != "Kustomization":
                assert schemas.validate(doc) == [], schemas.describe(doc)


def test_gitops_wrapper_example_renders_with_the_moc_values(tmp_path: Path) -> None:
    """The pull request's kustomization (section 10), with the remote base replaced by this checkout."""
    (block,) = [b for b in _blocks("yaml") if REMOTE_MOC in b]
    body = yaml.safe_load(block.replace(REMOTE_MOC, relative(DEPLOY / "overlays" / "moc", tmp_path)))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(body))
    objs = render(tmp_path)
    assert {o["metadata"]["namespace"] for o in objs if "namespace" in o["metadata"]} == {"rayops"}
    assert (
        find(objs, "Route", "rayops-bot-slack")["spec"]["host"] == "rayops-slack.apps.example-moc-cluster.org"
    )
    assert settings(objs)["RAYOPS_NAMESPACES"] == "ray-team-a,ray-team-b"
    assert settings(objs)["RAYOPS_PROMETHEUS_URL"].startswith(
        "https://thanos-querier.openshift-monitoring.svc"
    )
    images = {c["image"] for _, spec in pod_templates(objs) for c in spec["containers"]}
    assert images == {"quay.io/rayops/rayops:0.1.0"}
    assert {schemas.describe(o): e for o in objs if (e := schemas.validate(o))} == {}


def test_paths_and_apply_commands_in_the_docs_exist() -> None:
    text = DOCS.read_text()
    paths = set(re.findall(r"(?<![\w/])((?:deploy|docs|tests|policies)/[\w./-]*[\w/])", text))
    assert len(paths) > 20
    # `deploy/NAME` is also oc's short name for a Deployment (`oc rollout status deploy/rayops-bot`).
    deployments = {"deploy/rayops-controller", "deploy/rayops-bot", "deploy/kuberay-operator"}
    missing = sorted(p for p in paths - deployments if not (REPO / p).exists())
    assert missing == []
    applied = re.findall(r"oc (?:apply|delete|diff) -[kf] ([^\s`]+)", text)
    assert applied
    for target in applied:
        if target in ("-", "deploy/overlays/<name>"):
            continue
        assert (REPO / target).exists(), target
        if (REPO / target).is_dir():
            assert (REPO / target / "kustomization.yaml").exists(), target


def test_settings_table_covers_every_variable_the_manifests_set() -> None:
    documented: set[str] = set()
    for line in DOCS.read_text().splitlines():
        if line.startswith("| `"):
            documented |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    names: set[str] = set()
    for overlay in ("deploy/overlays/crc", "deploy/overlays/moc"):
        objs = render_applied(overlay)
        names |= set(settings(objs))
        names |= {
            e["name"] for _, spec in pod_templates(objs) for c in spec["containers"] for e in c.get("env", [])
        }
    names |= {"MATRIX_HOMESERVER", "MATRIX_USER_ID", "MATRIX_ACCESS_TOKEN"}  # deploy/components/matrix
    assert sorted(names - documented) == []


def test_slack_app_manifest_fits_the_bot() -> None:
    manifest = yaml.safe_load((DEPLOY / "slack" / "app-manifest.yaml").read_text())
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/ray"
    assert manifest["settings"]["socket_mode_enabled"] is True, "Socket Mode: no ingress needed (CRC)"
    assert manifest["settings"]["interactivity"]["is_enabled"] is True, "approve/deny/confirm buttons"
    assert {"commands", "chat:write"} <= set(manifest["oauth_config"]["scopes"]["bot"])
    assert not re.search(r"xox[abp]-\w{6}|xapp-\d-", (DEPLOY / "slack" / "app-manifest.yaml").read_text())
