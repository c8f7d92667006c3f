"""The render op's backward in Triton: a recompute (Lightplane-style), nothing per sample kept from
the forward (the forward saves only its inputs: ops.register_render_autograd). Two kernels:

1. ``_march_bwd_kernel``, per block of BLOCK_R rays (the forward kernel's blocking and helpers):
   the forward again keeping per-sample scalars only (coarse depths, coarse sample+decode: sigma,
   and each sample's colour dotted with 2 dL/drgb; the importance depths, constants of the
   backward as in EG3D; fine sample+decode; the merge order), then the march's backward on the
   merged rows (``march_backward``). Writes each sample's depth, colour coefficient and
   dL/dsigma_raw (3 floats) to a scratch buffer, (3, passes, P, MP) fp32: 25 MB at 128x128 rays and
   48+48 samples, the backward's only per-sample memory (the forward's own buffers are per ray).
2. ``_decode_bwd_kernel``, persistent over work items of BLOCK_R rays x CHUNK depths of one pass:
   the decode again with its intermediates, then backwards: the decoder's two layers as tl.dot
   over the item's points (weight gradients act^T @ g accumulated by the dots into the
   program's running sums, input gradients g @ W^T), the bilinear taps' backward into the planes
   and into the point (grid_sample's grid gradient), and p = o + t d into the ray's origin and
   direction.

Why two kernels, not one: a single fused kernel lowered badly with Triton 3.7 for sm_90: at 16
samples per pass, 255 registers with 1.9 KB of spills and 204 s to compile, 97% of it in
TritonGPUCoalesce (its cost grows with the memory operations times the function's size); with
the persistent loop it did not finish in 15 minutes. Split, stage 1 is the forward's size (and
compile time), stage 2 is small, and the taps are gathered as one (points, 4, C) block per plane
(three loads, three atomics) instead of twelve.

Accumulation and determinism:

- Planes: fp32 ``tl.atomic_add`` (relaxed) into a zero-initialised (B, 3, H, W, C) buffer, fp32
  whatever the planes' dtype. On a GPU the order of the atomics varies from run to run, so the
  planes' gradient is nondeterministic in its last bits there (each texel's sum is reassociated).
  The interpreter runs programs one after another, so it is deterministic on the CPU; the
  deterministic backend is 'cpu' (per-task buffers, no atomics). A deterministic Triton variant
  would need a per-sample scatter list and a sorted segment reduction: not offered.
- Decoder weights: each stage-2 program keeps its partial sums in registers over the items it
  owns and writes one row of a (G, .) buffer; torch sums the rows. No atomics: deterministic for
  a given device (G = min(items, PROGRAMS_PER_SM x its multiprocessors)).
- Rays: each work item writes its rays' origin and direction gradients to its own row of a
  (passes x chunks, P, 6) buffer; torch sums the rows. Deterministic.

Precision modes: the recompute runs each mode's forward arithmetic (fp32 IEEE, tf32, or fp16/bf16
planes and MLP operands), so the importance depths are the forward's. The backward's own dots are
fp32 IEEE in the fp32 mode and tf32 (fp32 range, tensor cores) in the others: upstream gradients
of a loss averaged over a 128x128 image are ~1e-7, below fp16's normal range, so they never go
through fp16/bf16. Half planes are loaded and converted to fp32 (the interpreter has no bf16
arithmetic: bf16 is GPU-only there, as in the forward's tests).
Twin: autograd of rtgaze_fast.reference.renderer.render_reference (tests/test_render_grad.py);
the CPU backward (csrc/cpu/render_bwd_impl.h) is the same math, one ray at a time."""
from __future__ import annotations

import functools
from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from .. import ops
from ._common import (INTERPRET, check, decoder_mlp, dot_mode, launch_configs, launch_device, next_pow2,
                      prepare_decoder, register, softplus)
from .march import colour_coefficients, shifted
from .render import (CH, CONFIGS, _decode_pass, _fine_depths, _interleave, _merge_order, _ray_limits_and_coarse,
                     check_render_args)


@triton.jit
def _affine_combine(a1, b1, a2, b2):
    """Composition of x -> a x + b maps, the later element applied last: (a2 a1, a2 b1 + b2)."""
    return a2 * a1, a2 * b1 + b2


