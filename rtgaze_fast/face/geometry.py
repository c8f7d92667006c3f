"""Head pose, ETH-XGaze data normalisation and gaze frames, in float64 numpy (no OpenCV).

Frames
------
- **camera**: the photo's camera, OpenCV axes (+x right, +y down, +z forward), millimetres.
  Pixel coordinates are continuous: pixel (row i, col j) spans [j, j+1] x [i, i+1], so its centre
  is (j + 0.5, i + 0.5) and the principal point of a W x H image is (W/2, H/2).
- **head** (H): the generic face model's frame, millimetres, origin midway between the eye
  centres, +x towards the subject's left (the image's right in a frontal view), +y down, +z into
  the head: the frame of a camera that looks straight at the face. A head pose is (R_h, t_h)
  with p_camera = R_h @ p_head + t_h.
- **normalised camera**: ETH-XGaze's virtual camera (Zhang et al. 2018, "Revisiting data
  normalization"): it looks at the normalisation centre from a fixed distance with a fixed
  focal length, and its x-axis lies in the plane of the head's x-axis and the viewing axis, so
  head roll is cancelled. ``R_n`` rotates camera vectors into it; the image warp is
  ``W = K_n @ diag(1, 1, d_n / |c|) @ R_n @ K^-1``.

Gaze and head pose as (pitch, yaw) use ETH-XGaze's formula of ``rtgaze_fast.gaze``:
vector ``(-cos p sin y, -sin p, -cos p cos y)``, (0, 0) pointing at the camera. A head pose is
the (pitch, yaw) of the face's forward direction (head -z).

The model's camera
------------------
RTGaze renders an EG3D world in which the canonical (synthetic) head faces +z with +y up and
the frontal camera sits at (0, 0, 2.7) looking at (0, 0, 0.2) (``rtgaze_fast.camera``). The head
frame maps to it by ``p_world = diag(1, -1, -1) @ p_head / MM_PER_UNIT + HEAD_ORIGIN_WORLD``,
constants measured on the synthetic heads (``rtgaze_fast.data.synthetic``): their mean pupil
midpoint, and their eye distance scaled to the generic model's 63 mm. ``model_spec(config)``
normalises faces so that the virtual camera sees the face exactly as the model's frontal
camera sees the canonical head (centre = the look-at point, distance 2.5 units, EG3D's focal
length, the model's input size), and ``camera_label`` turns the normalised head rotation into
the (25,) camera label that renders the triplane from that same virtual camera.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
from torch.nn import functional as F

# Generic adult face, 5 points in the MTCNN order (subject's right eye = image left first):
# pupils 63 mm apart; nose tip 33 mm below and 20 mm in front of them, mouth corners 48 mm
# apart and 60 mm below (rounded average adult proportions, not any one person's scan).
FACE_MODEL = np.array([
    [-31.5, 0.0, 0.0],    # right eye centre
    [31.5, 0.0, 0.0],     # left eye centre
    [0.0, 33.0, -20.0],   # nose tip
    [-24.0, 60.0, 2.0],   # right mouth corner
    [24.0, 60.0, 2.0],    # left mouth corner
])
# ETH-XGaze's face centre: the mean of the eyes and mouth corners.
FACE_CENTRE = FACE_MODEL[[0, 1, 3, 4]].mean(0)

# The synthetic heads' frame (see the module doc). Mean pupil midpoint (0, 0.0575, 0.3245) and
# mean eye_x 0.0797 over 2000 identities of rtgaze_fast.data.synthetic.make_identity.
HEAD_ORIGIN_WORLD = np.array([0.0, 0.0575, 0.3245])
MM_PER_UNIT = 63.0 / (2 * 0.0797)
_D = np.diag([1.0, -1.0, -1.0])
EG3D_LOOKAT = np.array([0.0, 0.0, 0.2])
EG3D_RADIUS = 2.7


# ---------------------------------------------------------------- rotations

def rodrigues(rvec) -> np.ndarray:
    """Rotation vector (3,) -> matrix (3, 3)."""
    r = np.asarray(rvec, dtype=np.float64).reshape(3)
    theta = np.linalg.norm(r)
    if theta < 1e-12:
        return np.eye(3)
    k = r / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(theta) * kx + (1 - math.cos(theta)) * kx @ kx


def rotvec(rot) -> np.ndarray:
    """Matrix (3, 3) -> rotation vector (3,)."""
    rot = np.asarray(rot, dtype=np.float64)
    cos = np.clip((np.trace(rot) - 1) / 2, -1, 1)
    theta = math.acos(cos)
    if theta < 1e-9:
        return np.zeros(3)
    if theta > math.pi - 1e-6:
        # axis from the symmetric part
        w, v = np.linalg.eigh((rot + rot.T) / 2)
        return v[:, np.argmax(w)] * theta
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]]) / (2 * math.sin(theta))
    return axis * theta


def euler_to_rotation(pitch: float, yaw: float, roll: float = 0.0) -> np.ndarray:
    """A head rotation R_h (camera <- head): roll about the face axis, then pitch (face up for
    positive), then yaw (face towards the image's left, the subject's right, for positive)."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return ry @ rx @ rz


