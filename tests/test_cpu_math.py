"""The CPU kernels' written-out exp / log1p / softplus / sigmoid (csrc/include/rtgaze/math.h): each
function's worst relative error against float64 libm over a dense grid, within the bounds in
tests/cpp/cpu_math_check.cpp, and NaN propagation; compiled as the base build (no FMA) and as
the AVX2+FMA build compiles them."""
import shutil
import subprocess
from pathlib import Path

import pytest

import build_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("isa", [[], ["-mavx2", "-mfma"]], ids=["base", "avx2-fma"])
def test_cpu_math_within_bounds(tmp_path, isa):
    cxx = shutil.which("g++") or shutil.which("c++")
    assert cxx, "a host C++ compiler is needed (it also builds the CPU extension)"
    exe = tmp_path / "cpu_math_check"
    flags = [f for f in build_config.CXX_FLAGS if f not in ("-g0", "-fopenmp")]
    build = subprocess.run([cxx, "-std=c++17", *flags, *isa, "-Wall", f"-I{ROOT / 'csrc/include'}",
                            str(ROOT / "tests/cpp/cpu_math_check.cpp"), "-o", str(exe)],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "all checks passed" in run.stdout, run.stdout + run.stderr
