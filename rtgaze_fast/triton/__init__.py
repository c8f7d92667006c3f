"""Triton kernels, one module per kernel family. Importing this package registers the
``*_triton`` ops (issue #4 fills them in)."""
from __future__ import annotations

from typing import Optional


def why_unavailable(backend: str = "triton") -> Optional[str]:
    return "the Triton kernels are not written yet"
