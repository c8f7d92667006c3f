"""Ray marching (MipRayMarcher2) and importance sampling (EG3D's sample_pdf) on [rays, samples]
register blocks: each ray's samples are one row, neighbours come from tl.gather along the row.
The @triton.jit helpers are shared with the fused renderer (render.py).
Twins: rtgaze_fast.reference.marcher.march_unclamped and sampling.importance_depths."""
from __future__ import annotations

from typing import Tuple

import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from .. import ops
from ._common import check, launch_configs, launch_device, next_pow2, register, softplus


@triton.jit
def shifted(x, k, step: tl.constexpr):
    """Column min(max(k + step, 0), last) of each row of x (k: the column index, broadcast)."""
    idx = tl.minimum(tl.maximum(k + step, 0), x.shape[1] - 1)
    return tl.gather(x, tl.broadcast_to(idx, x.shape), axis=1)


@triton.jit
def interval_weights(t, s, S):
    """Interval weights w (R, SP) (zero outside intervals 0..S-2) and midpoint depths (zero there
    too) of rows of S sorted depths t and raw densities s; padding columns may hold anything finite."""
    k = tl.broadcast_to(tl.arange(0, t.shape[1])[None, :], t.shape)
    ok = k + 1 < S
    t1 = shifted(t, k, 1)
    alpha = 1.0 - tl.exp(-softplus((s + shifted(s, k, 1)) * 0.5 - 1.0) * (t1 - t))
    alpha = tl.where(ok, alpha, 0.0)
    # T_k = prod_{l<k} (1 - alpha_l + 1e-10), EG3D's shifted cumprod.
    trans = tl.cumprod(tl.where(k == 0, 1.0, 1.0 - shifted(alpha, k, -1) + 1e-10), axis=1)
    return alpha * trans, tl.where(ok, (t + t1) * 0.5, 0.0)


@triton.jit
def colour_coefficients(w):
    """Per-sample colour weights: sum_k w_k (c_k + c_{k+1}) / 2 = sum_j c_j (w_{j-1} + w_j) / 2."""
    k = tl.broadcast_to(tl.arange(0, w.shape[1])[None, :], w.shape)
    return (w + tl.where(k == 0, 0.0, shifted(w, k, -1))) * 0.5


@triton.jit
def composite_depth(w, t_mid):
    """(weights_sum, depth = sum w t_mid / W with NaN -> inf) per row."""
    wsum = tl.sum(w, axis=1)
    depth = tl.sum(w * t_mid, axis=1) / wsum
    return wsum, tl.where(depth != depth, float("inf"), depth)


@triton.jit
def inverse_cdf(t, w, N, u, NF):
    """Fine depths (R, FP) of u (R, FP) from coarse depths t (R, NP) and interval weights w
    (R, NP), zero past N-2: EG3D's smoothing, then sample_pdf over the N-1 midpoints with the
    N-3 interior weights; and each depth's bin, ``lo`` (R, FP): the depth lies between the
    midpoints lo and lo + 1 (for the merge, render._merge_order). Columns past NF are garbage
    (finite)."""
    k = tl.broadcast_to(tl.arange(0, t.shape[1])[None, :], t.shape)
    K = N - 3
    w1 = shifted(w, k, 1)
    # max-pool (2, stride 1, pad 1) then avg-pool (2): interior value j+1; + 0.01; + 1e-5. NaN
    # propagates as through torch's max-pool (tl.maximum drops it by default on the GPU).
    v = (tl.maximum(w, w1, propagate_nan=tl.PropagateNan.ALL)
         + tl.maximum(w1, shifted(w, k, 2), propagate_nan=tl.PropagateNan.ALL)) * 0.5 + 0.01 + 1e-5
    v = tl.where(k < K, v, 0.0)
    cdf_hi = tl.cumsum(v / tl.sum(v, axis=1)[:, None], axis=1)  # column j holds cdf[j + 1]
    # searchsorted(cdf, u, right=True) = #entries <= u (cdf[0] = 0 <= u always counts), by
    # binary search: the cdf is nondecreasing (a cumsum of positive terms), so the count of
    # cdf_hi[j] <= u over j < K is the largest n with cdf_hi[n - 1] <= u. log2(NP) gathers per
    # u instead of an (R, FP, NP) comparison block. A NaN cdf counts 0 (the depth is NaN).
    n = tl.zeros(u.shape, dtype=tl.int32)
    for i in tl.static_range(1, 16):
        if (t.shape[1] >> i) > 0:
            cand = n + (t.shape[1] >> i)
            le = tl.gather(cdf_hi, tl.minimum(cand, K) - 1, axis=1) <= u
            n = tl.where((cand <= K) & le, cand, n)
    lo = n
    hi = tl.minimum(n + 1, K)
    cdf_lo = tl.where(lo == 0, 0.0, tl.gather(cdf_hi, tl.maximum(lo - 1, 0), axis=1))
    cdf_up = tl.where(hi == 0, 0.0, tl.gather(cdf_hi, tl.maximum(hi - 1, 0), axis=1))
    bins = (t + shifted(t, k, 1)) * 0.5
    b_lo = tl.gather(bins, lo, axis=1)
    b_hi = tl.gather(bins, hi, axis=1)
    denom = cdf_up - cdf_lo
    denom = tl.where(denom < 1e-5, 1.0, denom)
    return b_lo + (u - cdf_lo) / denom * (b_hi - b_lo), lo


