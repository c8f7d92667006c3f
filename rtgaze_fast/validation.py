"""Argument checks shared by every entry point: each error names the argument at fault."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

INT32_MAX = 2 ** 31 - 1


def check_tensor(name: str, t, ndim: Optional[int] = None, shape: Optional[Sequence[Optional[int]]] = None,
                 dtypes: Sequence[torch.dtype] = (torch.float32,), device: Optional[torch.device] = None) -> None:
    """Type, rank, shape (None = any size), dtype and device of one tensor argument."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if shape is not None:
        if len(shape) != t.dim() or any(s is not None and s != d for s, d in zip(shape, t.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype {' or '.join(str(d) for d in dtypes)}, got {t.dtype}")
    if device is not None and t.device != torch.device(device):
        raise ValueError(f"{name} is on {t.device} but the planes are on {device}; put all inputs on one device")


def check_finite(name: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf (validate=True)")


def check_index_range(name: str, numel: int) -> None:
    """Fused kernels index with 32-bit integers: refuse sizes that would overflow them."""
    if numel > INT32_MAX:
        raise ValueError(f"{name} has {numel} elements, more than the 2**31-1 that the fused kernels "
                         "index; split the batch or render in ray chunks")
