"""The op registry: one schema per kernel family, fake (meta) implementations, and the one
mapping from backend name to implementation.

PyTorch dispatches on device, not on a backend name, so each backend registers each family
under its own op name ``rtgaze_fast::<family>_<backend>`` with the family's schema:

- Triton: ``rtgaze_fast/triton/*.py`` via ``torch.library.triton_op(schema=SCHEMAS[family])``.
- CPU / CUDA: ``csrc/torch/ops.cpp`` with ``TORCH_LIBRARY_FRAGMENT``; the schema strings live
  in ``csrc/include/rtgaze/schemas.h`` and a test checks they equal the ones here.

Tensor conventions shared by every backend (fp32 unless a precision mode says otherwise):

- ``planes``: (B, 3, H, W, C), fp32, or fp16/bf16 in those modes. Contiguous (channels-last) for
  ``triton`` and ``cuda``; the backends in ``STRIDED_PLANES`` (``cpu``) read any strides, so a
  caller passes EG3D's (B, 3, C, H, W) planes permuted, or a model's channels-last conv output,
  without a planes-sized layout copy.
- ``w1`` (Hd, C), ``b1`` (Hd,), ``w2`` (1+O, Hd), ``b2`` (1+O,): decoder weights with gains folded.
- ``sample_decode``: points (B, M, 3) -> sigma_raw (B, M), rgb (B, M, O) (widened sigmoid applied).
- ``march``: rgb (B, R, S, O), sigma (B, R, S), depths (B, R, S) sorted -> rgb (B, R, O) (white
  background and 2C-1 applied), depth (B, R) NaN->inf NOT clamped, weights (B, R, S-1).
- ``importance``: depths (B, R, N), weights (B, R, N-1), u (B, R, N_f) -> fine depths (B, R, N_f),
  in the order of ``u``.
- ``render``: rays (B, R, 3), ray_start/ray_end (B, R), stratified_u (B, R, N),
  importance_u (B, R, N_f) sorted ascending per ray (N_f may be 0) -> rgb (B, R, O),
  depth (B, R) not clamped, weights_sum (B, R), depth_range (B, R, 2) = per-ray (min, max) of
  the sampled depths; the host applies the batch-wide clamp (``clamp_depth``).
- ``render_backward``: the gradients of ``render``'s (rgb, depth, weights_sum) -> (planes (B, 3, H, W,
  C) fp32 whatever the planes' dtype, in the planes' layout (``torch.empty_like``'s strides), w1,
  b1, w2, b2, ray_origins, ray_directions), recomputed from the same inputs (nothing per sample is
  kept from the forward). ``depth``'s gradient is that of the unclamped depth, used only where the
  ray's weights_sum > 0 (the reference's empty-ray rule). No gradient through the fine depths
  (importance sampling runs without grad, as in EG3D) or the limits and noise. ``ray_grads=False``
  (autograd passes it when neither rays' tensor requires grad, as when training from fixed
  cameras) returns zeros for the two ray gradients, which a backend may then skip computing (the
  CPU skips their per-tap dot products). A backend with this op trains: ``register_autograd``
  makes ``render`` differentiable with it.
- ``plane_set``: index into ``options.PLANE_SETS``; ``precision``: one of ``PRECISIONS``.

Poisoning: with ``RTGAZE_FAST_POISON=1`` in the environment (the test suite sets it) every
backend allocates its outputs filled with NaN instead of uninitialised, so an element a kernel
forgets to write fails the parity tests. Python backends use ``new_output``; the C++ ones read
the same variable.
"""
from __future__ import annotations

import importlib
import os
from typing import Callable, Dict, List, Optional

import torch

NAMESPACE = "rtgaze_fast"
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "tf32x3")
FUSED_BACKENDS = ("cuda", "triton", "cpu")
BACKENDS = ("torch",) + FUSED_BACKENDS + ("auto",)
# Precision modes each fused backend implements (the C++ CPU kernels are fp32 only; CUDA runs its
# decoder on tensor cores in every mode: 3xTF32 for fp32, tf32, fp16, bf16; tf32x3, Triton's
# fp32-accurate dots as three tf32 tensor-core passes beside its IEEE fp32).
BACKEND_PRECISIONS = {"cuda": PRECISIONS[:4], "triton": PRECISIONS, "cpu": ("fp32",)}
# Backends whose ops read ``planes`` at any strides (see the conventions above); the others get a
# contiguous copy.
STRIDED_PLANES = ("cpu",)

