"""Ray marching (MipRayMarcher2) and importance sampling (EG3D's sample_pdf) over blocks of rays,
each ray's samples in one row of a [rays, samples] block.
Twins: rtgaze_fast.reference.marcher.march_unclamped and sampling.importance_depths."""
from __future__ import annotations

from typing import Tuple

import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from .. import ops
from ._common import INTERPRET, check, next_pow2, softplus


@triton.jit
def interval_alpha(t_ptr, s_ptr, row, k, S, mask):
    """alpha of intervals k (k, k+1) of each row: 1 - exp(-softplus(mean raw sigma - 1) * delta)."""
    ok = mask & (k >= 0) & (k + 1 < S)
    t0 = tl.load(t_ptr + row + k, mask=ok, other=0.0)
    t1 = tl.load(t_ptr + row + k + 1, mask=ok, other=0.0)
    s0 = tl.load(s_ptr + row + k, mask=ok, other=0.0)
    s1 = tl.load(s_ptr + row + k + 1, mask=ok, other=0.0)
    alpha = 1.0 - tl.exp(-softplus((s0 + s1) * 0.5 - 1.0) * (t1 - t0))
    return tl.where(ok, alpha, 0.0), (t0 + t1) * 0.5


@triton.jit
def march_weights(t_ptr, s_ptr, row, S, mask, SP: tl.constexpr, SHIFT: tl.constexpr):
    """Interval weights w_{k+SHIFT} (R, SP) (zero outside 0..S-2) and the interval midpoints of a
    block of rays. SHIFT=-1 gives each column its left neighbour's weight without exchanging data
    between threads (recomputed, not reloaded)."""
    k = tl.arange(0, SP)[None, :] + SHIFT
    alpha, t_mid = interval_alpha(t_ptr, s_ptr, row, k, S, mask)
    prev, _ = interval_alpha(t_ptr, s_ptr, row, k - 1, S, mask)
    # T_k = prod_{l<k} (1 - alpha_l + 1e-10), EG3D's shifted cumprod.
    trans = tl.cumprod(tl.where(k <= 0, 1.0, 1.0 - prev + 1e-10), axis=1)
    return alpha * trans, t_mid


def _configs():
    if INTERPRET:
        return [triton.Config({"BLOCK_R": 64}, num_warps=4)]
    return [triton.Config({"BLOCK_R": b}, num_warps=w) for b in (8, 16, 32) for w in (2, 4)]


