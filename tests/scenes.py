"""Random scenes for parity tests: planes, decoders, cameras and noise, never zeros.

Every test draws fresh values from a seeded generator so failures reproduce; use
``make_scene`` and compare a backend against ``render_scene(..., backend='torch')``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

import rtgaze_fast as rf
from rtgaze_fast.camera import camera_label, fov_to_intrinsics, look_at_pose, rays_from_label


def random_decoder(gen: torch.Generator, n_features=32, hidden=64, out_dim=32, bias_scale=0.5) -> rf.OSGDecoder:
    """An OSGDecoder with random weights and non-zero biases (EG3D initialises biases to 0)."""
    dec = rf.OSGDecoder(n_features, hidden, out_dim)
    with torch.no_grad():
        for p in dec.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 if p.dim() == 2 else bias_scale))
    return dec


def random_planes(gen: torch.Generator, batch=1, channels=32, res=32, scale=1.0, density_bias=0.0) -> torch.Tensor:
    return torch.randn(batch, 3, channels, res, res, generator=gen) * scale + density_bias


def random_rays(gen: torch.Generator, batch=1, res=8, yaw_spread=0.4, pitch_spread=0.3):
    """Rays of random FFHQ-like cameras around the frontal pose, res x res each."""
    h = math.pi / 2 + (torch.rand(batch, generator=gen) * 2 - 1) * yaw_spread
    v = math.pi / 2 + (torch.rand(batch, generator=gen) * 2 - 1) * pitch_spread
    label = camera_label(look_at_pose(h, v), fov_to_intrinsics(18.837))
    return rays_from_label(label, res)


@dataclass
class Scene:
    planes: torch.Tensor
    decoder: rf.OSGDecoder
    ray_origins: torch.Tensor
    ray_directions: torch.Tensor
    options: dict
    stratified_u: torch.Tensor
    importance_u: torch.Tensor | None
    extra: dict = field(default_factory=dict)


def make_scene(seed=0, batch=1, res=8, channels=32, plane_res=32, n=12, n_f=12, options=None,
               hidden=64, out_dim=32, rays=None) -> Scene:
    """A random scene; ``rays`` overrides res*res with an arbitrary ray count (random subset)."""
    gen = torch.Generator().manual_seed(seed)
    opts = dict(rf.FFHQ_OPTIONS, depth_resolution=n, depth_resolution_importance=n_f)
    opts.update(options or {})
    planes = random_planes(gen, batch, channels, plane_res)
    dec = random_decoder(gen, channels, hidden, out_dim)
    o, d = random_rays(gen, batch, res)
    if rays is not None:
        idx = torch.randint(0, o.shape[1], (rays,), generator=gen)
        o, d = o[:, idx].contiguous(), d[:, idx].contiguous()
    r = o.shape[1]
    su = torch.rand(batch, r, n, generator=gen)
    iu = torch.rand(batch, r, n_f, generator=gen) if n_f > 0 else None
    return Scene(planes, dec, o, d, opts, su, iu)


def render_scene(scene: Scene, backend="torch", **renderer_kw):
    r = rf.ImportanceRenderer(backend=backend, **renderer_kw)
    with torch.no_grad():
        return r(scene.planes, scene.decoder, scene.ray_origins, scene.ray_directions, scene.options,
                 stratified_u=scene.stratified_u, importance_u=scene.importance_u)