@triton.jit
def march_backward(t, s, cg, S, g_depth, g_wsum, g_white, WHITE_BACK: tl.constexpr):
    """The backward of MipRayMarcher2 on rows of S sorted samples (R, SP): t depths, s raw
    densities, cg each sample's colour dotted with 2 dL/drgb (the 2C - 1 scaling folded in);
    g_depth, g_wsum, g_white = sum_o 2 dL/drgb_o per row. Returns the interval weights (for the
    colour coefficients: dL/dcolour_j = coefficient_j * 2 dL/drgb) and dL/dsigma_raw (R, SP).
    Nothing flows to the depths. Depth's gradient enters only where the weights sum to more than
    0 (the reference divides 0 by 0 elsewhere).

    With w_k = alpha_k T_k, T_k = prod_{l<k} a_l, a_l = 1 - alpha_l + 1e-10:
    dL/dalpha_k = T_k (g_w_k - Q_k), Q_k = sum_{j>k} g_w_j alpha_j prod_{k<l<j} a_l, i.e.
    Q_k = g_w_{k+1} alpha_{k+1} + a_{k+1} Q_{k+1}: a linear recurrence from the back, run as an
    associative scan of affine maps over the reversed row (no division by 1 - alpha or by T,
    either of which may be 0 or 1e-10)."""
    SP: tl.constexpr = t.shape[1]
    k = tl.broadcast_to(tl.arange(0, SP)[None, :], t.shape)
    ok = k + 1 < S
    t1 = shifted(t, k, 1)
    x = (s + shifted(s, k, 1)) * 0.5 - 1.0
    delta = t1 - t
    e = tl.exp(-softplus(x) * delta)
    alpha = tl.where(ok, 1.0 - e, 0.0)
    a = 1.0 - alpha + 1e-10
    # The forward's transmittance (march.interval_weights: the same cumprod).
    trans = tl.cumprod(tl.where(k == 0, 1.0, shifted(a, k, -1)), axis=1)
    w = alpha * trans
    t_mid = tl.where(ok, (t + t1) * 0.5, 0.0)
    wsum = tl.sum(w, axis=1)
    hit = wsum > 0.0
    depth = tl.where(hit, tl.sum(w * t_mid, axis=1) / tl.where(hit, wsum, 1.0), 0.0)
    g_d = tl.where(hit, g_depth / tl.where(hit, wsum, 1.0), 0.0)
    if WHITE_BACK:
        g_common = g_wsum - g_white
    else:
        g_common = g_wsum
    g_w = (cg + shifted(cg, k, 1)) * 0.5 + g_common[:, None] + g_d[:, None] * (t_mid - depth[:, None])
    g_w = tl.where(ok, g_w, 0.0)
    # Q_k = f_k(Q_{k+1}) with f_k(x) = a_{k+1} x + g_w_{k+1} alpha_{k+1} (the identity past the
    # row): scan the maps in reversed order, reverse back; Q_k is the composite's offset.
    last = k + 1 >= SP
    fa = tl.where(last, 1.0, shifted(a, k, 1))
    fb = tl.where(last, 0.0, shifted(g_w * alpha, k, 1))
    rev = SP - 1 - k
    _, q = tl.associative_scan((tl.gather(fa, rev, axis=1), tl.gather(fb, rev, axis=1)), 1, _affine_combine)
    q = tl.gather(q, rev, axis=1)
    g_alpha = trans * (g_w - q)
    # alpha = 1 - exp(-softplus(x) delta); softplus'(x) = sigmoid(x), 1 above torch's threshold 20.
    g_s = g_alpha * delta * e
    g_x = tl.where(ok, tl.where(x > 20.0, g_s, g_s / (1.0 + tl.exp(-x))), 0.0)
    return w, 0.5 * (g_x + tl.where(k == 0, 0.0, shifted(g_x, k, -1)))


@triton.jit
def _plane_taps(u, v, H, W, mask):
    """The four bilinear taps (zeros padding, align_corners=False) of one plane at (u, v) (M,), as
    (M, 4) blocks, tap j at (x0 + j % 2, y0 + j // 2): texel index y W + x, whether it is in the
    plane (and the point live, its coordinates not NaN), the x and y weights, and the tap's
    column offsets j % 2, j // 2. NaN coordinates give NaN weights."""
    ix = ((u + 1.0) * W - 1.0) * 0.5
    iy = ((v + 1.0) * H - 1.0) * 0.5
    fx = tl.floor(ix)
    fy = tl.floor(iy)
    tx = (ix - fx)[:, None]
    ty = (iy - fy)[:, None]
    j = tl.arange(0, 4)[None, :]
    jx = j % 2
    jy = j // 2
    x = fx.to(tl.int32)[:, None] + jx
    y = fy.to(tl.int32)[:, None] + jy
    live = (mask & (ix == ix) & (iy == iy))[:, None]
    ok = live & (x >= 0) & (x < W) & (y >= 0) & (y < H)
    wx = tl.where(jx == 1, tx, 1.0 - tx)
    wy = tl.where(jy == 1, ty, 1.0 - ty)
    return y * W + x, ok, wx, wy, jx, jy


