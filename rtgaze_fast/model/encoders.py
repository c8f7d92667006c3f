"""The two image encoders: appearance (high frequency) and geometry (low frequency)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import TransformerBlock, conv_act, with_coords
from .configs import RTGazeConfig


class HighFrequencyEncoder(nn.Module):
    """Shallow full-detail CNN: a 7x7 stride-2 conv and four 3x3 convs -> (B, F, P, P)."""

    def __init__(self, cfg: RTGazeConfig):
        super().__init__()
        f = cfg.feat_channels
        self.net = nn.Sequential(conv_act(5, f, 7, stride=2), *[conv_act(f, f) for _ in range(4)])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(with_coords(image))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1, stride) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x):
        return F.leaky_relu(self.conv2(F.leaky_relu(self.conv1(x), 0.2)) + self.skip(x), 0.2)


class ASPP(nn.Module):
    """DeepLabV3's atrous spatial pyramid pooling: parallel dilated convs and image pooling."""

    def __init__(self, c: int, dilations=(1, 2, 4)):
        super().__init__()
        self.branches = nn.ModuleList([conv_act(c, c, 1)] + [conv_act(c, c, 3, dilation=d) for d in dilations])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1), nn.LeakyReLU(0.2))
        self.out = conv_act(c * (len(dilations) + 2), c, 1)

    def forward(self, x):
        feats = [b(x) for b in self.branches] + [self.pool(x).expand_as(x)]
        return self.out(torch.cat(feats, 1))


class LowFrequencyEncoder(nn.Module):
    """DeepLabV3-style ResNet + ASPP to 1/8 resolution, patch embedding to 1/16 tokens, efficient
    ViT blocks, then upsampling convs back to the triplane resolution (1/2): (B, F, P, P)."""

    def __init__(self, cfg: RTGazeConfig):
        super().__init__()
        c0, c1, c2 = cfg.backbone_channels
        self.stem = conv_act(5, c0, 7, stride=2)
        self.stages = nn.Sequential(ResBlock(c0, c0, 1), ResBlock(c0, c1, 2), ResBlock(c1, c2, 2))
        self.aspp = ASPP(c2)
        self.embed = nn.Conv2d(c2, cfg.low_width, 2, 2)
        self.pos = nn.Parameter(torch.zeros(1, cfg.token_res ** 2, cfg.low_width))
        self.blocks = nn.ModuleList(TransformerBlock(cfg.low_width, cfg.heads, cfg.low_sr_ratio)
                                    for _ in range(cfg.low_blocks))
        self.norm = nn.LayerNorm(cfg.low_width)
        ups, c = [], cfg.low_width
        for _ in range(3):  # 1/16 -> 1/2
            nxt = max(cfg.feat_channels, c // 4)
            ups += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), conv_act(c, nxt)]
            c = nxt
        self.up = nn.Sequential(*ups, nn.Conv2d(c, cfg.feat_channels, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.aspp(self.stages(self.stem(with_coords(image))))
        x = self.embed(x)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2) + self.pos
        for blk in self.blocks:
            t = blk(t, (h, w))
        x = self.norm(t).transpose(1, 2).reshape(b, c, h, w)
        return self.up(x)
