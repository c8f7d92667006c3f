"""Shared pieces of the Triton kernels: per-sample math as @triton.jit helpers, launch
configuration, and the host-side checks every wrapper makes."""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# The interpreter (CPU tests) runs ~5 ms per program instance and cannot autotune over several
# configs: one large block there; on a GPU the kernels autotune.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def next_pow2(n: int, minimum: int = 1) -> int:
    return max(minimum, triton.next_power_of_2(int(n)))


def check(name: str, t: torch.Tensor, dim: int, dtypes=(torch.float32,)) -> None:
    if t.dim() != dim:
        raise ValueError(f"{name} must be {dim}-D, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype {' or '.join(map(str, dtypes))}, got {t.dtype}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    if t.numel() > 2 ** 31 - 1:
        raise ValueError(f"{name} has {t.numel()} elements, more than the kernels index (2**31-1)")


@triton.jit
def softplus(x):
    # torch's softplus(beta=1, threshold=20), overflow-free.
    return tl.where(x > 20.0, x, tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x))))


@triton.jit
def widened_sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x)) * (1.0 + 2.0 * 0.001) - 0.001
