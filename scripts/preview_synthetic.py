"""Write a PNG grid of synthetic gaze samples: rows = identities, columns = gazes (and a novel view).

Usage: python scripts/preview_synthetic.py [out.png] [--test]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np
import torch
from PIL import Image

from rtgaze_fast.camera import frontal_camera
from rtgaze_fast.data.synthetic import TEST_ID_OFFSET, make_identity, render

GAZES = [(0.0, 0.0), (0.0, 0.45), (0.0, -0.45), (0.3, 0.0), (-0.3, 0.0)]   # (pitch, yaw) radians
VIEWS = [(0.0, 0.3), (-0.15, -0.3)]                                          # extra cameras (pitch, yaw)


def main() -> None:
    out = next((a for a in sys.argv[1:] if not a.startswith("--")), "out/synthetic_preview.png")
    offset = TEST_ID_OFFSET if "--test" in sys.argv else 0
    rows = []
    for i in range(6):
        ip = make_identity(offset + i)
        tiles = [render(ip, frontal_camera()[0], g)["image"] for g in GAZES]
        tiles += [render(ip, frontal_camera(yaw=y, pitch=p)[0], (0.0, 0.3))["image"] for p, y in VIEWS]
        rows.append(torch.cat(tiles, 2))
    grid = ((torch.cat(rows, 1).permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    Image.fromarray(np.ascontiguousarray(grid)).save(out)
    print(out)


if __name__ == "__main__":
    main()
