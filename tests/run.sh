#!/usr/bin/env bash
# The whole test suite: set-up (idempotent), lint, format check, type check, then pytest.
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k policy`.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash deploy/laptop/setup.sh
echo "setup took $(( $(date +%s) - start )) s" >&2
export PATH="$PWD/.venv/bin:$PATH"  # the venv's tools (and kubectl, where setup put one there) come first
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# pytest exits 5 when it collected no test: that is a failure here, as any non-zero code is.
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}"
.venv/bin/python -m pytest --durations=25 -rfER "$@"  # R: each rerun with its error