@triton.jit
def _plane_uv(qx, qy, qz, p: tl.constexpr, PLANE_SET: tl.constexpr):
    """Plane p's (u, v): XY, XZ, then EG3D's ZX (PLANE_SET 0) or YZ."""
    if p == 0:
        return qx, qy
    elif p == 1:
        return qx, qz
    elif PLANE_SET == 0:
        return qz, qx
    else:
        return qy, qz


@triton.jit
def _taps_forward(planes_ptr, base, qx, qy, qz, mask, H, W, C, CP: tl.constexpr, PLANE_SET: tl.constexpr):
    """The mean of the three planes' taps (M, CP), one (M, 4, CP) gather per plane (the forward's
    bilinear_tap gathers tap by tap: the same sum up to its order)."""
    c = tl.arange(0, CP)[None, None, :]
    plane = H * W * C
    feat = tl.zeros((qx.shape[0], CP), dtype=tl.float32)
    for p in tl.static_range(3):
        u, v = _plane_uv(qx, qy, qz, p, PLANE_SET)
        idx, ok, wx, wy, _, _ = _plane_taps(u, v, H, W, mask)
        off = (base + p * plane)[:, None] + idx.to(tl.int64) * C
        val = tl.load(planes_ptr + off[:, :, None] + c, mask=ok[:, :, None] & (c < C), other=0.0).to(tl.float32)
        feat += tl.sum((wx * wy)[:, :, None] * val, axis=1)
    return feat / 3.0


@triton.jit
def _taps_backward(planes_ptr, gplanes_ptr, base, qx, qy, qz, mask, H, W, C, CP: tl.constexpr,
                   PLANE_SET: tl.constexpr, g_feat):
    """The triplane sampling's backward: g_feat (M, CP) = dL/d(mean of the taps) / 3 scattered into
    the planes' gradient (fp32 atomics; taps outside a plane get nothing, as they gave 0), and
    dL/dq (3 x (M,)) through the tap weights' dependence on the position (grid_sample's grid
    gradient). NaN coordinates scatter nothing and give NaN."""
    c = tl.arange(0, CP)[None, None, :]
    plane = H * W * C
    gqx = tl.zeros_like(qx)
    gqy = tl.zeros_like(qx)
    gqz = tl.zeros_like(qx)
    for p in tl.static_range(3):
        u, v = _plane_uv(qx, qy, qz, p, PLANE_SET)
        idx, ok, wx, wy, jx, jy = _plane_taps(u, v, H, W, mask)
        ptrs = (base + p * plane)[:, None, None] + idx.to(tl.int64)[:, :, None] * C + c
        live = ok[:, :, None] & (c < C)
        val = tl.load(planes_ptr + ptrs, mask=live, other=0.0).to(tl.float32)
        dot = tl.sum(g_feat[:, None, :] * val, axis=2)
        # d(wx wy)/dtx = +-wy, d(wx wy)/dty = +-wx; ix = ((u + 1) W - 1) / 2: dix/du = W / 2.
        gu = tl.sum(tl.where(jx == 1, wy, -wy) * dot, axis=1) * (W * 0.5)
        gv = tl.sum(tl.where(jy == 1, wx, -wx) * dot, axis=1) * (H * 0.5)
        tl.atomic_add(gplanes_ptr + ptrs, (wx * wy)[:, :, None] * g_feat[:, None, :], mask=live, sem="relaxed")
        if p == 0:
            gqx += gu
            gqy += gv
        elif p == 1:
            gqx += gu
            gqz += gv
        elif PLANE_SET == 0:
            gqz += gu
            gqx += gv
        else:
            gqy += gu
            gqz += gv
    return gqx, gqy, gqz


