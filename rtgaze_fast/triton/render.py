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
from ._common import (INTERPRET, check, check_planes, decode_points, dot_mode, launch_configs, launch_device,
                      next_pow2, prepare_decoder, register)
from .march import colour_coefficients, composite_depth, interval_weights, inverse_cdf


@triton.jit
def _decode_rows(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, b_idx, ox, oy, oz, dx, dy, dz, t, mask, H, W,
                 box_warp, C, CP: tl.constexpr, HD: tl.constexpr, OP: tl.constexpr, PLANE_SET: tl.constexpr,
                 DOT_DTYPE: tl.constexpr, PREC: tl.constexpr):
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
                               PREC)
    return tl.reshape(sigma, (BR, MP)), tl.reshape(out, (BR, MP, OP))


@triton.jit
def _decode_pass(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, b_idx, ox, oy, oz, dx, dy, dz, t, rmask, NS, H,
                 W, box_warp, C, CP: tl.constexpr, HD: tl.constexpr, OP: tl.constexpr, PLANE_SET: tl.constexpr,
                 DOT_DTYPE: tl.constexpr, PREC: tl.constexpr, CH: tl.constexpr, COLOURS: tl.constexpr, g2):
    """Decode the first NS depths of each row of t (BLOCK_R, MP), CH depths of each ray at a
    time (BLOCK_R x CH points a tl.dot): a chunk past NS is never decoded, so 48 samples cost 3
    chunks of 16, not 64 padded columns. Returns sigma_raw (BLOCK_R, MP) and, with COLOURS, the
    decoder colours (BLOCK_R, MP // CH, CH, OP) (chunks kept in registers for the compositing),
    else each sample's colour dotted with g2 (BLOCK_R, OP) as (BLOCK_R, MP) (the backward)."""
    BR: tl.constexpr = t.shape[0]
    MP: tl.constexpr = t.shape[1]
    NC: tl.constexpr = MP // CH
    sel_c = tl.arange(0, NC)[None, :, None]
    sigma = tl.zeros((BR, NC, CH), dtype=tl.float32)
    if COLOURS:
        col = tl.zeros((BR, NC, CH, OP), dtype=tl.float32)
    else:
        col = tl.zeros((BR, NC, CH), dtype=tl.float32)
    for c in range(0, tl.cdiv(NS, CH)):
        idx = tl.broadcast_to(c * CH + tl.arange(0, CH)[None, :], (BR, CH))
        s_c, o_c = _decode_rows(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, b_idx, ox, oy, oz, dx, dy, dz,
                                tl.gather(t, idx, axis=1), rmask[:, None] & (idx < NS), H, W, box_warp, C, CP, HD, OP,
                                PLANE_SET, DOT_DTYPE, PREC)
        here = sel_c == c
        sigma = tl.where(here, s_c[:, None, :], sigma)
        if COLOURS:
            col = tl.where(here[:, :, :, None], o_c[:, None, :, :], col)
        else:
            col = tl.where(here, tl.sum(o_c * g2[:, None, :], axis=2)[:, None, :], col)
    if COLOURS:
        return tl.reshape(sigma, (BR, MP)), col
    else:
        return tl.reshape(sigma, (BR, MP)), tl.reshape(col, (BR, MP))


@triton.jit
def _interleave(a, b):
    """(R, MP) and (R, MP) -> (R, 2 MP) with a's column i at 2i and b's at 2i + 1."""
    return tl.reshape(tl.join(a, b), (a.shape[0], 2 * a.shape[1]))


@triton.jit
def _max_combine(a, b):
    return tl.maximum(a, b)


