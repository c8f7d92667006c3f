"""The gaze prompt: (pitch, yaw) -> gaze tokens, injected by cross-attention."""
from __future__ import annotations

import math

import torch
from torch import nn

from .configs import RTGazeConfig


class GazeTokens(nn.Module):
    """Fourier features of (pitch, yaw) and an MLP -> (B, T, F) gaze tokens."""

    def __init__(self, cfg: RTGazeConfig):
        super().__init__()
        self.freqs = cfg.fourier_freqs
        self.tokens, self.dim = cfg.gaze_tokens, cfg.feat_channels
        n_in = 2 + 4 * cfg.fourier_freqs
        self.mlp = nn.Sequential(nn.Linear(n_in, 4 * self.dim), nn.GELU(),
                                 nn.Linear(4 * self.dim, self.tokens * self.dim))

    def forward(self, gaze: torch.Tensor) -> torch.Tensor:
        scales = (2.0 ** torch.arange(self.freqs, device=gaze.device, dtype=gaze.dtype)) * math.pi
        arg = gaze.unsqueeze(-1) * scales  # (B, 2, F)
        feats = torch.cat([gaze, torch.sin(arg).flatten(1), torch.cos(arg).flatten(1)], dim=1)
        return self.mlp(feats).view(-1, self.tokens, self.dim)


class GazeCrossAttention(nn.Module):
    """Queries from the high-frequency feature map, keys/values from the gaze tokens; residual."""

    def __init__(self, cfg: RTGazeConfig):
        super().__init__()
        d = cfg.feat_channels
        self.norm_q, self.norm_kv = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, num_heads=max(1, d // 32), batch_first=True)
        self.mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, feat: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, c, h, w = feat.shape
        q = feat.flatten(2).transpose(1, 2)
        kv = self.norm_kv(tokens)
        x = q + self.attn(self.norm_q(q), kv, kv, need_weights=False)[0]
        x = x + self.mlp(x)
        return x.transpose(1, 2).reshape(b, c, h, w)
