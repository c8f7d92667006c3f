"""Triplane sampling (renderer spec section 1) and the sample+decode twin of the fused kernels."""
from __future__ import annotations

from typing import Tuple

import torch
from torch.nn import functional as F

from ..options import PLANE_SETS
from .decoder import decode_features

# For each plane, which point coordinates become its (u, v): u indexes width, v height.
# EG3D's third plane is ZX (its matrix was meant to be YZ); released weights were trained with it.
PLANE_AXES = {
    "eg3d": ((0, 1), (0, 2), (2, 0)),
    "corrected": ((0, 1), (0, 2), (1, 2)),
}
assert tuple(PLANE_AXES) == PLANE_SETS


def project_onto_planes(points: torch.Tensor, box_warp: float, plane_set: str = "eg3d") -> torch.Tensor:
    """(B, M, 3) points -> (B, 3, M, 2) normalised plane coordinates in [-1, 1] inside the box."""
    q = (2 / box_warp) * points
    return torch.stack([q[..., list(uv)] for uv in PLANE_AXES[plane_set]], dim=1)


def sample_planes(planes: torch.Tensor, points: torch.Tensor, box_warp: float,
                  plane_set: str = "eg3d") -> torch.Tensor:
    """Bilinear taps (zeros outside, align_corners=False) of each plane: (B, 3, M, C)."""
    b, n_planes, c, h, w = planes.shape
    m = points.shape[1]
    grid = project_onto_planes(points, box_warp, plane_set).reshape(b * n_planes, 1, m, 2)
    out = F.grid_sample(planes.reshape(b * n_planes, c, h, w), grid.to(planes.dtype), mode="bilinear",
                        padding_mode="zeros", align_corners=False)
    return out.permute(0, 3, 2, 1).reshape(b, n_planes, m, c)


def sample_decode(planes: torch.Tensor, decoder: torch.nn.Module, points: torch.Tensor, box_warp: float,
                  plane_set: str = "eg3d") -> Tuple[torch.Tensor, torch.Tensor]:
    """Points (B, M, 3) -> (sigma_raw (B, M, 1), rgb (B, M, out_dim)): sample, mean, MLP.

    ``decoder`` is called as EG3D calls it (``decoder(features, directions)``), so any
    EG3D-style decoder works in the reference.
    """
    out = decoder(sample_planes(planes, points, box_warp, plane_set), None)
    return out["sigma"], out["rgb"]


def sample_decode_folded(planes: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                         b2: torch.Tensor, points: torch.Tensor, box_warp: float,
                         plane_set: str = "eg3d") -> Tuple[torch.Tensor, torch.Tensor]:
    """The twin of the ``sample_decode`` op: folded weights in, (sigma (B, M), rgb (B, M, O)) out."""
    feats = sample_planes(planes, points, box_warp, plane_set).mean(1)
    b, m, c = feats.shape
    net = lambda x: torch.addmm(b2, F.softplus(torch.addmm(b1, x, w1.t())), w2.t())  # noqa: E731
    sigma, rgb = decode_features(feats.reshape(b * m, c), net)
    return sigma.view(b, m), rgb.view(b, m, -1)
