"""EG3D's MipRayMarcher2 (spec section 5): midpoint compositing of sorted samples."""
from __future__ import annotations

from typing import Tuple

import torch
from torch.nn import functional as F


def march_unclamped(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor,
                    white_back: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """colors (B, R, S, C), densities and depths (B, R, S, 1), sorted by depth.

    Returns (rgb (B, R, C) scaled to [-1, 1], depth (B, R, 1) with NaN -> inf but not yet
    clamped, weights (B, R, S-1, 1)). The batch-wide clamp is separate so that chunked
    rendering can apply it once over all chunks.
    """
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = (densities[:, :, :-1] + densities[:, :, 1:]) / 2
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2

    densities_mid = F.softplus(densities_mid - 1)  # the -1 shift is part of the model
    alpha = 1 - torch.exp(-densities_mid * deltas)
    alpha_shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2)
    weights = alpha * torch.cumprod(alpha_shifted, -2)[:, :, :-1]

    rgb = torch.sum(weights * colors_mid, -2)
    weight_total = weights.sum(2)
    # A ray whose weights all underflow to 0 gives 0/0 -> NaN -> inf, as in EG3D; dividing by 1 there
    # instead keeps that forward value but makes the backward 0 rather than 0 * (1/0) = NaN (which
    # poisoned ~8% of the tiny model's training steps through L_D).
    hit = weight_total > 0
    depth = torch.where(hit, torch.sum(weights * depths_mid, -2) / torch.where(hit, weight_total, 1), float("nan"))
    depth = torch.nan_to_num(depth, float("inf"))
    if white_back:
        rgb = rgb + 1 - weight_total
    return rgb * 2 - 1, depth, weights


def clamp_depth(depth: torch.Tensor, lo, hi) -> torch.Tensor:
    """Clamp composite depths to the min and max of all sampled depths of the batch."""
    return torch.clamp(depth, lo, hi)


def march(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor,
          white_back: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EG3D's ``MipRayMarcher2.run_forward``: (rgb (B,R,C), depth (B,R,1), weights (B,R,S-1,1))."""
    rgb, depth, weights = march_unclamped(colors, densities, depths, white_back)
    return rgb, clamp_depth(depth, torch.min(depths), torch.max(depths)), weights
