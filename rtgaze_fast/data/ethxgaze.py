"""A reader for ETH-XGaze's normalised data (one HDF5 file per subject, as distributed).

Keys read (N = images in the file):
- ``face_patch`` (N, H, W, 3) uint8, **BGR** (ETH-XGaze's OpenCV order), normalised face crops;
- ``face_gaze`` (N, 2) float: (pitch, yaw) radians in the normalised camera frame (required
  for training pairs; the test split has none);
- ``face_head_pose`` (N, 2) float: (pitch, yaw) radians of the head in that frame;
- optional ``frame_index`` (N,) or (N, 1) and ``cam_index`` (N,) or (N, 1): ETH-XGaze shows each
  frame (one gaze of the subject) to 18 cameras; pairs are taken within a frame when present;
- optional ``facial_landmarks`` (N, 68, 2) in face-patch pixels: the eye-region mask is the box
  around points 36-47 (the iBUG 68-point eyes), grown by 40 %; without landmarks it is the fixed
  region ``FIXED_EYE_REGION`` of the normalised face (fractions of the patch: x0, y0, x1, y1).

A pair is (source, target) of the same subject: the target gaze is the prompt, the target image
the supervision. With ``frame_index``/``cam_index``, pairs are every two cameras of one frame
(same gaze, different view) plus every two frames of one camera (same view, different gaze);
without them, every ordered pair of the subject's images (capped by ``max_pairs``).
"""
from __future__ import annotations

import itertools
import os
import random
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn import functional as F

from ..camera import frontal_camera

FIXED_EYE_REGION = (0.18, 0.28, 0.82, 0.52)
EYE_LANDMARKS = slice(36, 48)


def eye_mask(size: int, landmarks: Optional[np.ndarray], patch_size: int) -> torch.Tensor:
    """(1, size, size) mask of the eye region (landmarks in patch pixels, or the fixed region)."""
    if landmarks is not None:
        pts = np.asarray(landmarks, dtype=np.float32)[EYE_LANDMARKS] / patch_size
        (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        gx, gy = 0.2 * (x1 - x0), 0.2 * (y1 - y0) + 0.02
        x0, y0, x1, y1 = x0 - gx, y0 - gy, x1 + gx, y1 + gy
    else:
        x0, y0, x1, y1 = FIXED_EYE_REGION
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    inside_x = (c >= x0) & (c <= x1)
    inside_y = (c >= y0) & (c <= y1)
    return (inside_y[:, None] & inside_x[None, :]).float().unsqueeze(0)


def camera_from_head_pose(head_pose: torch.Tensor) -> torch.Tensor:
    """(25,) EG3D camera label seeing the canonical head as the normalised camera sees this head:
    a head turned by (pitch, yaw) is rendered by the frontal camera turned the opposite way."""
    return frontal_camera(1, yaw=-float(head_pose[1]), pitch=float(head_pose[0]))[0]


def _flat(x) -> np.ndarray:
    return np.asarray(x).reshape(-1)


class ETHXGazePairs(torch.utils.data.Dataset):
    """(source, target) pairs from ETH-XGaze-layout HDF5 files, resized for the model.

    Items: ``image`` (3, S, S) and ``target`` (3, T, T) in [-1, 1] RGB, ``gaze_source``,
    ``gaze_target`` (2,), ``head_pose`` (2,) of the target, ``camera`` (25,) from it,
    ``eye_mask`` (1, T, T).
    """

    def __init__(self, files: Sequence[str], image_size: int = 128, target_size: int = 64,
                 max_pairs: Optional[int] = None, seed: int = 0):
        import h5py
        self.files, self.image_size, self.target_size = list(files), image_size, target_size
        self.pairs: List[Tuple[int, int, int]] = []
        for fi, path in enumerate(self.files):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"ETH-XGaze file {path!r} does not exist")
            with h5py.File(path, "r") as f:
                for key in ("face_patch", "face_gaze"):
                    if key not in f:
                        raise KeyError(f"{path!r} has no {key!r} dataset (keys: {sorted(f.keys())})")
                n = f["face_patch"].shape[0]
                if f["face_gaze"].shape != (n, 2):
                    raise ValueError(f"{path!r}: face_gaze must be ({n}, 2), got {f['face_gaze'].shape}")
                frames = _flat(f["frame_index"][()]) if "frame_index" in f else None
                cams = _flat(f["cam_index"][()]) if "cam_index" in f else None
            self.pairs += [(fi, a, b) for a, b in self._pairs(n, frames, cams)]
        if max_pairs is not None and len(self.pairs) > max_pairs:
            self.pairs = random.Random(seed).sample(self.pairs, max_pairs)
        self._handles: Dict[int, object] = {}

    @staticmethod
    def _pairs(n, frames, cams):
        if frames is None or cams is None:
            return [(a, b) for a, b in itertools.permutations(range(n), 2)]
        groups: Dict[Tuple[str, int], List[int]] = {}
        for i in range(n):
            groups.setdefault(("frame", int(frames[i])), []).append(i)
            groups.setdefault(("cam", int(cams[i])), []).append(i)
        return sorted({p for idx in groups.values() for p in itertools.permutations(idx, 2)})

    def __len__(self) -> int:
        return len(self.pairs)

    def _file(self, fi: int):
        import h5py
        if fi not in self._handles:  # opened lazily, once per worker
            self._handles[fi] = h5py.File(self.files[fi], "r")
        return self._handles[fi]

    def _image(self, f, i: int, size: int) -> torch.Tensor:
        bgr = torch.from_numpy(np.ascontiguousarray(f["face_patch"][i][..., ::-1])).float()
        img = bgr.permute(2, 0, 1).unsqueeze(0) / 127.5 - 1
        return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        fi, a, b = self.pairs[index]
        f = self._file(fi)
        patch = f["face_patch"].shape[1]
        head = torch.as_tensor(f["face_head_pose"][b], dtype=torch.float32) if "face_head_pose" in f \
            else torch.zeros(2)
        lms = f["facial_landmarks"][b] if "facial_landmarks" in f else None
        return {
            "image": self._image(f, a, self.image_size),
            "target": self._image(f, b, self.target_size),
            "gaze_source": torch.as_tensor(f["face_gaze"][a], dtype=torch.float32),
            "gaze_target": torch.as_tensor(f["face_gaze"][b], dtype=torch.float32),
            "head_pose": head,
            "camera": camera_from_head_pose(head),
            "eye_mask": eye_mask(self.target_size, lms, patch),
        }
