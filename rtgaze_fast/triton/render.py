"""The whole renderer in one kernel per block of rays: coarse depths, coarse sample+decode, march
for the interval weights, inverse CDF, fine sample+decode, merge, final composite. Every
per-sample value stays in registers ([rays, samples] blocks); only per-ray outputs are written.
Twin: rtgaze_fast.reference.renderer.render_reference (up to the batch-wide depth clamp, which
the host applies from depth_range)."""
from __future__ import annotations

from typing import Tuple

import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from .. import ops
from ._common import (check, check_planes, decode_points, dot_mode, launch_configs, launch_device, next_pow2,
                      prepare_decoder, register)
from .march import colour_coefficients, composite_depth, interval_weights, inverse_cdf


@triton.jit
def _decode_rows(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, b_idx, ox, oy, oz, dx, dy, dz, t, mask, H, W,
                 box_warp, C, CP: tl.constexpr, HD: tl.constexpr, OP: tl.constexpr, PLANE_SET: tl.constexpr,
                 DOT_DTYPE: tl.constexpr, IEEE: tl.constexpr):
    """Decode the points o + t d of a (BLOCK_R, MP) block of depths: sigma (BLOCK_R, MP), decoder
    colours (BLOCK_R, MP, OP). The block is flattened to one list of points for the tl.dots."""
    BR: tl.constexpr = t.shape[0]
    MP: tl.constexpr = t.shape[1]
    px = tl.reshape(ox[:, None] + t * dx[:, None], (BR * MP,))
    py = tl.reshape(oy[:, None] + t * dy[:, None], (BR * MP,))
    pz = tl.reshape(oz[:, None] + t * dz[:, None], (BR * MP,))
    bb = tl.reshape(tl.broadcast_to(b_idx[:, None], (BR, MP)), (BR * MP,))
    sigma, out = decode_points(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, bb, px, py, pz,
                               tl.reshape(mask, (BR * MP,)), H, W, box_warp, C, CP, HD, OP, PLANE_SET, DOT_DTYPE,
                               IEEE)
    return tl.reshape(sigma, (BR, MP)), tl.reshape(out, (BR, MP, OP))


@triton.jit
def _interleave(a, b):
    """(R, MP) and (R, MP) -> (R, 2 MP) with a's column i at 2i and b's at 2i + 1."""
    return tl.reshape(tl.join(a, b), (a.shape[0], 2 * a.shape[1]))


@triton.jit
def _merge_order(t, valid):
    """Rank of each column of (R, M) depths in the merged depth order, and its inverse: the column
    holding each rank. Counting compares, O(M^2) per ray, instead of a sort (no key packing; cheap
    next to the decoder). The order is (class, depth, column), lexicographic, the class being 0
    for a valid number, 1 for a valid NaN, 2 for an invalid column (depth then taken as 0): a
    strict total order whatever the depths hold, so the ranks are a permutation of the columns by
    construction (valid columns first, NaN after every number as torch.sort puts them, ties by
    column) and ``src`` never gathers out of the row. (Comparing raw depths ranked every NaN
    column 0; ``src`` then summed colliding column indices, an out-of-range tl.gather.)"""
    number = valid & (t == t)
    key = tl.where(number, t, 0.0)
    late = tl.where(number, 0, tl.where(valid, 1, 2))
    col = tl.broadcast_to(tl.arange(0, t.shape[1])[None, :], t.shape)
    ka = key[:, None, :]  # the other column, along axis 2
    kb = key[:, :, None]  # this column, along axis 1
    la = late[:, None, :]
    lb = late[:, :, None]
    before = (la < lb) | ((la == lb) & ((ka < kb) | ((ka == kb) & (col[:, None, :] < col[:, :, None]))))
    rank = tl.sum(before.to(tl.int32), axis=2)
    src = tl.sum(tl.where(rank[:, :, None] == col[:, None, :], col[:, :, None], 0), axis=1)
    return rank, src


@triton.jit
def _ray_limits_and_coarse(o_ptr, d_ptr, start_ptr, end_ptr, su_ptr, r, rmask, N, MP: tl.constexpr,
                           DISPARITY: tl.constexpr):
    """A block of rays: origins, directions (BLOCK_R,) each, near (BLOCK_R, 1) and the coarse
    depths (BLOCK_R, MP) with their mask; padding columns get the (finite) near depth and are
    masked out of everything."""
    r64 = r.to(tl.int64)
    ox = tl.load(o_ptr + r64 * 3, mask=rmask, other=0.0)
    oy = tl.load(o_ptr + r64 * 3 + 1, mask=rmask, other=0.0)
    oz = tl.load(o_ptr + r64 * 3 + 2, mask=rmask, other=0.0)
    dx = tl.load(d_ptr + r64 * 3, mask=rmask, other=0.0)
    dy = tl.load(d_ptr + r64 * 3 + 1, mask=rmask, other=0.0)
    dz = tl.load(d_ptr + r64 * 3 + 2, mask=rmask, other=0.0)
    near = tl.load(start_ptr + r64, mask=rmask, other=1.0)[:, None]
    far = tl.load(end_ptr + r64, mask=rmask, other=2.0)[:, None]
    k = tl.arange(0, MP)[None, :]
    cmask = rmask[:, None] & (k < N)
    u = tl.load(su_ptr + r64[:, None] * N + k, mask=cmask, other=0.0)
    step = k.to(tl.float32) / (N - 1)
    if DISPARITY:
        s = step + u * (1.0 / (N - 1))
        t_c = 1.0 / (1.0 / near * (1.0 - s) + 1.0 / far * s)
    else:
        t_c = near + step * (far - near) + u * ((far - near) / (N - 1))
    return ox, oy, oz, dx, dy, dz, near, tl.where(cmask, t_c, near), cmask


