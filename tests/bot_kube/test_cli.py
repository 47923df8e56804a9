"""`rayops bot run --backend kuberay` as a real process: settings from the environment as in a pod
(docs/deploy.md section 3), the kubeconfig with the bot's token, the console adapter on a pipe."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.bot.conftest import POLICIES
from tests.bot_kube.session import BOT_IDENTITY, HOME, TEAM
from tests.harness.kube import BOT_TOKEN
from tests.standins.kube_api import KubeApiServer

ROOT = Path(__file__).resolve().parents[2]
RAYOPS = ROOT / ".venv" / "bin" / "rayops"


def test_bot_run_on_kuberay_from_the_environment(kube_api: KubeApiServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAYOPS_", "KUBERNETES_", "POD_"))}
    env |= {
        "KUBECONFIG": str(kube_api.write_kubeconfig(tmp_path / "kubeconfig", BOT_TOKEN)),
        "RAYOPS_BOT_BACKEND": "kuberay",
        "RAYOPS_NAMESPACES": TEAM,
        "POD_NAMESPACE": HOME,
        "RAYOPS_POLICY_DIR": str(POLICIES),
        "RAYOPS_STATE_DIR": str(tmp_path / "state"),
        "RAYOPS_CONSOLE_USER": "alice",
    }
    script = "create demo workers=2\nlist\ncreate big workers=6\nexit\n"
    p = subprocess.run(
        [str(RAYOPS), "bot", "run", "--adapter", "console"],
        input=script,
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stderr
    assert "Creating demo in ray-nlp (profile small, 2 workers" in p.stdout, p.stdout
    assert "waits for an approver as `" in p.stdout
    rc = kube_api.get_obj("rayclusters", TEAM, "demo")
    assert rc is not None and rc["metadata"]["annotations"]["rayops.io/requester"] == "console:alice"
    rid = p.stdout.split("waits for an approver as `")[1][:8]
    assert kube_api.get_obj("configmaps", TEAM, f"rayops-approval-{rid}") is not None
    assert {r.identity for r in kube_api.resource_requests()} == {BOT_IDENTITY}


def test_bot_run_without_a_kubeconfig_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAYOPS_", "KUBERNETES_", "POD_"))}
    env |= {
        "KUBECONFIG": str(tmp_path / "missing"),
        "RAYOPS_POLICY_DIR": str(POLICIES),
        "HOME": str(tmp_path),
    }
    p = subprocess.run(
        [str(RAYOPS), "bot", "run", "--adapter", "console", "--backend", "kuberay"],
        input="",
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=ROOT,
    )
    assert p.returncode == 2 and "cannot reach Kubernetes" in p.stderr, p.stderr
