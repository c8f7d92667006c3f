"""What this machine must have for the suite to count: ``RTGAZE_FAST_REQUIRE``.

A test whose backend or tool is missing skips, so a machine where the compiled extension failed
to build (setup.py then leaves a pure-Python install, on purpose) or Triton does not import
would pass the suite with every fused test skipped. ``RTGAZE_FAST_REQUIRE`` names what the
machine must have (comma separated); when one is missing the session stops before running
anything (tests/conftest.py), naming it and why, with the last lines of the build log for the
compiled ones, and a test that would skip for a required name fails instead (``skip_or_fail``).

Unset (a plain ``pytest``): nothing is required and missing backends skip as before.
``scripts/test.sh`` (CI) requires ``DEFAULT_CI``; ``benchmarks/gpu_suite.sh`` requires
``cuda,triton`` for the GPU parity stage.

Names:
  cpu        the compiled extension with its CPU ops (setup.py / the JIT fallback)
  cuda       a CUDA device and the extension's CUDA ops
  triton     the Triton ops, on the GPU, or on the CPU under TRITON_INTERPRET=1
  nvcc       nvcc, the CUDA headers and a host C++ compiler (tests/test_cuda_build.py)
  cmake      cmake and this torch's CMake config (the C++ users' build, tests/test_cuda_build.py)
  ptxas      Triton's NVIDIA backend with its ptxas (tests/test_triton_lowering.py)
  triton-gpu the GPU machines' Triton under .venv/triton-gpu (scripts/setup_env.sh installs it)
  asan       gcc's AddressSanitizer runtime (the emulated CUDA kernels' ASan run, tests/cuda_emu)
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = "RTGAZE_FAST_REQUIRE"
NAMES = ("cpu", "cuda", "triton", "nvcc", "cmake", "ptxas", "triton-gpu", "asan")
DEFAULT_CI = "cpu,triton,ptxas,triton-gpu,nvcc,cmake,asan"
# Where scripts/setup_env.sh writes the output of building the extension (override for tests).
BUILD_LOG = Path(os.environ.get("RTGAZE_FAST_BUILD_LOG", ROOT / ".venv" / "build.log"))
GPU_MACHINES_TRITON = ROOT / ".venv" / "triton-gpu"


def required() -> List[str]:
    """The names in RTGAZE_FAST_REQUIRE; an unknown name is an error (a typo must not require nothing)."""
    names = [n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ValueError(f"{ENV}={os.environ[ENV]!r}: unknown {unknown}; known: {', '.join(NAMES)}")
    return names


def nvcc_path() -> Optional[str]:
    return shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)


def cuda_include() -> Optional[Path]:
    """The CUDA headers: from CUDA_HOME or next to nvcc (nvcc may be a wrapper outside the toolkit)."""
    nvcc = nvcc_path()
    for p in (Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include",
              Path(nvcc or "/").resolve().parents[1] / "include"):
        if (p / "cuda_runtime.h").exists():
            return p
    return None


def ptxas_missing() -> Optional[str]:
    """Why this Triton cannot compile for sm_90 (no NVIDIA backend, or it finds no ptxas), else None.
    Any other failure raises: only a missing ptxas may skip the lowering tests."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas
    except ImportError as e:
        return f"this Triton has no NVIDIA backend ({e})"
    try:
        path = get_ptxas(90).path
    except RuntimeError as e:
        if str(e).startswith("Cannot find ptxas"):
            return f"Triton: {e}"
        raise
    return None if Path(path).exists() else f"Triton's ptxas {path} does not exist"


def _triton_device() -> str:
    import torch
    return "cuda" if os.environ.get("TRITON_INTERPRET") != "1" and torch.cuda.is_available() else "cpu"


def why_missing(name: str) -> Optional[str]:
    """None when ``name`` is present here, else a sentence saying why not."""
    from rtgaze_fast import ops
    if name == "cpu":
        return ops.why_unavailable("cpu", "cpu")
    if name == "cuda":
        import torch
        if not torch.cuda.is_available():
            return "torch sees no CUDA device"
        return ops.why_unavailable("cuda", "cuda")
    if name == "triton":
        return ops.why_unavailable("triton", _triton_device())
    if name == "nvcc":
        missing = [what for what, ok in (("nvcc", nvcc_path()), ("the CUDA headers (cuda_runtime.h)", cuda_include()),
                                         ("a host C++ compiler", shutil.which("g++") or shutil.which("c++"))) if not ok]
        return f"not found: {', '.join(missing)}" if missing else None
    if name == "cmake":
        if shutil.which("cmake") is None:
            return "cmake is not on PATH"
        import torch
        cfg = Path(torch.utils.cmake_prefix_path) / "Torch" / "TorchConfig.cmake"
        return None if cfg.exists() else f"this torch has no CMake config ({cfg})"
    if name == "ptxas":
        try:
            import triton  # noqa: F401
        except ImportError as e:
            return f"triton does not import ({e})"
        return ptxas_missing()
    if name == "asan":
        import cuda_emu
        return None if cuda_emu.asan_preload() else "gcc has no libasan.so (gcc -print-file-name=libasan.so)"
    if name == "triton-gpu":
        if not sorted(GPU_MACHINES_TRITON.glob("triton-*.dist-info")):
            return f"no Triton under {GPU_MACHINES_TRITON} (scripts/setup_env.sh installs it)"
        return None
    raise ValueError(f"unknown requirement {name!r}; known: {', '.join(NAMES)}")


def build_log_excerpt(path: Path = None, lines: int = 30) -> str:
    """The build log's last lines, ending at its last error or 'not built' warning when it has one
    (pip prints its own lines after a failed optional build)."""
    path = Path(path or BUILD_LOG)
    if not path.is_file():
        return f"(no build log at {path}: scripts/setup_env.sh writes it)"
    text = path.read_text(errors="replace").splitlines()
    hits = [i for i, line in enumerate(text) if re.search(r"error|was not built", line, re.IGNORECASE)]
    end = min(hits[-1] + 3, len(text)) if hits else len(text)
    excerpt = text[max(0, end - lines):end]
    return f"last lines of {path}" + (" up to its last error" if hits else "") + ":\n" + "\n".join(
        "    " + line[:300] for line in excerpt)


def missing_report() -> Optional[str]:
    """None when every required name is present, else the message the session stops with."""
    names = required()
    missing: Dict[str, str] = {}
    for name in names:
        why = why_missing(name)
        if why is not None:
            missing[name] = why
    if not missing:
        return None
    lines = [f"{ENV}={','.join(names)}, but this machine lacks:"]
    lines += [f"  {name}: {why}" for name, why in missing.items()]
    if {"cpu", "cuda"} & set(missing):
        lines.append(build_log_excerpt())
    lines.append(f"(build what is missing, or narrow {ENV} to what this machine should have)")
    return "\n".join(lines)


def skip_or_fail(name: str, reason: str):
    """Skip a test for a missing ``name``; fail it instead when ``name`` is required here."""
    if name in required():
        pytest.fail(f"{reason} ({ENV} requires {name!r})", pytrace=False)
    pytest.skip(reason)
