"""EG3D ``rendering_kwargs``: parse, apply EG3D's defaults, validate. The one place options are read."""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Mapping, Union

# Names of the two plane projections (section 1 of the renderer spec). Kernels take the index.
PLANE_SETS = ("eg3d", "corrected")

Limit = Union[float, str]


@dataclass(frozen=True)
class RenderOptions:
    ray_start: Limit
    ray_end: Limit
    box_warp: float
    depth_resolution: int
    depth_resolution_importance: int
    disparity_space_sampling: bool
    clamp_mode: str = "softplus"
    white_back: bool = False
    density_noise: float = 0.0

    @property
    def auto_limits(self) -> bool:
        return self.ray_start == "auto"

    @property
    def n_samples(self) -> int:
        return self.depth_resolution + self.depth_resolution_importance


FFHQ_OPTIONS = {
    "ray_start": 2.25,
    "ray_end": 3.3,
    "box_warp": 1,
    "depth_resolution": 48,
    "depth_resolution_importance": 48,
    "disparity_space_sampling": False,
    "clamp_mode": "softplus",
    "white_back": False,
}

_REQUIRED = ("ray_start", "ray_end", "box_warp", "depth_resolution",
             "depth_resolution_importance", "disparity_space_sampling", "clamp_mode")


def _number(opts: Mapping, key: str) -> float:
    value = opts[key]
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"rendering_options[{key!r}] must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"rendering_options[{key!r}] must be finite, got {value}")
    return value


def _integer(opts: Mapping, key: str, minimum: int) -> int:
    value = opts[key]
    if isinstance(value, bool) or not isinstance(value, int) and not (
            hasattr(value, "__index__") and not isinstance(value, float)):
        raise TypeError(f"rendering_options[{key!r}] must be an int, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"rendering_options[{key!r}] must be >= {minimum}, got {value}")
    return value


def parse_options(opts: Mapping) -> RenderOptions:
    """Read EG3D's ``rendering_kwargs`` (unknown keys ignored) into a validated RenderOptions."""
    if isinstance(opts, RenderOptions):
        return opts
    if not isinstance(opts, Mapping):
        raise TypeError(f"rendering_options must be a dict, got {type(opts).__name__}")
    missing = [k for k in _REQUIRED if k not in opts]
    if missing:
        raise KeyError(f"rendering_options is missing required key(s): {', '.join(missing)}")

    start, end = opts["ray_start"], opts["ray_end"]
    if start == "auto" or end == "auto":
        if not (start == "auto" and end == "auto"):
            raise ValueError("rendering_options['ray_start'] and ['ray_end'] must both be 'auto' or both numbers")
    else:
        start, end = _number(opts, "ray_start"), _number(opts, "ray_end")
        if not start < end:
            raise ValueError(f"rendering_options['ray_start'] must be < ray_end, "
                             f"got ray_start={start}, ray_end={end}")
        if opts["disparity_space_sampling"] and start <= 0:
            raise ValueError(f"rendering_options['ray_start'] must be > 0 with disparity_space_sampling, "
                             f"got {start}")
    box_warp = _number(opts, "box_warp")
    if box_warp <= 0:
        raise ValueError(f"rendering_options['box_warp'] must be > 0, got {box_warp}")
    n = _integer(opts, "depth_resolution", 2)
    n_f = _integer(opts, "depth_resolution_importance", 0)
    if n_f > 0 and n < 4:
        # sample_pdf uses the N-3 interior weights: it needs at least one.
        raise ValueError(f"rendering_options['depth_resolution'] must be >= 4 when "
                         f"depth_resolution_importance > 0, got {n}")
    if opts["clamp_mode"] != "softplus":
        raise ValueError(f"rendering_options['clamp_mode'] must be 'softplus' (EG3D's MipRayMarcher2), "
                         f"got {opts['clamp_mode']!r}")
    noise = _number(opts, "density_noise") if "density_noise" in opts else 0.0
    if noise < 0:
        raise ValueError(f"rendering_options['density_noise'] must be >= 0, got {noise}")
    return RenderOptions(
        ray_start=start, ray_end=end, box_warp=box_warp, depth_resolution=n,
        depth_resolution_importance=n_f,
        disparity_space_sampling=bool(opts["disparity_space_sampling"]),
        clamp_mode="softplus", white_back=bool(opts.get("white_back", False)), density_noise=noise)


def plane_set_index(plane_set: str) -> int:
    if plane_set not in PLANE_SETS:
        raise ValueError(f"plane_set must be one of {PLANE_SETS}, got {plane_set!r}")
    return PLANE_SETS.index(plane_set)
