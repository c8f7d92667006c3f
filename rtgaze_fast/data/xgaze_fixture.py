"""Files in ETH-XGaze's exact released layout, made without the dataset (tests, benchmarks, docs).

``write_dataset(DIR, ...)`` writes ``DIR/train_test_split.json`` and ``DIR/{train,test}/subjectXXXX.h5``
with the released keys, dtypes, shapes, chunking and compression (face_patch (N, S, S, 3) uint8 BGR,
lzf, one image per chunk; face_gaze, face_head_pose (N, 2), face_mat_norm (N, 3, 3) float64;
frame_index, cam_index (N, 1) int64; rows frame-major; the test split without face_gaze).

The labels come from a simulated capture normalised the way the dataset was (Zhang et al.,
"Revisiting data normalization for appearance-based gaze estimation", ETRA 2018; ETH-XGaze's
normalisation script): a rig of cameras around a subject (some rolled, as three ETH-XGaze cameras
are mounted upside down), per frame a head rotation (with roll) and a gaze target; for each
camera the normalising rotation R (rows: right, down, forward, with down orthogonal to the head's
x axis), the gaze R (target - face centre) and the head rotation R @ head, converted to the 2-D
labels as the script converts them. ``simulate`` also returns the ground truth the labels hide (the
head-frame gaze, the normalised head rotation), which the tests hold the reader to.

Images are either cheap patterns (``render=False``) or the synthetic head of
``rtgaze_fast.data.synthetic`` rendered from ``camera_from_head_pose(head_pose)`` with the true
head-frame gaze (``render=True``; about 0.1 s per 224 px image).
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional, Sequence

import numpy as np


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def pitchyaw(v: np.ndarray) -> np.ndarray:
    """Unit vector(s) -> (pitch, yaw) with the dataset's formula (asin(-y), atan2(-x, -z))."""
    v = _unit(np.asarray(v, dtype=np.float64))
    return np.stack([np.arcsin(-v[..., 1]), np.arctan2(-v[..., 0], -v[..., 2])], -1)


def normalise(head_rot: np.ndarray, face_centre: np.ndarray, gaze_target: np.ndarray) -> Dict[str, np.ndarray]:
    """One image's normalisation, in its camera's frame (mm): the rotation R, the normalised head
    rotation, and the labels as the dataset stores them."""
    forward = _unit(face_centre)
    down = _unit(np.cross(forward, head_rot[:, 0]))
    right = _unit(np.cross(down, forward))
    r = np.stack([right, down, forward])
    head_norm = r @ head_rot
    gaze = _unit(r @ (gaze_target - face_centre))
    z = head_norm[:, 2]
    return {"mat_norm": r, "head_rot_norm": head_norm, "face_gaze": pitchyaw(gaze),
            "face_head_pose": np.array([math.asin(z[1]), math.atan2(z[0], z[2])])}


def rig(n_cams: int, seed: int = 0, distance: float = 1000.0):
    """(n_cams, 3, 3) world->camera rotations and (n_cams, 3) positions of cameras around a subject
    at (0, 0, distance), camera 0 at the origin facing it; yaw up to 60 deg, pitch up to 30 deg."""
    g = np.random.default_rng(seed)
    subject = np.array([0.0, 0.0, distance])
    rots, poss = [np.eye(3)], [np.zeros(3)]
    for c in range(1, n_cams):
        yaw, pitch = g.uniform(-1.05, 1.05), g.uniform(-0.5, 0.5)
        pos = subject + distance * np.array([math.sin(yaw) * math.cos(pitch), -math.sin(pitch),
                                             -math.cos(yaw) * math.cos(pitch)])
        f = _unit(subject - pos)
        right0 = _unit(np.cross([0.0, 1.0, 0.0], f))
        down0 = np.cross(f, right0)
        roll = math.pi if c % 5 == 3 else g.uniform(-0.2, 0.2)
        right = math.cos(roll) * right0 + math.sin(roll) * down0
        down = -math.sin(roll) * right0 + math.cos(roll) * down0
        rots.append(np.stack([right, down, f]))
        poss.append(pos)
    return np.stack(rots), np.stack(poss)