# ---------------------------------------------------------------- gaze frames

def pitchyaw_to_vector(py) -> np.ndarray:
    """(..., 2) radians -> (..., 3) unit vectors (ETH-XGaze's formula, as rtgaze_fast.gaze)."""
    py = np.asarray(py, dtype=np.float64)
    p, y = py[..., 0], py[..., 1]
    return np.stack([-np.cos(p) * np.sin(y), -np.sin(p), -np.cos(p) * np.cos(y)], -1)


def vector_to_pitchyaw(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    return np.stack([np.arcsin(np.clip(-v[..., 1], -1, 1)), np.arctan2(-v[..., 0], -v[..., 2])], -1)


def head_pose_pitchyaw(rot) -> np.ndarray:
    """(pitch, yaw) of the face's forward direction (head -z) for a rotation (frame <- head)."""
    return vector_to_pitchyaw(np.asarray(rot) @ np.array([0.0, 0.0, -1.0]))


def rotation_from_head_pose(pitch_yaw) -> np.ndarray:
    """The roll-free rotation (normalised camera <- head) with this head pose: the inverse of
    ``head_pose_pitchyaw`` on rotations whose head x-axis has no y component (what normalisation
    leaves)."""
    z = -pitchyaw_to_vector(pitch_yaw)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], 1)


def gaze_camera_to_normalized(gaze_vec, r_norm) -> np.ndarray:
    """Gaze vectors (..., 3) from the camera frame into the normalised camera (rotation only)."""
    return np.asarray(gaze_vec) @ np.asarray(r_norm).T


def gaze_normalized_to_camera(gaze_vec, r_norm) -> np.ndarray:
    return np.asarray(gaze_vec) @ np.asarray(r_norm)


def gaze_camera_to_head(gaze_vec, r_head) -> np.ndarray:
    """Camera-frame gaze vectors (..., 3) into the head frame (R_h: camera <- head)."""
    return np.asarray(gaze_vec) @ np.asarray(r_head)


def gaze_head_to_camera(gaze_vec, r_head) -> np.ndarray:
    return np.asarray(gaze_vec) @ np.asarray(r_head).T


# ---------------------------------------------------------------- cameras and PnP

def default_intrinsics(width: int, height: int, focal: Optional[float] = None) -> np.ndarray:
    """A pinhole K for a photo with no calibration: focal ``max(W, H)`` pixels unless given (about a
    53 degree field of view across the long side), principal point at the centre."""
    f = float(focal) if focal else float(max(width, height))
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])


def project(points, rot, trans, k) -> np.ndarray:
    """(N, 3) head points -> (N, 2) pixels."""
    pc = np.asarray(points, dtype=np.float64) @ np.asarray(rot).T + np.asarray(trans).reshape(1, 3)
    uv = pc @ np.asarray(k).T
    return uv[:, :2] / uv[:, 2:3]


