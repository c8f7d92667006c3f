"""Depth teachers for L_D: any module that renders depth for a camera. This adapter turns a
triplane + decoder pair (an EG3D-family generator's output) into one."""
from __future__ import annotations

import torch
from torch import nn

from ..camera import rays_from_label
from ..options import FFHQ_OPTIONS
from ..renderer import ImportanceRenderer


class TriplaneTeacher(nn.Module):
    """``forward(camera (B, 25), resolution) -> depth (B, 1, R, R)`` rendered from fixed planes."""

    def __init__(self, planes: torch.Tensor, decoder: nn.Module, rendering_options=None):
        super().__init__()
        self.register_buffer("planes", planes)
        self.decoder = decoder.requires_grad_(False)
        self.options = dict(rendering_options or FFHQ_OPTIONS)
        self.renderer = ImportanceRenderer(backend="auto", deterministic=True)

    @torch.no_grad()
    def forward(self, camera: torch.Tensor, resolution: int) -> torch.Tensor:
        o, d = rays_from_label(camera, resolution)
        planes = self.planes.expand(camera.shape[0], -1, -1, -1, -1)
        _, depth, _ = self.renderer(planes, self.decoder, o, d, self.options)
        return depth.permute(0, 2, 1).reshape(camera.shape[0], 1, resolution, resolution)
