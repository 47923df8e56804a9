"""No token reaches a log line: the real `rayops controller run` process at DEBUG, against an API server
stand-in that wants a bearer token and a Prometheus stand-in that refuses the token and echoes it back
in its error (the worst upstream there is). Its whole output is scanned for both tokens."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from controller.backends.base import ClusterRequest
from controller.backends.kube_api import KubeApi
from controller.backends.kuberay import KubeRayBackend
from tests.backends.drivers import CONTRACT_PROFILE, REQUESTER
from tests.metrics.stub import Reply, Seen, serve
from tests.standins.kube_api import KubeApiServer

POLICY = """\
apiVersion: rayops.io/v1alpha1
kind: ScalingPolicy
metadata: {name: util}
spec:
  selector: {namespaces: ["*"]}
  maxReplicas: 4
  signals:
    - {name: cpu-util, type: utilization, resource: CPU, target: {averageUtilization: 70}}
"""


def test_a_log_scan_finds_no_token(tmp_path: Path) -> None:
    kube_token = "kube-" + secrets.token_hex(16)
    prom_token = "prom-" + secrets.token_hex(16)
    server = KubeApiServer(
        {kube_token: "system:serviceaccount:rayops:rayops-controller", "admin": "system:admin"},
        default_token="admin",
    ).start()
    try:
        admin = KubeRayBackend(KubeApi(server.client("admin")), {CONTRACT_PROFILE.name: CONTRACT_PROFILE})
        admin.create(ClusterRequest("demo", "team-a", CONTRACT_PROFILE.name, REQUESTER, workers=1))
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", kube_token)
        token_file = tmp_path / "prometheus-token"
        token_file.write_text(prom_token + "\n")
        policies = tmp_path / "policies"
        policies.mkdir()
        (policies / "util.yaml").write_text(POLICY)

        def refuse(seen: Seen) -> Reply:
            echoed = seen.headers.get("authorization")
            return Reply(401, f"unauthorized: bad credentials {echoed}", "text/plain")

        with serve() as prometheus:
            prometheus.route("/api/v1/query", refuse)
            env = {k: v for k, v in os.environ.items() if not k.startswith("RAYOPS_")}
            env["RAYOPS_PROMETHEUS_TOKEN_FILE"] = str(token_file)
            env["RAYOPS_STATE_DIR"] = str(tmp_path / "state")
            command = [sys.executable, "-m", "bot", "controller", "run", "--once", "--backend", "kuberay"]
            command += [
                "--kubeconfig",
                str(kubeconfig),
                "--namespaces",
                "team-a",
                "--policies",
                str(policies),
            ]
            command += ["--prometheus-url", prometheus.url, "--log-level", "DEBUG", "--http-port", "off"]
            proc = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env=env,
                timeout=90,
            )
            seen_auth = [s.headers.get("authorization") for s in prometheus.requests_to("/api/v1/query")]
    finally:
        server.stop()
    output = proc.stdout + proc.stderr
    assert f"Bearer {prom_token}" in seen_auth  # the token was really sent, and refused
    assert any(r.identity and "rayops-controller" in r.identity for r in server.requests)  # and the kube one
    assert "util" in output and "DEBUG" in output  # the run logged, at DEBUG, about the failing source
    assert "unauthorized: bad credentials Bearer [REDACTED]" in output  # the echo arrived, masked
    assert kube_token not in output
    assert prom_token not in output
