"""Eye contact on video: per frame track the face, smooth its landmarks and pose over time, redirect
its gaze to the camera and paste it back; frames go through the model in batches.

- ``EyeContact(redirector)``: frame by frame (``process(frame)``: a webcam loop) or in batches
  (``process_batch(frames)``), keeping the tracking and smoothing state between calls;
- ``eye_contact_video(src, dst, eye_contact)``: a whole file through imageio-ffmpeg (whose wheel
  carries an ffmpeg binary), audio copied from the source, a progress bar and a per-stage
  latency table.

When the face is lost, or turns further than ``max_angle_deg`` from the camera, the original
eyes come back with a linear cross-fade over ``fade_frames`` frames (and fade in again when it
returns); a lost face is held at its last pose for those frames.
"""
from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import UserError
from . import geometry as geo
from .mtcnn import RawFace
from .pipeline import Face, GazeRedirector

STAGES = ("decode", "detect", "normalise", "redirect", "paste", "encode")


class VideoError(UserError):
    """A video that cannot be read or written."""


class OneEuroFilter:
    """Casiez et al. 2012's 1-euro filter on a vector: a low-pass whose cutoff rises with speed,
    so a still signal is smoothed hard and a moving one follows with little lag.

    ``min_cutoff`` (Hz) sets the smoothing at rest, ``beta`` (per unit of speed) how fast the
    cutoff opens, ``d_cutoff`` (Hz) the speed estimate's own low-pass.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        self.x: Optional[np.ndarray] = None
        self.dx: Optional[np.ndarray] = None
        self.t: Optional[float] = None

    @staticmethod
    def _alpha(cutoff, dt: float):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x, t: float, scale: float = 1.0) -> np.ndarray:
        """Filter sample ``x`` at time ``t`` seconds; ``scale`` divides the speed (e.g. the face size,
        so ``beta`` does not depend on how large the face is in pixels)."""
        x = np.asarray(x, dtype=np.float64)
        if self.x is None or self.t is None or t <= self.t:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = t - self.t
        dx = (x - self.x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        cutoff = self.min_cutoff + self.beta * np.abs(self.dx) / scale
        a = self._alpha(cutoff, dt)
        self.x = a * x + (1 - a) * self.x
        self.t = float(t)
        return self.x.copy()


def _iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(x1 - x0, 0) * max(y1 - y0, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class EyeContact:
    """Stateful eye-contact redirection of the main (largest, then tracked) face of a video.

    ``fps`` gives the filters their time step; ``detect_every`` frames a full detection runs
    (in between, the last box is re-checked by MTCNN's last two stages: tracking);
    ``smooth=False`` turns the 1-euro filters off. ``record=True`` keeps each frame's raw and
    smoothed landmarks in ``self.track_log`` (tests, plots).
    """

    def __init__(self, redirector: GazeRedirector, fps: float = 30.0, max_angle_deg: float = 35.0,
                 fade_frames: int = 5, detect_every: int = 15, smooth: bool = True, min_cutoff: float = 1.0,
                 beta: float = 0.5, record: bool = False):
        if fps <= 0 or not math.isfinite(fps):
            raise ValueError(f"fps must be positive, got {fps}")
        self.r = redirector
        self.fps, self.max_angle = float(fps), math.radians(max_angle_deg)
        self.fade_frames, self.detect_every, self.smooth = max(int(fade_frames), 1), max(int(detect_every), 1), smooth
        self.lm_filter = OneEuroFilter(min_cutoff, beta)
        self.pose_filter = OneEuroFilter(min_cutoff, beta)
        self.record = record
        self.times: Dict[str, float] = defaultdict(float)
        self.reset()

    def reset(self) -> None:
        self.frame_index = 0
        self.box: Optional[np.ndarray] = None
        self.last_pose = None
        self.held: Optional[Face] = None
        self.lost_for = 0
        self.weight = 0.0
        self.lm_filter.reset()
        self.pose_filter.reset()
        self.track_log: List[dict] = []
        self.weight_log: List[float] = []   # each frame's blend weight (0: original eyes)

    # ------------------------------------------------------------ tracking

    def _find(self, frame: np.ndarray) -> Optional[RawFace]:
        det = self.r.analyzer.detector
        if self.box is not None and self.frame_index % self.detect_every != 0:
            x0, y0, x1, y1 = self.box
            cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * 1.2
            found = det.refine(frame, np.array([[cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]]))[0]
            if found is not None:
                return found
        raws = det.detect(frame) if min(frame.shape[:2]) >= 12 else []
        if not raws:
            return None
        if self.box is not None:
            best = max(raws, key=lambda r: _iou(r.box, self.box))
            if _iou(best.box, self.box) > 0.3:
                return best
        self.lm_filter.reset()
        self.pose_filter.reset()
        self.last_pose = None
        return max(raws, key=lambda r: (r.box[2] - r.box[0]) * (r.box[3] - r.box[1]))

    def _track(self, frame: np.ndarray) -> Optional[Face]:
        h, w = frame.shape[:2]
        k = self.r.analyzer.intrinsics(w, h)
        raw = self._find(frame)
        t = self.frame_index / self.fps
        if raw is None:
            self.box, self.last_pose = None, None
            return None
        self.box = raw.box
        iod = float(np.linalg.norm(raw.landmarks[1] - raw.landmarks[0]))
        lm = raw.landmarks
        if self.smooth:
            lm = self.lm_filter(raw.landmarks.reshape(-1), t, scale=max(iod, 1.0)).reshape(5, 2)
        rot, trans, rms = (geo.solve_pnp(lm, k, init=self.last_pose) if self.last_pose is not None
                           else (None, None, math.inf))
        if rms > 0.05 * iod:   # no previous pose, or the warm start fell into another minimum
            rot, trans, rms = geo.solve_pnp(lm, k)
        self.last_pose = (rot, trans)
        if self.smooth:
            pose = self.pose_filter(np.concatenate([geo.rotvec(rot), trans / 100.0]), t)
            rot, trans = geo.rodrigues(pose[:3]), pose[3:] * 100.0
        if self.record:
            self.track_log.append({"frame": self.frame_index, "raw": raw.landmarks.copy(), "smoothed": lm.copy()})
        return self.r.analyzer.from_pose(raw, k, rot, trans, rms, lm)

    def _angle(self, face: Face) -> float:
        """Angle between the face's forward direction and its line of sight to the camera."""
        fwd = face.r_head @ np.array([0.0, 0.0, -1.0])
        return float(np.arccos(np.clip(fwd @ face.look_at_camera(), -1, 1)))

    # ------------------------------------------------------------ frames

    def process(self, frame: np.ndarray) -> np.ndarray:
        """One RGB uint8 (H, W, 3) frame in, the same with eye contact out (a webcam loop)."""
        return self.process_batch([frame])[0]

    def process_batch(self, frames: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Consecutive frames in, redirected copies out; the model runs once for all of them."""
        import torch
        jobs = []   # (index in batch, face, weight)
        for i, frame in enumerate(frames):
            t0 = time.perf_counter()
            face = self._track(frame)
            t1 = time.perf_counter()
            self.times["detect"] += t1 - t0
            if face is not None:
                self.held, self.lost_for = face, 0
                target = 1.0 if self._angle(face) <= self.max_angle else 0.0
            else:
                self.lost_for += 1
                face = self.held if self.lost_for <= self.fade_frames else None
                target = 0.0
            step = 1.0 / self.fade_frames
            self.weight = min(self.weight + step, target) if target > self.weight else max(self.weight - step, target)
            self.weight_log.append(self.weight)
            if face is not None and self.weight > 0:
                jobs.append((i, face, self.weight, self.r.normalize(frame, face)))
            self.frame_index += 1
            self.times["normalise"] += time.perf_counter() - t1
        outs = [np.array(f, copy=True) for f in frames]
        if jobs:
            t0 = time.perf_counter()
            gazes = [j[1].look_at_camera() for j in jobs]
            prompts = np.stack([self.r.prompt(j[1], g) for j, g in zip(jobs, gazes)])
            cams = torch.stack([self.r.camera(j[1]) for j in jobs])
            patches = torch.stack([j[3] for j in jobs])
            self.times["normalise"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            red = self.r.run_model(patches, prompts, cams)
            t1 = time.perf_counter()
            self.times["redirect"] += t1 - t0
            for (i, face, weight, _), o in zip(jobs, red):
                self.r.paste(outs[i], face, o, weight=weight)
            self.times["paste"] += time.perf_counter() - t1
        return outs


def latency_table(times: Dict[str, float], frames: int) -> str:
    frames = max(frames, 1)
    total = sum(times.get(s, 0.0) for s in STAGES)
    lines = [f"{'stage':<11}{'ms/frame':>10}{'share':>8}", "-" * 29]
    for s in STAGES:
        v = times.get(s, 0.0)
        lines.append(f"{s:<11}{v / frames * 1e3:>10.1f}{(v / total if total else 0) * 100:>7.0f}%")
    lines.append(f"{'total':<11}{total / frames * 1e3:>10.1f}   ({frames / total if total else 0:.2f} frames/s)")
    return "\n".join(lines)


def _ffmpeg():
    try:
        import imageio_ffmpeg
    except ImportError:
        raise VideoError("video needs imageio-ffmpeg (its wheel carries ffmpeg): pip install imageio-ffmpeg") from None
    return imageio_ffmpeg


def eye_contact_video(src: str, dst: str, eye_contact: EyeContact, batch: int = 8, progress: bool = True,
                      max_frames: Optional[int] = None, audio: bool = True, quality: float = 8) -> dict:
    """Redirect every frame of ``src`` to look at the camera and write ``dst`` (same size, frame rate
    and frame count; audio copied from ``src`` where it has some). Returns the statistics: frames,
    size, fps, seconds per stage (``times``), faces redirected, and ``table`` (the latency table)."""
    iio = _ffmpeg()
    from tqdm import tqdm
    if not os.path.isfile(src):
        raise VideoError(f"video {src!r} does not exist")
    folder = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(folder):
        raise VideoError(f"output folder {folder!r} does not exist")
    try:
        reader = iio.read_frames(src)
        meta = next(reader)
    except (RuntimeError, OSError, StopIteration) as e:
        why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise VideoError(f"cannot read video {src!r}: {why}") from None
    w, h = meta["size"]
    fps = float(meta.get("fps") or 30.0)
    eye_contact.fps = fps
    eye_contact.reset()
    times = eye_contact.times
    times.clear()
    has_audio = audio and bool(meta.get("audio_codec"))
    ext = os.path.splitext(dst)[1].lower()
    acodec = None
    if has_audio:
        mp4_ok = meta["audio_codec"] in ("aac", "mp3", "alac", "opus", "ac3", "eac3", "flac")
        acodec = "copy" if (mp4_ok or ext not in (".mp4", ".m4v", ".mov")) else "aac"
    writer = iio.write_frames(dst, (w, h), fps=fps, quality=quality, macro_block_size=1,
                              pix_fmt_out="yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p",
                              audio_path=src if has_audio else None, audio_codec=acodec,
                              output_params=["-fps_mode", "passthrough"])
    writer.send(None)
    total = int(round(meta.get("duration", 0) * fps)) or None
    n = 0
    bar = tqdm(total=total if max_frames is None else min(total or max_frames, max_frames), unit="frame",
               disable=not progress, desc="eye-contact")
    try:
        done = False
        while not done:
            chunk = []
            t0 = time.perf_counter()
            while len(chunk) < batch:
                if max_frames is not None and n + len(chunk) >= max_frames:
                    done = True
                    break
                try:
                    raw = next(reader)
                except StopIteration:
                    done = True
                    break
                chunk.append(np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3))
            times["decode"] += time.perf_counter() - t0
            if not chunk:
                break
            outs = eye_contact.process_batch(chunk)
            t0 = time.perf_counter()
            for o in outs:
                writer.send(np.ascontiguousarray(o))
            times["encode"] += time.perf_counter() - t0
            n += len(chunk)
            bar.update(len(chunk))
        t0 = time.perf_counter()
        writer.close()
        times["encode"] += time.perf_counter() - t0
    except (RuntimeError, OSError, BrokenPipeError) as e:
        raise VideoError(f"ffmpeg failed on {src!r} -> {dst!r}: {e}") from None
    finally:
        bar.close()
        reader.close()
    return {"frames": n, "size": [w, h], "fps": fps, "audio": bool(has_audio), "audio_codec": acodec,
            "times": {s: times.get(s, 0.0) for s in STAGES},
            "ms_per_frame": {s: times.get(s, 0.0) / max(n, 1) * 1e3 for s in STAGES},
            "table": latency_table(times, n)}
