"""``backend='auto'`` by measurement on a GPU.

On the first call per (device, shape class, precision, requires_grad), the renderer runs every
usable fused backend on that call's inputs and noise, checks each against the fp32 reference with
the mode's bound (``rtgaze_fast.precision``), times the ones that pass, and keeps the fastest. A
backend that fails parity (or raises) is never chosen; when none passes, 'torch' (the reference)
is. The choice is cached in memory and, when ``RTGAZE_FAST_AUTOTUNE_CACHE`` names a JSON file,
on disk (keyed by the GPU's name, so a file moved to another GPU model is not trusted).
``explain_backend()`` reports the choices, timings and parity errors.

On a CPU ``auto`` keeps the static order (``cpu`` first): the interpreter-only Triton path exists
for tests, never for speed, so there is nothing to measure. ``RTGAZE_FAST_AUTOTUNE=0`` turns the
measurement off (the static order: cuda, triton, torch).

The timings are of the forward (under ``torch.no_grad``) even when the call will train: the
backward of a fused backend recomputes the forward, so the forward's ranking is a proxy.
"""
from __future__ import annotations

import json
import os
import statistics
import threading
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import precision as _precision

CACHE_ENV = "RTGAZE_FAST_AUTOTUNE_CACHE"
ENABLE_ENV = "RTGAZE_FAST_AUTOTUNE"
WARMUP, REPEATS = 1, 5


@dataclass
class Choice:
    backend: str
    precision: str
    key: str
    timings_ms: Dict[str, float] = field(default_factory=dict)   # backends that passed parity
    errors: Dict[str, dict] = field(default_factory=dict)         # parity errors per backend
    rejected: Dict[str, str] = field(default_factory=dict)        # backend -> why it was not eligible
    source: str = "measured"                                      # or 'disk cache'


_cache: Dict[str, Choice] = {}
_lock = threading.Lock()


def enabled(device: torch.device) -> bool:
    return torch.device(device).type == "cuda" and os.environ.get(ENABLE_ENV, "1") != "0"


def _device_name(device: torch.device) -> str:
    try:
        return torch.cuda.get_device_name(device)
    except Exception:
        return str(device)


def shape_class(planes_shape: Sequence[int], plane_dtype, rays: int, n: int, n_f: int) -> Tuple:
    """Calls with the same class share a choice: B, rays rounded up to a power of two, samples,
    plane sizes and dtype."""
    b, _, c, h, w = planes_shape
    r = 1 << max(0, int(rays - 1).bit_length())
    return (int(b), r, int(n), int(n_f), int(c), int(h), int(w), str(plane_dtype).replace("torch.", ""))


def make_key(device, cls: Tuple, precision: str, requires_grad: bool) -> str:
    device = torch.device(device)
    return json.dumps([_device_name(device), str(device), list(cls), precision, bool(requires_grad)])


def cuda_timer(fn: Callable[[], object], device) -> float:
    """Median seconds of ``fn`` over REPEATS runs after WARMUP, timed with CUDA events."""
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(REPEATS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def _disk_path() -> Optional[str]:
    return os.environ.get(CACHE_ENV) or None


def _disk_load(key: str) -> Optional[Choice]:
    path = _disk_path()
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            data = json.load(f)
        entry = data.get(key)
        return Choice(**{**entry, "source": "disk cache"}) if entry else None
    except (OSError, ValueError, TypeError):
        return None  # an unreadable cache is re-measured, never fatal


def _disk_store(choice: Choice) -> None:
    path = _disk_path()
    if not path:
        return
    try:
        data = {}
        if os.path.exists(path):
            with open(path) as f:
                data = json.load(f)
        data[choice.key] = asdict(choice)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except (OSError, ValueError):
        pass


def select(key: str, candidates: List[str], run: Callable[[str], tuple], reference: Callable[[], tuple],
           precision: str, device=None, timer: Optional[Callable] = None,
           rejected: Optional[Dict[str, str]] = None) -> Choice:
    """The cached choice for ``key``, or measure: each candidate's output on this call's inputs
    (``run(backend)`` -> (rgb, depth, weights_sum)) against ``reference()`` within the mode's bound,
    then ``timer(lambda: run(backend), device)`` (seconds) for those that pass; the fastest wins."""
    with _lock:
        if key in _cache:
            return _cache[key]
    hit = _disk_load(key)
    if hit is not None and hit.backend in candidates + ["torch"]:
        with _lock:
            _cache[key] = hit
        return hit
    timer = timer or cuda_timer
    choice = Choice("torch", precision, key, rejected=dict(rejected or {}))
    with torch.no_grad():
        ref = reference()
        for backend in candidates:
            try:
                errs = _precision.parity_errors(run(backend), ref)
            except Exception as e:  # a backend that fails on these inputs is not eligible
                choice.rejected[backend] = f"raised {type(e).__name__}: {e}"
                continue
            choice.errors[backend] = errs
            if not _precision.within(errs, precision):
                choice.rejected[backend] = f"failed the {precision} parity bound: {errs}"
                continue
            choice.timings_ms[backend] = timer(lambda b=backend: run(b), device) * 1e3
    if choice.timings_ms:
        choice.backend = min(choice.timings_ms, key=choice.timings_ms.get)
    with _lock:
        _cache[key] = choice
    _disk_store(choice)
    return choice


def explain_backend(device=None) -> dict:
    """What ``backend='auto'`` chose and why: per cached key, the backend, the timings of those
    that passed parity, the parity errors and the rejected ones. On a CPU: the static rule."""
    from . import ops
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if not enabled(device):
        why = ("a CPU: 'auto' keeps the static order, no measurement" if device.type != "cuda"
               else f"{ENABLE_ENV}=0: the static order")
        return {"device": str(device), "rule": why, "static_order": ops.available_backends(device), "choices": []}
    with _lock:
        choices = [asdict(c) for k, c in _cache.items() if json.loads(k)[1] == str(device)
                   or (device.index is None and json.loads(k)[1].startswith("cuda"))]
    return {"device": str(device), "rule": "measured: the fastest fused backend that passes parity on the first "
            "call per (device, shape class, precision, requires_grad)", "cache_file": _disk_path(),
            "choices": choices}


def clear_cache() -> None:
    with _lock:
        _cache.clear()
