#!/usr/bin/env bash
# README's main command: set up (idempotent), then the demo on the embedded defaults:
# render the built-in scene with every backend, then the side-by-side benchmark. Writes out/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
exec .venv/bin/python -m rtgaze_fast.demo --out out "$@"