@triton.jit
def _points_backward(planes_ptr, gplanes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, b_idx, ox, oy, oz, dx, dy,
                     dz, t, mask, coef, g_sig, g2, acc_w1, acc_w2, H, W, box_warp, C, CP: tl.constexpr,
                     HD: tl.constexpr, OP: tl.constexpr, PLANE_SET: tl.constexpr, DOT_DTYPE: tl.constexpr,
                     PREC: tl.constexpr):
    """A (BLOCK_R, K) block of samples (rays x depths): decode them again, then the decoder's and
    the taps' backwards. coef: each sample's colour coefficient, g_sig: dL/dsigma_raw, g2: 2 dL/drgb
    (BLOCK_R, OP). Returns the running sums of the weight gradients (w1t (CP, HD), w2t (HD, OP): the
    block's added by the dots themselves), the block's other decoder gradients (w2s (HD,), b1 (HD,),
    colour b2 (OP,), density b2 (scalar)) and dL/dorigin, dL/ddirection per ray (6 x (BLOCK_R,));
    the planes' gradient goes to gplanes."""
    BR: tl.constexpr = t.shape[0]
    K: tl.constexpr = t.shape[1]
    M: tl.constexpr = BR * K
    scale = 2.0 / box_warp
    qx = tl.reshape(ox[:, None] + t * dx[:, None], (M,)) * scale
    qy = tl.reshape(oy[:, None] + t * dy[:, None], (M,)) * scale
    qz = tl.reshape(oz[:, None] + t * dz[:, None], (M,)) * scale
    m = tl.reshape(mask, (M,))
    base = tl.reshape(tl.broadcast_to(b_idx[:, None], (BR, K)), (M,)).to(tl.int64) * 3 * (H * W * C)
    feat = _taps_forward(planes_ptr, base, qx, qy, qz, m, H, W, C, CP, PLANE_SET)
    pre, act, _, z = decoder_mlp(feat, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, CP, HD, OP, DOT_DTYPE, PREC)
    feat = tl.where(m[:, None], feat, 0.0)
    act = tl.where(m[:, None], act, 0.0)
    # colour = sigmoid(z) * 1.002 - 0.001
    sg = 1.0 / (1.0 + tl.exp(-z))
    gz = tl.reshape(coef[:, :, None] * g2[:, None, :], (M, OP)) * (1.002 * sg * (1.0 - sg))
    gz = tl.where(m[:, None], gz, 0.0)
    gs = tl.where(m, tl.reshape(g_sig, (M,)), 0.0)
    c = tl.arange(0, CP)
    h = tl.arange(0, HD)
    o = tl.arange(0, OP)
    w1 = tl.load(w1t_ptr + c[:, None] * HD + h[None, :])
    w2 = tl.load(w2t_ptr + h[:, None] * OP + o[None, :])
    w2s = tl.load(w2s_ptr + h)
    # fp32 operands in every mode (PREC: "ieee", or tf32 passes on tensor cores; halves: "tf32").
    acc_w2 = tl.dot(tl.trans(act), gz, acc_w2, input_precision=PREC)
    g_act = tl.dot(gz, tl.trans(w2), input_precision=PREC)
    g_act += gs[:, None] * w2s[None, :]
    # softplus'(pre) = sigmoid(pre), exactly 1 above torch's threshold (20).
    g_pre = tl.where(pre > 20.0, g_act, g_act / (1.0 + tl.exp(-pre)))
    g_pre = tl.where(m[:, None], g_pre, 0.0)
    acc_w1 = tl.dot(tl.trans(feat), g_pre, acc_w1, input_precision=PREC)
    g_feat = tl.dot(g_pre, tl.trans(w1), input_precision=PREC)
    # The mean of the three planes: 1/3 of the gradient to each tap.
    gqx, gqy, gqz = _taps_backward(planes_ptr, gplanes_ptr, base, qx, qy, qz, m, H, W, C, CP, PLANE_SET,
                                   g_feat / 3.0)
    # q = scale (o + t d).
    gpx = tl.reshape(tl.where(m, gqx * scale, 0.0), (BR, K))
    gpy = tl.reshape(tl.where(m, gqy * scale, 0.0), (BR, K))
    gpz = tl.reshape(tl.where(m, gqz * scale, 0.0), (BR, K))
    return (acc_w1, acc_w2, tl.sum(act * gs[:, None], axis=0), tl.sum(g_pre, axis=0), tl.sum(gz, axis=0), tl.sum(gs),
            tl.sum(gpx, axis=1), tl.sum(gpy, axis=1), tl.sum(gpz, axis=1), tl.sum(gpx * t, axis=1),
            tl.sum(gpy * t, axis=1), tl.sum(gpz * t, axis=1))