SCHEMAS: Dict[str, str] = {
    "sample_decode": "(Tensor planes, Tensor w1, Tensor b1, Tensor w2, Tensor b2, Tensor points, "
                     "float box_warp, int plane_set, str precision) -> (Tensor, Tensor)",
    "march": "(Tensor rgb, Tensor sigma, Tensor depths, bool white_back) -> (Tensor, Tensor, Tensor)",
    "importance": "(Tensor depths, Tensor weights, Tensor u) -> Tensor",
    "render": "(Tensor planes, Tensor w1, Tensor b1, Tensor w2, Tensor b2, Tensor ray_origins, "
              "Tensor ray_directions, Tensor ray_start, Tensor ray_end, Tensor stratified_u, "
              "Tensor importance_u, float box_warp, bool disparity, bool white_back, int plane_set, "
              "str precision) -> (Tensor, Tensor, Tensor, Tensor)",
    "render_backward": "(Tensor grad_rgb, Tensor grad_depth, Tensor grad_wsum, Tensor planes, Tensor w1, "
                       "Tensor b1, Tensor w2, Tensor b2, Tensor ray_origins, Tensor ray_directions, "
                       "Tensor ray_start, Tensor ray_end, Tensor stratified_u, Tensor importance_u, "
                       "float box_warp, bool disparity, bool white_back, int plane_set, str precision, "
                       "bool ray_grads) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
}
FAMILIES = tuple(SCHEMAS)
# Every fused backend implements these; the backward is optional (a backend without it is
# inference-only).
FORWARD_FAMILIES = ("sample_decode", "march", "importance", "render")


def poison_enabled() -> bool:
    return os.environ.get("RTGAZE_FAST_POISON") == "1"


