"""Gaze redirection of faces inside real photos: detect, landmarks, head pose, normalise, redirect,
warp back, blend.

``GazeRedirector(model)(image, gaze="camera")`` takes an RGB uint8 (H, W, 3) photo and returns a
``RedirectResult`` whose ``image`` has the photo's size, with every pixel outside the blend mask
(``result.mask == 0``) bit-identical to the input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import UserError
from . import geometry as geo
from .mtcnn import MTCNN, RawFace

PROMPT_FRAMES = ("head", "normalized")
MASKS = ("eyes", "face")


class NoFaceError(UserError):
    """No face (or not the requested one) was found in an image."""


@dataclass
class Face:
    """One detected face: MTCNN's box, score and 5 landmarks (pixels; right eye, left eye, nose,
    right and left mouth corner of the subject), the PnP head pose (p_cam = r_head @ p_head +
    t_head, mm; ``pnp_rms`` its reprojection error in pixels) and the ETH-XGaze normalisation."""
    box: np.ndarray
    score: float
    landmarks: np.ndarray
    r_head: np.ndarray
    t_head: np.ndarray
    pnp_rms: float
    norm: geo.Normalization
    k: np.ndarray

    @property
    def head_pose(self) -> np.ndarray:
        """(pitch, yaw) radians of the face's forward direction in the camera frame."""
        return geo.head_pose_pitchyaw(self.r_head)

    @property
    def eye_distance_px(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))

    def look_at_camera(self) -> np.ndarray:
        """The camera-frame gaze vector from the eyes' midpoint to the camera's centre."""
        return -self.t_head / np.linalg.norm(self.t_head)


class FaceAnalyzer:
    """Detection (MTCNN), head pose (PnP against ``geometry.FACE_MODEL``) and normalisation.

    ``focal``: the camera's focal length in pixels (default ``max(W, H)``: photos carry no
    calibration; a wrong focal length biases the head pose a little, never the paste-back).
    """

    def __init__(self, spec: geo.NormSpec, min_face: int = 40, focal: Optional[float] = None,
                 detector: Optional[MTCNN] = None):
        self.spec, self.focal = spec, focal
        self.detector = detector or MTCNN(min_face=min_face)

    def intrinsics(self, width: int, height: int) -> np.ndarray:
        return geo.default_intrinsics(width, height, self.focal)

    def from_raw(self, raw: RawFace, k: np.ndarray, landmarks: Optional[np.ndarray] = None) -> Face:
        lm = raw.landmarks if landmarks is None else np.asarray(landmarks, dtype=np.float64)
        rot, trans, rms = geo.solve_pnp(lm, k)
        return self.from_pose(raw, k, rot, trans, rms, lm)

    def from_pose(self, raw: RawFace, k, rot, trans, rms: float, landmarks) -> Face:
        norm = geo.normalization(k, rot, trans, self.spec)
        return Face(raw.box, raw.score, np.asarray(landmarks, dtype=np.float64), rot, np.asarray(trans), rms, norm, k)

    def faces(self, image: np.ndarray, k: Optional[np.ndarray] = None) -> List[Face]:
        """Every face in ``image``, largest first (``--face 0`` is the largest)."""
        h, w = image.shape[:2]
        k = self.intrinsics(w, h) if k is None else k
        raws = self.detector.detect(image) if min(h, w) >= 12 else []
        raws.sort(key=lambda r: -(r.box[2] - r.box[0]) * (r.box[3] - r.box[1]))
        return [self.from_raw(r, k) for r in raws]


@dataclass
class RedirectResult:
    image: np.ndarray                  # (H, W, 3) uint8, the input's size
    mask: np.ndarray                   # (H, W) float32 blend weight; 0 = input pixel untouched
    faces: List[Face]                  # the faces redirected
    gazes: np.ndarray                  # (N, 3) camera-frame target gaze vectors
    prompts: np.ndarray                # (N, 2) the model's gaze prompts (pitch, yaw) radians
    patches: torch.Tensor              # (N, 3, S, S) normalised inputs in [-1, 1]
    outputs: torch.Tensor              # (N, 3, S_out, S_out) model outputs in [-1, 1]
    all_faces: List[Face] = field(default_factory=list)


