#!/usr/bin/env bash
# The test command: lint, type checks and the whole test suite (control-plane tests included).
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not controlplane" -x
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy --strict"
mypy
echo "== pytest"
pytest "$@"
