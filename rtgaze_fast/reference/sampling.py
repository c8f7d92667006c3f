"""Depths along rays: box limits, stratified depths, importance (inverse-CDF) depths. Spec sections 3-4."""
from __future__ import annotations

from typing import Tuple, Union

import torch
from torch.nn import functional as F

Limit = Union[float, torch.Tensor]


def ray_limits_box(ray_origins: torch.Tensor, ray_directions: torch.Tensor,
                   box_warp: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """EG3D's ``get_ray_limits_box`` + its fix-up of invalid rays: (B, R, 1) start and end.

    Slab intersection with the cube of side ``box_warp``. Rays that miss get
    ``start = min(valid starts)`` and, EG3D's quirk, ``end = max(valid starts)``.
    """
    o, d = ray_origins.detach(), ray_directions.detach()
    half = box_warp / 2
    inv = 1 / d
    # Entry/exit distance per axis: the near face is the one the direction points away from.
    t0 = (torch.where(inv < 0, half, -half) - o) * inv
    t1 = (torch.where(inv < 0, -half, half) - o) * inv
    tmin, tmax = t0[..., 0], t1[..., 0]
    valid = ~((tmin > t1[..., 1]) | (t0[..., 1] > tmax))
    tmin, tmax = torch.maximum(tmin, t0[..., 1]), torch.minimum(tmax, t1[..., 1])
    valid &= ~((tmin > t1[..., 2]) | (t0[..., 2] > tmax))
    tmin, tmax = torch.maximum(tmin, t0[..., 2]), torch.minimum(tmax, t1[..., 2])
    tmin = torch.where(valid, tmin, torch.full_like(tmin, -1.0))
    tmax = torch.where(valid, tmax, torch.full_like(tmax, -2.0))
    start, end = tmin.unsqueeze(-1), tmax.unsqueeze(-1)

    hit = end > start
    if bool(hit.any()):
        start = torch.where(hit, start, start[hit].min())
        end = torch.where(hit, end, start[hit].max())
    return start, end


def stratified_depths(ray_start: Limit, ray_end: Limit, u: torch.Tensor, disparity: bool = False) -> torch.Tensor:
    """Jittered depths (B, R, N) from ``u`` (B, R, N) in [0, 1): EG3D's ``sample_stratified``.

    ``ray_start``/``ray_end`` are numbers or (B, R, 1) tensors ('auto' limits).
    """
    n = u.shape[-1]
    if disparity:
        s = torch.linspace(0, 1, n, device=u.device) + u * (1 / (n - 1))
        return 1.0 / (1.0 / ray_start * (1.0 - s) + 1.0 / ray_end * s)
    if isinstance(ray_start, torch.Tensor):
        steps = torch.arange(n, dtype=torch.float32, device=u.device) / (n - 1)
        base = ray_start + steps * (ray_end - ray_start)
        return base + u * ((ray_end - ray_start) / (n - 1))
    base = torch.linspace(ray_start, ray_end, n, device=u.device)
    return base + u * ((ray_end - ray_start) / (n - 1))


def smooth_weights(weights: torch.Tensor) -> torch.Tensor:
    """Max-pool (2, stride 1, pad 1) then avg-pool (2, stride 1), + 0.01: (P, N-1) -> (P, N-1)."""
    w = F.max_pool1d(weights.unsqueeze(1).float(), 2, 1, padding=1)
    return F.avg_pool1d(w, 2, 1).squeeze(1) + 0.01


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, u: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Inverse CDF: bins (P, K+1), weights (P, K), u (P, N_f) -> depths (P, N_f). EG3D's ``sample_pdf``."""
    k = weights.shape[-1]
    weights = weights + eps
    pdf = weights / torch.sum(weights, -1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)
    u = u.contiguous()
    idx = torch.searchsorted(cdf, u, right=True)
    below = torch.clamp_min(idx - 1, 0)
    above = torch.clamp_max(idx, k)
    cdf_lo, cdf_hi = torch.gather(cdf, 1, below), torch.gather(cdf, 1, above)
    bins_lo, bins_hi = torch.gather(bins, 1, below), torch.gather(bins, 1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_lo + (u - cdf_lo) / denom * (bins_hi - bins_lo)


def importance_depths(depths: torch.Tensor, weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Fine depths (B, R, N_f) from coarse depths (B, R, N), interval weights (B, R, N-1), u (B, R, N_f).

    The twin of the ``importance`` op. Keeps EG3D's half-bin shift: bins are the N-1 midpoints,
    the pdf the N-3 interior smoothed weights.
    """
    b, r, n = depths.shape
    with torch.no_grad():
        z = depths.reshape(b * r, n)
        w = smooth_weights(weights.reshape(b * r, n - 1))
        mids = 0.5 * (z[:, :-1] + z[:, 1:])
        return sample_pdf(mids, w[:, 1:-1], u.reshape(b * r, -1)).reshape(b, r, -1)
