"""Fused triplane sample + decode: per block of points, bilinear taps from three channels-last
planes, their mean, and the OSG decoder's two layers as tl.dot with the gains folded in.
Twin: rtgaze_fast.reference.triplane.sample_decode_folded."""
from __future__ import annotations

from typing import Tuple

import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from .. import ops
from ._common import (check, check_planes, decode_points, dot_mode, launch_configs, launch_device, prepare_decoder,
                      register)


# (BLOCK points, num_warps), the default first. Compiled for sm_90 (rtgaze_fast.triton.aot):
# none of these spills. 128 points fail to lower with 4 warps in the tf32/fp16/bf16 modes
# (Triton 3.6 and 3.7) and spill 0.2-0.6 KB per thread with 8.
CONFIGS = ((32, 8), (64, 8), (32, 4))


@triton.autotune(configs=launch_configs("BLOCK", CONFIGS, 256), key=["CP", "HD", "OP", "DOT_DTYPE", "PREC"])
@triton.jit
def _sample_decode_kernel(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, points_ptr, sigma_ptr, rgb_ptr,
                          total, M, H, W, C, O, box_warp, CP: tl.constexpr, HD: tl.constexpr, OP: tl.constexpr,
                          PLANE_SET: tl.constexpr, DOT_DTYPE: tl.constexpr, PREC: tl.constexpr,
                          BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < total
    i64 = i.to(tl.int64)
    px = tl.load(points_ptr + i64 * 3, mask=mask, other=0.0)
    py = tl.load(points_ptr + i64 * 3 + 1, mask=mask, other=0.0)
    pz = tl.load(points_ptr + i64 * 3 + 2, mask=mask, other=0.0)
    sigma, out = decode_points(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, i // M, px, py, pz, mask, H,
                               W, box_warp, C, CP, HD, OP, PLANE_SET, DOT_DTYPE, PREC)
    tl.store(sigma_ptr + i64, sigma, mask=mask)
    o = tl.arange(0, OP)[None, :]
    tl.store(rgb_ptr + i64[:, None] * O + o, out, mask=mask[:, None] & (o < O))


@register("sample_decode")
def sample_decode_triton(planes: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, points: Tensor,
                         box_warp: float, plane_set: int, precision: str) -> Tuple[Tensor, Tensor]:
    check_planes(planes, precision)
    check("points", points, 3, device=planes.device)
    if points.shape[0] != planes.shape[0] or points.shape[2] != 3:
        raise ValueError(f"points must be (B={planes.shape[0]}, M, 3), got {tuple(points.shape)}")
    B, _, H, W, C = planes.shape
    w1t, b1p, w2t, w2s, b2p, O = prepare_decoder(w1, b1, w2, b2, C, planes.device)
    dtype, prec = dot_mode(precision)
    M = points.shape[1]
    sigma = ops.new_output((B, M), points)
    rgb = ops.new_output((B, M, O), points)
    total = B * M
    if total:
        grid = lambda meta: (triton.cdiv(total, meta["BLOCK"]),)  # noqa: E731
        with launch_device(planes.device):
            wrap_triton(_sample_decode_kernel)[grid](planes, w1t, b1p, w2t, w2s, b2p, points, sigma, rgb, total, M, H,
                                                     W, C, O, float(box_warp), CP=w1t.shape[0], HD=w1t.shape[1],
                                                     OP=w2t.shape[1], PLANE_SET=int(plane_set), DOT_DTYPE=dtype,
                                                     PREC=prec)
    return sigma, rgb
