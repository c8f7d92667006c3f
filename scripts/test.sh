#!/usr/bin/env bash
# README's test command: set up (idempotent), then the whole suite. Triton runs in its interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
export TRITON_INTERPRET=1
exec .venv/bin/python -m pytest -q -p no:cacheprovider --benchmark-disable tests benchmarks "$@"
