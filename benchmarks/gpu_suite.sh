#!/usr/bin/env bash
# The staged GPU run (device tool): build, parity, sanitizers, timings. Each stage writes its
# results under $OUT as it finishes, so a stage that times out still leaves the earlier ones.
# Usage on the GPU machine, from the repo root:  bash benchmarks/gpu_suite.sh [STAGE ...]
# Stages: build parity grad sanitizer bench model (default: all, in that order; parity runs grad
# too). All together may outrun one 10-minute device call: then run `build parity sanitizer`,
# then `bench model` on the warm machine (the build stays installed there while it is warm; a
# fresh one needs `build`).
set -uo pipefail
STAGES=" ${*:-build parity grad sanitizer bench model} "
want() { [[ "$STAGES" == *" $1 "* ]]; }
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/suite.log"; }

log "environment"
{ nvidia-smi; python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"; nvcc --version | tail -2; } >>"$OUT/suite.log" 2>&1

if want build; then
  log "build (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
  python3 -m pip install -q --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1 || log "build FAILED (see build.log)"
fi
python3 -c "import rtgaze_fast as r; print('backends on cuda:', r.available_backends('cuda'))" >>"$OUT/suite.log" 2>&1

# Parity and the sanitizers use each Triton kernel's default config (no autotuning: every shape
# of the suite compiles its own kernels, 10-25 s each) and compile in parallel processes.
if want parity; then
  log "GPU parity"
  XDIST=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
  # A GPU machine must have both GPU backends: a missing one stops the stage (with build.log's last
  # lines) instead of skipping its tests (tests/require.py).
  RTGAZE_FAST_REQUIRE=cuda,triton RTGAZE_FAST_BUILD_LOG="$OUT/build.log" \
  TRITON_INTERPRET=0 RTGAZE_FAST_TRITON_AUTOTUNE=0 python3 -m pytest -q -p no:cacheprovider $XDIST tests/test_gpu_parity.py \
    --junitxml="$OUT/parity.xml" >>"$OUT/suite.log" 2>&1 || log "parity FAILED"
fi

# The CUDA backward against autograd of the reference (on the CPU) over the option sweep; a missing
# cuda backend fails instead of skipping. Run by `parity` too, so that the first call a GPU session
# makes (`build parity sanitizer`) checks the backward as well. Its timing: the bench stage's
# fwd+bwd rows (every backend with a backward, gradient-checked before it is timed).
if want grad || want parity; then
  log "GPU gradient parity (cuda backward)"
  XDIST=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
  RTGAZE_FAST_REQUIRE=cuda RTGAZE_FAST_BUILD_LOG="$OUT/build.log" python3 -m pytest -q -p no:cacheprovider $XDIST \
    tests/test_render_grad.py -k cuda --junitxml="$OUT/grad.xml" >>"$OUT/suite.log" 2>&1 || log "grad parity FAILED"
fi

if want sanitizer; then
  log "compute-sanitizer (tiny sizes)"
  for tool in memcheck racecheck initcheck synccheck; do  # synccheck: misused __syncwarp/__syncthreads
    RTGAZE_FAST_TRITON_AUTOTUNE=0 compute-sanitizer --tool $tool --error-exitcode 9 python3 benchmarks/sanitize_case.py \
      >>"$OUT/sanitizer.log" 2>&1
    log "compute-sanitizer $tool rc=$? (see sanitizer.log)"
  done
fi

if want bench; then
  log "benchmark: renderer at 128x128, 48+48, batch 1 and 8"
  python3 -m rtgaze_fast.bench --device cuda --res 128 --batch 1 8 --model none --out "$OUT" >>"$OUT/suite.log" 2>&1 \
    || log "bench FAILED"
fi

if want model; then
  log "benchmark: RTGaze-base end to end, eager vs optimize() (torch.compile + CUDA graphs), stage breakdown"
  python3 -m rtgaze_fast.bench --device cuda --no-renderer --model base --out "$OUT/model" >>"$OUT/suite.log" 2>&1 \
    || log "model bench FAILED"
fi
log "done"
