"""RTGaze: one image + a gaze prompt -> a triplane -> rendered features -> the redirected face."""
from __future__ import annotations

import contextlib
import time
from typing import Dict, Optional, Union

import torch
from torch import nn

from ..camera import frontal_camera, rays_from_label
from ..options import FFHQ_OPTIONS
from ..reference.decoder import OSGDecoder
from ..renderer import ImportanceRenderer
from .configs import CONFIGS, RTGazeConfig
from .encoders import HighFrequencyEncoder, LowFrequencyEncoder
from .gaze_prompt import GazeCrossAttention, GazeTokens
from .superres import SuperResolution
from .triplane_decoder import TriplaneDecoder

STAGES = ("encoders", "gaze", "triplane", "render", "superres")


class RTGaze(nn.Module):
    """The paper's model. ``forward(image (B,3,H,W) in [-1,1], gaze (B,2) radians, camera=None)``
    returns ``{'image', 'image_raw', 'depth', 'triplane'}``; ``camera`` is a (B, 25) label, None
    meaning the canonical frontal camera. ``backend`` selects the renderer backend ('auto':
    fused when running inference, the reference when gradients are needed)."""

    def __init__(self, config: Union[str, RTGazeConfig] = "tiny", backend: str = "auto", deterministic: bool = False):
        super().__init__()
        cfg = CONFIGS[config] if isinstance(config, str) else config
        self.config = cfg
        self.high = HighFrequencyEncoder(cfg)
        self.low = LowFrequencyEncoder(cfg)
        self.gaze_tokens = GazeTokens(cfg)
        self.inject = GazeCrossAttention(cfg)
        self.triplane = TriplaneDecoder(cfg)
        self.decoder = OSGDecoder(cfg.plane_channels, 64, 32)
        self.renderer = ImportanceRenderer(backend=backend, deterministic=deterministic)
        self.superres = SuperResolution(cfg)
        self.rendering_options = dict(FFHQ_OPTIONS, depth_resolution=cfg.n_samples,
                                      depth_resolution_importance=cfg.n_importance)
        self._stage_times: Optional[Dict[str, float]] = None

    @classmethod
    def from_config(cls, name: str, **kw) -> "RTGaze":
        if name not in CONFIGS:
            raise ValueError(f"config must be one of {tuple(CONFIGS)}, got {name!r}")
        return cls(name, **kw)

    @contextlib.contextmanager
    def _stage(self, name: str, device: torch.device):
        if self._stage_times is None:
            yield
            return
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *a: None)
        sync(device)
        t0 = time.perf_counter()
        yield
        sync(device)
        self._stage_times[name] = self._stage_times.get(name, 0.0) + time.perf_counter() - t0

    @contextlib.contextmanager
    def time_stages(self):
        """Within the block, forward passes add each stage's wall time (seconds, synchronised) to the
        yielded dict: encoders, gaze (prompt + cross-attention), triplane, render, superres."""
        self._stage_times = {}
        try:
            yield self._stage_times
        finally:
            self._stage_times = None

    def _check(self, image: torch.Tensor, gaze: torch.Tensor, camera: Optional[torch.Tensor]):
        s = self.config.image_size
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1:] != (3, s, s):
            raise ValueError(f"image must be (B, 3, {s}, {s}) for config {self.config.name!r}, "
                             f"got {tuple(getattr(image, 'shape', ()))}")
        if not image.is_floating_point():
            raise TypeError(f"image must be a float tensor in [-1, 1], got {image.dtype}")
        if not isinstance(gaze, torch.Tensor) or gaze.shape != (image.shape[0], 2):
            raise ValueError(f"gaze must be (B={image.shape[0]}, 2) (pitch, yaw) radians, "
                             f"got {tuple(getattr(gaze, 'shape', ()))}")
        if camera is not None and (camera.dim() != 2 or camera.shape != (image.shape[0], 25)):
            raise ValueError(f"camera must be (B={image.shape[0]}, 25), got {tuple(camera.shape)}")

    def encode(self, image: torch.Tensor, gaze: torch.Tensor) -> torch.Tensor:
        """Image + gaze prompt -> triplane (B, 3, 32, P, P)."""
        dev = image.device
        with self._stage("encoders", dev):
            high, low = self.high(image), self.low(image)
        with self._stage("gaze", dev):
            high = self.inject(high, self.gaze_tokens(gaze.to(image.dtype)))
        with self._stage("triplane", dev):
            return self.triplane(high, low)

    def render(self, triplane: torch.Tensor, camera: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Triplane + camera -> the R x R feature image, raw RGB, depth and the super-resolved image."""
        cfg, dev = self.config, triplane.device
        b, r = triplane.shape[0], cfg.ray_res
        with self._stage("render", dev):
            origins, dirs = rays_from_label(camera.float(), r)
            feats, depth, _ = self.renderer(triplane.float(), self.decoder, origins, dirs, self.rendering_options)
            feats = feats.permute(0, 2, 1).reshape(b, -1, r, r)
        with self._stage("superres", dev):
            image = self.superres(feats.to(triplane.dtype))
        return {"image": image, "image_raw": feats[:, :3], "depth": depth.permute(0, 2, 1).reshape(b, 1, r, r)}

    def forward(self, image: torch.Tensor, gaze: torch.Tensor, camera: Optional[torch.Tensor] = None):
        self._check(image, gaze, camera)
        if camera is None:
            camera = frontal_camera(image.shape[0], device=image.device)
        triplane = self.encode(image, gaze)
        out = self.render(triplane, camera)
        out["triplane"] = triplane
        return out

    @torch.no_grad()
    def redirect(self, image: torch.Tensor, gaze: torch.Tensor, camera: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The user call: the face of ``image`` looking along ``gaze`` (radians), seen from ``camera``."""
        was_training = self.training
        self.eval()
        try:
            return self(image, gaze, camera)["image"]
        finally:
            self.train(was_training)