@triton.jit
def _store_pass(scratch_ptr, r64, rmask, MP: tl.constexpr, pass_idx, stride, P, t, coef, g_sig):
    """One pass's per-sample (depth, colour coefficient, dL/dsigma_raw) into the (3, passes, P, MP)
    scratch (``stride``: passes x P x MP, that of its first axis)."""
    k = tl.arange(0, MP)[None, :]
    off = (pass_idx * P + r64[:, None]) * MP + k
    m = rmask[:, None] & (k < MP)
    tl.store(scratch_ptr + off, t, mask=m)
    tl.store(scratch_ptr + stride + off, coef, mask=m)
    tl.store(scratch_ptr + 2 * stride + off, g_sig, mask=m)


# (BLOCK_R rays, num_warps, maxnreg[, num_stages]), compiled for sm_90 by rtgaze_fast.triton.aot
# (the figures: benchmarks/results/triton_sm90_lowering*.json). One config each: nothing to
# autotune (and an autotuner would replay the atomics: reset_to_zero is set for stage 2). Stage 1
# is the forward kernel's twin (its config). Stage 2, 1 ray x CHUNK = 16 depths a work item with
# 8 warps, spills ~0.5 KB per thread (Triton 3.7, 48+48); 32 depths spilled 2-3 KB in every
# mode, 16 depths with 4 warps 1.7-2 KB. Software pipelining of its loop (3 stages, Triton's
# default) only added spills (3.5 KB vs 2 KB at 32 depths) and compile time (28 s vs 13 s).
MARCH_BWD_CONFIGS = CONFIGS
DECODE_BWD_CONFIGS = ((1, 8, 255, 1),)
# The decode backward's persistent programs: G = min(work items, PROGRAMS_PER_SM x multiprocessors)
# on a GPU, each looping over its items with the decoder's partial gradients in registers; two
# under the interpreter (cheap there, and the loop runs more than once in any test with more than
# two items).
PROGRAMS_PER_SM = 4
INTERPRET_PROGRAMS = 2
INTERPRET_BLOCK_R = 16
# Stage 2 takes CH depths of a ray per work item (the forward's chunk, render.CH: BLOCK_R x CH
# points, >= 16 for tl.dot), cdiv(max(N, N_f), CH) chunks per pass: 3 at 48 samples, not 4.


@triton.autotune(configs=launch_configs("BLOCK_R", MARCH_BWD_CONFIGS, INTERPRET_BLOCK_R),
                 key=["MP", "HAS_FINE", "CP", "HD", "OP", "DOT_DTYPE", "PREC"])