GazeSpec = Union[str, Tuple[float, float], Sequence[float], np.ndarray]


class GazeRedirector:
    """The photo pipeline around an RTGaze ``model``.

    - ``prompt_frame``: the frame the model's gaze prompt is in: ``"head"`` for weights trained on
      the package's synthetic data (the embedded ones), ``"normalized"`` for weights trained on
      ETH-XGaze labels (the normalised camera's frame);
    - ``mask``: blend inside ``"eyes"`` (two ellipses around the eyes, lids included) or
      ``"face"`` (an ellipse over the face); ``feather`` the soft fraction of its radius;
    - ``color_match``: shift the output's colour by the mean difference on the feathered rim.
    """

    def __init__(self, model, prompt_frame: str = "head", mask: str = "eyes", feather: float = 0.35,
                 color_match: bool = True, min_face: int = 40, focal: Optional[float] = None,
                 analyzer: Optional[FaceAnalyzer] = None, batch: int = 8):
        if prompt_frame not in PROMPT_FRAMES:
            raise ValueError(f"prompt_frame must be one of {PROMPT_FRAMES}, got {prompt_frame!r}")
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
        if not 0 < feather <= 1:
            raise ValueError(f"feather must be in (0, 1], got {feather}")
        self.model = model
        self.spec = geo.model_spec(model.config.image_size)
        self.out_size = model.config.output_size
        self.prompt_frame, self.mask_kind, self.feather, self.color_match = prompt_frame, mask, feather, color_match
        self.analyzer = analyzer or FaceAnalyzer(self.spec, min_face=min_face, focal=focal)
        self.batch = int(batch)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------ stages

    def normalize(self, image: np.ndarray, face: Face) -> torch.Tensor:
        """(3, S, S) normalised face patch in [-1, 1] (supersampled when the face is larger than the patch)."""
        s = self.spec.size
        patch_eyes = face.norm.to_patch(face.landmarks[:2])
        ratio = face.eye_distance_px / max(float(np.linalg.norm(patch_eyes[1] - patch_eyes[0])), 1e-6)
        ss = int(min(4, max(1, math.ceil(ratio - 0.25))))
        src = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)
        patch = geo.warp_image(src, face.norm.warp_at(s * ss), s * ss, s * ss)
        if ss > 1:
            patch = F.avg_pool2d(patch[None], ss)[0]
        return patch / 127.5 - 1

    def target_gaze(self, face: Face, gaze: GazeSpec) -> np.ndarray:
        """A camera-frame unit gaze vector: ``"camera"`` (look at the camera) or (pitch, yaw) radians."""
        if isinstance(gaze, str):
            if gaze != "camera":
                raise ValueError(f"gaze must be 'camera' or (pitch, yaw) radians, got {gaze!r}")
            return face.look_at_camera()
        return geo.pitchyaw_to_vector(np.asarray(gaze, dtype=np.float64).reshape(2))

    def prompt(self, face: Face, gaze_vec: np.ndarray) -> np.ndarray:
        if self.prompt_frame == "head":
            return geo.vector_to_pitchyaw(geo.gaze_camera_to_head(gaze_vec, face.r_head))
        return geo.vector_to_pitchyaw(geo.gaze_camera_to_normalized(gaze_vec, face.norm.r_norm))

    def camera(self, face: Face) -> torch.Tensor:
        return geo.camera_label(face.norm.r_head, self.spec)

    @torch.no_grad()
    def run_model(self, patches: torch.Tensor, prompts: np.ndarray, cameras: torch.Tensor) -> torch.Tensor:
        """The model over (N, ...) inputs in batches of ``self.batch``: (N, 3, S_out, S_out)."""
        outs = []
        dev = self.device
        for i in range(0, patches.shape[0], self.batch):
            sl = slice(i, i + self.batch)
            gaze = torch.as_tensor(prompts[sl], dtype=torch.float32, device=dev)
            outs.append(self.model.redirect(patches[sl].to(dev), gaze,
                                            cameras[sl].to(dev)).float().cpu())
        return torch.cat(outs) if outs else torch.zeros(0, 3, self.out_size, self.out_size)

    def _alpha_patch(self, face: Face, uv: np.ndarray) -> np.ndarray:
        """Blend weight at patch coordinates uv (..., 2) of the output size (exactly 0 outside the mask)."""
        s = self.out_size
        eyes = face.norm.to_patch(face.landmarks[:2], s)
        iod = max(float(np.linalg.norm(eyes[1] - eyes[0])), 1e-6)
        if self.mask_kind == "eyes":
            ellipses = [(e, 0.38 * iod, 0.24 * iod) for e in eyes]
        else:
            centre = face.norm.to_patch(face.landmarks, s).mean(0)
            ellipses = [(centre + np.array([0.0, -0.1 * iod]), 1.05 * iod, 1.45 * iod)]
        alpha = np.zeros(uv.shape[:-1])
        for c, a, b in ellipses:
            r = np.sqrt(((uv[..., 0] - c[0]) / a) ** 2 + ((uv[..., 1] - c[1]) / b) ** 2)
            alpha = np.maximum(alpha, np.clip((1 - r) / self.feather, 0, 1))
        # nothing from outside the rendered patch
        inside = (uv[..., 0] > 0.5) & (uv[..., 0] < s - 0.5) & (uv[..., 1] > 0.5) & (uv[..., 1] < s - 0.5)
        return np.where(inside, alpha, 0.0)

    def paste(self, image: np.ndarray, face: Face, output: torch.Tensor, weight: float = 1.0,
              mask_out: Optional[np.ndarray] = None) -> np.ndarray:
        """Warp ``output`` (3, S_out, S_out) back into ``image`` (in place) inside the blend mask,
        scaled by ``weight`` in [0, 1]; pixels whose weight is 0 are left exactly as they were."""
        if weight <= 0:
            return image
        h, w = image.shape[:2]
        s = self.out_size
        # The mask's support in the patch, mapped to an image rectangle.
        g = (np.arange(s) + 0.5)
        uu, vv = np.meshgrid(g, g)
        a_patch = self._alpha_patch(face, np.stack([uu, vv], -1))
        if not (a_patch > 0).any():
            return image
        ys, xs = np.nonzero(a_patch > 0)
        corners = np.array([[xs.min() - 1, ys.min() - 1], [xs.max() + 2, ys.min() - 1],
                            [xs.min() - 1, ys.max() + 2], [xs.max() + 2, ys.max() + 2]], dtype=np.float64)
        img_c = face.norm.to_image(corners, s)
        x0, y0 = np.floor(img_c.min(0)).astype(int) - 1
        x1, y1 = np.ceil(img_c.max(0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            return image
        xx, yy = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
        uv = face.norm.to_patch(np.stack([xx, yy], -1).reshape(-1, 2), s).reshape(y1 - y0, x1 - x0, 2)
        alpha = self._alpha_patch(face, uv) * float(min(weight, 1.0))
        grid = torch.from_numpy(uv / s * 2 - 1).float()[None]
        new = F.grid_sample(output[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        new = ((new.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy().astype(np.float64)
        old = image[y0:y1, x0:x1].astype(np.float64)
        if self.color_match:
            rim = (alpha > 0) & (alpha < 0.999 * min(weight, 1.0))
            if rim.sum() >= 8:
                new = new + (old[rim].mean(0) - new[rim].mean(0))
        blended = alpha[..., None] * new + (1 - alpha[..., None]) * old
        out = np.where(alpha[..., None] > 0, np.clip(np.rint(blended), 0, 255).astype(np.uint8), image[y0:y1, x0:x1])
        image[y0:y1, x0:x1] = out
        if mask_out is not None:
            mask_out[y0:y1, x0:x1] = np.maximum(mask_out[y0:y1, x0:x1], alpha)
        return image

    # ------------------------------------------------------------ the whole photo

    def __call__(self, image: np.ndarray, gaze: GazeSpec = "camera", faces: Union[str, int, Sequence[int]] = 0,
                 k: Optional[np.ndarray] = None) -> RedirectResult:
        """Redirect ``faces`` (an index into the detected faces, largest first, a list of them, or
        ``"all"``) of ``image`` to ``gaze`` ("camera" or camera-frame (pitch, yaw) radians)."""
        image = np.ascontiguousarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        found = self.analyzer.faces(image, k)
        if not found:
            raise NoFaceError("no face found in the image")
        if isinstance(faces, str):
            if faces != "all":
                raise ValueError(f"faces must be an index, a list of indices or 'all', got {faces!r}")
            chosen = list(range(len(found)))
        else:
            chosen = [int(faces)] if np.isscalar(faces) else [int(i) for i in faces]
        bad = [i for i in chosen if not 0 <= i < len(found)]
        if bad:
            raise NoFaceError(f"face {bad[0]} requested but only {len(found)} face(s) found "
                              f"(indices 0..{len(found) - 1}, "
                              "largest first)")
        sel = [found[i] for i in chosen]
        patches = torch.stack([self.normalize(image, f) for f in sel])
        gazes = np.stack([self.target_gaze(f, gaze) for f in sel])
        prompts = np.stack([self.prompt(f, g) for f, g in zip(sel, gazes)])
        cams = torch.stack([self.camera(f) for f in sel])
        outputs = self.run_model(patches, prompts, cams)
        out, mask = image.copy(), np.zeros(image.shape[:2], dtype=np.float32)
        for f, o in zip(sel, outputs):
            self.paste(out, f, o, mask_out=mask)
        return RedirectResult(out, mask, sel, gazes, prompts, patches, outputs, found)


def draw_debug(image: np.ndarray, faces: Sequence[Face], mask: Optional[np.ndarray] = None) -> np.ndarray:
    """A copy of ``image`` with each face's box, index, landmarks and head-pose axes (x red, y green,
    z blue, 50 mm from the eyes' midpoint) and the blend mask's outline."""
    from PIL import Image, ImageDraw
    img = Image.fromarray(np.ascontiguousarray(image))
    d = ImageDraw.Draw(img)
    lw = max(1, round(max(image.shape[:2]) / 400))
    if mask is not None:
        edge = (mask > 0) & ~(np.pad(mask > 0, 1)[2:, 1:-1] & np.pad(mask > 0, 1)[:-2, 1:-1]
                              & np.pad(mask > 0, 1)[1:-1, 2:] & np.pad(mask > 0, 1)[1:-1, :-2])
        arr = np.asarray(img).copy()
        arr[edge] = (255, 0, 255)
        img = Image.fromarray(arr)
        d = ImageDraw.Draw(img)
    colours = [(255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 0), (0, 255, 255)]
    for i, f in enumerate(faces):
        d.rectangle([float(v) for v in f.box], outline=(0, 255, 0), width=lw)
        p, y = np.degrees(f.head_pose)
        d.text((float(f.box[0]), float(f.box[1]) - 12 * lw), f"#{i} {f.score:.2f} pose p{p:+.0f} y{y:+.0f}",
               fill=(0, 255, 0))
        r = 2 * lw
        for c, (x, yy) in zip(colours, f.landmarks):
            d.ellipse([x - r, yy - r, x + r, yy + r], fill=c)
        axes = geo.project(np.array([[0, 0, 0], [50, 0, 0], [0, 50, 0], [0, 0, 50.0]]), f.r_head, f.t_head, f.k)
        for end, c in zip(axes[1:], [(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
            d.line([tuple(axes[0]), tuple(end)], fill=c, width=lw)
    return np.asarray(img)
