"""`import bot.notebook` works without a Kubernetes API server and without loading Ray (issue 9 item 1).

Checked in a fresh interpreter, because the test process itself has long imported both: the
notebook package (and each of its modules) must load neither the Kubernetes client, Ray nor
ipywidgets until a call needs them, so importing it in a kernel is instant and works on a laptop
without a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("kubernetes", "ray", "ipywidgets", "IPython", "urllib3")
ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_notebook_api_loads_no_kubernetes_ray_or_widgets() -> None:
    code = (
        "import json, sys\n"
        "import bot.notebook\n"
        "import bot.notebook.cluster, bot.notebook.indicator, bot.notebook.kube, bot.notebook.local\n"
        "from bot.notebook import RayopsSession\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy})))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env["KUBECONFIG"] = "/nonexistent/kubeconfig"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
