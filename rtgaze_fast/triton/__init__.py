"""Triton kernels, one module per kernel family; importing this package registers the
``rtgaze_fast::<family>_triton`` ops (``torch.library.triton_op``, so torch.compile can trace
them on a GPU; triton_op registers each traceable host function as the op's fake)."""
from __future__ import annotations

from typing import Optional

from . import march, render, sample_decode  # noqa: F401  (registration)


def why_unavailable(backend: str = "triton") -> Optional[str]:
    return None