@triton.jit
def _fine_depths(iu_ptr, r, rmask, near, t_c, sigma_c, N, NF):
    """The fine depths (BLOCK_R, MP) (EG3D's importance sampling, no gradient) and their mask."""
    k = tl.arange(0, t_c.shape[1])[None, :]
    w_c, _ = interval_weights(t_c, sigma_c, N)
    fmask = rmask[:, None] & (k < NF)
    u_f = tl.load(iu_ptr + r.to(tl.int64)[:, None] * NF + k, mask=fmask, other=0.0)
    return tl.where(fmask, inverse_cdf(t_c, w_c, N, u_f, NF), near), fmask


# Per pass; the merge ranks 2 * next_pow2(max(N, N_f)) columns per ray by counting (quadratic).
MAX_SAMPLES = 256


# (BLOCK_R rays, num_warps, maxnreg), compiled for sm_90 by rtgaze_fast.triton.aot. One config,
# so nothing to autotune: every other one failed somewhere. 4 rays, and 2 with 4 warps, fail to
# lower in the tf32/fp16/bf16 modes (Triton 3.6 and 3.7), 1 with 4 warps at 96+96 samples; 2
# rays with 8 warps took over 5 minutes to compile in tf32 (3.6); 16 warps spill in every mode.
# Without the register cap, ptxas gave the fp32 mode 32 registers and 11 KB of spills per
# thread; with it, 255 and 2.8 KB.
CONFIGS = ((1, 8, 255),)


@triton.autotune(configs=launch_configs("BLOCK_R", CONFIGS, 32),
                 key=["MP", "HAS_FINE", "CP", "HD", "OP", "DOT_DTYPE", "IEEE"])
