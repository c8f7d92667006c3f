"""The reference ImportanceRenderer pipeline: EG3D's, line for line, plus injectable noise and chunking."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from ..options import RenderOptions
from .marcher import clamp_depth, march_unclamped
from .sampling import importance_depths, ray_limits_box, stratified_depths
from .triplane import sample_decode


@dataclass
class Noise:
    """The random numbers of one render, in EG3D's shapes: u's (B, R, N), (B, R, N_f); sigma noise."""
    stratified_u: torch.Tensor
    importance_u: Optional[torch.Tensor]
    coarse_sigma: Optional[torch.Tensor] = None  # (B, R, N) density noise, already scaled
    fine_sigma: Optional[torch.Tensor] = None    # (B, R, N_f)


def draw_noise(batch: int, rays: int, opts: RenderOptions, device, generator=None) -> Noise:
    """Draw the render's random numbers from torch's generator in EG3D's order and shapes.

    EG3D draws ``rand_like`` of the (B, R, N, 1) coarse depths (a permuted (N, B, R, 1) tensor with
    'auto' limits in linear mode, so its numbers fill (N, B, R) order), then ``randn_like`` of the coarse
    sigma (if density_noise), ``rand(B*R, N_f)`` in sample_pdf, then the fine sigma noise. Same
    generator state, same element counts, same order: the same numbers as EG3D.
    """
    n, n_f = opts.depth_resolution, opts.depth_resolution_importance
    kw = dict(device=device, generator=generator)
    noisy = opts.density_noise > 0
    if opts.auto_limits and not opts.disparity_space_sampling:
        # EG3D's depths are math_utils.linspace(...) of shape (N, B, R, 1) permuted to (B, R, N, 1):
        # a non-contiguous view, and rand_like keeps its strides, so the numbers fill memory in
        # (N, B, R) order. Draw them in that order to get the same u per sample.
        strat = torch.rand(n, batch, rays, **kw).permute(1, 2, 0)
    else:
        strat = torch.rand(batch, rays, n, 1, **kw).view(batch, rays, n)
    coarse = torch.randn(batch, rays * n, 1, **kw).view(batch, rays, n) * opts.density_noise if noisy else None
    imp = fine = None
    if n_f > 0:
        imp = torch.rand(batch * rays, n_f, **kw).view(batch, rays, n_f)
        fine = torch.randn(batch, rays * n_f, 1, **kw).view(batch, rays, n_f) * opts.density_noise if noisy else None
    return Noise(strat, imp, coarse, fine)


def deterministic_noise(batch: int, rays: int, opts: RenderOptions, device) -> Noise:
    """The deterministic mode: mid-stratum jitter and EG3D's det=True inverse CDF u's."""
    n, n_f = opts.depth_resolution, opts.depth_resolution_importance
    strat = torch.full((batch, rays, n), 0.5, device=device)
    imp = torch.linspace(0, 1, n_f, device=device).expand(batch, rays, n_f) if n_f > 0 else None
    return Noise(strat, imp)


def ray_limits(ray_origins: torch.Tensor, ray_directions: torch.Tensor, opts: RenderOptions):
    """Numbers for fixed limits, (B, R, 1) tensors for 'auto'."""
    if opts.auto_limits:
        return ray_limits_box(ray_origins, ray_directions, opts.box_warp)
    return opts.ray_start, opts.ray_end


def _eval(planes, decoder, origins, directions, depths, opts, plane_set, sigma_noise):
    b, r, s = depths.shape
    points = (origins.unsqueeze(-2) + depths.unsqueeze(-1) * directions.unsqueeze(-2)).reshape(b, r * s, 3)
    sigma, rgb = sample_decode(planes, decoder, points, opts.box_warp, plane_set)
    sigma = sigma.reshape(b, r, s, 1)
    if sigma_noise is not None:
        sigma = sigma + sigma_noise.unsqueeze(-1)
    return rgb.reshape(b, r, s, -1), sigma


def _render_chunk(planes, decoder, origins, directions, start, end, opts, noise: Noise, plane_set):
    depths = stratified_depths(start, end, noise.stratified_u, opts.disparity_space_sampling)
    colors, sigma = _eval(planes, decoder, origins, directions, depths, opts, plane_set, noise.coarse_sigma)
    if opts.depth_resolution_importance > 0:
        _, _, weights = march_unclamped(colors, sigma, depths.unsqueeze(-1), opts.white_back)
        fine = importance_depths(depths, weights.squeeze(-1), noise.importance_u)
        colors_f, sigma_f = _eval(planes, decoder, origins, directions, fine, opts, plane_set, noise.fine_sigma)
        depths = torch.cat([depths, fine], -1)
        order = torch.sort(depths, dim=-1).indices
        depths = torch.gather(depths, -1, order)
        colors = torch.gather(torch.cat([colors, colors_f], -2), -2,
                              order.unsqueeze(-1).expand(-1, -1, -1, colors.shape[-1]))
        sigma = torch.gather(torch.cat([sigma, sigma_f], -2), -2, order.unsqueeze(-1))
    rgb, depth, weights = march_unclamped(colors, sigma, depths.unsqueeze(-1), opts.white_back)
    return rgb, depth, weights.sum(2), depths.amin(), depths.amax()


def render_reference(planes: torch.Tensor, decoder: torch.nn.Module, ray_origins: torch.Tensor,
                     ray_directions: torch.Tensor, opts: RenderOptions, noise: Noise,
                     plane_set: str = "eg3d", chunk_size: Optional[int] = None
                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EG3D's ``ImportanceRenderer.forward`` on validated inputs: (rgb (B,R,C), depth (B,R,1), weights_sum (B,R,1)).

    ``chunk_size`` bounds memory by rendering that many rays at a time; the batch-wide depth
    clamp is applied after all chunks, so chunked and unchunked renders are equal.
    """
    start, end = ray_limits(ray_origins, ray_directions, opts)
    r = ray_origins.shape[1]
    step = r if not chunk_size else chunk_size
    outs = []
    for i in range(0, r, step):
        sl = slice(i, i + step)
        pick = lambda t: None if t is None else t[:, sl]  # noqa: E731
        chunk_noise = Noise(*(pick(t) for t in (noise.stratified_u, noise.importance_u,
                                                  noise.coarse_sigma, noise.fine_sigma)))
        lim = [x[:, sl] if isinstance(x, torch.Tensor) else x for x in (start, end)]
        outs.append(_render_chunk(planes, decoder, ray_origins[:, sl], ray_directions[:, sl], *lim,
                                  opts, chunk_noise, plane_set))
    rgb, depth, wsum = (torch.cat([o[k] for o in outs], 1) for k in range(3))
    lo = torch.stack([o[3] for o in outs]).min()
    hi = torch.stack([o[4] for o in outs]).max()
    return rgb, clamp_depth(depth, lo, hi), wsum