@triton.jit
def _march_bwd_kernel(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, o_ptr, d_ptr, start_ptr, end_ptr, su_ptr,
                      iu_ptr, grgb_ptr, gdepth_ptr, gwsum_ptr, scratch_ptr, P, R, N, NF, H, W, C, O, box_warp,
                      CP: tl.constexpr, HD: tl.constexpr, OP: tl.constexpr, PLANE_SET: tl.constexpr,
                      DOT_DTYPE: tl.constexpr, PREC: tl.constexpr, DISPARITY: tl.constexpr,
                      WHITE_BACK: tl.constexpr, HAS_FINE: tl.constexpr, MP: tl.constexpr, CH: tl.constexpr,
                      BLOCK_R: tl.constexpr):
    """Stage 1 of the backward, per block of rays: the forward again (the forward kernel's own
    helpers, so the same importance depths), keeping per-sample scalars only, then the march's
    backward; writes each sample's depth, colour coefficient and dL/dsigma_raw to the scratch."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = r < P
    r64 = r.to(tl.int64)
    b_idx = r // R
    o = tl.arange(0, OP)
    g2 = 2.0 * tl.load(grgb_ptr + r64[:, None] * O + o[None, :], mask=rmask[:, None] & (o < O)[None, :], other=0.0)
    g_depth = tl.load(gdepth_ptr + r64, mask=rmask, other=0.0)
    g_wsum = tl.load(gwsum_ptr + r64, mask=rmask, other=0.0)
    g_white = tl.sum(g2, axis=1)
    ox, oy, oz, dx, dy, dz, near, t_c, cmask = _ray_limits_and_coarse(o_ptr, d_ptr, start_ptr, end_ptr, su_ptr, r,
                                                                      rmask, N, MP, DISPARITY)
    sigma_c, cg_c = _decode_pass(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, b_idx, ox, oy, oz, dx, dy, dz,
                                 t_c, rmask, N, H, W, box_warp, C, CP, HD, OP, PLANE_SET, DOT_DTYPE, PREC, CH, False,
                                 g2)
    if HAS_FINE:
        t_f, bins, fmask = _fine_depths(iu_ptr, r, rmask, near, t_c, sigma_c, N, NF)
        sigma_f, cg_f = _decode_pass(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, b_idx, ox, oy, oz, dx, dy,
                                     dz, t_f, rmask, NF, H, W, box_warp, C, CP, HD, OP, PLANE_SET, DOT_DTYPE, PREC, CH,
                                     False, g2)
        # The march's backward in merged order, then back to each sample's own column.
        rank, src = _merge_order(t_c, t_f, bins, N, NF)
        w, g_sig = march_backward(tl.gather(_interleave(t_c, t_f), src, axis=1),
                                  tl.gather(_interleave(sigma_c, sigma_f), src, axis=1),
                                  tl.gather(_interleave(cg_c, cg_f), src, axis=1), N + NF, g_depth, g_wsum, g_white,
                                  WHITE_BACK)
        coef_c, coef_f = tl.split(tl.reshape(tl.gather(colour_coefficients(w), rank, axis=1), (BLOCK_R, MP, 2)))
        gsig_c, gsig_f = tl.split(tl.reshape(tl.gather(g_sig, rank, axis=1), (BLOCK_R, MP, 2)))
        stride = 2 * P * MP
        _store_pass(scratch_ptr, r64, rmask, MP, 1, stride, P, t_f, tl.where(fmask, coef_f, 0.0),
                    tl.where(fmask, gsig_f, 0.0))
    else:
        w, gsig_c = march_backward(t_c, sigma_c, cg_c, N, g_depth, g_wsum, g_white, WHITE_BACK)
        coef_c = colour_coefficients(w)
        stride = P * MP
    _store_pass(scratch_ptr, r64, rmask, MP, 0, stride, P, t_c, tl.where(cmask, coef_c, 0.0),
                tl.where(cmask, gsig_c, 0.0))


@triton.autotune(configs=launch_configs("BLOCK_R", DECODE_BWD_CONFIGS, INTERPRET_BLOCK_R),
                 key=["MP", "CHUNK", "PASSES", "CP", "HD", "OP", "DOT_DTYPE", "PREC"],
                 reset_to_zero=["gplanes_ptr", "partial_ptr"])
@triton.jit
def _decode_bwd_kernel(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, o_ptr, d_ptr, grgb_ptr, scratch_ptr,
                       gplanes_ptr, partial_ptr, gray_ptr, P, R, N, NF, H, W, C, O, box_warp, CP: tl.constexpr,
                       HD: tl.constexpr, OP: tl.constexpr, PLANE_SET: tl.constexpr, DOT_DTYPE: tl.constexpr,
                       PREC: tl.constexpr, PASSES: tl.constexpr, MP: tl.constexpr, CHUNK: tl.constexpr,
                       BLOCK_R: tl.constexpr):
    """Stage 2, persistent: each program loops over work items (a pass, a chunk of CHUNK depths and a
    block of BLOCK_R rays: BLOCK_R x CHUNK points): the decode again, then the decoder's and the
    taps' backwards (_points_backward). Planes: atomics; decoder: this program's partial sums, one
    row of ``partial``; rays: the item's dL/dorigin and dL/ddirection, one row of the
    (PASSES x cdiv(max(N, NF), CHUNK), P, 6) ``gray``, summed on the host."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    blocks = tl.cdiv(P, BLOCK_R)
    NCHUNK = tl.cdiv(tl.maximum(N, NF), CHUNK)
    iters = tl.cdiv(PASSES * NCHUNK * blocks - pid, nprog)
    acc_w1 = tl.zeros((CP, HD), dtype=tl.float32)
    acc_w2 = tl.zeros((HD, OP), dtype=tl.float32)
    acc_w2s = tl.zeros((HD,), dtype=tl.float32)
    acc_b1 = tl.zeros((HD,), dtype=tl.float32)
    acc_b2 = tl.zeros((OP,), dtype=tl.float32)
    acc_b2s = tl.sum(tl.zeros((16,), dtype=tl.float32), axis=0)
    o = tl.arange(0, OP)
    stride = PASSES * P * MP
    for it in range(0, iters):
        item = pid + it * nprog
        row_idx = item // blocks  # pass * NCHUNK + chunk
        pass_idx = row_idx // NCHUNK
        k = (row_idx % NCHUNK) * CHUNK + tl.arange(0, CHUNK)[None, :]
        r = (item % blocks) * BLOCK_R + tl.arange(0, BLOCK_R)
        rmask = r < P
        r64 = r.to(tl.int64)
        smask = rmask[:, None] & (k < tl.where(pass_idx == 0, N, NF))
        off = (pass_idx * P + r64[:, None]) * MP + k
        t = tl.load(scratch_ptr + off, mask=smask, other=0.0)
        coef = tl.load(scratch_ptr + stride + off, mask=smask, other=0.0)
        g_sig = tl.load(scratch_ptr + 2 * stride + off, mask=smask, other=0.0)
        g2 = 2.0 * tl.load(grgb_ptr + r64[:, None] * O + o[None, :], mask=rmask[:, None] & (o < O)[None, :],
                           other=0.0)
        ox = tl.load(o_ptr + r64 * 3, mask=rmask, other=0.0)
        oy = tl.load(o_ptr + r64 * 3 + 1, mask=rmask, other=0.0)
        oz = tl.load(o_ptr + r64 * 3 + 2, mask=rmask, other=0.0)
        dx = tl.load(d_ptr + r64 * 3, mask=rmask, other=0.0)
        dy = tl.load(d_ptr + r64 * 3 + 1, mask=rmask, other=0.0)
        dz = tl.load(d_ptr + r64 * 3 + 2, mask=rmask, other=0.0)
        acc_w1, acc_w2, d_w2s, d_b1, d_b2, d_b2s, gox, goy, goz, gdx, gdy, gdz = _points_backward(
            planes_ptr, gplanes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, r // R, ox, oy, oz, dx, dy, dz, t,
            smask, coef, g_sig, g2, acc_w1, acc_w2, H, W, box_warp, C, CP, HD, OP, PLANE_SET, DOT_DTYPE, PREC)
        acc_w2s += d_w2s
        acc_b1 += d_b1
        acc_b2 += d_b2
        acc_b2s += d_b2s
        ray = gray_ptr + (row_idx * P + r64) * 6
        tl.store(ray, gox, mask=rmask)
        tl.store(ray + 1, goy, mask=rmask)
        tl.store(ray + 2, goz, mask=rmask)
        tl.store(ray + 3, gdx, mask=rmask)
        tl.store(ray + 4, gdy, mask=rmask)
        tl.store(ray + 5, gdz, mask=rmask)

    # This program's row of the decoder's partial gradients: w1t | w2t | w2s | b1 | b2 (1 + OP).
    row = partial_ptr + pid.to(tl.int64) * (CP * HD + HD * OP + 2 * HD + 1 + OP)
    c = tl.arange(0, CP)
    h = tl.arange(0, HD)
    tl.store(row + c[:, None] * HD + h[None, :], acc_w1)
    row += CP * HD
    tl.store(row + h[:, None] * OP + o[None, :], acc_w2)
    row += HD * OP
    tl.store(row + h, acc_w2s)
    tl.store(row + HD + h, acc_b1)
    row += 2 * HD
    tl.store(row, acc_b2s)
    tl.store(row + 1 + o, acc_b2)


