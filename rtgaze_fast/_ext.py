"""Finds the compiled extension and reports why a compiled backend is missing.

Importing ``rtgaze_fast._C`` (built by setup.py) registers the ``*_cpu`` ops, and ``*_cuda`` in
a CUDA build. When it is missing, or in a source checkout older than its sources (csrc/,
build_config.py edited since the build: stale), it is JIT-built once with
``torch.utils.cpp_extension.load`` (same sources and flags, from build_config.py; cached
afterwards) and the stale one is not imported (both would register the same ops). Set
``RTGAZE_FAST_NO_JIT=1`` to never JIT-build (a stale ``_C`` is then used, with a warning).
Loading is lazy: ``import rtgaze_fast`` never compiles anything. ``build_info()`` of the module
says what a build holds (backends, CPU instruction set, compiler, CUDA architectures);
``RTGAZE_FAST_CPU_ISA=baseline`` makes the CPU kernels skip their AVX2+FMA build.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings
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


def _stale_reason() -> Optional[str]:
    """Why the built ``_C`` is older than the sources of this checkout, or None (also when there
    is no ``_C`` or no sources: an installed wheel is never stale)."""
    spec = importlib.util.find_spec("rtgaze_fast._C")
    if spec is None or not spec.origin or not (_ROOT / "csrc").is_dir():
        return None
    built = os.path.getmtime(spec.origin)
    sources = [p for p in (_ROOT / "csrc").rglob("*") if p.is_file()] + [_ROOT / "build_config.py"]
    newer = [p for p in sources if p.exists() and p.stat().st_mtime > built]
    if not newer:
        return None
    return (f"{spec.origin} is older than {newer[0].relative_to(_ROOT)}; rebuild it with "
            "`pip install --no-build-isolation -e .`")


def _import_built():
    stale = _stale_reason()
    if stale is not None:
        if os.environ.get("RTGAZE_FAST_NO_JIT") != "1":
            raise ImportError(f"stale extension: {stale}")
        warnings.warn(f"rtgaze_fast: using a stale compiled extension ({stale})")
    return importlib.import_module("rtgaze_fast._C")


def load():
    """The compiled extension module, or None (the reason is kept for ``why_unavailable``)."""
    if not _state["tried"]:
        _state["tried"] = True
        try:
            _state["module"] = _import_built()
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