@triton.autotune(configs=_configs(), key=["SP", "OP"])
@triton.jit
def _march_kernel(rgb_ptr, sigma_ptr, t_ptr, out_rgb_ptr, depth_ptr, w_ptr, P, S, O, WHITE_BACK: tl.constexpr,
                  SP: tl.constexpr, OP: tl.constexpr, BLOCK_R: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = (r < P)[:, None]
    row = r.to(tl.int64)[:, None] * S
    w, t_mid = march_weights(t_ptr, sigma_ptr, row, S, rmask, SP, 0)
    k = tl.arange(0, SP)[None, :]
    tl.store(w_ptr + r.to(tl.int64)[:, None] * (S - 1) + k, w, mask=rmask & (k + 1 < S))
    wsum = tl.sum(w, axis=1)
    depth = tl.sum(w * t_mid, axis=1) / tl.where(r < P, wsum, 1.0)  # padding rows: no 0/0
    depth = tl.where(depth != depth, float("inf"), depth)
    tl.store(depth_ptr + r, depth, mask=r < P)
    # colour: sum_k w_k (c_k + c_{k+1}) / 2 = sum_j c_j (w_{j-1} + w_j) / 2
    w_prev, _ = march_weights(t_ptr, sigma_ptr, row, S, rmask, SP, -1)
    coef = (w + w_prev) * 0.5
    o = tl.arange(0, OP)[None, None, :]
    cmask = rmask[:, :, None] & (k < S)[:, :, None] & (o < O)
    col = tl.load(rgb_ptr + (row[:, :, None] + k[:, :, None]) * O + o, mask=cmask, other=0.0)
    rgb = tl.sum(coef[:, :, None] * col, axis=1)
    if WHITE_BACK:
        rgb = rgb + 1.0 - wsum[:, None]
    oo = tl.arange(0, OP)[None, :]
    tl.store(out_rgb_ptr + r.to(tl.int64)[:, None] * O + oo, rgb * 2.0 - 1.0, mask=rmask & (oo < O))


@triton.autotune(configs=_configs(), key=["KP", "FP"])
@triton.jit
def _importance_kernel(t_ptr, w_ptr, u_ptr, out_ptr, P, N, NF, KP: tl.constexpr, FP: tl.constexpr,
                       BLOCK_R: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = (r < P)[:, None]
    r64 = r.to(tl.int64)[:, None]
    K = N - 3
    j = tl.arange(0, KP)[None, :]
    jm = rmask & (j < K)
    wrow = w_ptr + r64 * (N - 1)
    w0 = tl.load(wrow + j, mask=jm, other=0.0)
    w1 = tl.load(wrow + j + 1, mask=jm, other=0.0)
    w2 = tl.load(wrow + j + 2, mask=jm, other=0.0)
    # max-pool (2, stride 1, pad 1) then avg-pool (2): interior value j+1; + 0.01; + 1e-5
    v = (tl.maximum(w0, w1) + tl.maximum(w1, w2)) * 0.5 + 0.01 + 1e-5
    v = tl.where(jm, v, 0.0)
    total = tl.where(r < P, tl.sum(v, axis=1), 1.0)  # padding rows: no 0/0
    cdf_hi = tl.cumsum(v / total[:, None], axis=1)  # cdf[j+1]
    f = tl.arange(0, FP)[None, :]
    fm = rmask & (f < NF)
    u = tl.load(u_ptr + r64 * NF + f, mask=fm, other=0.0)
    # searchsorted(cdf, u, right=True) = #entries <= u; cdf[0] = 0 <= u always counts.
    le = (cdf_hi[:, None, :] <= u[:, :, None]) & (j[:, None, :] < K)
    idx = 1 + tl.sum(le.to(tl.int32), axis=2)
    lo = tl.maximum(idx - 1, 0)
    hi = tl.minimum(idx, K)
    jj = j[:, None, :] + 1  # cdf index of cdf_hi's entries
    cdf_lo = tl.sum(tl.where(jj == lo[:, :, None], cdf_hi[:, None, :], 0.0), axis=2)
    cdf_up = tl.sum(tl.where(jj == hi[:, :, None], cdf_hi[:, None, :], 0.0), axis=2)
    trow = t_ptr + r64 * N
    b_lo = (tl.load(trow + lo, mask=fm, other=0.0) + tl.load(trow + lo + 1, mask=fm, other=0.0)) * 0.5
    b_hi = (tl.load(trow + hi, mask=fm, other=0.0) + tl.load(trow + hi + 1, mask=fm, other=0.0)) * 0.5
    denom = cdf_up - cdf_lo
    denom = tl.where(denom < 1e-5, 1.0, denom)
    tl.store(out_ptr + r64 * NF + f, b_lo + (u - cdf_lo) / denom * (b_hi - b_lo), mask=fm)


def march(rgb: Tensor, sigma: Tensor, depths: Tensor, white_back: bool):
    check("rgb", rgb, 4)
    check("sigma", sigma, 3)
    check("depths", depths, 3)
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
        wrap_triton(_march_kernel)[grid](rgb, sigma, depths, out, depth, w, P, S, O, WHITE_BACK=bool(white_back),
                                         SP=next_pow2(S), OP=next_pow2(O))
    return out, depth, w


def importance(depths: Tensor, weights: Tensor, u: Tensor) -> Tensor:
    check("depths", depths, 3)
    check("weights", weights, 3)
    check("u", u, 3)
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
        wrap_triton(_importance_kernel)[grid](depths, weights, u, out, P, N, NF, KP=next_pow2(N - 3),
                                              FP=next_pow2(NF))
    return out


@triton_op("rtgaze_fast::march_triton", mutates_args=())
def march_triton(rgb: Tensor, sigma: Tensor, depths: Tensor, white_back: bool) -> Tuple[Tensor, Tensor, Tensor]:
    return march(rgb, sigma, depths, white_back)


@triton_op("rtgaze_fast::importance_triton", mutates_args=())
def importance_triton(depths: Tensor, weights: Tensor, u: Tensor) -> Tensor:
    return importance(depths, weights, u)
