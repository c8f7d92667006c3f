"""Transformer pieces shared by the encoders and the triplane decoder."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class EfficientAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a map reduced by ``sr_ratio``
    (SegFormer / PVT "spatial-reduction" attention, LP3D's efficient attention)."""

    def __init__(self, dim: int, heads: int, sr_ratio: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio) if sr_ratio > 1 else None
        self.sr_norm = nn.LayerNorm(dim) if sr_ratio > 1 else None

    def forward(self, x: torch.Tensor, hw) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).view(b, n, self.heads, c // self.heads).transpose(1, 2)
        src = x
        if self.sr is not None:
            src = self.sr(x.transpose(1, 2).reshape(b, c, *hw)).flatten(2).transpose(1, 2)
            src = self.sr_norm(src)
        k, v = self.kv(src).view(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class TransformerBlock(nn.Module):
    """Pre-norm block: efficient attention + MLP, on a token map of size ``hw``."""

    def __init__(self, dim: int, heads: int, sr_ratio: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = EfficientAttention(dim, heads, sr_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor, hw) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), hw)
        return x + self.mlp(self.norm2(x))


def conv_act(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding=dilation * (k // 2), dilation=dilation),
                         nn.LeakyReLU(0.2))


def with_coords(image: torch.Tensor) -> torch.Tensor:
    """Append the two normalised pixel-coordinate channels LP3D's encoders take."""
    b, _, h, w = image.shape
    ys = torch.linspace(-1, 1, h, device=image.device, dtype=image.dtype)
    xs = torch.linspace(-1, 1, w, device=image.device, dtype=image.dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.cat([image, xx.expand(b, 1, h, w), yy.expand(b, 1, h, w)], dim=1)