# (BLOCK_R rays, num_warps), the default first, compiled for sm_90 (rtgaze_fast.triton.aot) at
# 48+48 and 96+96 samples with Triton 3.6 and 3.7: none spills. More rays per program (4+ at
# 96 samples) dropped to 32 registers and spilled 3-80 KB per thread.
MARCH_CONFIGS = ((2, 8), (1, 4))
IMPORTANCE_CONFIGS = ((2, 8), (1, 4))


@triton.autotune(configs=launch_configs("BLOCK_R", MARCH_CONFIGS, 64), key=["SP", "OP"])
@triton.jit
def _march_kernel(rgb_ptr, sigma_ptr, t_ptr, out_rgb_ptr, depth_ptr, w_ptr, P, S, O, WHITE_BACK: tl.constexpr,
                  SP: tl.constexpr, OP: tl.constexpr, BLOCK_R: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = r < P
    row = r.to(tl.int64)[:, None] * S
    k = tl.arange(0, SP)[None, :]
    smask = rmask[:, None] & (k < S)
    t = tl.load(t_ptr + row + k, mask=smask, other=0.0)
    s = tl.load(sigma_ptr + row + k, mask=smask, other=0.0)
    w, t_mid = interval_weights(t, s, S)
    tl.store(w_ptr + r.to(tl.int64)[:, None] * (S - 1) + k, w, mask=rmask[:, None] & (k + 1 < S))
    wsum, depth = composite_depth(w, t_mid)
    tl.store(depth_ptr + r, depth, mask=rmask)
    o = tl.arange(0, OP)[None, None, :]
    col = tl.load(rgb_ptr + (row[:, :, None] + k[:, :, None]) * O + o, mask=smask[:, :, None] & (o < O), other=0.0)
    rgb = tl.sum(colour_coefficients(w)[:, :, None] * col, axis=1)
    if WHITE_BACK:
        rgb = rgb + 1.0 - wsum[:, None]
    oo = tl.arange(0, OP)[None, :]
    tl.store(out_rgb_ptr + r.to(tl.int64)[:, None] * O + oo, rgb * 2.0 - 1.0, mask=rmask[:, None] & (oo < O))


@triton.autotune(configs=launch_configs("BLOCK_R", IMPORTANCE_CONFIGS, 64), key=["NP", "FP"])
@triton.jit
def _importance_kernel(t_ptr, w_ptr, u_ptr, out_ptr, P, N, NF, NP: tl.constexpr, FP: tl.constexpr,
                       BLOCK_R: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = (r < P)[:, None]
    r64 = r.to(tl.int64)[:, None]
    k = tl.arange(0, NP)[None, :]
    t = tl.load(t_ptr + r64 * N + k, mask=rmask & (k < N), other=0.0)
    w = tl.load(w_ptr + r64 * (N - 1) + k, mask=rmask & (k < N - 1), other=0.0)
    f = tl.arange(0, FP)[None, :]
    fm = rmask & (f < NF)
    u = tl.load(u_ptr + r64 * NF + f, mask=fm, other=0.0)
    tl.store(out_ptr + r64 * NF + f, inverse_cdf(t, w, N, u, NF)[0], mask=fm)


@register("march")
def march_triton(rgb: Tensor, sigma: Tensor, depths: Tensor, white_back: bool) -> Tuple[Tensor, Tensor, Tensor]:
    check("rgb", rgb, 4)
    check("sigma", sigma, 3, device=rgb.device)
    check("depths", depths, 3, device=rgb.device)
    B, R, S, O = rgb.shape
    if sigma.shape != (B, R, S) or depths.shape != (B, R, S):
        raise ValueError(f"sigma and depths must be (B, R, S) = {(B, R, S)}, got {tuple(sigma.shape)}, "
                         f"{tuple(depths.shape)}")
    if S < 2:
        raise ValueError(f"march needs S >= 2 samples per ray, got {S}")
    out = ops.new_output((B, R, O), rgb)
    depth = ops.new_output((B, R), rgb)
    w = ops.new_output((B, R, S - 1), rgb)
    P = B * R
    if P:
        grid = lambda meta: (triton.cdiv(P, meta["BLOCK_R"]),)  # noqa: E731
        with launch_device(rgb.device):
            wrap_triton(_march_kernel)[grid](rgb, sigma, depths, out, depth, w, P, S, O, WHITE_BACK=bool(white_back),
                                             SP=next_pow2(S), OP=next_pow2(O))
    return out, depth, w


@register("importance")
def importance_triton(depths: Tensor, weights: Tensor, u: Tensor) -> Tensor:
    check("depths", depths, 3)
    check("weights", weights, 3, device=depths.device)
    check("u", u, 3, device=depths.device)
    B, R, N = depths.shape
    if N < 4:
        raise ValueError(f"importance sampling needs N >= 4 coarse samples, got {N}")
    if weights.shape != (B, R, N - 1) or u.shape[:2] != (B, R):
        raise ValueError(f"weights must be (B, R, N-1) = {(B, R, N - 1)} and u (B, R, N_f); got "
                         f"{tuple(weights.shape)}, {tuple(u.shape)}")
    NF = u.shape[2]
    out = ops.new_output((B, R, NF), depths)
    P = B * R
    if P and NF:
        grid = lambda meta: (triton.cdiv(P, meta["BLOCK_R"]),)  # noqa: E731
        with launch_device(depths.device):
            wrap_triton(_importance_kernel)[grid](depths, weights, u, out, P, N, NF, NP=next_pow2(N),
                                                  FP=next_pow2(NF))
    return out