def new_output(shape, like: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """An output buffer for a kernel: uninitialised, or NaN-filled when poisoning is on."""
    out = torch.empty(shape, dtype=dtype or like.dtype, device=like.device)
    return out.fill_(float("nan")) if poison_enabled() else out


def op_name(family: str, backend: str) -> str:
    return f"{family}_{backend}"


# ---- fake implementations: shapes only, shared by every backend of a family ----

def _fake_sample_decode(planes, w1, b1, w2, b2, points, box_warp, plane_set, precision):
    b, m = points.shape[:2]
    o = w2.shape[0] - 1
    return points.new_empty(b, m), points.new_empty(b, m, o)


def _fake_march(rgb, sigma, depths, white_back):
    b, r, s, o = rgb.shape
    return rgb.new_empty(b, r, o), rgb.new_empty(b, r), rgb.new_empty(b, r, s - 1)


def _fake_importance(depths, weights, u):
    return u.new_empty(u.shape)


def _fake_render(planes, w1, b1, w2, b2, ray_origins, ray_directions, ray_start, ray_end, stratified_u,
                 importance_u, box_warp, disparity, white_back, plane_set, precision):
    b, r = ray_origins.shape[:2]
    o = w2.shape[0] - 1
    new = ray_origins.new_empty
    return new(b, r, o), new(b, r), new(b, r), new(b, r, 2)


def _fake_render_backward(grad_rgb, grad_depth, grad_wsum, planes, w1, b1, w2, b2, ray_origins, ray_directions,
                          ray_start, ray_end, stratified_u, importance_u, box_warp, disparity, white_back, plane_set,
                          precision, ray_grads):
    return (torch.empty_like(planes, dtype=torch.float32), w1.new_empty(w1.shape), b1.new_empty(b1.shape),
            w2.new_empty(w2.shape), b2.new_empty(b2.shape), ray_origins.new_empty(ray_origins.shape),
            ray_directions.new_empty(ray_directions.shape))


FAKES: Dict[str, Callable] = {
    "sample_decode": _fake_sample_decode,
    "march": _fake_march,
    "importance": _fake_importance,
    "render": _fake_render,
    "render_backward": _fake_render_backward,
}

# Where each fused backend's registrations live; importing it registers its ops.
_BACKEND_MODULES = {
    "triton": "rtgaze_fast.triton",
    "cpu": "rtgaze_fast._ext",
    "cuda": "rtgaze_fast._ext",
}
_fakes_done: set = set()


def _registered(family: str, backend: str) -> bool:
    return hasattr(getattr(torch.ops, NAMESPACE), op_name(family, backend))


def register_fakes(backend: str) -> None:
    """Attach the shared fake impls to every op of ``backend`` (once), and the autograd formula to
    its ``render`` when it has a ``render_backward``; called by the backend's loader."""
    for family in FAMILIES:
        name = f"{NAMESPACE}::{op_name(family, backend)}"
        if name in _fakes_done or not _registered(family, backend):
            continue
        torch.library.register_fake(name)(FAKES[family])
        if family == "render_backward":
            register_render_autograd(backend)
        _fakes_done.add(name)


# ---- autograd of the fused render op: a recompute backward ----

_RENDER_GRAD_INPUTS = 7  # planes, w1, b1, w2, b2, ray_origins, ray_directions: the differentiable inputs


def _render_setup_context(ctx, inputs, output):
    # Only the op's own inputs are kept (per-ray and plane tensors the caller holds anyway); the
    # backward recomputes every per-sample value from them.
    ctx.save_for_backward(*inputs[:11])
    ctx.scalars = tuple(inputs[11:])
    ctx.mark_non_differentiable(output[3])


def register_render_autograd(backend: str, namespace: str = NAMESPACE) -> None:
    """Make ``namespace::render_<backend>`` differentiable with ``get_op('render_backward', backend)``
    (the backend's loader does this through ``register_fakes``; tests/cuda_emu registers the CPU
    emulation of the CUDA backend, whose ops live in a namespace of their own)."""
    def backward(ctx, grad_rgb, grad_depth, grad_wsum, _grad_range):
        if torch.is_grad_enabled():
            raise RuntimeError(f"the fused {backend!r} renderer has no double backward (create_graph=True "
                               "through it); render with backend='torch' for higher-order gradients")
        saved = ctx.saved_tensors
        rays = saved[5]
        b, r = rays.shape[:2]
        o = saved[3].shape[0] - 1

        def grad(g, shape):  # an output that took no part in the loss has no gradient
            return rays.new_zeros(shape) if g is None else g.float().contiguous()

        needs = ctx.needs_input_grad
        grads = get_op("render_backward", backend)(grad(grad_rgb, (b, r, o)), grad(grad_depth, (b, r)),
                                                   grad(grad_wsum, (b, r)), *saved, *ctx.scalars,
                                                   needs[5] or needs[6])
        return tuple(g if needs[i] else None for i, g in enumerate(grads)) + (None,) * (len(needs) - len(grads))

    torch.library.register_autograd(f"{namespace}::{op_name('render', backend)}", backward,
                                    setup_context=_render_setup_context)


def has_backward(backend: str) -> bool:
    """Whether ``backend`` can train (its ops are loaded and include ``render_backward``)."""
    return backend == "torch" or (backend in FUSED_BACKENDS and _backend_ready(backend) is None
                                  and _registered("render_backward", backend))


def _backend_ready(backend: str) -> Optional[str]:
    """None when the backend's ops are registered and usable here, else why not."""
    try:
        mod = importlib.import_module(_BACKEND_MODULES[backend])
    except ImportError as e:  # triton missing, or the compiled extension failed to import
        return f"{_BACKEND_MODULES[backend]} could not be imported: {e}"
    return mod.why_unavailable(backend)


def why_unavailable(backend: str, device: torch.device) -> Optional[str]:
    """None when ``backend`` can render tensors on ``device``, else a sentence saying why not."""
    device = torch.device(device)
    if backend == "torch":
        return None
    if backend not in FUSED_BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cpu" and device.type != "cpu":
        return "the 'cpu' backend renders CPU tensors only"
    if backend == "cuda" and device.type != "cuda":
        return "the 'cuda' backend renders CUDA tensors only"
    if backend == "triton" and device.type != "cuda":
        import os
        if device.type != "cpu" or os.environ.get("TRITON_INTERPRET") != "1":
            return "the 'triton' backend needs CUDA tensors (or CPU tensors under TRITON_INTERPRET=1, for tests)"
    return _backend_ready(backend)


def available_backends(device=None) -> List[str]:
    """Backends that work for tensors on ``device`` (default: CUDA if present, else CPU), fastest first.

    Triton on the CPU (interpreter) is listed last: it exists for tests, never for speed.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    order = ("cuda", "triton", "torch") if device.type == "cuda" else ("cpu", "torch", "triton")
    return [b for b in order if why_unavailable(b, device) is None]


def resolve_backend(backend: str, device, requires_grad: bool = False) -> str:
    """The backend that will run: 'auto' picks the fastest available; an explicit one must work."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    device = torch.device(device)
    if backend == "auto":
        usable = available_backends(device)
        if requires_grad:  # the fastest that also has a fused backward ('torch' always has one)
            usable = [b for b in usable if has_backward(b)]
        return usable[0]
    if backend != "torch":
        why = why_unavailable(backend, device)
        if why is not None:
            raise RuntimeError(f"backend={backend!r} is not available for {device.type} tensors: {why}")
        if requires_grad and not has_backward(backend):
            raise RuntimeError(f"backend={backend!r} is inference-only (it has no fused backward) and an input "
                               "requires grad; use backend='torch' (or 'auto') to train, or torch.no_grad()")
    return backend


def get_op(family: str, backend: str):
    """The op implementing ``family`` on ``backend`` (its module is imported, registering it)."""
    if family not in SCHEMAS:
        raise ValueError(f"unknown op family {family!r}; one of {FAMILIES}")
    if backend not in FUSED_BACKENDS:
        raise ValueError(f"no fused op for backend {backend!r}; one of {FUSED_BACKENDS}")
    why = _backend_ready(backend)  # imports (and for the extension, loads) the backend's module
    if why is not None:
        raise RuntimeError(f"backend {backend!r} is not available: {why}")
    return getattr(getattr(torch.ops, NAMESPACE), op_name(family, backend))
