"""Fusion of the gaze-injected appearance features with the geometry features, and the triplane
decoder (convs + one efficient transformer block) -> (B, 3, 32, P, P)."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import TransformerBlock, conv_act
from .configs import RTGazeConfig

PLANE_INIT_GAIN = 10.0


class TriplaneDecoder(nn.Module):
    def __init__(self, cfg: RTGazeConfig):
        super().__init__()
        d = cfg.decoder_width
        self.fuse = nn.Sequential(conv_act(2 * cfg.feat_channels, d), conv_act(d, d, 3, stride=2))
        # The stride-2 conv leaves the planes half their resolution of detail (an iris ~1.5 texels at
        # tiny); the skip adds the full-resolution features back. Zero-initialised: the model starts
        # as the one without it.
        self.skip = nn.Conv2d(d, 3 * cfg.plane_channels, 3, 1, 1) if cfg.plane_skip else None
        if self.skip is not None:
            nn.init.zeros_(self.skip.weight)
            nn.init.zeros_(self.skip.bias)
        self.block = TransformerBlock(d, max(1, d // 32), cfg.decoder_sr_ratio)
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), conv_act(d, d),
                                nn.Conv2d(d, 3 * cfg.plane_channels, 3, 1, 1))
        # Default init gives planes of std ~0.08, too small for the decoder's densities to vary:
        # the rendered depth stayed flat in training (docs/model.md). With the gain: std ~0.8.
        with torch.no_grad():
            self.up[-1].weight.mul_(PLANE_INIT_GAIN)
            self.up[-1].bias.mul_(PLANE_INIT_GAIN)
        self.plane_channels = cfg.plane_channels

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        full = self.fuse[0](torch.cat([high, low], 1))
        x = self.fuse[1](full)
        b, c, h, w = x.shape
        t = self.block(x.flatten(2).transpose(1, 2), (h, w))
        x = self.up(t.transpose(1, 2).reshape(b, c, h, w))
        if self.skip is not None:
            x = x + self.skip(full)
        return x.view(b, 3, self.plane_channels, *x.shape[-2:])
