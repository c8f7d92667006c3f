"""Gaze conventions (ETH-XGaze): (pitch, yaw) in radians <-> unit vectors in the normalised camera
frame, and angular error. (0, 0) looks into the camera."""
from __future__ import annotations

import torch


def gaze_to_vector(pitch_yaw: torch.Tensor) -> torch.Tensor:
    """(..., 2) radians -> (..., 3) unit vectors ``(-cos p sin y, -sin p, -cos p cos y)``."""
    p, y = pitch_yaw[..., 0], pitch_yaw[..., 1]
    return torch.stack([-torch.cos(p) * torch.sin(y), -torch.sin(p), -torch.cos(p) * torch.cos(y)], dim=-1)


def vector_to_gaze(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) vectors (any length) -> (..., 2) (pitch, yaw) radians; inverse of ``gaze_to_vector``."""
    v = v / v.norm(dim=-1, keepdim=True)
    pitch = torch.asin((-v[..., 1]).clamp(-1, 1))
    yaw = torch.atan2(-v[..., 0], -v[..., 2])
    return torch.stack([pitch, yaw], dim=-1)


def angular_error_deg(a, b) -> torch.Tensor:
    """Angle in degrees between two (..., 2) gazes, in float64 (acos near 1 loses ~0.02 deg in fp32)."""
    va = gaze_to_vector(torch.as_tensor(a, dtype=torch.float64))
    vb = gaze_to_vector(torch.as_tensor(b, dtype=torch.float64))
    return torch.rad2deg(torch.acos((va * vb).sum(-1).clamp(-1, 1)))
