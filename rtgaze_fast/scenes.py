"""A built-in triplane scene that renders as something (a textured head-like ellipsoid), for the
demo and for tests that want real surfaces (dense weights, meaningful importance sampling).

Constructed, not trained: channel 0 of the three planes sums to the ellipsoid's implicit
function, channels 1-3 carry a texture painted on the XY plane, and the decoder's weights
turn those into a sharp density and colours.
"""
from __future__ import annotations

from typing import Tuple

import torch

from .reference.decoder import OSGDecoder

RADII = (0.56, 0.72, 0.6)   # ellipsoid radii in normalised plane coordinates (box_warp = 1: x2)
SHARPNESS = 200.0           # slope of the density across the surface
THRESHOLD = 0.125           # implicit value at the surface


def _texture(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] on the XY plane: skin, two eyes with irises, a mouth."""
    rgb = torch.stack([torch.full_like(x, 0.86), torch.full_like(x, 0.66), torch.full_like(x, 0.55)])
    for ex in (-0.24, 0.24):
        r2 = (x - ex) ** 2 + (y - 0.12) ** 2
        rgb = torch.where(r2 < 0.09 ** 2, torch.tensor([0.95, 0.95, 0.95])[:, None, None], rgb)
        rgb = torch.where(r2 < 0.045 ** 2, torch.tensor([0.15, 0.35, 0.55])[:, None, None], rgb)
        rgb = torch.where(r2 < 0.02 ** 2, torch.tensor([0.02, 0.02, 0.02])[:, None, None], rgb)
    mouth = ((x / 0.2) ** 2 + ((y + 0.3) / 0.05) ** 2) < 1
    return torch.where(mouth, torch.tensor([0.7, 0.2, 0.2])[:, None, None], rgb)


def head_scene(plane_res: int = 256, channels: int = 32) -> Tuple[torch.Tensor, OSGDecoder]:
    """(planes (1, 3, C, R, R), decoder) of the built-in head; EG3D plane set, box_warp = 1."""
    coords = (torch.arange(plane_res, dtype=torch.float32) + 0.5) / plane_res * 2 - 1
    v, u = torch.meshgrid(coords, coords, indexing="ij")   # u indexes width, v height
    a, b, c = RADII
    planes = torch.zeros(1, 3, channels, plane_res, plane_res)
    # The decoder sees the MEAN of the three planes (hence the factors of 3) and outside the
    # box a plane reads zeros. Implicit value inside: s = 0.22 - 0.095 * |p/radii|^2, surface
    # at s = THRESHOLD. Each plane alone stays below THRESHOLD, so the zero padding beyond the
    # box, where only some planes contribute, never adds phantom surfaces.
    planes[0, 0, 0] = 3 * (0.11 - 0.095 * ((u / a) ** 2 + (v / b) ** 2))   # plane XY: (u, v) = (x, y)
    planes[0, 1, 0] = 3 * (0.11 - 0.095 * (v / c) ** 2)                    # plane XZ: (u, v) = (x, z)
    planes[0, 0, 1:4] = 3 * _texture(u, v)

    dec = OSGDecoder(channels, 64, 32)
    w1 = torch.zeros(64, channels)
    b1 = torch.zeros(64)
    w1[0, 0], b1[0] = SHARPNESS, -SHARPNESS * THRESHOLD   # hidden 0 > 0 inside, ~0 outside
    for k in range(3):            # hidden 1..3 ~ colour + 10 (softplus is ~linear there)
        w1[1 + k, 1 + k] = 1.0
        b1[1 + k] = 10.0
    w2 = torch.zeros(33, 64)
    b2 = torch.zeros(33)
    w2[0, 0], b2[0] = 20.0, -10.0   # sigma_raw: -10 outside (transparent), large inside
    for k in range(3):              # rgb logits 6 * (colour - 0.5)
        w2[1 + k, 1 + k], b2[1 + k] = 6.0, -6.0 * 10.0 - 3.0
    with torch.no_grad():
        fc1, fc2 = dec.net[0], dec.net[2]
        fc1.weight.copy_(w1 / fc1.weight_gain)
        fc1.bias.copy_(b1 / fc1.bias_gain)
        fc2.weight.copy_(w2 / fc2.weight_gain)
        fc2.bias.copy_(b2 / fc2.bias_gain)
    return planes, dec