@triton.jit
def _merge_order(t_c, t_f, lo, N, NF):
    """The merge of a ray's coarse depths t_c and its fine depths t_f (BLOCK_R, MP) each, both in
    increasing order (the fine ones are inverse-CDF depths of sorted u, ``lo`` their bins), as the
    (BLOCK_R, 2 MP) rank of each interleaved column (coarse j at 2j, fine p at 2p + 1) and its
    inverse, the column holding each rank. O(M) from the bins, no comparison of every pair:

    - fine p lies between the midpoints lo_p and lo_p + 1, so coarse 0..lo_p are below it and
      lo_p + 2.. above: c_p = lo_p + 1 + [t_c[lo_p + 1] <= t_f[p]] coarse precede it (a coarse
      depth equal to a fine one first: torch.sort of cat(coarse, fine), stable);
    - fine p's rank is p + c_p; coarse j's is j + #{p : c_p <= j} (a histogram of c, summed);
    - the inverse from a histogram of the fine ranks: position q holds fine number
      #{fine ranks <= q} - 1 if a fine rank is q, else coarse number q - #{fine ranks <= q}.

    c is clamped to [0, N] and made nondecreasing (a running max) whatever the depths hold (NaN,
    rounding), so the ranks are a permutation of the columns by construction and ``src`` never
    gathers out of the row; padding columns rank after the N + NF real ones (coarse first). For
    sorted numbers this is the reference's order up to the order of equal depths, which are the
    same point (the same sample) and so do not change the result; a NaN depth makes the ray NaN
    whatever its rank (the reference's NaN-in, NaN-out)."""
    BR: tl.constexpr = t_c.shape[0]
    MP: tl.constexpr = t_c.shape[1]
    k = tl.broadcast_to(tl.arange(0, MP)[None, :], (BR, MP))
    row = tl.broadcast_to(tl.arange(0, BR)[:, None], (BR, MP))
    above = tl.gather(t_c, tl.minimum(lo + 1, MP - 1), axis=1) <= t_f
    c = tl.minimum(tl.maximum(lo + 1 + above.to(tl.int32), 0), N)
    c = tl.associative_scan(c, 1, _max_combine)
    # F_j = #{p < NF : c_p <= j} for j < MP (c_p = MP counts for no column).
    hist = tl.histogram(tl.reshape(row * MP + tl.minimum(c, MP - 1), (BR * MP,)), BR * MP,
                        mask=tl.reshape((k < NF) & (c < MP), (BR * MP,)))
    before = tl.cumsum(tl.reshape(hist, (BR, MP)), axis=1)
    rank_c = tl.where(k < N, k + before, NF + k)
    rank_f = tl.where(k < NF, k + c, MP + k)
    hist = tl.histogram(tl.reshape(row * (2 * MP) + rank_f, (BR * MP,)), BR * 2 * MP)
    is_fine = tl.reshape(hist, (BR, 2 * MP))
    fine_upto = tl.cumsum(is_fine, axis=1)
    q = tl.broadcast_to(tl.arange(0, 2 * MP)[None, :], (BR, 2 * MP))
    src = tl.where(is_fine > 0, 2 * fine_upto - 1, 2 * (q - fine_upto))
    return _interleave(rank_c, rank_f), src


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
    """The fine depths (BLOCK_R, MP) (EG3D's importance sampling, no gradient) in increasing order,
    their bins and mask. The u of a ray are sorted first (the inverse CDF is monotone in u; the
    result does not depend on which column holds which sample): as int32 bit patterns, whose
    order is that of nonnegative floats, padding last (a float sort's compare-and-swap would
    duplicate a NaN and drop a u)."""
    k = tl.arange(0, t_c.shape[1])[None, :]
    w_c, _ = interval_weights(t_c, sigma_c, N)
    fmask = rmask[:, None] & (k < NF)
    bits = tl.load(iu_ptr + r.to(tl.int64)[:, None] * NF + k, mask=fmask, other=0.0).to(tl.int32, bitcast=True)
    u_f = tl.sort(tl.where(fmask, bits, 0x7FFFFFFF), dim=1).to(tl.float32, bitcast=True)
    t_f, lo = inverse_cdf(t_c, w_c, N, u_f, NF)
    return tl.where(fmask, t_f, near), lo, fmask


# Per pass. Rows of MP = next_pow2(N) scalars per ray: 96 compiles MP = 128, which covers up to 128.
MAX_SAMPLES = 128
# Depths decoded per ray at a time (BLOCK_R x CH points a tl.dot). Under the interpreter 8, so
# that the tests' 8-16 samples per pass span more than one chunk.
CH = 8 if INTERPRET else 16


# (BLOCK_R rays, num_warps, maxnreg, num_stages), compiled for sm_90 by rtgaze_fast.triton.aot
# (figures: benchmarks/results/triton_sm90_lowering*.json). 2 rays of 16 depths a chunk (32-row
# dots) with 4 warps: 128 threads at <= 255 registers take half an SM's 65536, so 2 CTAs per SM.
# Two pipeline stages: the chunk loop's texel loads are prefetched into shared memory one chunk
# ahead (36-86 KB, so 2 CTAs fit); Triton's default 3 stages took 118-135 KB (one CTA per SM),
# 1 stage 20 KB but 5-10x the spills and no prefetch (tf32, 48+48). Spills at 48+48: 8-232 B per
# thread (fp32 192 B, from 2.8 KB at one ray per program); 0.3-0.4 KB at 96+96.
CONFIGS = ((2, 4, 255, 2),)


@triton.autotune(configs=launch_configs("BLOCK_R", CONFIGS, 32),
                 key=["MP", "HAS_FINE", "CP", "HD", "OP", "DOT_DTYPE", "PREC"])