@functools.lru_cache(maxsize=None)
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_programs(device: torch.device, blocks: int) -> int:
    """G, the persistent programs of the backward (also the rows of the decoder's partial sums)."""
    if device.type != "cuda":
        return max(1, min(blocks, INTERPRET_PROGRAMS))
    index = device.index if device.index is not None else torch.cuda.current_device()
    return max(1, min(blocks, PROGRAMS_PER_SM * _multiprocessors(index)))


@register("render_backward")
def render_backward_triton(grad_rgb: Tensor, grad_depth: Tensor, grad_wsum: Tensor, planes: Tensor, w1: Tensor,
                           b1: Tensor, w2: Tensor, b2: Tensor, ray_origins: Tensor, ray_directions: Tensor,
                           ray_start: Tensor, ray_end: Tensor, stratified_u: Tensor, importance_u: Tensor,
                           box_warp: float, disparity: bool, white_back: bool, plane_set: int, precision: str,
                           ray_grads: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    B, R, N, NF, H, W, C = check_render_args(planes, ray_origins, ray_directions, ray_start, ray_end, stratified_u,
                                             importance_u, precision)
    dev = planes.device
    w1t, b1p, w2t, w2s, b2p, O = prepare_decoder(w1, b1, w2, b2, C, dev)
    for name, t, shape in (("grad_rgb", grad_rgb, (B, R, O)), ("grad_depth", grad_depth, (B, R)),
                           ("grad_wsum", grad_wsum, (B, R))):
        check(name, t, len(shape), device=dev)
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    dtype, prec = dot_mode(precision)
    cp, hdp, op = w1t.shape[0], w1t.shape[1], w2t.shape[1]
    Hd = w1.shape[0]
    # Accumulated into: zeros, never poisoned.
    g_planes = torch.zeros(planes.shape, dtype=torch.float32, device=dev)
    P = B * R
    MP = next_pow2(max(N, NF), 16)
    passes = 2 if NF > 0 else 1
    nchunk = triton.cdiv(max(N, NF), CH)
    items = passes * nchunk  # work items per block of rays in stage 2
    block_r = INTERPRET_BLOCK_R if INTERPRET else DECODE_BWD_CONFIGS[0][0]
    G = num_programs(dev, items * triton.cdiv(P, block_r)) if P else 1
    width = cp * hdp + hdp * op + 2 * hdp + 1 + op
    partial = torch.zeros((G, width), dtype=torch.float32, device=dev)
    if P:
        # Per sample and pass: depth, colour coefficient, dL/dsigma_raw (stage 1 -> stage 2).
        if 3 * passes * P * MP > 2 ** 31 - 1:
            raise ValueError(f"{P} rays x {passes} x {MP} samples: the backward's scratch has more elements than "
                             "the kernels index (2**31-1); render fewer rays per call")
        scratch = ops.new_output((3, passes, P, MP), ray_origins)
        g_rays = ops.new_output((passes * nchunk, P, 6), ray_origins)
        common = dict(CP=cp, HD=hdp, OP=op, PLANE_SET=int(plane_set), DOT_DTYPE=dtype, PREC=prec, MP=MP)
        with launch_device(dev):
            wrap_triton(_march_bwd_kernel)[lambda meta: (triton.cdiv(P, meta["BLOCK_R"]),)](
                planes, w1t, b1p, w2t, w2s, b2p, ray_origins, ray_directions, ray_start, ray_end, stratified_u,
                importance_u, grad_rgb, grad_depth, grad_wsum, scratch, P, R, N, NF, H, W, C, O, float(box_warp),
                DISPARITY=bool(disparity), WHITE_BACK=bool(white_back), HAS_FINE=NF > 0, CH=CH, **common)
            # One config, BLOCK_R = block_r: G programs (G rows of partial sums).
            wrap_triton(_decode_bwd_kernel)[lambda meta: (min(G, items * triton.cdiv(P, meta["BLOCK_R"])),)](
                planes, w1t, b1p, w2t, w2s, b2p, ray_origins, ray_directions, grad_rgb, scratch, g_planes, partial,
                g_rays, P, R, N, NF, H, W, C, O, float(box_warp), PASSES=passes, CHUNK=CH, **common)
    if P and ray_grads:  # the kernels compute them either way
        g_rays = g_rays.sum(0)
        g_origins, g_dirs = g_rays[:, :3].reshape(B, R, 3).contiguous(), g_rays[:, 3:].reshape(B, R, 3).contiguous()
    else:
        g_origins, g_dirs = ray_origins.new_zeros((B, R, 3)), ray_origins.new_zeros((B, R, 3))
    sums = partial.sum(0)
    g_w1t, g_w2t, g_w2s, g_b1, g_b2 = torch.split(sums, (cp * hdp, hdp * op, hdp, hdp, 1 + op))
    # Fresh tensors (views of ``sums`` would alias each other, which custom ops may not return).
    fresh = functools.partial(torch.Tensor.clone, memory_format=torch.contiguous_format)
    g_w1 = fresh(g_w1t.view(cp, hdp)[:C, :Hd].t())
    g_w2 = torch.cat([g_w2s[:Hd][None, :], g_w2t.view(hdp, op)[:Hd, :O].t()], 0)
    return g_planes, g_w1, fresh(g_b1[:Hd]), g_w2, fresh(g_b2[:1 + O]), g_origins, g_dirs
