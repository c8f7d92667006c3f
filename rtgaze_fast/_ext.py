"""Finds the compiled extension and reports why a compiled backend is missing.

Importing ``rtgaze_fast._C`` (built by setup.py) registers the ``*_cpu`` ops, and ``*_cuda`` in
a CUDA build. When it is missing and this is a source checkout, it is JIT-built once with
``torch.utils.cpp_extension.load`` (same sources and flags, from build_config.py; cached
afterwards). Set ``RTGAZE_FAST_NO_JIT=1`` to skip that. Loading is lazy: ``import rtgaze_fast``
never compiles anything.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Optional

_state = {"module": None, "error": None, "tried": False}
_ROOT = Path(__file__).resolve().parents[1]


def _jit_build():
    if os.environ.get("RTGAZE_FAST_NO_JIT") == "1":
        raise ImportError("RTGAZE_FAST_NO_JIT=1")
    if not (_ROOT / "build_config.py").exists():
        raise ImportError("not a source checkout, nothing to JIT-build")
    sys.path.insert(0, str(_ROOT))
    try:
        import build_config
    finally:
        sys.path.remove(str(_ROOT))
    print("rtgaze_fast: compiled extension missing, JIT-building it once (about a minute)...", file=sys.stderr)
    return build_config.jit_load()


def load():
    """The compiled extension module, or None (the reason is kept for ``why_unavailable``)."""
    if not _state["tried"]:
        _state["tried"] = True
        try:
            _state["module"] = importlib.import_module("rtgaze_fast._C")
        except ImportError as first:
            try:
                _state["module"] = _jit_build()
            except Exception as e:  # no compiler, no sources, or opted out
                _state["error"] = (f"the compiled extension is not built ({first}) and could not be JIT-built "
                                   f"({e}); reinstall with `pip install --no-build-isolation -e .` and a C++ compiler")
        if _state["module"] is not None:
            from . import ops
            for backend in _state["module"].backends():
                ops.register_fakes(backend)
    return _state["module"]


def why_unavailable(backend: str) -> Optional[str]:
    mod = load()
    if mod is None:
        return _state["error"]
    if backend not in mod.backends():
        return f"the compiled extension was built without the {backend!r} backend"
    return None
