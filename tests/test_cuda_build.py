"""The build without a GPU: every .cu compiles with nvcc for the default architectures (ptxas
reports registers and spills), the CUDA glue with the host compiler, the CMake build for C++
users configures, builds and runs; the extension reports what it was built with and is rebuilt
when stale."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import build_config  # noqa: E402

from require import cuda_include, nvcc_path, skip_or_fail, why_missing  # noqa: E402

# Without nvcc or cmake these tests skip; where RTGAZE_FAST_REQUIRE names 'nvcc' / 'cmake'
# (scripts/test.sh does: CI machines have both) they fail instead.
NVCC = nvcc_path()
CUDA_INCLUDE = cuda_include()


def _need(name):
    why = why_missing(name)
    if why is not None:
        skip_or_fail(name, why)


@pytest.mark.parametrize("source", build_config.CUDA_KERNEL_SOURCES)
def test_cu_compiles_for_default_archs(source, tmp_path):
    _need("nvcc")
    cmd = [NVCC, "-c", str(ROOT / source), "-o", str(tmp_path / "k.o"), "-Xptxas", "-v",
           *[f"-I{ROOT / d}" for d in build_config.INCLUDE_DIRS],
           *[f for f in build_config.NVCC_FLAGS if f != "-Xptxas=-v"],
           *build_config.nvcc_gencode_flags(build_config.DEFAULT_CUDA_ARCH_LIST)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    # No kernel spills on any architecture (the warp-tile kernels keep their fragments in registers,
    # sm_75's FFMA fallback included).
    spills = [int(n) for n in re.findall(r"(\d+) bytes spill stores", res.stderr)]
    assert spills and max(spills) == 0, f"register spills: {res.stderr}"


def test_cuda_glue_compiles_against_the_cpu_wheel_headers():
    from torch.utils.cpp_extension import include_paths
    _need("nvcc")
    cxx = shutil.which("g++") or shutil.which("c++")
    cmd = [cxx, "-std=c++17", "-fsyntax-only", "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE",
           *[f"-I{p}" for p in include_paths()], f"-I{CUDA_INCLUDE}",
           *[f"-I{ROOT / d}" for d in build_config.INCLUDE_DIRS], str(ROOT / "csrc/torch/cuda_glue.cpp")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_cmake_build_for_cpp_users(tmp_path):
    """CMakeLists.txt builds the ops library against libtorch; loaded into a fresh process (this
    one already has the ops registered), its march op matches the reference."""
    import torch
    _need("cmake")
    prefix = torch.utils.cmake_prefix_path
    build = tmp_path / "build"
    cfg = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), f"-DCMAKE_PREFIX_PATH={prefix}",
                          "-DCMAKE_BUILD_TYPE=Release"], capture_output=True, text=True, timeout=300)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    jobs = os.environ.get("MAX_JOBS", "2")
    res = subprocess.run(["cmake", "--build", str(build), "-j", jobs], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    lib = build / "librtgaze_fast_ops.so"
    code = f"""
import torch
from rtgaze_fast.reference.marcher import march_unclamped
torch.ops.load_library({str(lib)!r})
g = torch.Generator().manual_seed(0)
rgb, sigma = torch.rand(2, 5, 9, 4, generator=g), torch.randn(2, 5, 9, generator=g)
depths = torch.sort(2 + torch.rand(2, 5, 9, generator=g), -1).values
out = torch.ops.rtgaze_fast.march_cpu(rgb, sigma, depths, False)[0]
ref = march_unclamped(rgb, sigma[..., None], depths[..., None], False)[0]
torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr


def test_build_info_names_the_build():
    from rtgaze_fast import _ext
    mod = _ext.load()
    if mod is None:
        skip_or_fail("cpu", f"extension not built: {_ext.why_unavailable('cpu')}")
    info = mod.build_info()
    assert info["backends"] == mod.backends() and "cpu" in info["backends"]
    assert info["cpu_isa"] in ("avx2+fma", "baseline")
    if "cuda" in info["backends"]:
        assert info["cuda_arch_list"] == build_config.cuda_arch_list().replace(" ", ";")


def test_a_stale_extension_is_detected(tmp_path, monkeypatch):
    """A _C older than a file under csrc/ is stale (then JIT-rebuilt); a newer one is not."""
    from rtgaze_fast import _ext
    (tmp_path / "csrc").mkdir()
    src = tmp_path / "csrc" / "k.cpp"
    src.write_text("")
    (tmp_path / "build_config.py").write_text("")
    so = tmp_path / "_C.so"
    so.write_text("")

    class Spec:
        origin = str(so)
    monkeypatch.setattr(_ext, "_ROOT", tmp_path)
    monkeypatch.setattr(_ext.importlib.util, "find_spec", lambda name: Spec())
    for p, t in ((src, 100), (tmp_path / "build_config.py", 100), (so, 200)):
        os.utime(p, (t, t))
    assert _ext._stale_reason() is None
    os.utime(src, (300, 300))
    assert "csrc/k.cpp" in _ext._stale_reason()
    monkeypatch.setenv("RTGAZE_FAST_NO_JIT", "0")
    with pytest.raises(ImportError, match="stale"):
        _ext._import_built()


def test_setup_without_a_compiler_installs_pure_python(tmp_path):
    """setup.py with a missing compiler warns and still completes (the in-place copy too)."""
    import shutil as sh
    for name in ("setup.py", "build_config.py", "pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            sh.copy(ROOT / name, tmp_path / name)
    sh.copytree(ROOT / "csrc", tmp_path / "csrc")
    (tmp_path / "rtgaze_fast").mkdir()
    for f in (ROOT / "rtgaze_fast").glob("*.py"):
        sh.copy(f, tmp_path / "rtgaze_fast" / f.name)
    env = dict(os.environ, CXX=str(tmp_path / "no-such-c++"), CC=str(tmp_path / "no-such-cc"))
    res = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the compiled extension was not built" in res.stderr
    assert not list((tmp_path / "rtgaze_fast").glob("_C*.so"))
