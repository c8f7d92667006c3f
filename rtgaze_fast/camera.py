"""Cameras and rays with EG3D's conventions and exact arithmetic (spec: 'Rays from a camera').

Camera label: 16 numbers of a 4x4 cam2world (OpenCV: +x right, +y down, +z forward) followed by
9 of intrinsics normalised by image size.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import torch
from torch import nn

FFHQ_RADIUS = 2.7
FFHQ_LOOKAT = (0.0, 0.0, 0.2)
FFHQ_FOV_DEG = 18.837
FFHQ_FOCAL = 4.2647

Number = Union[float, torch.Tensor]


def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / torch.norm(v, dim=-1, keepdim=True)


def fov_to_intrinsics(fov_degrees: float, device=None) -> torch.Tensor:
    """EG3D's FOV_to_intrinsics: focal = 1 / (tan(fov * 3.14159 / 360) * 1.414), principal point (0.5, 0.5)."""
    focal = float(1 / (math.tan(fov_degrees * 3.14159 / 360) * 1.414))
    return torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], device=device)


def create_cam2world(forward: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """(B, 3) forward vectors and camera origins -> (B, 4, 4) cam2world, y up, no roll (EG3D)."""
    forward = _normalize(forward)
    up = torch.tensor([0, 1, 0], dtype=torch.float, device=origin.device).expand_as(forward)
    right = -_normalize(torch.cross(up, forward, dim=-1))
    up = _normalize(torch.cross(forward, right, dim=-1))
    rot = torch.eye(4, device=origin.device).unsqueeze(0).repeat(forward.shape[0], 1, 1)
    rot[:, :3, :3] = torch.stack((right, up, forward), dim=-1)
    trans = torch.eye(4, device=origin.device).unsqueeze(0).repeat(forward.shape[0], 1, 1)
    trans[:, :3, 3] = origin
    return trans @ rot


def look_at_pose(horizontal: Number, vertical: Number, lookat: Sequence[float] = FFHQ_LOOKAT,
                 radius: float = FFHQ_RADIUS, device=None) -> torch.Tensor:
    """EG3D's LookAtPoseSampler.sample with zero spread: (B, 4, 4) cam2world.

    The camera sits on a sphere of ``radius`` around the world origin (not around ``lookat``);
    frontal is ``horizontal = vertical = pi/2``. Scalars or (B,) tensors.
    """
    h = torch.as_tensor(horizontal, dtype=torch.float32, device=device).reshape(-1, 1)
    v = torch.as_tensor(vertical, dtype=torch.float32, device=device).reshape(-1, 1)
    h, v = torch.broadcast_tensors(h, v)
    v = torch.clamp(v, 1e-5, math.pi - 1e-5) / math.pi
    phi = torch.arccos(1 - 2 * v)
    origins = torch.zeros((h.shape[0], 3), device=h.device)
    origins[:, 0:1] = radius * torch.sin(phi) * torch.cos(math.pi - h)
    origins[:, 2:3] = radius * torch.sin(phi) * torch.sin(math.pi - h)
    origins[:, 1:2] = radius * torch.cos(phi)
    target = torch.as_tensor(lookat, dtype=torch.float32, device=h.device)
    return create_cam2world(_normalize(target - origins), origins)


def camera_label(cam2world: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """(B, 25): flattened cam2world then intrinsics, EG3D's conditioning label."""
    b = cam2world.shape[0]
    return torch.cat([cam2world.reshape(b, 16), intrinsics.expand(b, 3, 3).reshape(b, 9)], dim=1)


def split_camera_label(label: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    if label.dim() != 2 or label.shape[1] != 25:
        raise ValueError(f"camera label must be (B, 25), got {tuple(label.shape)}")
    return label[:, :16].reshape(-1, 4, 4), label[:, 16:].reshape(-1, 3, 3)


def frontal_camera(batch: int = 1, device=None, yaw: Number = 0.0, pitch: Number = 0.0) -> torch.Tensor:
    """The FFHQ-class camera label (B, 25), turned by ``yaw``/``pitch`` radians from frontal."""
    pose = look_at_pose(math.pi / 2 + torch.as_tensor(yaw, dtype=torch.float32),
                        math.pi / 2 + torch.as_tensor(pitch, dtype=torch.float32), device=device)
    pose = pose.expand(batch, 4, 4) if pose.shape[0] == 1 else pose
    return camera_label(pose.to(device), fov_to_intrinsics(FFHQ_FOV_DEG, device=device))


class RaySampler(nn.Module):
    """EG3D's RaySampler: (cam2world (B,4,4), intrinsics (B,3,3), resolution) -> origins, unit directions (B, R*R, 3).

    Pixel (row i, col j) is at ((j+0.5)/R, (i+0.5)/R); ray index i*R + j.
    """

    def forward(self, cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int):
        if cam2world.dim() != 3 or cam2world.shape[1:] != (4, 4):
            raise ValueError(f"cam2world must be (B, 4, 4), got {tuple(cam2world.shape)}")
        if intrinsics.dim() != 3 or intrinsics.shape[1:] != (3, 3) or intrinsics.shape[0] != cam2world.shape[0]:
            raise ValueError(f"intrinsics must be (B, 3, 3) with B={cam2world.shape[0]}, got {tuple(intrinsics.shape)}")
        if int(resolution) < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        n, m, dev = cam2world.shape[0], resolution ** 2, cam2world.device
        locs = cam2world[:, :3, 3]
        fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
        cx, cy, sk = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
        ar = torch.arange(resolution, dtype=torch.float32, device=dev)
        uv = torch.stack(torch.meshgrid(ar, ar, indexing="ij")) * (1.0 / resolution) + (0.5 / resolution)
        uv = uv.flip(0).reshape(2, -1).transpose(1, 0).unsqueeze(0).repeat(n, 1, 1)
        x_cam, y_cam = uv[:, :, 0].view(n, -1), uv[:, :, 1].view(n, -1)
        z_cam = torch.ones((n, m), device=dev)
        x_lift = (x_cam - cx + cy * sk / fy - sk * y_cam / fy) / fx * z_cam
        y_lift = (y_cam - cy) / fy * z_cam
        cam_pts = torch.stack((x_lift, y_lift, z_cam, torch.ones_like(z_cam)), dim=-1)
        world = torch.bmm(cam2world, cam_pts.permute(0, 2, 1)).permute(0, 2, 1)[:, :, :3]
        dirs = nn.functional.normalize(world - locs[:, None, :], dim=2)
        return locs.unsqueeze(1).repeat(1, m, 1), dirs


def rays_from_label(label: torch.Tensor, resolution: int):
    """Rays (origins, directions) of a (B, 25) camera label at ``resolution`` x ``resolution``."""
    cam2world, intrinsics = split_camera_label(label)
    return RaySampler()(cam2world, intrinsics, resolution)