def simulate(n_frames: int, n_cams: int, seed: int = 0, drop: float = 0.0, head_range=(0.35, 0.5, 0.15),
             distance: float = 1000.0) -> Dict[str, np.ndarray]:
    """Rows of one subject (frame-major): labels as stored plus the ground truth.

    Keys: face_gaze, face_head_pose (N, 2), face_mat_norm (N, 3, 3), frame_index, cam_index (N,),
    gaze_head (N, 2) the true gaze in the head frame (the same for every camera of a frame),
    head_rot_norm (N, 3, 3). ``drop`` removes that fraction of rows (missed detections);
    frame numbers have gaps. ``head_range`` bounds the head's (pitch, yaw, roll) in radians."""
    g = np.random.default_rng(seed + 1)
    cam_rot, cam_pos = rig(n_cams, seed, distance)
    subject = np.array([0.0, 0.0, distance])
    frames = np.sort(g.choice(np.arange(3 * n_frames + 1), n_frames, replace=False))
    rows: Dict[str, List[np.ndarray]] = {k: [] for k in ("face_gaze", "face_head_pose", "face_mat_norm",
                                                         "frame_index", "cam_index", "gaze_head", "head_rot_norm")}
    for fr in frames:
        hp, hy, hr = (g.uniform(-a, a) for a in head_range)
        head = _rot_y(hy) @ _rot_x(hp) @ _rot_z(hr)
        target = np.array([g.uniform(-600, 600), g.uniform(-400, 400), g.uniform(0, 200)])
        truth = pitchyaw(head.T @ (target - subject))
        for c in range(n_cams):
            if c > 0 and g.random() < drop:
                continue
            n = normalise(cam_rot[c] @ head, cam_rot[c] @ (subject - cam_pos[c]), cam_rot[c] @ (target - cam_pos[c]))
            for k in ("face_gaze", "face_head_pose", "head_rot_norm"):
                rows[k].append(n[k])
            rows["face_mat_norm"].append(n["mat_norm"])
            rows["frame_index"].append(np.int64(fr))
            rows["cam_index"].append(np.int64(c))
            rows["gaze_head"].append(truth)
    return {k: np.stack(v) for k, v in rows.items()}


def patterns(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 RGB test images: noise with a per-image colour block (cheap)."""
    g = np.random.default_rng(seed)
    img = g.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    img[:, : size // 4, : size // 4] = g.integers(0, 256, (n, 1, 1, 3), dtype=np.uint8)
    return img


def render_rows(rows: Dict[str, np.ndarray], size: int, identity: int, seed: int = 0) -> np.ndarray:
    """(N, size, size, 3) uint8 RGB: the synthetic head ``identity`` seen by each row's normalised
    camera, looking along the row's true head-frame gaze."""
    import torch
    from .ethxgaze import camera_from_head_pose
    from .synthetic import make_identity, render
    ip = make_identity(identity, seed)
    out = []
    for hp, gaze in zip(rows["face_head_pose"], rows["gaze_head"]):
        cam = camera_from_head_pose(torch.from_numpy(hp))
        img = render(ip, cam, torch.from_numpy(gaze).float(), size, 1)["image"]
        out.append(((img.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy())
    return np.stack(out)


def write_subject(path: str, rgb: np.ndarray, rows: Dict[str, np.ndarray], labels: bool = True) -> str:
    """Write one subject file in the released layout (``rgb`` is stored as BGR)."""
    import h5py
    n, size = rgb.shape[0], rgb.shape[1]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("face_patch", data=np.ascontiguousarray(rgb[..., ::-1]), dtype=np.uint8,
                         chunks=(1, size, size, 3), compression="lzf")
        if labels:
            f.create_dataset("face_gaze", data=rows["face_gaze"].astype(np.float64), chunks=(1, 2))
        f.create_dataset("face_head_pose", data=rows["face_head_pose"].astype(np.float64), chunks=(1, 2))
        f.create_dataset("face_mat_norm", data=rows["face_mat_norm"].astype(np.float64), chunks=(1, 3, 3))
        f.create_dataset("frame_index", data=rows["frame_index"].reshape(n, 1).astype(np.int64), chunks=(1, 1))
        f.create_dataset("cam_index", data=rows["cam_index"].reshape(n, 1).astype(np.int64), chunks=(1, 1))
    return path


def write_dataset(out_dir: str, train: Sequence[int] = (0, 3, 4), test: Sequence[int] = (1,),
                  n_frames: int = 4, n_cams: int = 3, size: int = 224, render: bool = False, seed: int = 0,
                  drop: float = 0.0, person_specific: Sequence[int] = ()) -> Dict[str, List[str]]:
    """An ETH-XGaze-layout directory: the split file and one file per subject id. Returns the split."""
    split: Dict[str, List[str]] = {"train": [], "test": [], "test_person_specific": []}
    for name, ids, folder, labels in (("train", train, "train", True), ("test", test, "test", False),
                                      ("test_person_specific", person_specific, "test_person_specific", True)):
        for sid in ids:
            rows = simulate(n_frames, n_cams, seed=seed * 1000 + sid, drop=drop)
            n = len(rows["cam_index"])
            rgb = render_rows(rows, size, sid, seed) if render else patterns(n, size, seed * 1000 + sid)
            fname = f"subject{sid:04d}.h5"
            write_subject(os.path.join(out_dir, folder, fname), rgb, rows, labels=labels)
            split[name].append(fname)
    with open(os.path.join(out_dir, "train_test_split.json"), "w") as f:
        json.dump(split, f, indent=1)
    return split


def main(argv: Optional[List[str]] = None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m rtgaze_fast.data.xgaze_fixture",
                                description="Write a small directory in ETH-XGaze's released layout.")
    p.add_argument("out_dir")
    p.add_argument("--train", type=int, default=4, help="training subjects")
    p.add_argument("--test", type=int, default=1, help="test subjects (no gaze labels)")
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--cams", type=int, default=4)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--render", action="store_true", help="synthetic faces instead of noise patterns")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    split = write_dataset(a.out_dir, train=range(a.train), test=range(100, 100 + a.test), n_frames=a.frames,
                          n_cams=a.cams, size=a.size, render=a.render, seed=a.seed)
    print(f"wrote {sum(map(len, split.values()))} subjects to {a.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
