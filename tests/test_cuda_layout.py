"""The CUDA kernels' index math on the CPU (no GPU can run them here): tests/cpp/tile_layout_check.cpp
includes rtgaze/tile.h, the header csrc/cuda/tile.cuh uses, and checks that the mma.sync fragment
layouts are the PTX ISA's tables (a warp GEMM emulated through them, with the swizzled weights,
equals the plain product), that every mma.sync fragment (tf32 m16n8k8, fp16/bf16 m16n8k16: A, B, C), every swizzled weight slot and every lane of
the texel gather covers its elements exactly once, that the forward's shared-memory A loads are
free of bank conflicts, and that the shared-memory plans fit the architectures' limits."""
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tile_layouts_cover_every_element_once(tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    assert cxx, "a host C++ compiler is needed (it also builds the CPU extension)"
    exe = tmp_path / "tile_layout_check"
    build = subprocess.run([cxx, "-std=c++17", "-O1", "-Wall", f"-I{ROOT / 'csrc/include'}",
                            str(ROOT / "tests/cpp/tile_layout_check.cpp"), "-o", str(exe)],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "all checks passed" in run.stdout, run.stdout + run.stderr
    # The performance model's shared-memory figures are the header's.
    from rtgaze_fast import perf_model as pm
    plans = [line.split()[1:] for line in run.stdout.splitlines() if line.startswith("plan ")]
    assert len(plans) == 6
    for direction, kind, s, block, warp in plans:
        s, want = int(s), (int(block), int(warp))
        got = pm.cuda_bwd_smem(s, s // 2) if direction == "bwd" else pm.cuda_fwd_smem(kind == "f16", s, s // 2)
        assert got == want, (direction, kind, s, got, want)