def solve_pnp(image_points, k, model_points=FACE_MODEL, iterations: int = 50,
              init: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Tuple[np.ndarray, np.ndarray, float]:
    """Head pose from 2D landmarks: (R_h, t_h, rms reprojection error in pixels).

    Levenberg-Marquardt on (rotation vector, translation) minimising the reprojection error,
    started from several head yaws and pitches (the 5-point problem has mirror minima) at the
    image's roll and scale, the best fit winning; or from ``init`` (R, t), e.g. the previous
    video frame's pose, alone.
    """
    x = np.asarray(image_points, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(model_points, dtype=np.float64).reshape(-1, 3)
    if x.shape[0] != m.shape[0] or x.shape[0] < 4:
        raise ValueError(f"need >= 4 landmarks matching the model, got {x.shape[0]} vs {m.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError("landmarks must be finite")
    k = np.asarray(k, dtype=np.float64)
    if init is not None:
        starts = [np.concatenate([rotvec(init[0]), np.asarray(init[1], dtype=np.float64).reshape(3)])]
    else:
        f = (k[0, 0] + k[1, 1]) / 2
        eye = x[1] - x[0]
        roll = math.atan2(eye[1], eye[0])
        z0 = f * np.linalg.norm(m[1] - m[0]) / max(np.linalg.norm(eye), 1e-6)
        ray = np.linalg.solve(k, np.array([*x.mean(0), 1.0]))
        starts = []
        for yaw0, pitch0 in ((0.0, 0.0), (-0.6, 0.0), (0.6, 0.0), (0.0, -0.5), (0.0, 0.5)):
            r0 = euler_to_rotation(pitch0, yaw0, roll)
            starts.append(np.concatenate([rotvec(r0), ray * z0 - r0 @ m.mean(0)]))
    best = None
    for p in starts:
        p, err = _levenberg_marquardt(p, x, m, k, iterations)
        if best is None or err < best[1]:
            best = (p, err)
    p, err = best
    return rodrigues(p[:3]), p[3:].copy(), float(math.sqrt(err / x.shape[0]))


def _rodrigues_many(r: np.ndarray) -> np.ndarray:
    """(n, 3) rotation vectors -> (n, 3, 3)."""
    theta = np.linalg.norm(r, axis=1)
    safe = np.where(theta < 1e-12, 1.0, theta)
    kx, ky, kz = (r / safe[:, None]).T
    zero = np.zeros_like(kx)
    km = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], 1).reshape(-1, 3, 3)
    s, c = np.sin(theta)[:, None, None], (1 - np.cos(theta))[:, None, None]
    return np.eye(3)[None] + s * km + c * km @ km


def _residuals(ps: np.ndarray, x, m, k) -> np.ndarray:
    """(n, 6) parameter vectors -> (n, 2N) reprojection residuals."""
    pc = np.einsum("nij,pj->npi", _rodrigues_many(ps[:, :3]), m) + ps[:, None, 3:]
    uv = pc @ k.T
    return (uv[..., :2] / uv[..., 2:3] - x[None]).reshape(ps.shape[0], -1)


_STEPS = np.array([1e-6] * 3 + [1e-4] * 3)
_DELTAS = np.concatenate([np.diag(_STEPS), -np.diag(_STEPS)])


def _levenberg_marquardt(p, x, m, k, iterations):
    lam = 1e-3
    r = _residuals(p[None], x, m, k)[0]
    err = float(r @ r)
    for _ in range(iterations):
        rr = _residuals(p[None] + _DELTAS, x, m, k)
        jac = ((rr[:6] - rr[6:]) / (2 * _STEPS[:, None])).T
        jtj, jtr = jac.T @ jac, jac.T @ r
        improved = False
        for _ in range(10):
            step = np.linalg.solve(jtj + lam * np.diag(np.diag(jtj) + 1e-9), -jtr)
            q = p + step
            if q[5] <= 1e-3:  # keep the face in front of the camera
                lam *= 10
                continue
            rq = _residuals(q[None], x, m, k)[0]
            eq = float(rq @ rq)
            if eq < err:
                gain = err - eq
                p, r, err, lam, improved = q, rq, eq, max(lam / 10, 1e-9), True
                break
            lam *= 10
        if not improved or gain <= 1e-12 * max(err, 1e-12) or np.linalg.norm(step) < 1e-10:
            break
    return p, err


# ---------------------------------------------------------------- normalisation

@dataclass(frozen=True)
class NormSpec:
    """The virtual camera: ``size`` x ``size`` patch, ``focal`` pixels, ``distance`` mm from the
    normalisation ``centre`` (a point of the head frame, mm)."""
    size: int
    focal: float
    distance: float
    centre: Tuple[float, float, float]

    def intrinsics(self, size: Optional[int] = None) -> np.ndarray:
        """K_n at ``size`` pixels (default the spec's): the same camera at another resolution."""
        s = size or self.size
        f = self.focal * s / self.size
        return np.array([[f, 0, s / 2], [0, f, s / 2], [0, 0, 1.0]])


# ETH-XGaze's released face patches: 224 pixels, focal 960, 600 mm from the face centre.
ETH_XGAZE_SPEC = NormSpec(224, 960.0, 600.0, tuple(FACE_CENTRE))


def model_spec(image_size: int) -> NormSpec:
    """The virtual camera of RTGaze's frontal view (see the module doc) at ``image_size`` pixels."""
    from ..camera import FFHQ_FOV_DEG, fov_to_intrinsics
    focal = float(fov_to_intrinsics(FFHQ_FOV_DEG)[0, 0]) * image_size
    centre = _D @ (EG3D_LOOKAT - HEAD_ORIGIN_WORLD) * MM_PER_UNIT
    distance = (EG3D_RADIUS - EG3D_LOOKAT[2]) * MM_PER_UNIT
    return NormSpec(int(image_size), focal, float(distance), tuple(float(c) for c in centre))


@dataclass
class Normalization:
    """One face's normalisation: ``warp`` maps camera-image pixels to patch pixels (3x3
    homography, continuous pixel coordinates); ``r_norm`` rotates camera vectors into the
    normalised camera; ``r_head`` is the head rotation there (normalised camera <- head)."""
    spec: NormSpec
    warp: np.ndarray
    r_norm: np.ndarray
    r_head: np.ndarray
    centre_camera: np.ndarray   # the normalisation centre in the camera frame, mm

    @property
    def head_pose(self) -> np.ndarray:
        """(pitch, yaw) of the head in the normalised camera (ETH-XGaze's ``face_head_pose``)."""
        return head_pose_pitchyaw(self.r_head)

    def warp_at(self, size: int) -> np.ndarray:
        """The homography onto the same virtual camera's image at ``size`` pixels."""
        s = size / self.spec.size
        return np.diag([s, s, 1.0]) @ self.warp

    def to_patch(self, points, size: Optional[int] = None) -> np.ndarray:
        return apply_homography(self.warp_at(size or self.spec.size), points)

    def to_image(self, points, size: Optional[int] = None) -> np.ndarray:
        return apply_homography(np.linalg.inv(self.warp_at(size or self.spec.size)), points)


def normalization(k, r_head, t_head, spec: NormSpec) -> Normalization:
    """ETH-XGaze's normalisation of a face with pose (R_h, t_h) seen by a camera with intrinsics K."""
    k = np.asarray(k, dtype=np.float64)
    r_head = np.asarray(r_head, dtype=np.float64)
    centre = r_head @ np.asarray(spec.centre) + np.asarray(t_head).reshape(3)
    dist = float(np.linalg.norm(centre))
    z = centre / dist
    y = np.cross(z, r_head[:, 0])
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    r_norm = np.stack([x, y, z])
    scale = np.diag([1.0, 1.0, spec.distance / dist])
    warp = spec.intrinsics() @ scale @ r_norm @ np.linalg.inv(k)
    return Normalization(spec, warp / warp[2, 2], r_norm, r_norm @ r_head, centre)


def apply_homography(h, points) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    q = np.concatenate([p, np.ones((p.shape[0], 1))], 1) @ np.asarray(h).T
    return q[:, :2] / q[:, 2:3]


def camera_label(r_head_norm, spec: NormSpec, origin_world=HEAD_ORIGIN_WORLD,
                 mm_per_unit: float = MM_PER_UNIT) -> torch.Tensor:
    """The (25,) EG3D camera label (cam2world, normalised intrinsics) of the virtual camera of
    ``spec`` for a head with rotation ``r_head_norm`` (normalised camera <- head): it renders the
    model's canonical triplane as that camera sees the face. For the identity rotation and
    ``model_spec`` this is exactly ``rtgaze_fast.camera.frontal_camera()``. ``origin_world`` and
    ``mm_per_unit`` place the head frame in the EG3D world (default: the mean synthetic head)."""
    r = np.asarray(r_head_norm, dtype=np.float64)
    rot = _D @ r.T
    cam_head = np.asarray(spec.centre) - spec.distance * (r.T @ np.array([0.0, 0.0, 1.0]))
    pos = _D @ cam_head / mm_per_unit + np.asarray(origin_world, dtype=np.float64)
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rot, pos
    k = spec.intrinsics() / spec.size
    k[2, 2] = 1.0
    return torch.tensor(np.concatenate([c2w.reshape(16), k.reshape(9)]), dtype=torch.float32)


def camera_from_head_pose(pitch_yaw, spec: NormSpec) -> torch.Tensor:
    """The camera label for a normalised head pose (pitch, yaw) (roll-free, as normalisation leaves it)."""
    return camera_label(rotation_from_head_pose(pitch_yaw), spec)


def pose_from_label(label, k, origin_world=HEAD_ORIGIN_WORLD, mm_per_unit: float = MM_PER_UNIT):
    """The head pose (R_h, t_h in mm) that a (25,) EG3D camera label sees, for the head frame placed
    in the world by ``origin_world`` / ``mm_per_unit`` (the inverse of ``camera_label``'s mapping)."""
    c2w = np.asarray(torch.as_tensor(label, dtype=torch.float64)).reshape(-1)[:16].reshape(4, 4)
    rot_t = c2w[:3, :3].T
    return rot_t @ _D, mm_per_unit * rot_t @ (np.asarray(origin_world, dtype=np.float64) - c2w[:3, 3])


def head_pose_from_label(label) -> np.ndarray:
    """(pitch, yaw) of the head seen by a (25,) camera label: the inverse of ``camera_from_head_pose``."""
    c2w = np.asarray(torch.as_tensor(label, dtype=torch.float64)).reshape(-1)[:16].reshape(4, 4)
    return head_pose_pitchyaw(c2w[:3, :3].T @ _D)


# ---------------------------------------------------------------- image warps

def warp_image(image: torch.Tensor, h_dst_from_src, out_h: int, out_w: int, x0: int = 0, y0: int = 0) -> torch.Tensor:
    """Perspective warp: (C, H, W) float -> (C, out_h, out_w), where output pixel (i, j) shows
    ``image`` at ``H^-1 (x0 + j + 0.5, y0 + i + 0.5)`` (bilinear, zeros outside).

    ``x0, y0`` offset the output window inside the destination image (to warp only a region).
    """
    hinv = torch.as_tensor(np.linalg.inv(np.asarray(h_dst_from_src, dtype=np.float64)), dtype=torch.float64)
    ys = torch.arange(out_h, dtype=torch.float64) + 0.5 + y0
    xs = torch.arange(out_w, dtype=torch.float64) + 0.5 + x0
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx, gy, torch.ones_like(gx)], -1) @ hinv.T
    src = pts[..., :2] / pts[..., 2:3]
    _, h, w = image.shape
    grid = torch.stack([src[..., 0] / w * 2 - 1, src[..., 1] / h * 2 - 1], -1).float()
    return F.grid_sample(image[None].float(), grid[None], mode="bilinear", padding_mode="zeros",
                         align_corners=False)[0]
