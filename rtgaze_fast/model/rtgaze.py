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
        self._amp_dtype: Optional[torch.dtype] = None
        self._graphs: Dict[tuple, tuple] = {}
        self._use_graphs = False

    @classmethod
    def from_config(cls, name: str, **kw) -> "RTGaze":
        if name not in CONFIGS:
            raise ValueError(f"config must be one of {tuple(CONFIGS)}, got {name!r}")
        return cls(name, **kw)

    def optimize(self, precision: Optional[str] = None, renderer_precision: str = "fp32", compile: bool = False,
                 channels_last: bool = True, cuda_graphs: bool = False) -> "RTGaze":
        """Switch this model to its inference fast path (one switch; returns self):

        - the renderer on its fastest backend ('auto') in ``renderer_precision``;
        - ``precision`` 'bf16' / 'fp16' autocast for the CNN and transformer parts (default: bf16
          on a GPU, fp32 on a CPU); the renderer always composites in fp32. Measured bound on
          random inputs: tests/test_model.py::test_optimized_path_stays_close;
        - channels-last convolutions, ``torch.compile`` of the encoders, triplane decoder and
          super-resolution (``compile=True``; minutes on first call), and CUDA-graph replay of the
          whole forward for each input shape (``cuda_graphs=True``, CUDA only).
        """
        device = next(self.parameters()).device
        if precision is None:
            precision = "bf16" if device.type == "cuda" else "fp32"
        dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        if precision not in dtypes:
            raise ValueError(f"precision must be one of {tuple(dtypes)}, got {precision!r}")
        if cuda_graphs and device.type != "cuda":
            raise ValueError("cuda_graphs=True needs the model on a CUDA device")
        self.eval()
        self._amp_dtype = dtypes[precision]
        self.renderer = ImportanceRenderer(backend="auto", precision=renderer_precision,
                                           deterministic=self.renderer.deterministic)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        if compile:
            for name in ("high", "low", "triplane", "superres"):
                setattr(self, name, torch.compile(getattr(self, name)))
        self._use_graphs = cuda_graphs
        return self

    def _autocast(self, device: torch.device):
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self._amp_dtype)

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
        with self._autocast(dev):
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
        with self._stage("superres", dev), self._autocast(dev):
            image = self.superres(feats).float()
        return {"image": image, "image_raw": feats[:, :3], "depth": depth.permute(0, 2, 1).reshape(b, 1, r, r)}

    def forward(self, image: torch.Tensor, gaze: torch.Tensor, camera: Optional[torch.Tensor] = None):
        self._check(image, gaze, camera)
        if camera is None:
            camera = frontal_camera(image.shape[0], device=image.device)
        if self._use_graphs and not torch.is_grad_enabled() and self._stage_times is None:
            return self._graphed(image, gaze, camera)
        return self._forward(image, gaze, camera)

    def _forward(self, image, gaze, camera):
        triplane = self.encode(image, gaze)
        out = self.render(triplane, camera)
        out["triplane"] = triplane
        return out

    def _graphed(self, image, gaze, camera):
        """Replay a CUDA graph of the whole forward captured for these input shapes (static buffers)."""
        key = (tuple(image.shape), image.dtype)
        if key not in self._graphs:
            static = (image.clone(), gaze.clone(), camera.clone())
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm up (allocations, autotuning) outside the capture
                    self._forward(*static)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._forward(*static)
            self._graphs[key] = (graph, static, out)
        graph, static, out = self._graphs[key]
        for buf, new in zip(static, (image, gaze, camera)):
            buf.copy_(new)
        graph.replay()
        return {k: v.clone() for k, v in out.items()}

    @torch.no_grad()
    def redirect(self, image: torch.Tensor, gaze: torch.Tensor, camera: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The user call: the face of ``image`` looking along ``gaze`` (radians), seen from ``camera``."""
        was_training = self.training
        self.eval()
        try:
            return self(image, gaze, camera)["image"]
        finally:
            self.train(was_training)
