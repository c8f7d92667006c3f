"""The one place the compiled extension's sources and flags live: read by setup.py and by the
JIT fallback in rtgaze_fast/_ext.py.

- The CPU kernels always build (any C++17 compiler); csrc/cpu/render_cpu_avx2.cpp is compiled
  for AVX2+FMA through a target pragma and chosen at run time, so no -march=native is needed.
- The CUDA kernels build only when the installed torch has CUDA (the CPU wheel cannot link
  them); architectures come from TORCH_CUDA_ARCH_LIST, default below. render_fwd.cu holds the
  forward kernels of every precision mode, render_bwd.cu the backward (warp tiles, mma.sync).
- CMakeLists.txt builds the same sources for C++ users and mirrors these flags by hand.
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
NAME = "rtgaze_fast._C"

CPU_SOURCES = [
    "csrc/cpu/render_cpu_base.cpp",
    "csrc/cpu/render_cpu_avx2.cpp",
    "csrc/cpu/dispatch.cpp",
    "csrc/torch/ops.cpp",
    "csrc/torch/module.cpp",
]
CUDA_SOURCES = ["csrc/cuda/render_fwd.cu", "csrc/cuda/render_bwd.cu", "csrc/torch/cuda_glue.cpp"]

INCLUDE_DIRS = ["csrc/include"]
CUDA_KERNEL_SOURCES = [s for s in CUDA_SOURCES if s.endswith(".cu")]
CXX_FLAGS = ["-O3", "-g0", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
LINK_FLAGS = ["-fopenmp"]
# nvcc 13 supports sm_75 and newer; the default covers T4 .. H100 and PTX for newer GPUs.
DEFAULT_CUDA_ARCH_LIST = "7.5;8.0;8.6;8.9;9.0+PTX"
# No --use_fast_math: the fp32 mode must match the reference within 1e-5. --threads=0: the
# architectures of a multi-arch build compile in parallel (one nvcc thread per CPU).
NVCC_FLAGS = ["-O3", "-std=c++17", "-Xptxas=-v", "-lineinfo", "--threads=0"]


def torch_has_cuda() -> bool:
    import torch
    return torch.version.cuda is not None


def sources(root: Path = ROOT) -> list:
    srcs = CPU_SOURCES + (CUDA_SOURCES if torch_has_cuda() else [])
    return [str(root / s) for s in srcs]


def nvcc_gencode_flags(arch_list: str = DEFAULT_CUDA_ARCH_LIST) -> list:
    """nvcc -gencode flags for a TORCH_CUDA_ARCH_LIST string (what the tests compile with)."""
    flags = []
    for arch in arch_list.replace(" ", ";").split(";"):
        num = arch.replace("+PTX", "").replace(".", "")
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
        if arch.endswith("+PTX"):
            flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
    return flags


def cuda_arch_list() -> str:
    return os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_CUDA_ARCH_LIST


def _macros(cuda: bool) -> list:
    """-D macros: RTGAZE_WITH_CUDA, and the arch list for the module's build_info() with '_' for
    ';' (a value with no character a shell or ninja would split on; module.cpp turns it back)."""
    if not cuda:
        return []
    archs = "_".join(cuda_arch_list().replace(";", " ").split())
    return [("RTGAZE_WITH_CUDA", None), ("RTGAZE_CUDA_ARCHS", archs)]


def extension():
    """The setuptools Extension (CppExtension, or CUDAExtension when torch has CUDA and sources exist)."""
    from torch.utils import cpp_extension
    cuda = torch_has_cuda() and bool(CUDA_SOURCES)
    if cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", cuda_arch_list())
    kind = cpp_extension.CUDAExtension if cuda else cpp_extension.CppExtension
    return kind(
        NAME,
        [os.path.relpath(s, ROOT) for s in sources()],
        include_dirs=[str(ROOT / d) for d in INCLUDE_DIRS],
        define_macros=_macros(cuda),
        extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS} if cuda else {"cxx": CXX_FLAGS},
        extra_link_args=LINK_FLAGS,
    )


def jit_load(verbose: bool = False):
    """Build (or reuse the cached build of) the extension with torch.utils.cpp_extension.load."""
    from torch.utils import cpp_extension
    cuda = torch_has_cuda() and bool(CUDA_SOURCES)
    return cpp_extension.load(
        name="rtgaze_fast_C",
        sources=sources(),
        extra_include_paths=[str(ROOT / d) for d in INCLUDE_DIRS],
        extra_cflags=CXX_FLAGS + [f"-D{k}" if v is None else f"-D{k}={v}" for k, v in _macros(cuda)],
        extra_cuda_cflags=NVCC_FLAGS,
        extra_ldflags=LINK_FLAGS,
        with_cuda=cuda,
        verbose=verbose,
    )
