"""The CUDA backend's kernels and glue run on the CPU (emu.h; build.py builds them from csrc).

``use(monkeypatch)`` makes ``backend='cuda'`` render CPU tensors with them for the rest of a test:
the parity, gradient, bad-input, poisoning and property suites (tests/test_ops.py,
test_render_grad.py, test_bad_inputs.py, test_poison.py, test_properties.py) run the CUDA
backend as their ``cuda-emulated`` backend, on this GPU-less machine, beside ``cpu`` and
``triton``. What it proves and what it cannot: tests/test_cuda_emulated.py's docstring.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional

import torch

from rtgaze_fast import ops

from . import build

# The emulated devices: an H100/H200 (sm_90, 227 KiB of shared memory per block) and a T4 (sm_75,
# 64 KiB), each with 2 SMs, so launches of more rays than 2 blocks' warps loop over rays (the
# kernels' persistent grids). (compute capability, shared memory per block)
DEVICES = {90: (90, 227 * 1024), 75: (75, 64 * 1024)}
SMS = 2
# The suites' parameter for the emulated CUDA backend (its tests render with backend 'cuda').
EMULATED = "cuda-emulated"
active = False


def use(monkeypatch, reverse: bool = False, arch: int = 90):
    """Route backend 'cuda' to the emulation of sm_<arch> for CPU tensors; returns its ops
    (build.load). reverse: fibers resumed last lane first (emu.h: which missing barriers each
    order shows)."""
    emu = build.load(arch)
    get_op, why_unavailable, has_backward = ops.get_op, ops.why_unavailable, ops.has_backward

    def emulated_op(family, backend):
        return getattr(emu, ops.op_name(family, "cuda")) if backend == "cuda" else get_op(family, backend)

    monkeypatch.setattr(ops, "get_op", emulated_op)
    monkeypatch.setattr(ops, "why_unavailable", lambda b, d: None if b == "cuda" else why_unavailable(b, d))
    monkeypatch.setattr(ops, "has_backward", lambda b: b == "cuda" or has_backward(b))
    monkeypatch.setattr(sys.modules[__name__], "active", True)
    configure(emu, arch, reverse=reverse)
    return emu


def backend(param: str, monkeypatch, reverse: bool = False) -> str:
    """The backend a suite's parameter names: EMULATED turns the emulation on (use) and is 'cuda'."""
    if param != EMULATED:
        return param
    use(monkeypatch, reverse=reverse)
    return "cuda"


def configure(emu, arch: int = 90, sms: int = SMS, reverse: bool = False, smem: int = None):
    """The emulated device: sm_<arch>'s defaults unless given."""
    cc, default_smem = DEVICES[arch]
    emu.configure(sms, reverse, default_smem if smem is None else smem, cc)


def asan_preload() -> Optional[str]:
    """LD_PRELOAD for a Python running the AddressSanitizer build (build.py, RTGAZE_EMU_ASAN=1):
    gcc's libasan first, then libstdc++ (else ASan finds no __cxa_throw to intercept); None
    without libasan."""
    def lib(name):
        p = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
        return p if os.path.isabs(p) and os.path.exists(p) else None
    try:
        asan, cxx = lib("libasan.so"), lib("libstdc++.so.6")
    except OSError:  # no gcc
        return None
    return f"{asan} {cxx}" if asan and cxx else None


def device_of(backend: str) -> torch.device:
    """Where a backend's tensors live in the tests: CUDA for 'cuda' unless it is emulated."""
    return torch.device("cuda" if backend == "cuda" and not active else "cpu")