@triton.jit
def _render_kernel(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, o_ptr, d_ptr, start_ptr, end_ptr, su_ptr,
                   iu_ptr, rgb_ptr, depth_ptr, wsum_ptr, range_ptr, P, R, N, NF, H, W, C, O, box_warp,
                   CP: tl.constexpr, HD: tl.constexpr, OP: tl.constexpr, PLANE_SET: tl.constexpr,
                   DOT_DTYPE: tl.constexpr, PREC: tl.constexpr, DISPARITY: tl.constexpr, WHITE_BACK: tl.constexpr,
                   HAS_FINE: tl.constexpr, MP: tl.constexpr, CH: tl.constexpr, BLOCK_R: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = r < P
    r64 = r.to(tl.int64)
    b_idx = r // R
    ox, oy, oz, dx, dy, dz, near, t_c, cmask = _ray_limits_and_coarse(o_ptr, d_ptr, start_ptr, end_ptr, su_ptr, r,
                                                                      rmask, N, MP, DISPARITY)
    sigma_c, col_c = _decode_pass(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, b_idx, ox, oy, oz, dx, dy, dz,
                                  t_c, rmask, N, H, W, box_warp, C, CP, HD, OP, PLANE_SET, DOT_DTYPE, PREC, CH, True,
                                  None)
    d_lo, d_hi = _depth_range(t_c, cmask)

    if HAS_FINE:
        t_f, bins, fmask = _fine_depths(iu_ptr, r, rmask, near, t_c, sigma_c, N, NF)
        sigma_f, col_f = _decode_pass(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, b_idx, ox, oy, oz, dx, dy,
                                      dz, t_f, rmask, NF, H, W, box_warp, C, CP, HD, OP, PLANE_SET, DOT_DTYPE, PREC, CH,
                                      True, None)
        f_lo, f_hi = _depth_range(t_f, fmask)
        d_lo = tl.minimum(d_lo, f_lo, propagate_nan=tl.PropagateNan.ALL)
        d_hi = tl.maximum(d_hi, f_hi, propagate_nan=tl.PropagateNan.ALL)
        # March in merged depth order, then take each sample's colour coefficient back to its
        # own column.
        rank, src = _merge_order(t_c, t_f, bins, N, NF)
        w, t_mid = interval_weights(tl.gather(_interleave(t_c, t_f), src, axis=1),
                                    tl.gather(_interleave(sigma_c, sigma_f), src, axis=1), N + NF)
        coef_c, coef_f = tl.split(tl.reshape(tl.gather(colour_coefficients(w), rank, axis=1), (BLOCK_R, MP, 2)))
        rgb = _composite(coef_c, col_c) + _composite(coef_f, col_f)
    else:
        w, t_mid = interval_weights(t_c, sigma_c, N)
        rgb = _composite(colour_coefficients(w), col_c)

    wsum, depth = composite_depth(w, t_mid)
    if WHITE_BACK:
        rgb = rgb + 1.0 - wsum[:, None]
    o = tl.arange(0, OP)[None, :]
    tl.store(rgb_ptr + r64[:, None] * O + o, rgb * 2.0 - 1.0, mask=rmask[:, None] & (o < O))
    tl.store(depth_ptr + r64, depth, mask=rmask)
    tl.store(wsum_ptr + r64, wsum, mask=rmask)
    tl.store(range_ptr + r64 * 2, d_lo, mask=rmask)
    tl.store(range_ptr + r64 * 2 + 1, d_hi, mask=rmask)


@triton.jit
def _depth_range(t, mask):
    """Per row, the min and max of the masked depths, NaN if any is NaN (torch.amin/amax, which
    the reference's batch-wide clamp uses): tl.min/tl.max drop NaN, on the GPU and in the
    interpreter (np.nanmin)."""
    lo = tl.min(tl.where(mask, t, float("inf")), axis=1)
    hi = tl.max(tl.where(mask, t, -float("inf")), axis=1)
    nan = tl.max((mask & (t != t)).to(tl.int32), axis=1) > 0
    return tl.where(nan, float("nan"), lo), tl.where(nan, float("nan"), hi)


@triton.jit
def _composite(coef, col):
    """sum_j coef_j colour_j per ray: coef (BLOCK_R, MP), col (BLOCK_R, MP // CH, CH, OP)."""
    c = tl.reshape(coef, (col.shape[0], col.shape[1], col.shape[2]))
    return tl.sum(tl.sum(c[:, :, :, None] * col, axis=2), axis=1)


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
    dtype, prec = dot_mode(precision)
    rgb = ops.new_output((B, R, O), ray_origins)
    depth = ops.new_output((B, R), ray_origins)
    wsum = ops.new_output((B, R), ray_origins)
    rng = ops.new_output((B, R, 2), ray_origins)
    P = B * R
    if P:
        grid = lambda meta: (triton.cdiv(P, meta["BLOCK_R"]),)  # noqa: E731
        # One padded row width for both passes' per-sample scalars (>= 16: one chunk).
        with launch_device(dev):
            wrap_triton(_render_kernel)[grid](planes, w1t, b1p, w2t, w2s, b2p, ray_origins, ray_directions,
                                              ray_start, ray_end, stratified_u, importance_u, rgb, depth, wsum, rng,
                                              P, R, N, NF, H, W, C, O, float(box_warp), CP=w1t.shape[0],
                                              HD=w1t.shape[1], OP=w2t.shape[1], PLANE_SET=int(plane_set),
                                              DOT_DTYPE=dtype, PREC=prec, DISPARITY=bool(disparity),
                                              WHITE_BACK=bool(white_back), HAS_FINE=NF > 0,
                                              MP=next_pow2(max(N, NF), 16), CH=CH)
    return rgb, depth, wsum, rng