@triton.jit
def _render_kernel(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, o_ptr, d_ptr, start_ptr, end_ptr, su_ptr,
                   iu_ptr, rgb_ptr, depth_ptr, wsum_ptr, range_ptr, P, R, N, NF, H, W, C, O, box_warp,
                   CP: tl.constexpr, HD: tl.constexpr, OP: tl.constexpr, PLANE_SET: tl.constexpr,
                   DOT_DTYPE: tl.constexpr, IEEE: tl.constexpr, DISPARITY: tl.constexpr, WHITE_BACK: tl.constexpr,
                   HAS_FINE: tl.constexpr, MP: tl.constexpr, BLOCK_R: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = r < P
    r64 = r.to(tl.int64)
    b_idx = r // R
    ox, oy, oz, dx, dy, dz, near, t_c, cmask = _ray_limits_and_coarse(o_ptr, d_ptr, start_ptr, end_ptr, su_ptr, r,
                                                                      rmask, N, MP, DISPARITY)
    sigma_c, out_c = _decode_rows(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, b_idx, ox, oy, oz, dx, dy, dz,
                                  t_c, cmask, H, W, box_warp, C, CP, HD, OP, PLANE_SET, DOT_DTYPE, IEEE)
    lo = tl.min(tl.where(cmask, t_c, float("inf")), axis=1)
    hi = tl.max(tl.where(cmask, t_c, -float("inf")), axis=1)

    if HAS_FINE:
        t_f, fmask = _fine_depths(iu_ptr, r, rmask, near, t_c, sigma_c, N, NF)
        sigma_f, out_f = _decode_rows(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, b_idx, ox, oy, oz, dx, dy,
                                      dz, t_f, fmask, H, W, box_warp, C, CP, HD, OP, PLANE_SET, DOT_DTYPE, IEEE)
        lo = tl.minimum(lo, tl.min(tl.where(fmask, t_f, float("inf")), axis=1))
        hi = tl.maximum(hi, tl.max(tl.where(fmask, t_f, -float("inf")), axis=1))
        # Merge the two lists into depth order by ranking, march in that order, then take each
        # sample's colour coefficient back to its own column.
        t_all = _interleave(t_c, t_f)
        rank, src = _merge_order(t_all, _interleave(cmask, fmask))
        w, t_mid = interval_weights(tl.gather(t_all, src, axis=1),
                                    tl.gather(_interleave(sigma_c, sigma_f), src, axis=1), N + NF)
        coef = tl.gather(colour_coefficients(w), rank, axis=1)
        coef_c, coef_f = tl.split(tl.reshape(coef, (BLOCK_R, MP, 2)))
        rgb = tl.sum(coef_c[:, :, None] * out_c, axis=1) + tl.sum(coef_f[:, :, None] * out_f, axis=1)
    else:
        w, t_mid = interval_weights(t_c, sigma_c, N)
        rgb = tl.sum(colour_coefficients(w)[:, :, None] * out_c, axis=1)

    wsum, depth = composite_depth(w, t_mid)
    if WHITE_BACK:
        rgb = rgb + 1.0 - wsum[:, None]
    o = tl.arange(0, OP)[None, :]
    tl.store(rgb_ptr + r64[:, None] * O + o, rgb * 2.0 - 1.0, mask=rmask[:, None] & (o < O))
    tl.store(depth_ptr + r64, depth, mask=rmask)
    tl.store(wsum_ptr + r64, wsum, mask=rmask)
    tl.store(range_ptr + r64 * 2, lo, mask=rmask)
    tl.store(range_ptr + r64 * 2 + 1, hi, mask=rmask)


def check_render_args(planes: Tensor, ray_origins: Tensor, ray_directions: Tensor, ray_start: Tensor, ray_end: Tensor,
                      stratified_u: Tensor, importance_u: Tensor, precision: str):
    """The render op's checks (shared with its backward): (B, R, N, N_f, H, W, C)."""
    check_planes(planes, precision)
    dev = planes.device
    for name, t, dim in (("ray_origins", ray_origins, 3), ("ray_directions", ray_directions, 3),
                         ("ray_start", ray_start, 2), ("ray_end", ray_end, 2), ("stratified_u", stratified_u, 3),
                         ("importance_u", importance_u, 3)):
        check(name, t, dim, device=dev)
    B, _, H, W, C = planes.shape
    R = ray_origins.shape[1]
    N, NF = stratified_u.shape[2], importance_u.shape[2]
    for name, t, shape in (("ray_origins", ray_origins, (B, R, 3)), ("ray_directions", ray_directions, (B, R, 3)),
                           ("ray_start", ray_start, (B, R)), ("ray_end", ray_end, (B, R)),
                           ("stratified_u", stratified_u, (B, R, N)), ("importance_u", importance_u, (B, R, NF))):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if N < 2 or (NF > 0 and N < 4):
        raise ValueError(f"need N >= 2 coarse samples (>= 4 with importance sampling), got N={N}, N_f={NF}")
    if max(N, NF) > MAX_SAMPLES:
        raise ValueError(f"the triton renderer takes at most {MAX_SAMPLES} samples per pass (N and N_f), got "
                         f"N={N}, N_f={NF}")
    return B, R, N, NF, H, W, C


@register("render")
def render_triton(planes: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, ray_origins: Tensor,
                  ray_directions: Tensor, ray_start: Tensor, ray_end: Tensor, stratified_u: Tensor,
                  importance_u: Tensor, box_warp: float, disparity: bool, white_back: bool, plane_set: int,
                  precision: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    B, R, N, NF, H, W, C = check_render_args(planes, ray_origins, ray_directions, ray_start, ray_end, stratified_u,
                                             importance_u, precision)
    dev = planes.device
    w1t, b1p, w2t, w2s, b2p, O = prepare_decoder(w1, b1, w2, b2, C, dev)
    dtype, ieee = dot_mode(precision)
    rgb = ops.new_output((B, R, O), ray_origins)
    depth = ops.new_output((B, R), ray_origins)
    wsum = ops.new_output((B, R), ray_origins)
    rng = ops.new_output((B, R, 2), ray_origins)
    P = B * R
    if P:
        grid = lambda meta: (triton.cdiv(P, meta["BLOCK_R"]),)  # noqa: E731
        # One padded width for both passes (>= 16 so that a one-ray block still fills a tl.dot).
        with launch_device(dev):
            wrap_triton(_render_kernel)[grid](planes, w1t, b1p, w2t, w2s, b2p, ray_origins, ray_directions,
                                              ray_start, ray_end, stratified_u, importance_u, rgb, depth, wsum, rng,
                                              P, R, N, NF, H, W, C, O, float(box_warp), CP=w1t.shape[0],
                                              HD=w1t.shape[1], OP=w2t.shape[1], PLANE_SET=int(plane_set),
                                              DOT_DTYPE=dtype, IEEE=ieee, DISPARITY=bool(disparity),
                                              WHITE_BACK=bool(white_back), HAS_FINE=NF > 0,
                                              MP=next_pow2(max(N, NF), 16))
    return rgb, depth, wsum, rng
