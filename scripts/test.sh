#!/usr/bin/env bash
# The test command: lint, type checks and the whole test suite (control-plane tests included),
# and the sched_ext VM tests, which fail when scripts/vm-rig.sh has not prepared the rig.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not controlplane" -x
# TEMPER_VM_TESTS=0 leaves the VM tests out (their two emulated VMs run for about 10 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export TEMPER_VM_TESTS=${TEMPER_VM_TESTS:-1}
export TEMPER_VM_REQUIRED=${TEMPER_VM_REQUIRED:-1}

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy --strict"
mypy
echo "== pytest"
pytest "$@"
