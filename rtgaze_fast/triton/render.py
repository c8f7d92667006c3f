"""The whole renderer on the Triton kernels: coarse depths, sample+decode, march for weights,
inverse CDF, fine sample+decode, merge, final composite.

Launches: sample_decode and march per pass plus importance (5 in all, with N_f > 0); the
samples' densities and colours go through memory between them. The one-kernel-per-pass
version with per-ray state in registers (issue #4's goal) is not written yet.
Twin: rtgaze_fast.reference.renderer.render_reference."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor
from torch.library import triton_op

from ._common import check
from .march import importance, march
from .sample_decode import check_planes, sample_decode


def _decode_along(planes, weights, o, d, t, box_warp, plane_set, precision):
    b, r, n = t.shape
    pts = (o.unsqueeze(2) + t.unsqueeze(-1) * d.unsqueeze(2)).reshape(b, r * n, 3)
    sigma, rgb = sample_decode(planes, *weights, pts, box_warp, plane_set, precision)
    return sigma.view(b, r, n), rgb.view(b, r, n, -1)


@triton_op("rtgaze_fast::render_triton", mutates_args=())
def render_triton(planes: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, ray_origins: Tensor,
                  ray_directions: Tensor, ray_start: Tensor, ray_end: Tensor, stratified_u: Tensor,
                  importance_u: Tensor, box_warp: float, disparity: bool, white_back: bool, plane_set: int,
                  precision: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    check_planes(planes, precision)
    for name, t, dim in (("ray_origins", ray_origins, 3), ("ray_directions", ray_directions, 3),
                         ("ray_start", ray_start, 2), ("ray_end", ray_end, 2), ("stratified_u", stratified_u, 3),
                         ("importance_u", importance_u, 3)):
        check(name, t, dim)
    B, R = ray_origins.shape[:2]
    N, NF = stratified_u.shape[2], importance_u.shape[2]
    if N < 2 or (NF > 0 and N < 4):
        raise ValueError(f"need N >= 2 coarse samples (>= 4 with importance sampling), got N={N}, N_f={NF}")
    w = (w1, b1, w2, b2)
    lo, hi = ray_start.unsqueeze(-1), ray_end.unsqueeze(-1)
    k = torch.arange(N, device=planes.device, dtype=torch.float32) / (N - 1)
    if disparity:
        s = k + stratified_u * (1.0 / (N - 1))
        t = 1.0 / (1.0 / lo * (1.0 - s) + 1.0 / hi * s)
    else:
        t = lo + k * (hi - lo) + stratified_u * ((hi - lo) / (N - 1))
    sigma, rgb = _decode_along(planes, w, ray_origins, ray_directions, t, box_warp, plane_set, precision)
    if NF > 0:
        _, _, weights = march(rgb, sigma, t, False)
        t_f = importance(t, weights, importance_u)
        sigma_f, rgb_f = _decode_along(planes, w, ray_origins, ray_directions, t_f, box_warp, plane_set, precision)
        t = torch.cat([t, t_f], -1)
        order = torch.sort(t, dim=-1).indices
        t = torch.gather(t, -1, order)
        sigma = torch.gather(torch.cat([sigma, sigma_f], -1), -1, order)
        rgb = torch.gather(torch.cat([rgb, rgb_f], -2), -2, order.unsqueeze(-1).expand(-1, -1, -1, rgb.shape[-1]))
    out, depth, weights = march(rgb.contiguous(), sigma.contiguous(), t.contiguous(), white_back)
    return out, depth, weights.sum(-1), torch.stack([t.amin(-1), t.amax(-1)], -1)
