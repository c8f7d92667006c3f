#!/usr/bin/env bash
# Create .venv (if missing) with the pinned CPU stack and install rtgaze-fast into it.
# Idempotent: a second run only re-installs the project. Usage: scripts/setup_env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# torch 2.13.0 first (the CPU wheel on a CPU machine), so the project's `torch>=2.6` is already met.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q torch==2.13.0
fi
.venv/bin/pip install -q "triton==3.7.1" numpy pytest pytest-benchmark pytest-xdist pybind11 ninja hypothesis \
  safetensors h5py pillow matplotlib tqdm torchmetrics setuptools wheel
# Faces and video (the `face` extra): imageio-ffmpeg's wheel carries ffmpeg; facenet-pytorch's
# carries the MTCNN weights (2 MB) and pins torch<2.3, so it goes in without its dependencies
# (only its weight files are read). scikit-image (tests) ships the astronaut photo.
.venv/bin/pip install -q imageio-ffmpeg scikit-image
.venv/bin/pip install -q --no-deps "facenet-pytorch==2.6.0"
# The Triton the GPU machines carry (with their torch 2.11): CI also compiles the kernels with it
# (tests/test_triton_lowering.py), beside the pinned one that runs the interpreter.
TRITON_GPU=3.6.0
if [ ! -d ".venv/triton-gpu/triton-$TRITON_GPU.dist-info" ]; then
  rm -rf .venv/triton-gpu
  .venv/bin/pip install -q --no-deps --target .venv/triton-gpu "triton==$TRITON_GPU"
fi
# The build's output goes to .venv/build.log: a failed compile still installs (pure Python, on purpose),
# and the test suite quotes the log when RTGAZE_FAST_REQUIRE asks for a backend that did not build.
if ! MAX_JOBS=${MAX_JOBS:-2} .venv/bin/pip install -v --no-build-isolation --no-deps -e . >.venv/build.log 2>&1; then
  tail -n 40 .venv/build.log
  exit 1
fi
grep -h "the compiled extension was not built" .venv/build.log || true
.venv/bin/python -c "import rtgaze_fast as r; print('rtgaze_fast', r.__version__, 'backends on cpu:', r.available_backends('cpu'))"
