"""Per-precision-mode error bounds of the fused backends against the fp32 reference.

The single source for tests and for the benchmark's parity gate (a fast wrong kernel is
reported as wrong, not fast). fp32 bounds are the spec's (shared/spec/renderer.md,
'Precision modes and tolerances'); the reduced-precision bounds are the spec's starting
points: each backend's tests measure what it reaches and must stay inside them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bound:
    rgb_atol: float          # max |rgb - rgb_ref|
    wsum_atol: float         # max |weights_sum - ref|
    depth_atol: float        # max |depth - ref| where weights_sum > DEPTH_WSUM_MIN
    min_psnr_db: float = 0.0  # PSNR of the rgb image (range [-1, 1]) vs the reference


DEPTH_WSUM_MIN = 1e-4  # below it, depth is decided by the batch clamp and may differ

BOUNDS = {
    # Same arithmetic up to summation order and libm: the spec's fp32 tolerance.
    "fp32": Bound(1e-5, 1e-5, 1e-4),
    # tf32 keeps a 10-bit mantissa in the MLP products (relative error ~5e-4 per product).
    "tf32": Bound(5e-3, 5e-3, 5e-2),
    # fp16 planes + MLP operands (11-bit mantissa), fp32 accumulation and compositing.
    "fp16": Bound(1e-2, 1e-2, 5e-2, 40.0),
    # bf16 keeps only an 8-bit mantissa: ~8x fp16's rounding error.
    "bf16": Bound(3e-2, 3e-2, 1e-1, 35.0),
    # fp32 operands split into tf32 hi + lo parts, hi*hi + hi*lo + lo*hi on tensor cores (lo*lo,
    # ~2^-22 relative, dropped), fp32 accumulation: held to the fp32 bound. Emulated on the CPU
    # (tests/test_ops_triton.py) at 48+48: rgb 2-6e-7, depth ~1e-6 off the reference.
    "tf32x3": Bound(1e-5, 1e-5, 1e-4),
}

# RTGaze end to end (rtgaze_fast.bench.bench_model): (max |image difference|, min PSNR dB) of
# ``RTGaze.optimize()``'s images (in [-1, 1]) against the eager fp32 model's, per mode of its
# autocast / renderer. fp32: fused renderer and channels-last convolutions, summation order only
# (measured ~1e-6 on the tiny model, tests/test_model.py). The others are starting points, like
# the renderer's reduced-precision bounds: tf32 (10-bit mantissa products, cuDNN's default for
# fp32 convolutions on a GPU), fp16 (11-bit), bf16 (8-bit: measured ~1e-3 on the tiny model)
# through ~100 layers of the base model. A wrong optimised path (a wrong kernel, a layer left
# out) moves pixels by ~1 and fails both.
MODEL_IMAGE_BOUNDS = {
    "fp32": (1e-4, 0.0),
    "tf32": (2e-2, 45.0),
    "fp16": (5e-2, 40.0),
    "bf16": (1e-1, 35.0),
}


def psnr_db(x, ref) -> float:
    """PSNR of images in [-1, 1] (peak-to-peak 2)."""
    import math
    mse = float(((x.float() - ref.float()) ** 2).mean())
    if mse == 0:
        return float("inf")
    return 10 * math.log10(4.0 / mse) if math.isfinite(mse) else -mse  # NaN stays NaN, an infinite error -inf


def parity_errors(out, ref) -> dict:
    """Max errors of a renderer output (rgb, depth, weights_sum) against the reference.

    ``finite`` is False when any output element is NaN or Inf where the reference's is finite,
    depth included everywhere (also where its error is not measured: the batch clamp keeps every
    depth finite), so an element a kernel forgot to write (NaN-poisoned in the tests) fails
    ``within``. Outputs of another shape than the reference's raise.
    """
    rgb, depth, wsum = (t.float().cpu() for t in out)
    rgb_r, depth_r, wsum_r = (t.float().cpu() for t in ref)
    for name, a, b in (("rgb", rgb, rgb_r), ("depth", depth, depth_r), ("weights_sum", wsum, wsum_r)):
        if a.shape != b.shape:
            raise ValueError(f"{name} has shape {tuple(a.shape)}, the reference's {tuple(b.shape)}")
    mask = wsum_r > DEPTH_WSUM_MIN
    pairs = ((rgb, rgb_r), (depth, depth_r), (wsum, wsum_r))
    finite = all(bool((a.isfinite() | ~b.isfinite()).all()) for a, b in pairs)
    d_err = float((depth - depth_r).abs()[mask].max()) if bool(mask.any()) else 0.0
    return {
        "finite": finite,
        "rgb": float((rgb - rgb_r).abs().max()) if rgb.numel() else 0.0,
        "wsum": float((wsum - wsum_r).abs().max()) if wsum.numel() else 0.0,
        "depth": d_err,
        "psnr_db": psnr_db(rgb, rgb_r),
    }


def within(errors: dict, mode: str) -> bool:
    b = BOUNDS[mode]
    return (errors["finite"] and errors["rgb"] <= b.rgb_atol and errors["wsum"] <= b.wsum_atol
            and errors["depth"] <= b.depth_atol and errors["psnr_db"] >= b.min_psnr_db)


# Fused backward passes vs autograd of the fp32 reference: each gradient within this fraction of
# its largest reference magnitude (the spec's fp32 tolerance; measured worst ~1e-5).
GRAD_RTOL_FP32 = 1e-4


def grad_errors(grads, ref) -> list:
    """Per gradient: max |g - g_ref| / max |g_ref| (inf where g is not finite)."""
    out = []
    for g, r in zip(grads, ref):
        g, r = g.float().cpu(), r.float().cpu()
        if not bool(g.isfinite().all()):
            out.append(float("inf"))
            continue
        scale = float(r.abs().max())
        out.append(float((g - r).abs().max()) / scale if scale > 0 else float(g.abs().max()))
    return out
