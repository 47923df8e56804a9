#!/usr/bin/env bash
# Laptop mode in one command: set-up (idempotent), then `rayops up` with any extra arguments.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/laptop/setup.sh
exec .venv/bin/rayops up "$@"
