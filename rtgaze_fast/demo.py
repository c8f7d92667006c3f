"""The README's main job on an embedded default: render, then benchmark, writing everything under --out.

1. Renders the built-in head triplane (rtgaze_fast.scenes) along a built-in camera orbit with the reference and with the
   fastest backend of the device, writes the frames as one PNG and prints their agreement.
2. Runs ``rtgaze-fast bench`` at its built-in configurations: the renderer's backends side by
   side, then RTGaze end to end (eager vs ``optimize()``) with its stage breakdown; prints the
   tables and writes bench.json and bench.png.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from typing import List, Optional

import numpy as np
import torch

from . import bench, ops
from .camera import camera_label, fov_to_intrinsics, look_at_pose, rays_from_label
from .options import FFHQ_OPTIONS
from .precision import parity_errors
from .renderer import ImportanceRenderer
from .scenes import head_scene


def orbit_labels(frames: int, yaw: float = 0.35, pitch: float = 0.15) -> torch.Tensor:
    """(frames, 25) camera labels on EG3D's FFHQ orbit around the frontal pose."""
    t = torch.arange(frames, dtype=torch.float32) / frames * 2 * math.pi
    pose = look_at_pose(math.pi / 2 + yaw * torch.sin(t), math.pi / 2 + pitch * torch.cos(t))
    return camera_label(pose, fov_to_intrinsics(18.837))


def _to_uint8(rgb: torch.Tensor, res: int) -> np.ndarray:
    img = rgb[:, :3].T.reshape(3, res, res).permute(1, 2, 0)
    return ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


def render_orbit(out_dir: str, device, res: int = 64, frames: int = 6, backend: str = "auto") -> dict:
    """Render the orbit with the reference and ``backend``; write orbit.png; return the agreement."""
    from PIL import Image
    planes, dec = head_scene()
    planes, dec, opts = planes.to(device), dec.to(device), FFHQ_OPTIONS
    chosen = ops.resolve_backend(backend, device)
    fast = ImportanceRenderer(backend=chosen, deterministic=True)
    ref = ImportanceRenderer(backend="torch", deterministic=True)
    rows: List[np.ndarray] = []
    worst = 0.0
    with torch.no_grad():
        for label in orbit_labels(frames):
            o, d = rays_from_label(label[None], res)
            o, d = o.to(device), d.to(device)
            a = ref(planes, dec, o, d, opts)
            b = fast(planes, dec, o, d, opts)
            worst = max(worst, parity_errors(b, a)["rgb"])
            rows.append(np.concatenate([_to_uint8(a[0][0], res), _to_uint8(b[0][0], res)], axis=0))
    path = os.path.join(out_dir, "orbit.png")
    Image.fromarray(np.concatenate(rows, axis=1)).resize((frames * res * 2, 4 * res), Image.NEAREST).save(path)
    return {"path": path, "backend": chosen, "max_abs_rgb_diff_vs_reference": worst}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="rtgaze-fast demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out", help="output folder (default: out/)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-bench", action="store_true", help="skip the benchmark")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    device = torch.device(args.device)
    print(f"rtgaze-fast demo on {device}; backends available: {ops.available_backends(device)}")

    orbit = render_orbit(args.out, device)
    print(f"[render] {orbit['path']}: top row reference, bottom row backend={orbit['backend']!r}; "
          f"max |rgb difference| {orbit['max_abs_rgb_diff_vs_reference']:.2e}")

    if not args.no_bench:
        bench.main(["--device", str(device), "--out", args.out])
    with open(os.path.join(args.out, "demo.json"), "w") as f:
        json.dump({"orbit": orbit}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
