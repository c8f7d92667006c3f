"""Fused triplane sample + decode: per block of points, bilinear taps from three channels-last
planes, their mean, and the OSG decoder's two layers as tl.dot with the gains folded in.
Twin: rtgaze_fast.reference.triplane.sample_decode_folded."""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from .. import ops
from ._common import INTERPRET, check, next_pow2, softplus, widened_sigmoid

MAX_DECODER_SIZE = 128  # per-program register budget of the two tl.dot layers

_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


@triton.jit
def _tap(planes_ptr, base, u, v, H, W, C, CP: tl.constexpr, mask):
    """Bilinear tap (zeros outside, align_corners=False) of one channels-last plane: (BLOCK, CP),
    channels past C zero."""
    ix = ((u + 1.0) * W - 1.0) * 0.5
    iy = ((v + 1.0) * H - 1.0) * 0.5
    fx = tl.floor(ix)
    fy = tl.floor(iy)
    tx = ix - fx
    ty = iy - fy
    x0 = fx.to(tl.int32)
    y0 = fy.to(tl.int32)
    c = tl.arange(0, CP)
    acc = tl.zeros((u.shape[0], CP), dtype=tl.float32)
    for k in tl.static_range(4):
        x = x0 + (k % 2)
        y = y0 + (k // 2)
        wx = tx if k % 2 == 1 else 1.0 - tx
        wy = ty if k // 2 == 1 else 1.0 - ty
        ok = mask & (x >= 0) & (x < W) & (y >= 0) & (y < H)
        off = base + (y * W + x).to(tl.int64) * C
        val = tl.load(planes_ptr + off[:, None] + c[None, :], mask=ok[:, None] & (c < C)[None, :],
                      other=0.0).to(tl.float32)
        acc += (wx * wy)[:, None] * val
    # NaN coordinates propagate like grid_sample (every weight is NaN).
    return tl.where((ix != ix)[:, None] | (iy != iy)[:, None], float("nan"), acc)


@triton.jit
def decode_block(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, b2_ptr, b_idx, px, py, pz, mask, H, W, box_warp, C,
                 CP: tl.constexpr, HD: tl.constexpr, O1P: tl.constexpr, PLANE_SET: tl.constexpr,
                 DOT_DTYPE: tl.constexpr, IEEE: tl.constexpr):
    """sigma_raw (BLOCK,) and the widened colours (BLOCK, O1P) of a block of points. Sizes are
    padded to powers of two >= 16 (tl.dot); padded weights are zero, so padding adds nothing."""
    scale = 2.0 / box_warp
    qx = px * scale
    qy = py * scale
    qz = pz * scale
    plane = H * W * C
    base = b_idx.to(tl.int64) * 3 * plane
    feat = _tap(planes_ptr, base, qx, qy, H, W, C, CP, mask)
    feat += _tap(planes_ptr, base + plane, qx, qz, H, W, C, CP, mask)
    if PLANE_SET == 0:
        feat += _tap(planes_ptr, base + 2 * plane, qz, qx, H, W, C, CP, mask)  # EG3D's ZX plane
    else:
        feat += _tap(planes_ptr, base + 2 * plane, qy, qz, H, W, C, CP, mask)
    feat = feat / 3.0
    c = tl.arange(0, CP)
    h = tl.arange(0, HD)
    o = tl.arange(0, O1P)
    w1 = tl.load(w1t_ptr + c[:, None] * HD + h[None, :])
    w2 = tl.load(w2t_ptr + h[:, None] * O1P + o[None, :])
    if IEEE:
        hid = tl.dot(feat, w1, input_precision="ieee")
    else:
        hid = tl.dot(feat.to(DOT_DTYPE), w1.to(DOT_DTYPE))
    hid = softplus(hid + tl.load(b1_ptr + h)[None, :])
    if IEEE:
        out = tl.dot(hid, w2, input_precision="ieee")
    else:
        out = tl.dot(hid.to(DOT_DTYPE), w2.to(DOT_DTYPE))
    out = out + tl.load(b2_ptr + o)[None, :]
    sigma = tl.sum(tl.where(o[None, :] == 0, out, 0.0), axis=1)
    return sigma, widened_sigmoid(out)


def _configs():
    if INTERPRET:
        return [triton.Config({"BLOCK": 128}, num_warps=4)]
    return [triton.Config({"BLOCK": b}, num_warps=w) for b in (32, 64, 128) for w in (4, 8)]


@triton.autotune(configs=_configs(), key=["CP", "HD", "O1P", "DOT_DTYPE", "IEEE"])
@triton.jit
def _sample_decode_kernel(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, b2_ptr, points_ptr, sigma_ptr, rgb_ptr,
                          total, M, H, W, C, O, box_warp, CP: tl.constexpr, HD: tl.constexpr, O1P: tl.constexpr,
                          PLANE_SET: tl.constexpr, DOT_DTYPE: tl.constexpr, IEEE: tl.constexpr,
                          BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < total
    i64 = i.to(tl.int64)
    px = tl.load(points_ptr + i64 * 3, mask=mask, other=0.0)
    py = tl.load(points_ptr + i64 * 3 + 1, mask=mask, other=0.0)
    pz = tl.load(points_ptr + i64 * 3 + 2, mask=mask, other=0.0)
    sigma, rgb = decode_block(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, b2_ptr, i // M, px, py, pz, mask, H, W,
                              box_warp, C, CP, HD, O1P, PLANE_SET, DOT_DTYPE, IEEE)
    tl.store(sigma_ptr + i64, sigma, mask=mask)
    o = tl.arange(0, O1P)
    col = (o - 1)[None, :]
    tl.store(rgb_ptr + i64[:, None] * O + col, rgb, mask=mask[:, None] & (o[None, :] >= 1) & (o[None, :] <= O))


def prepare_decoder(w1, b1, w2, b2, channels: int):
    """Checked, transposed weights zero-padded to powers of two >= 16:
    (w1t (CP, HDP), b1 (HDP,), w2t (HDP, O1P), b2 (O1P,), O)."""
    for name, t, dim in (("w1", w1, 2), ("b1", b1, 1), ("w2", w2, 2), ("b2", b2, 1)):
        check(name, t, dim)
    hd, o1 = w1.shape[0], w2.shape[0]
    if w1.shape[1] != channels or b1.shape != (hd,) or w2.shape[1] != hd or b2.shape != (o1,):
        raise ValueError(f"decoder weights do not chain: w1 {tuple(w1.shape)}, b1 {tuple(b1.shape)}, "
                         f"w2 {tuple(w2.shape)}, b2 {tuple(b2.shape)} for C={channels}")
    if max(channels, hd, o1) > MAX_DECODER_SIZE or o1 < 2:
        raise ValueError(f"the triton backend supports C, hidden and 1 + out_dim up to {MAX_DECODER_SIZE} "
                         f"(and out_dim >= 1); got C={channels}, hidden={hd}, 1 + out_dim={o1}")
    cp, hdp, o1p = next_pow2(channels, 16), next_pow2(hd, 16), next_pow2(o1, 16)
    return _pad(w1.t(), (cp, hdp)), _pad(b1, (hdp,)), _pad(w2.t(), (hdp, o1p)), _pad(b2, (o1p,)), o1 - 1


def _pad(t: Tensor, shape) -> Tensor:
    out = torch.zeros(shape, device=t.device, dtype=torch.float32)
    out[tuple(slice(0, n) for n in t.shape)] = t
    return out


def dot_mode(precision: str):
    """(DOT_DTYPE, IEEE) constexprs of a precision mode."""
    if precision not in ops.BACKEND_PRECISIONS["triton"]:
        raise ValueError(f"precision must be one of {ops.BACKEND_PRECISIONS['triton']}, got {precision!r}")
    if precision == "fp32":
        return tl.float32, True
    return {"tf32": tl.float32, "fp16": tl.float16, "bf16": tl.bfloat16}[precision], False


def check_planes(planes: torch.Tensor, precision: str) -> None:
    check("planes", planes, 5, (torch.float32, _HALF.get(precision, torch.float32)))
    if planes.shape[1] != 3:
        raise ValueError(f"planes must be (B, 3, H, W, C) channels-last, got {tuple(planes.shape)}")


def sample_decode(planes: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, points: Tensor,
                  box_warp: float, plane_set: int, precision: str) -> Tuple[Tensor, Tensor]:
    """Host side of the op: checks, output buffers, launch."""
    check_planes(planes, precision)
    check("points", points, 3)
    if points.shape[0] != planes.shape[0] or points.shape[2] != 3:
        raise ValueError(f"points must be (B={planes.shape[0]}, M, 3), got {tuple(points.shape)}")
    B, _, H, W, C = planes.shape
    w1t, b1, w2t, b2p, O = prepare_decoder(w1, b1, w2, b2, C)
    dtype, ieee = dot_mode(precision)
    M = points.shape[1]
    sigma = ops.new_output((B, M), points)
    rgb = ops.new_output((B, M, O), points)
    total = B * M
    if total:
        grid = lambda meta: (triton.cdiv(total, meta["BLOCK"]),)  # noqa: E731
        wrap_triton(_sample_decode_kernel)[grid](planes, w1t, b1, w2t, b2p, points, sigma, rgb, total, M, H, W, C, O,
                                                 float(box_warp), CP=w1t.shape[0], HD=w1t.shape[1], O1P=w2t.shape[1],
                                                 PLANE_SET=int(plane_set), DOT_DTYPE=dtype, IEEE=ieee)
    return sigma, rgb


# triton_op infers the schema from the annotations (they spell ops.SCHEMAS["sample_decode"]; a test
# compares) and registers the function, which is traceable, as the op's fake implementation.
@triton_op("rtgaze_fast::sample_decode_triton", mutates_args=())
def sample_decode_triton(planes: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, points: Tensor,
                         box_warp: float, plane_set: int, precision: str) -> Tuple[Tensor, Tensor]:
    return sample_decode(planes, w1, b1, w2, b2, points, box_warp, plane_set, precision)
