"""RTGaze's training losses: L = alpha * L_R + beta * L_D + gamma * L_P (shared/spec/rtgaze-model.md)."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, eye_mask: Optional[torch.Tensor] = None,
                        eye_weight: float = 1.0,
                        mask_total: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """L_R: mean L1 over the image, plus ``eye_weight`` times the mean L1 inside the eye mask.

    ``eye_mask`` (B, 1, H, W) in [0, 1] at any resolution (resized to the image's). The eye term
    is a ratio over the whole batch (masked error sum / mask sum); ``mask_total`` maps this batch's
    mask sum to the normaliser to use instead. Data-parallel training passes the mean over
    processes of the mask sums, so that the average of the processes' gradients is the gradient of
    the whole global batch's ratio.
    """
    loss = (pred - target).abs().mean()
    if eye_mask is None or eye_weight == 0:
        return loss
    m = eye_mask.float()
    if m.shape[-2:] != pred.shape[-2:]:
        m = F.interpolate(m, size=pred.shape[-2:], mode="bilinear", align_corners=False)
    per_pixel = (pred - target).abs().mean(1, keepdim=True)
    total = m.sum() if mask_total is None else mask_total(m.sum().detach())
    return loss + eye_weight * (per_pixel * m).sum() / total.clamp_min(1e-6)


def depth_loss(depth: torch.Tensor, teacher_depth: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """L_D: mean L1 between our rendered depth and the teacher's (same camera, same resolution),
    over ``mask`` when given (e.g. where the teacher sees the face)."""
    diff = (depth - teacher_depth).abs()
    if mask is None:
        return diff.mean()
    m = mask.float()
    return (diff * m).sum() / m.sum().clamp_min(1e-6)


class RandomFeatureNet(nn.Module):
    """A fixed, randomly initialised conv pyramid: the default feature network of the perceptual loss.

    NOT pretrained (no weights can be downloaded here): it measures multi-scale structure, not
    human perception. Pass ``weights`` (a safetensors file of this module's state dict, or use
    any module returning a list of feature maps) for a trained one.
    """

    def __init__(self, channels=(16, 32, 64), seed: int = 0, weights: Optional[str] = None):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        layers, c = [], 3
        for out in channels:
            conv = nn.Conv2d(c, out, 3, 2, 1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) / (3 * c) ** 0.5)
                conv.bias.zero_()
            layers.append(conv)
            c = out
        self.layers = nn.ModuleList(layers)
        if weights is not None:
            from safetensors.torch import load_file
            self.load_state_dict(load_file(weights))
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor):
        feats = []
        for conv in self.layers:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return feats


class PerceptualLoss(nn.Module):
    """L_P, LPIPS-style: mean squared distance of channel-normalised features, averaged over layers."""

    def __init__(self, features: Optional[nn.Module] = None):
        super().__init__()
        self.features = features if features is not None else RandomFeatureNet()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = pred.new_zeros(())
        fp, ft = self.features(pred), self.features(target)
        for a, b in zip(fp, ft):
            a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            total = total + ((a - b) ** 2).sum(1).mean()
        return total / len(fp)


class RTGazeLoss(nn.Module):
    """alpha * L_R + beta * L_D + gamma * L_P; returns the total and each term."""

    def __init__(self, alpha: float = 1.0, beta: float = 0.5, gamma: float = 0.2, eye_weight: float = 2.0,
                 perceptual: Optional[PerceptualLoss] = None, raw_weight: float = 0.0):
        """``raw_weight``: weight of L_raw, L_R on the raw (pre-super-resolution) render against the
        target area-downsampled to its size, so the triplane itself must carry the detail."""
        super().__init__()
        self.alpha, self.beta, self.gamma, self.eye_weight = alpha, beta, gamma, eye_weight
        self.raw_weight = raw_weight
        self.perceptual = perceptual if perceptual is not None else PerceptualLoss()
        self.mask_total: Optional[Callable[[torch.Tensor], torch.Tensor]] = None  # see reconstruction_loss

    def forward(self, out: dict, target: torch.Tensor, eye_mask=None, teacher_depth=None):
        l_r = reconstruction_loss(out["image"], target, eye_mask, self.eye_weight, self.mask_total)
        l_d = depth_loss(out["depth"], teacher_depth) if teacher_depth is not None else out["image"].new_zeros(())
        l_p = self.perceptual(out["image"], target) if self.gamma else out["image"].new_zeros(())
        l_raw = out["image"].new_zeros(())
        if self.raw_weight:
            raw = out["image_raw"]
            small = F.interpolate(target, size=raw.shape[-2:], mode="area") if raw.shape[-2:] != target.shape[-2:] \
                else target
            l_raw = reconstruction_loss(raw, small, eye_mask, self.eye_weight, self.mask_total)
        total = self.alpha * l_r + self.beta * l_d + self.gamma * l_p + self.raw_weight * l_raw
        terms = {"L_R": l_r, "L_D": l_d, "L_P": l_p, "L_raw": l_raw, "total": total}
        return total, {k: float(v.detach()) for k, v in terms.items()}
