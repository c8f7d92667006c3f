#!/usr/bin/env bash
# README's test command: set up (idempotent), then the whole suite. Triton runs in its interpreter.
# RTGAZE_FAST_REQUIRE names what this machine must have (tests/require.py): a missing one stops
# the suite before it runs, instead of its tests skipping. CI machines (GPU-less) have a C++
# compiler, the pinned Triton with its ptxas, the GPU machines' Triton (setup_env.sh installs both),
# nvcc and cmake. On a machine without the CUDA toolkit or cmake, narrow it, e.g.
#   RTGAZE_FAST_REQUIRE=cpu,triton,ptxas,triton-gpu scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
export TRITON_INTERPRET=1
export RTGAZE_FAST_REQUIRE=${RTGAZE_FAST_REQUIRE-cpu,triton,ptxas,triton-gpu,nvcc,cmake,asan}
# Two worker processes (pytest-xdist), a file per worker at a time: CI machines have 2 cores, and
# much of the suite (Triton's interpreter, nvcc) runs on one; tests/conftest.py puts the
# compile-bound files first.
exec .venv/bin/python -m pytest -q -p no:cacheprovider --benchmark-disable -n 2 --dist loadfile tests benchmarks "$@"
