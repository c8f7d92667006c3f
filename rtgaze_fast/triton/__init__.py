"""Triton kernels, one module per kernel family; importing this package registers the
``rtgaze_fast::<family>_triton`` ops (``torch.library.triton_op``, so torch.compile can trace
them on a GPU) and then the shared fake implementations (``ops.register_fakes``)."""
from __future__ import annotations

from typing import Optional

from .. import ops
from . import march, render, render_bwd, sample_decode  # noqa: F401  (registration)

ops.register_fakes("triton")


def why_unavailable(backend: str = "triton") -> Optional[str]:
    """None: the import above succeeded, so triton is present and every op is registered."""
    import torch
    missing = [f for f in ops.FORWARD_FAMILIES if not hasattr(getattr(torch.ops, ops.NAMESPACE), ops.op_name(f, "triton"))]
    return f"ops not registered: {missing}" if missing else None
