"""Finds the compiled extension (``rtgaze_fast._C``) and reports why a compiled backend is missing.

Importing ``rtgaze_fast._C`` registers the ``*_cpu`` (and, in a CUDA build, ``*_cuda``) ops.
The kernels themselves are issue #5's work; until then this reports them as not built.
"""
from __future__ import annotations

import importlib
from typing import Optional

_state = {"module": None, "error": None, "tried": False}


def load():
    """The compiled extension module, or None (the reason is kept for ``why_unavailable``)."""
    if not _state["tried"]:
        _state["tried"] = True
        try:
            _state["module"] = importlib.import_module("rtgaze_fast._C")
        except ImportError as e:
            _state["error"] = (f"the compiled extension is not built ({e}); install with "
                               "`pip install --no-build-isolation -e .` and a C++ compiler")
        else:
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
