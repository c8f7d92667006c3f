"""RTGaze configurations. Sizes are configuration, not code (shared/spec/rtgaze-model.md)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Tuple


@dataclass(frozen=True)
class RTGazeConfig:
    name: str
    image_size: int                 # input side; the triplane side is image_size // 2
    feat_channels: int              # F_high / F_low channels at the triplane resolution
    backbone_channels: Tuple[int, ...]  # E_low's ResNet stages (strides 2, 2, 2 after the stem)
    low_width: int                  # E_low's ViT token width
    low_blocks: int                 # E_low's transformer blocks
    heads: int
    low_sr_ratio: int               # spatial reduction of E_low's attention keys/values
    gaze_tokens: int
    fourier_freqs: int
    decoder_width: int              # fusion / triplane decoder width
    decoder_sr_ratio: int           # spatial reduction of the decoder's transformer block
    plane_channels: int             # per plane (EG3D: 32)
    ray_res: int                    # neural rendering resolution (rays per side)
    n_samples: int
    n_importance: int
    output_size: int                # super-resolution output side (ray_res times a power of 2, or equal)
    sr_channels: int
    plane_skip: bool = False        # a full-resolution path around the decoder's stride-2 bottleneck

    @property
    def plane_res(self) -> int:
        return self.image_size // 2

    @property
    def token_res(self) -> int:
        return self.image_size // 16


CONFIGS = {
    # The paper's scale (LP3D encoder): 512 input, 256^2 triplanes, 128^2 rays, 48+48, SR to 512.
    "base": RTGazeConfig("base", image_size=512, feat_channels=96, backbone_channels=(64, 128, 256),
                         low_width=1024, low_blocks=5, heads=16, low_sr_ratio=2, gaze_tokens=8, fourier_freqs=6,
                         decoder_width=128, decoder_sr_ratio=4, plane_channels=32, ray_res=128, n_samples=48,
                         n_importance=48, output_size=512, sr_channels=128),
    # Every part kept, small: a CPU forward in about a second.
    "tiny": RTGazeConfig("tiny", image_size=128, feat_channels=32, backbone_channels=(16, 32, 64),
                         low_width=64, low_blocks=1, heads=4, low_sr_ratio=1, gaze_tokens=4, fourier_freqs=4,
                         decoder_width=48, decoder_sr_ratio=2, plane_channels=32, ray_res=32, n_samples=16,
                         n_importance=16, output_size=64, sr_channels=32),
}
# Issue #19: tiny with full-resolution planes (a zero-initialised skip around the bottleneck, so
# tiny's weights warm-start it with the same planes) and rays at the output size (64^2: the
# super-resolution refines at 64 instead of upsampling 32). "tiny_skip" and
# "tiny_r64" are the two changes alone, for the ablation. "small" is the GPU recipe's larger model.
CONFIGS["tiny_skip"] = replace(CONFIGS["tiny"], name="tiny_skip", plane_skip=True)
CONFIGS["tiny_r64"] = replace(CONFIGS["tiny"], name="tiny_r64", ray_res=64)
CONFIGS["tiny_hr"] = replace(CONFIGS["tiny"], name="tiny_hr", ray_res=64, plane_skip=True)
# The configuration whose embedded weights the commands use by default (demo, redirect,
# eye-contact, eval): tiny_hr's beat tiny's on the test split on gaze error, eye-region and
# novel-view PSNR (issue #19; benchmarks/results/train_tiny_hr_cpu.json).
DEFAULT_CONFIG = "tiny_hr"
CONFIGS["small"] = RTGazeConfig("small", image_size=256, feat_channels=64, backbone_channels=(32, 64, 128),
                                low_width=256, low_blocks=2, heads=8, low_sr_ratio=2, gaze_tokens=8, fourier_freqs=6,
                                decoder_width=96, decoder_sr_ratio=4, plane_channels=32, ray_res=128, n_samples=32,
                                n_importance=32, output_size=256, sr_channels=64, plane_skip=True)
