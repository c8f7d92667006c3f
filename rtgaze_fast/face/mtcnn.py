"""MTCNN face detection (Zhang et al. 2016, "Joint Face Detection and Alignment using Multi-task
Cascaded Convolutional Networks") in plain PyTorch, with the trained weights that ship inside the
``facenet-pytorch`` wheel (``facenet_pytorch/data/{pnet,rnet,onet}.pt``, 2 MB, MIT licence).

Only the weight files are read: the package's own modules are never imported (they need
torchvision, whose PyPI build does not load beside the CPU torch wheel), so this module is the
network definitions and the three-stage cascade written here from the paper:

1. P-Net, fully convolutional, over an image pyramid: face probability and box regression per
   12x12 window (stride 2); non-maximum suppression per scale, then across scales;
2. R-Net on 24x24 crops of the calibrated, squared candidates: rejects and refines;
3. O-Net on 48x48 crops: final score, box and five landmarks (eye centres, nose tip, mouth
   corners, in that order: the subject's right eye first, i.e. the one on the image's left).

Nothing is downloaded: a missing wheel raises ``FaceBackendMissing`` with the install line.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

INSTALL_HINT = "pip install --no-deps facenet-pytorch==2.6.0"


class FaceBackendMissing(RuntimeError):
    """The optional face-detection weights (the facenet-pytorch wheel) are not installed."""


def weights_dir() -> str:
    """The folder holding pnet.pt, rnet.pt, onet.pt (found without importing facenet_pytorch)."""
    env = os.environ.get("RTGAZE_FAST_MTCNN_DIR")
    if env:
        folder = env
    else:
        spec = importlib.util.find_spec("facenet_pytorch")
        if spec is None or not spec.submodule_search_locations:
            raise FaceBackendMissing(
                "face detection needs the MTCNN weights shipped in the facenet-pytorch wheel, which is not "
                f"installed: {INSTALL_HINT} (--no-deps: it pins an old torch; only its weight files are used)")
        folder = os.path.join(list(spec.submodule_search_locations)[0], "data")
    missing = [n for n in ("pnet.pt", "rnet.pt", "onet.pt") if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise FaceBackendMissing(f"MTCNN weights {missing} not found in {folder!r}: reinstall with {INSTALL_HINT}")
    return folder


def _flatten_transposed(x: torch.Tensor) -> torch.Tensor:
    # The released cascade was trained on width-major (transposed) images: its dense layers read
    # the feature map as (W, H, C).
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return F.softmax(self.conv4_1(x), dim=1)[:, 1], self.conv4_2(x)


class RNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.dense4(_flatten_transposed(self.prelu3(self.conv3(x)))))
        return F.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(_flatten_transposed(self.prelu4(self.conv4(x)))))
        return F.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


@dataclass
class RawFace:
    box: np.ndarray        # (4,) x0, y0, x1, y1 in pixels (continuous: pixel j spans [j, j+1])
    score: float
    landmarks: np.ndarray  # (5, 2) x, y: right eye, left eye, nose, mouth right, mouth left (subject's)


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union") -> torch.Tensor:
    """Greedy non-maximum suppression: indices kept, best first. ``mode`` 'min' divides the
    intersection by the smaller box (O-Net's final pass), 'union' by the union."""
    order = torch.argsort(scores, descending=True)
    if order.numel() == 0:
        return order
    b = boxes[order]
    area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    x0 = torch.maximum(b[:, None, 0], b[None, :, 0])
    y0 = torch.maximum(b[:, None, 1], b[None, :, 1])
    x1 = torch.minimum(b[:, None, 2], b[None, :, 2])
    y1 = torch.minimum(b[:, None, 3], b[None, :, 3])
    inter = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    denom = torch.minimum(area[:, None], area[None, :]) if mode == "min" else area[:, None] + area[None, :] - inter
    overlap = (inter / denom.clamp(min=1e-9)).numpy()
    keep, removed = [], np.zeros(len(order), dtype=bool)
    for i in range(len(order)):
        if removed[i]:
            continue
        keep.append(i)
        removed |= overlap[i] > threshold
    return order[torch.tensor(keep, dtype=torch.long)]


def _square(boxes: torch.Tensor) -> torch.Tensor:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return boxes + reg * torch.stack([w, h, w, h], 1)


def crop_resize(image: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) image, (N, 4) boxes -> (N, 3, size, size): each box (zero outside the image) area-resized."""
    _, h, w = image.shape
    out = image.new_zeros(boxes.shape[0], 3, size, size)
    for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue
        patch = image.new_zeros(3, y1 - y0, x1 - x0)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if sx1 > sx0 and sy1 > sy0:
            patch[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[:, sy0:sy1, sx0:sx1]
        out[i] = F.interpolate(patch[None], size=(size, size), mode="area")[0]
    return out


class MTCNN(nn.Module):
    """``detect(image uint8 (H, W, 3) RGB) -> [RawFace]``, best score first.

    ``min_face`` (pixels) bounds the smallest face searched for (smaller: slower); ``thresholds``
    are the three stages' score cut-offs.
    """

    def __init__(self, min_face: int = 40, thresholds: Tuple[float, float, float] = (0.6, 0.7, 0.8),
                 factor: float = 0.709, folder: Optional[str] = None):
        super().__init__()
        folder = folder or weights_dir()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        for name in ("pnet", "rnet", "onet"):
            state = torch.load(os.path.join(folder, f"{name}.pt"), map_location="cpu", weights_only=True)
            getattr(self, name).load_state_dict(state)
        self.min_face, self.thresholds, self.factor = int(min_face), tuple(thresholds), float(factor)
        self.eval()

    @staticmethod
    def _prepare(image: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1) - 127.5) * 0.0078125

    def _stage1(self, img: torch.Tensor) -> torch.Tensor:
        _, h, w = img.shape
        scale = 12.0 / self.min_face
        side = min(h, w) * scale
        found = []
        while side >= 12:
            hs, ws = max(int(np.ceil(h * scale)), 12), max(int(np.ceil(w * scale)), 12)
            x = F.interpolate(img[None], size=(hs, ws), mode="area")
            prob, reg = self.pnet(x)
            prob, reg = prob[0], reg[0]
            ys, xs = torch.nonzero(prob >= self.thresholds[0], as_tuple=True)
            if ys.numel():
                cell = torch.stack([xs, ys, xs, ys], 1).float() * 2 + torch.tensor([0.0, 0.0, 12.0, 12.0])
                boxes = cell / scale
                b = torch.cat([boxes, prob[ys, xs, None], reg[:, ys, xs].T], 1)
                found.append(b[nms(b[:, :4], b[:, 4], 0.5)])
            scale *= self.factor
            side *= self.factor
        if not found:
            return torch.zeros(0, 9)
        b = torch.cat(found)
        b = b[nms(b[:, :4], b[:, 4], 0.7)]
        return torch.cat([_square(_regress(b[:, :4], b[:, 5:9])), b[:, 4:5]], 1)

    def _stage2(self, img: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        if cand.shape[0] == 0:
            return cand
        prob, reg = self.rnet(crop_resize(img, cand[:, :4], 24))
        keep = prob >= self.thresholds[1]
        b, prob, reg = cand[keep, :4], prob[keep], reg[keep]
        k = nms(b, prob, 0.7)
        return torch.cat([_square(_regress(b[k], reg[k])), prob[k, None]], 1)

    def _stage3(self, img: torch.Tensor, cand: torch.Tensor):
        if cand.shape[0] == 0:
            return cand, torch.zeros(0, 5, 2)
        prob, reg, pts = self.onet(crop_resize(img, cand[:, :4], 48))
        keep = prob >= self.thresholds[2]
        b, prob, reg, pts = cand[keep, :4], prob[keep], reg[keep], pts[keep]
        w, h = (b[:, 2] - b[:, 0])[:, None], (b[:, 3] - b[:, 1])[:, None]
        lm = torch.stack([b[:, 0:1] + pts[:, 0:5] * w, b[:, 1:2] + pts[:, 5:10] * h], -1)
        b = _regress(b, reg)
        k = nms(b, prob, 0.7, mode="min")
        return torch.cat([b[k], prob[k, None]], 1), lm[k]

    @torch.no_grad()
    def detect(self, image: np.ndarray) -> List[RawFace]:
        img = self._prepare(image)
        boxes, lms = self._stage3(img, self._stage2(img, self._stage1(img)))
        return [RawFace(b[:4].numpy().astype(np.float64), float(b[4]), lm.numpy().astype(np.float64))
                for b, lm in zip(boxes, lms)]

    @torch.no_grad()
    def refine(self, image: np.ndarray, boxes: np.ndarray) -> List[Optional[RawFace]]:
        """Track: re-run R-Net and O-Net on given (N, 4) boxes (e.g. last frame's, grown) instead of
        searching the whole image; None where the face is no longer there."""
        img = self._prepare(image)
        out: List[Optional[RawFace]] = []
        for box in np.asarray(boxes, dtype=np.float32).reshape(-1, 4):
            cand = torch.cat([_square(torch.from_numpy(box)[None]), torch.ones(1, 1)], 1)
            b, lm = self._stage3(img, self._stage2(img, cand))
            out.append(RawFace(b[0, :4].numpy().astype(np.float64), float(b[0, 4]), lm[0].numpy().astype(np.float64))
                       if b.shape[0] else None)
        return out
