"""StyleGAN2-style super-resolution (no latent): upsampling conv blocks with to-RGB skips, from the
R x R x 32 feature image to the output resolution; the first 3 features are the raw RGB (EG3D)."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import conv_act
from .configs import RTGazeConfig


class SuperResolution(nn.Module):
    def __init__(self, cfg: RTGazeConfig):
        super().__init__()
        steps = int(round(math.log2(cfg.output_size / cfg.ray_res))) if cfg.output_size >= cfg.ray_res else -1
        if steps < 0 or cfg.ray_res * 2 ** steps != cfg.output_size:
            raise ValueError(f"output_size {cfg.output_size} must be ray_res {cfg.ray_res} times a power of 2")
        c = cfg.sr_channels
        self.inp = conv_act(cfg.plane_channels, c)
        # Rays at the output size (steps 0) still get one block: a refinement at that size.
        self.blocks = nn.ModuleList(nn.Sequential(conv_act(c, c), conv_act(c, c)) for _ in range(max(steps, 1)))
        self.to_rgb = nn.ModuleList(nn.Conv2d(c, 3, 1) for _ in range(max(steps, 1)))
        self.upsample = steps > 0

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x, rgb = self.inp(features), features[:, :3]
        up = (lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)) if self.upsample \
            else (lambda t: t)
        for block, to_rgb in zip(self.blocks, self.to_rgb):
            x = block(up(x))
            rgb = up(rgb) + to_rgb(x)
        return rgb
