"""ETH-XGaze's normalised data, read right (issue #18).

Layout of the released files (one HDF5 file per subject, ``subjectXXXX.h5``, in ``DIR/train`` and
``DIR/test``, with ``DIR/train_test_split.json`` naming the subjects of each split; sources in
docs/training.md): N rows, frame-major (the cameras that saw one frame, then the next frame):

- ``face_patch`` (N, 224, 224, 3) uint8, **BGR** (OpenCV's order), the normalised face crop;
- ``face_gaze`` (N, 2) float64: (pitch, yaw) radians of the gaze in the row's NORMALISED CAMERA
  frame (absent in the test split: its labels are withheld);
- ``face_head_pose`` (N, 2) float64: (pitch, yaw) of the head in that frame;
- ``face_mat_norm`` (N, 3, 3) float64: the normalising rotation (original camera -> normalised);
- ``frame_index`` (N, 1) and ``cam_index`` (N, 1) int64: the frame (one gaze target of the
  subject, seen at once by up to 18 cameras) and the camera of the row.
- no facial landmarks (the normalisation script can write ``facial_landmarks`` (N, 68, 2); when
  present they give the eye mask).

Conventions (``rtgaze_fast.gaze``): a (pitch, yaw) is the unit vector
``(-cos p sin y, -sin p, -cos p cos y)`` (OpenCV axes: x right, y down, z away from the camera);
(0, 0) looks into the camera. ``face_head_pose`` is written by the normalisation as
``(asin(z_y), atan2(z_x, z_z))`` of the head's z axis, which points from the face to the back of
the head; so the direction the FACE points is ``gaze_to_vector(face_head_pose)``, the same formula
as the gaze. The normalisation builds its camera so that the head's x axis has no y component in
the normalised frame (``down = forward x head_x``); with that, the head pose's two angles fix the
head's whole rotation in the normalised frame (``head_rotation``), and the reader can give:

- the gaze in the HEAD frame, which is what the model is conditioned on (``head_frame_gaze``): the
  same for every camera of a frame, unlike ``face_gaze``;
- the EG3D camera label that sees the package's canonical head (facing +z world, world =
  diag(1, -1, -1) @ head frame, ``rtgaze_fast.data.synthetic``) as the normalised camera sees this
  head (``camera_from_head_pose``). ``head_pose_of_camera`` is its inverse.

``face_mat_norm`` is not needed for either (the head pose and the construction above determine the
head rotation); it is read, checked and passed on (``mat_norm``).

Pairs (``ETHXGazePairs``) are drawn lazily: memory is O(images) (a few index arrays), and each
epoch draws, for every source image, a target of the same subject: the same camera at another
frame (a gaze change seen from the same view), or with probability ``novel_fraction`` the same
frame at another camera (the same gaze from a new view: supervision for 3D consistency). The
draw is a function of (seed, epoch, source) only, so any sampler, worker count or process count
sees the same pairs.
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.nn import functional as F

from ..camera import FFHQ_FOV_DEG, FFHQ_LOOKAT, FFHQ_RADIUS, camera_label, create_cam2world, fov_to_intrinsics
from ..camera import split_camera_label
from ..gaze import gaze_to_vector, vector_to_gaze

SPLIT_FILE = "train_test_split.json"
OFFICIAL_SPLITS = ("train", "test", "test_person_specific")

# The normalised camera of the released 224 x 224 patches: focal 960 px at 600 mm from the face
# centre (the same framing as 448 px at 300 mm). The face centre is the mean of the eyes' centre
# and the mouth's, at the image centre.
NORM_PATCH = 224
NORM_FOCAL = 960.0
NORM_DISTANCE = 600.0

# Eye centres relative to the face centre in the head frame (mm; x right in a frontal image, y
# down, z back), from the mean face model of the ETH-XGaze normalisation (its eye corners and
# mouth points), made symmetric. Eye region per eye: +-EYE_HALF_WIDTH across, from EYE_ABOVE
# above the eye centre (brows) to EYE_BELOW below (lower lid), in the plane of the eye centres.
EYE_CENTRES_MM = ((-31.8, -23.7, 5.5), (31.8, -23.7, 5.5))
EYE_HALF_WIDTH, EYE_ABOVE, EYE_BELOW = 20.0, 16.0, 9.0
FIXED_EYE_REGION = (0.13, 0.22, 0.87, 0.40)  # frontal-head eye region, fractions of the patch (x0, y0, x1, y1)
EYE_LANDMARKS = slice(36, 48)

_HEAD_TO_WORLD = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)  # world = diag(1,-1,-1) @ head frame

Array = Union[np.ndarray, torch.Tensor, Sequence[float]]


def _t64(x: Array) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float64)


# ----------------------------------------------------------------- conventions

def head_rotation(head_pose: Array) -> torch.Tensor:
    """(..., 2) ETH-XGaze head poses -> (..., 3, 3) float64 rotations whose columns are the head's
    x, y, z axes in the normalised camera frame (head frame -> normalised camera frame).

    z is minus the facing direction; x is the unit vector orthogonal to z with no y component and
    a positive x component (the normalisation's construction); y = z cross x.
    """
    z = -gaze_to_vector(_t64(head_pose))
    x = torch.stack([z[..., 2], torch.zeros_like(z[..., 0]), -z[..., 0]], dim=-1)
    x = x / x.norm(dim=-1, keepdim=True)
    x = torch.where(x[..., :1] < 0, -x, x)
    y = torch.cross(z, x, dim=-1)
    return torch.stack([x, y, z], dim=-1)


def head_frame_gaze(face_gaze: Array, head_pose: Array) -> torch.Tensor:
    """(..., 2) normalised-camera gaze + (..., 2) head pose -> (..., 2) float64 gaze in the head frame."""
    v = gaze_to_vector(_t64(face_gaze))
    rot = head_rotation(head_pose)
    return vector_to_gaze((rot.transpose(-1, -2) @ v.unsqueeze(-1)).squeeze(-1))


def camera_frame_gaze(gaze_head: Array, head_pose: Array) -> torch.Tensor:
    """Inverse of ``head_frame_gaze``: head-frame gaze -> the normalised camera's (..., 2) float64."""
    v = gaze_to_vector(_t64(gaze_head))
    return vector_to_gaze((head_rotation(head_pose) @ v.unsqueeze(-1)).squeeze(-1))


def _lookat_forward(v: torch.Tensor) -> torch.Tensor:
    """Camera forward f (world) of the no-roll look-at camera (EG3D's create_cam2world) in which the
    world +z axis has the camera-frame direction ``v``: there ``v = (f_x / n, f_y f_z / n, f_z)``
    with ``n = |(f_x, f_z)|``, inverted in closed form."""
    vx, vy, vz = v[..., 0], v[..., 1], v[..., 2]
    n = vz.abs() / torch.sqrt((1 - vx * vx).clamp_min(1e-30))
    return torch.stack([vx * n, vy * n / vz, vz], dim=-1)


def camera_from_head_pose(head_pose: Array, convention: str = "xgaze", radius: float = FFHQ_RADIUS,
                          lookat: Sequence[float] = FFHQ_LOOKAT, fov_degrees: float = FFHQ_FOV_DEG) -> torch.Tensor:
    """(..., 2) head poses -> (..., 25) float32 EG3D camera labels that see the canonical head as the
    normalised camera sees a head at this pose.

    The camera looks at ``lookat`` from the sphere of ``radius`` around the world origin with FFHQ's
    intrinsics, as ``frontal_camera`` does. ``convention`` fixes the rotation about the head's
    forward axis, which the two angles leave open:

    - ``"xgaze"``: the normalisation's (the head's x axis has no y component in the camera frame):
      the camera the released images were taken with; ``head_to_camera_gaze`` of the head-frame
      gaze with this label gives back ``face_gaze`` exactly. Use it for ETH-XGaze.
    - ``"lookat"``: EG3D's (the camera's x axis has no world-y component), i.e. the
      ``frontal_camera(yaw=, pitch=)`` family: ``camera_from_head_pose(head_pose_of_camera(c),
      "lookat") == c`` for those cameras. The two agree when pitch or yaw is 0.

    Both satisfy ``head_pose_of_camera(camera_from_head_pose(p)) == p``.
    """
    hp = _t64(head_pose)
    batch = hp.shape[:-1]
    hp = hp.reshape(-1, 2)
    if convention == "xgaze":
        rot = _HEAD_TO_WORLD[:, None] * head_rotation(hp).transpose(-1, -2)   # cam2world = D @ H^T
        forward = rot[..., 2]
    elif convention == "lookat":
        forward = _lookat_forward(gaze_to_vector(hp))
        rot = None
    else:
        raise ValueError(f"convention must be 'xgaze' or 'lookat', got {convention!r}")
    target = torch.tensor(lookat, dtype=torch.float64)
    lf = (forward * target).sum(-1)
    t = lf + torch.sqrt(lf * lf - target.dot(target) + radius * radius)
    origin = target - t[:, None] * forward
    if rot is None:
        pose = create_cam2world(forward.float(), origin.float())
    else:
        pose = torch.eye(4).repeat(hp.shape[0], 1, 1)
        pose[:, :3, :3] = rot.float()
        pose[:, :3, 3] = origin.float()
    label = camera_label(pose, fov_to_intrinsics(fov_degrees))
    return label.reshape(*batch, 25)


def head_pose_of_camera(camera: torch.Tensor) -> torch.Tensor:
    """(..., 25) labels -> (..., 2) float64 (pitch, yaw) of the canonical head's forward direction
    (+z world) in each camera's frame: the ETH-XGaze head pose that camera sees."""
    cam = torch.as_tensor(camera)
    rot = split_camera_label(cam.reshape(-1, 25))[0][:, :3, :3].double()
    return vector_to_gaze(rot[:, 2, :]).reshape(*cam.shape[:-1], 2)   # rot^T @ e_z = rot's third row


# ----------------------------------------------------------------- eye region

def _project(points_head: torch.Tensor, head_pose: torch.Tensor, size: int) -> torch.Tensor:
    """(..., P, 3) head-frame mm around the face centre -> (..., P, 2) patch pixels of a ``size`` patch."""
    rot = head_rotation(head_pose)
    cam = torch.einsum("...ij,...pj->...pi", rot, points_head)
    cam = cam + torch.tensor([0.0, 0.0, NORM_DISTANCE], dtype=torch.float64)
    focal = NORM_FOCAL * size / NORM_PATCH
    return focal * cam[..., :2] / cam[..., 2:] + size / 2


def eye_quads(head_pose: Array, size: int) -> torch.Tensor:
    """(..., 2, 4, 2) pixel corners (x, y) of the two eye regions of a ``size`` patch, counter-clockwise."""
    hp = _t64(head_pose)
    quads = []
    for cx, cy, cz in EYE_CENTRES_MM:
        corners = [(cx - EYE_HALF_WIDTH, cy - EYE_ABOVE), (cx - EYE_HALF_WIDTH, cy + EYE_BELOW),
                   (cx + EYE_HALF_WIDTH, cy + EYE_BELOW), (cx + EYE_HALF_WIDTH, cy - EYE_ABOVE)]
        pts = torch.tensor([[x, y, cz] for x, y in corners], dtype=torch.float64)
        quads.append(_project(pts.expand(*hp.shape[:-1], 4, 3), hp, size))
    return torch.stack(quads, dim=-3)


def eye_mask_from_head_pose(head_pose: Array, size: int) -> torch.Tensor:
    """(1, size, size) float mask of the eye regions (lids, eyes, brows) of a normalised face patch
    whose head has ``head_pose`` (2,): two head-frame rectangles around the eyes of the mean face,
    projected by the normalised camera. For files without landmarks."""
    quads = eye_quads(head_pose, size)            # (2, 4, 2)
    c = torch.arange(size, dtype=torch.float64) + 0.5
    py, px = torch.meshgrid(c, c, indexing="ij")
    inside = torch.zeros(size, size, dtype=torch.bool)
    for q in quads:                                 # inside a convex quad: same side of all 4 edges
        edge = q.roll(-1, 0) - q                    # corner k -> corner k + 1
        sides = torch.stack([edge[k, 0] * (py - q[k, 1]) - edge[k, 1] * (px - q[k, 0]) for k in range(4)])
        inside |= sides.ge(0).all(0) | sides.le(0).all(0)
    return inside.float().unsqueeze(0)


def eye_mask(size: int, landmarks: Optional[np.ndarray], patch_size: int) -> torch.Tensor:
    """(1, size, size) mask from 68 iBUG landmarks in patch pixels (the box around points 36-47
    grown by 40 % across and 40 % + 2 % of the patch vertically), or ``FIXED_EYE_REGION`` without."""
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


# ----------------------------------------------------------------- splits

def read_split(data_dir: str, split_file: Optional[str] = None) -> Dict[str, List[str]]:
    """The subject file names of each split: ``split_file`` (default ``DIR/train_test_split.json``,
    the official one: keys 'train' (80 subjects), 'test', 'test_person_specific'). Without one,
    every ``subject*.h5`` under DIR or DIR/train is 'train'."""
    path = split_file or os.path.join(data_dir, SPLIT_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            splits = json.load(f)
        if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
            raise ValueError(f"{path!r} must map split names to lists of subject files")
        return {k: list(v) for k, v in splits.items()}
    if split_file:
        raise FileNotFoundError(f"split file {split_file!r} does not exist")
    names = set()
    for sub in ("", "train"):
        d = os.path.join(data_dir, sub)
        if os.path.isdir(d):
            names |= {n for n in os.listdir(d) if re.fullmatch(r"subject\d+\.h5", n)}
    if not names:
        raise FileNotFoundError(f"no {SPLIT_FILE} and no subject*.h5 files in {data_dir!r} or {data_dir!r}/train")
    return {"train": sorted(names)}


def held_out(names: Sequence[str], k: int) -> List[str]:
    """The ``k`` validation subjects taken from ``names``: evenly spaced in sorted order (deterministic)."""
    names = sorted(names)
    if k <= 0:
        return []
    if k >= len(names):
        raise ValueError(f"cannot hold out {k} of {len(names)} training subjects")
    return [names[(2 * i + 1) * len(names) // (2 * k)] for i in range(k)]


def split_files(data_dir: str, split: str = "train", val_subjects: int = 5,
                split_file: Optional[str] = None) -> List[str]:
    """Paths of the subject files of ``split``: 'train' (the official training subjects minus the
    ``val_subjects`` held out), 'val' (those held-out subjects, labelled), or an official split
    name ('test', 'test_person_specific'). Files are looked up in DIR/<folder>/ then DIR/."""
    splits = read_split(data_dir, split_file)
    if split in ("train", "val"):
        if "train" not in splits:
            raise KeyError(f"the split file has no 'train' list (has {sorted(splits)})")
        val = set(held_out(splits["train"], val_subjects))
        names = [n for n in sorted(splits["train"]) if (n in val) == (split == "val")]
        folder = "train"
    else:
        if split not in splits:
            raise KeyError(f"split {split!r} not in the split file (has {sorted(splits)} and 'val')")
        names, folder = list(splits[split]), split
    paths = []
    for n in names:
        for cand in (os.path.join(data_dir, folder, n), os.path.join(data_dir, n)):
            if os.path.isfile(cand):
                paths.append(cand)
                break
        else:
            raise FileNotFoundError(f"subject file {n!r} of split {split!r} is neither in "
                                    f"{os.path.join(data_dir, folder)!r} nor in {data_dir!r}")
    if not paths:
        raise ValueError(f"split {split!r} of {data_dir!r} has no subjects")
    return paths


def subject_id(path: str) -> int:
    """12 for '.../subject0012.h5' (-1 when the name has no number)."""
    m = re.search(r"(\d+)$", os.path.splitext(os.path.basename(path))[0])
    return int(m.group(1)) if m else -1


# ----------------------------------------------------------------- index

def _flat(x) -> np.ndarray:
    return np.asarray(x).reshape(-1)


def _groups(keys: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images grouped by equal ``keys`` rows: (order, start, size, position) with image i at
    ``order[start[i] + position[i]]`` among its group's ``size[i]`` members."""
    n = keys.shape[0]
    order = np.lexsort(keys.T[::-1]).astype(np.int64)
    sk = keys[order]
    new = np.ones(n, dtype=bool)
    new[1:] = np.any(sk[1:] != sk[:-1], axis=1)
    gid = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, n))
    start, size, pos = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    start[order] = starts[gid]
    size[order] = sizes[gid]
    pos[order] = np.arange(n) - starts[gid]
    return order, start, size, pos


class XGazeIndex:
    """Per-image labels of a list of subject files (O(images) memory: no image is read).

    Arrays over all images: ``file`` and ``row``; ``frame``, ``cam``; ``face_gaze`` and
    ``head_pose`` (float64, NaN where the file has none)."""

    def __init__(self, files: Sequence[str]):
        import h5py
        self.files = list(files)
        if not self.files:
            raise ValueError("no ETH-XGaze files given")
        parts = {k: [] for k in ("file", "row", "frame", "cam", "face_gaze", "head_pose")}
        self.patch_size, self.has_gaze, self.has_landmarks = None, True, False
        for fi, path in enumerate(self.files):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"ETH-XGaze file {path!r} does not exist")
            with h5py.File(path, "r") as f:
                if "face_patch" not in f:
                    raise KeyError(f"{path!r} has no 'face_patch' dataset (keys: {sorted(f.keys())})")
                shape = f["face_patch"].shape
                if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
                    raise ValueError(f"{path!r}: face_patch must be (N, S, S, 3), got {shape}")
                if f["face_patch"].dtype != np.uint8:
                    raise ValueError(f"{path!r}: face_patch must be uint8, got {f['face_patch'].dtype}")
                if self.patch_size not in (None, shape[1]):
                    raise ValueError(f"{path!r}: {shape[1]} px patches, other files have {self.patch_size}")
                self.patch_size, n = shape[1], shape[0]
                for key, width in (("face_gaze", 2), ("face_head_pose", 2)):
                    if key in f and f[key].shape != (n, width):
                        raise ValueError(f"{path!r}: {key} must be ({n}, {width}), got {f[key].shape}")
                if "face_mat_norm" in f and f["face_mat_norm"].shape != (n, 3, 3):
                    raise ValueError(f"{path!r}: face_mat_norm must be ({n}, 3, 3), got {f['face_mat_norm'].shape}")
                for key in ("frame_index", "cam_index"):
                    if key in f and f[key].shape not in ((n,), (n, 1)):
                        raise ValueError(f"{path!r}: {key} must be ({n}, 1), got {f[key].shape}")
                if "face_head_pose" not in f:
                    raise KeyError(f"{path!r} has no 'face_head_pose' dataset (keys: {sorted(f.keys())})")
                nan2 = np.full((n, 2), np.nan)
                parts["face_gaze"].append(f["face_gaze"][()].astype(np.float64) if "face_gaze" in f else nan2)
                self.has_gaze &= "face_gaze" in f
                self.has_landmarks |= "facial_landmarks" in f
                parts["head_pose"].append(f["face_head_pose"][()].astype(np.float64))
                parts["frame"].append(_flat(f["frame_index"][()]).astype(np.int64) if "frame_index" in f
                                      else np.arange(n, dtype=np.int64))
                parts["cam"].append(_flat(f["cam_index"][()]).astype(np.int64) if "cam_index" in f
                                    else np.zeros(n, np.int64))
            parts["file"].append(np.full(n, fi, np.int32))
            parts["row"].append(np.arange(n, dtype=np.int32))
        for k, v in parts.items():
            setattr(self, k, np.concatenate(v))
        self.subject = np.array([subject_id(p) for p in self.files], np.int64)[self.file]
        self.by_cam = _groups(np.stack([self.file, self.cam], 1))
        self.by_frame = _groups(np.stack([self.file, self.frame], 1))

    def __len__(self) -> int:
        return self.file.shape[0]

    def head_frame_gaze(self, i: int) -> torch.Tensor:
        return head_frame_gaze(self.face_gaze[i], self.head_pose[i]).float()


# ----------------------------------------------------------------- datasets

class _Reader:
    """Lazily opened HDF5 handles (one set per process/worker; never pickled)."""

    def __init__(self, files: Sequence[str]):
        self.files, self._handles = list(files), {}

    def __getstate__(self):
        return {"files": self.files, "_handles": {}}

    def __call__(self, fi: int):
        import h5py
        if fi not in self._handles:
            self._handles[fi] = h5py.File(self.files[fi], "r")
        return self._handles[fi]


def load_patch(f, row: int) -> torch.Tensor:
    """One face patch as (3, S, S) float RGB in [-1, 1] (the file stores BGR)."""
    bgr = f["face_patch"][row]
    rgb = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1).float()
    return rgb / 127.5 - 1


def resize(img: torch.Tensor, size: int) -> torch.Tensor:
    if img.shape[-1] == size and img.shape[-2] == size:
        return img
    return F.interpolate(img[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def _item_index(index) -> Tuple[int, int]:
    """Dataset keys are an image index or (epoch, index) (what GlobalBatchSampler yields)."""
    if isinstance(index, (tuple, list)):
        return int(index[0]), int(index[1])
    return -1, int(index)


class ETHXGazePairs(torch.utils.data.Dataset):
    """(source, target) pairs of ETH-XGaze subjects, resized for the model; pairs drawn per epoch.

    ``ds[(epoch, i)]`` (or ``ds[i]`` at ``ds.epoch``) pairs source image ``i`` with a target drawn
    from ``numpy.random.default_rng((seed, epoch, i))``: same subject, same camera, another frame;
    or with probability ``novel_fraction``, same frame, another camera (falling back to the other
    kind when an image has no partner of the drawn kind).

    Items: ``image`` (3, S, S) and ``target`` (3, T, T) in [-1, 1] RGB; ``gaze_source``,
    ``gaze_target`` (2,) in the HEAD frame (the model's prompt); ``gaze_target_camera`` (2,) the
    target's ``face_gaze`` (normalised camera frame: what a gaze estimator reads off the target);
    ``head_pose`` (2,) of the target and ``head_pose_source``; ``camera`` (25,) of the target
    (``camera_from_head_pose``, convention ``convention``); ``eye_mask`` (1, T, T) of the target;
    ``novel`` (1 for a new-view pair), ``subject``, ``source_index``, ``target_index``.
    """

    def __init__(self, files: Sequence[str], image_size: int = 128, target_size: int = 64,
                 seed: int = 0, novel_fraction: float = 0.25, convention: str = "xgaze",
                 index: Optional[XGazeIndex] = None):
        self.index = index or XGazeIndex(files)
        if not self.index.has_gaze:
            raise KeyError("training pairs need face_gaze in every file (the official test split has none)")
        if not 0 <= novel_fraction <= 1:
            raise ValueError(f"novel_fraction must be in [0, 1], got {novel_fraction}")
        self.image_size, self.target_size, self.seed = image_size, target_size, seed
        self.novel_fraction, self.convention, self.epoch = novel_fraction, convention, 0
        _, _, cam_size, _ = self.index.by_cam
        _, _, frame_size, _ = self.index.by_frame
        self.sources = np.flatnonzero((cam_size > 1) | (frame_size > 1))
        if len(self.sources) == 0:
            raise ValueError("no image has a partner (another frame of its camera or another camera of its frame)")
        self._read = _Reader(self.index.files)

    def __len__(self) -> int:
        return len(self.sources)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def pair(self, epoch: int, i: int) -> Tuple[int, int, bool]:
        """(source image, target image, novel) of item ``i`` at ``epoch``."""
        src = int(self.sources[i])
        rng = np.random.default_rng((self.seed, epoch, src))
        novel = bool(rng.random() < self.novel_fraction)
        groups = [self.index.by_frame, self.index.by_cam] if novel else [self.index.by_cam, self.index.by_frame]
        for kind, (order, start, size, pos) in zip((novel, not novel), groups):
            if size[src] > 1:
                r = int(rng.integers(size[src] - 1))
                r += r >= pos[src]
                return src, int(order[start[src] + r]), kind
        raise AssertionError("sources always have a partner")

    def __getitem__(self, index) -> Dict[str, torch.Tensor]:
        epoch, i = _item_index(index)
        src, tgt, novel = self.pair(self.epoch if epoch < 0 else epoch, i)
        ix = self.index
        fs, ft = self._read(int(ix.file[src])), self._read(int(ix.file[tgt]))
        head_t = torch.from_numpy(ix.head_pose[tgt].copy())
        if ix.has_landmarks and "facial_landmarks" in ft:
            mask = eye_mask(self.target_size, ft["facial_landmarks"][int(ix.row[tgt])], ix.patch_size)
        else:
            mask = eye_mask_from_head_pose(head_t, self.target_size)
        target = load_patch(ft, int(ix.row[tgt]))
        return {
            "image": resize(load_patch(fs, int(ix.row[src])), self.image_size),
            "target": resize(target, self.target_size),
            "gaze_source": ix.head_frame_gaze(src),
            "gaze_target": ix.head_frame_gaze(tgt),
            "gaze_target_camera": torch.from_numpy(ix.face_gaze[tgt]).float(),
            "head_pose": head_t.float(),
            "head_pose_source": torch.from_numpy(ix.head_pose[src]).float(),
            "camera": camera_from_head_pose(head_t, self.convention),
            "eye_mask": mask,
            "novel": torch.tensor(float(novel)),
            "subject": torch.tensor(int(ix.subject[tgt])),
            "source_index": torch.tensor(src),
            "target_index": torch.tensor(tgt),
        }


class ETHXGazeImages(torch.utils.data.Dataset):
    """Single normalised images with their labels (the gaze estimator's data).

    Items: ``image`` (3, S, S) RGB in [-1, 1]; ``gaze`` (2,) ``face_gaze`` (normalised camera frame,
    NaN in unlabelled files); ``head_pose`` (2,); ``subject``. Keys: an image index, or
    (epoch, index) as GlobalBatchSampler yields (the epoch is ignored)."""

    def __init__(self, files: Sequence[str], image_size: int = 224, index: Optional[XGazeIndex] = None):
        self.index = index or XGazeIndex(files)
        self.image_size = image_size
        self._read = _Reader(self.index.files)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index) -> Dict[str, torch.Tensor]:
        _, i = _item_index(index)
        ix = self.index
        f = self._read(int(ix.file[i]))
        return {"image": resize(load_patch(f, int(ix.row[i])), self.image_size),
                "gaze": torch.from_numpy(ix.face_gaze[i]).float(),
                "head_pose": torch.from_numpy(ix.head_pose[i]).float(),
                "subject": torch.tensor(int(ix.subject[i]))}
