"""OSGDecoder with EG3D's state_dict layout (``net.0.weight``, ``net.0.bias``, ``net.2.weight``, ``net.2.bias``)."""
from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import nn


class FullyConnectedLayer(nn.Module):
    """StyleGAN2's equalised-learning-rate linear layer: y = x @ (w * lr_mul/sqrt(fan_in)).T + b * lr_mul."""

    def __init__(self, in_features: int, out_features: int, lr_mul: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype)
        if self.bias_gain != 1:
            b = b * self.bias_gain
        return torch.addmm(b.unsqueeze(0), x, w.t())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def decode_features(x: torch.Tensor, net: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run the MLP on (P, C) aggregated features; return (sigma_raw (P, 1), rgb (P, out_dim))."""
    o = net(x)
    rgb = torch.sigmoid(o[..., 1:]) * (1 + 2 * 0.001) - 0.001  # MipNeRF's widened sigmoid
    return o[..., 0:1], rgb


class OSGDecoder(nn.Module):
    """EG3D's triplane decoder: mean of the three plane features -> FC -> softplus -> FC.

    ``forward(sampled_features (B, 3, M, C), ray_directions=None)`` returns EG3D's dict
    ``{'rgb': (B, M, out_dim), 'sigma': (B, M, 1)}``; ray directions are ignored (no view dependence).
    """

    def __init__(self, n_features: int = 32, hidden_dim: int = 64, out_dim: int = 32, lr_mul: float = 1.0):
        super().__init__()
        self.n_features, self.hidden_dim, self.out_dim = n_features, hidden_dim, out_dim
        self.net = nn.Sequential(
            FullyConnectedLayer(n_features, hidden_dim, lr_mul=lr_mul),
            nn.Softplus(),
            FullyConnectedLayer(hidden_dim, 1 + out_dim, lr_mul=lr_mul),
        )

    def forward(self, sampled_features: torch.Tensor, ray_directions: torch.Tensor | None = None) -> dict:
        x = sampled_features.mean(1)
        n, m, c = x.shape
        sigma, rgb = decode_features(x.reshape(n * m, c), self.net)
        return {"rgb": rgb.view(n, m, -1), "sigma": sigma.view(n, m, 1)}


def decoder_layers(decoder: nn.Module) -> Tuple[nn.Module, nn.Module]:
    """The two fully connected layers of any module with EG3D's OSGDecoder structure (duck-typed)."""
    net = getattr(decoder, "net", None)
    try:
        fc1, act, fc2 = net[0], net[1], net[2]
    except (TypeError, IndexError, KeyError):
        raise TypeError(f"decoder must have EG3D's OSGDecoder structure (net[0], net[1], net[2]); "
                        f"got {type(decoder).__name__}") from None
    for name, fc in (("net[0]", fc1), ("net[2]", fc2)):
        for attr in ("weight", "bias", "weight_gain", "bias_gain"):
            if getattr(fc, attr, None) is None:
                raise TypeError(f"decoder.{name} must be a FullyConnectedLayer with `{attr}`; "
                                f"got {type(fc).__name__}")
    if not isinstance(act, nn.Softplus) or act.beta != 1 or act.threshold != 20:
        raise TypeError(f"decoder.net[1] must be nn.Softplus(beta=1, threshold=20), got {act!r}")
    if fc1.weight.dim() != 2 or fc2.weight.dim() != 2 or fc2.weight.shape[1] != fc1.weight.shape[0]:
        raise TypeError("decoder layer shapes do not chain: net[0].weight "
                        f"{tuple(fc1.weight.shape)}, net[2].weight {tuple(fc2.weight.shape)}")
    return fc1, fc2


def folded_decoder_weights(decoder: nn.Module, differentiable: bool = False
                           ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(w1 (H, C), b1 (H,), w2 (1+O, H), b2 (1+O,)) in fp32 with the equalised-lr gains folded in once.

    ``differentiable``: keep the fold in autograd's graph, so gradients of the folded weights reach
    the raw parameters (times the gains); otherwise detached constants.
    """
    fc1, fc2 = decoder_layers(decoder)
    out = []
    for fc in (fc1, fc2):
        weight, bias = (fc.weight, fc.bias) if differentiable else (fc.weight.detach(), fc.bias.detach())
        out += [(weight.float() * float(fc.weight_gain)).contiguous(), (bias.float() * float(fc.bias_gain)).contiguous()]
    return tuple(out)
