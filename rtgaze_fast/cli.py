"""The command line: ``rtgaze-fast {redirect,eye-contact,demo,bench,eval,train,train-gaze}`` (also ``python -m rtgaze_fast``).

Each subcommand is a ``main(argv)`` in its own module; this file only dispatches, plus
``redirect`` (faces in a photo) and ``eye-contact`` (a video) over ``rtgaze_fast.face``. The
layering runs one way: this module imports the pipeline and the model, never the reverse.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import List, Optional

from .errors import UserError
from .face.photo import MAX_PIXELS  # noqa: F401 (re-exported)
from .model.weights import WeightsError, default_weights, load_weights  # noqa: F401 (re-exported)

CliError = UserError  # a user error: printed as one line, exit status 2, no traceback


def load_image(path: str, size: int):
    """An image file -> (1, 3, size, size) float tensor in [-1, 1] (resized; aspect not kept)."""
    import numpy as np
    import torch
    from PIL import Image
    from .face.photo import load_photo
    rgb = Image.fromarray(load_photo(path).rgb).resize((size, size), Image.BICUBIC)
    arr = torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy()).permute(2, 0, 1)
    return (arr / 127.5 - 1).unsqueeze(0)


def save_image(t, path: str) -> None:
    from .face.photo import save_photo
    save_photo(((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy(), path)


def _angle(name: str, value: float) -> float:
    if not math.isfinite(value) or abs(value) > 90:
        raise CliError(f"--{name} must be a finite angle within [-90, 90] degrees")
    return value


def _model_args(p, torch) -> None:
    from .model import CONFIGS, DEFAULT_CONFIG
    from .ops import BACKENDS
    p.add_argument("--config", choices=sorted(CONFIGS),
                   help=f"default: the one in --weights' metadata, else {DEFAULT_CONFIG} (the default embedded model)")
    p.add_argument("--weights", help="safetensors weights (default: the embedded ones for the config, if any)")
    p.add_argument("--prompt-frame", default="head", choices=("head", "normalized"),
                   help="the frame the weights' gaze prompt is in: 'head' for the embedded (synthetic) weights, "
                        "'normalized' for weights trained on ETH-XGaze labels")
    p.add_argument("--backend", default="auto", choices=[b for b in BACKENDS])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--focal", type=float, help="the camera's focal length in pixels (default: max(width, height))")
    p.add_argument("--min-face", type=int, default=40, help="smallest face searched for, pixels (default 40)")


def _load_model(args):
    from .model.weights import config_of, load_model
    args.config = args.config or config_of(args.weights)
    weights = args.weights or default_weights(args.config)
    model, path = load_model(args.config, weights, device=args.device, backend=args.backend, embedded=False)
    if path is None:
        print(f"WARNING: no weights for config {args.config!r} (pass --weights): the model is RANDOMLY "
              "initialised and its output is noise", file=sys.stderr)
    return model


def _redirector(args, model, **kw):
    from .face.mtcnn import FaceBackendMissing
    from .face.pipeline import GazeRedirector
    if args.focal is not None and not (math.isfinite(args.focal) and args.focal > 0):
        raise CliError("--focal must be a positive number of pixels")
    if args.min_face < 12:
        raise CliError("--min-face must be at least 12 pixels")
    try:
        return GazeRedirector(model, prompt_frame=args.prompt_frame, focal=args.focal, min_face=args.min_face, **kw)
    except FaceBackendMissing as e:
        raise CliError(str(e)) from None


def redirect_main(argv: Optional[List[str]] = None) -> int:
    import torch
    p = argparse.ArgumentParser(
        prog="rtgaze-fast redirect",
        description="Redirect the gaze of the faces in a photo. Finds the faces (MTCNN), estimates head pose, "
                    "normalises each face (ETH-XGaze), redirects it, warps it back and blends it inside an eye "
                    "mask: the output has the input's size and every pixel outside the mask is unchanged. Angles "
                    "are in DEGREES, ETH-XGaze convention (pitch up, yaw; 0 0 looks along the camera's axis) in "
                    "the camera's frame. --aligned: the input is already a face crop (the model's own framing): "
                    "resize it, render it from --view-pitch/--view-yaw and write the model's output as is.")
    p.add_argument("image", help="input photo (any format Pillow reads; EXIF orientation honoured)")
    p.add_argument("-o", "--output", required=True, help="output image (PNG, JPEG, ...)")
    p.add_argument("--look-at-camera", action="store_true", help="turn the eyes to the camera")
    p.add_argument("--pitch", type=float, help="target gaze pitch, degrees (camera frame; model frame with --aligned)")
    p.add_argument("--yaw", type=float, help="target gaze yaw, degrees")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--face", type=int, default=0, help="which face, largest first (default 0)")
    which.add_argument("--all-faces", action="store_true", help="redirect every face found")
    p.add_argument("--mask", default="eyes", choices=("eyes", "face"), help="blend region (default: eyes)")
    p.add_argument("--debug", help="also write this image: boxes, landmarks, head-pose axes, mask outline")
    p.add_argument("--aligned", action="store_true", help="the input is an aligned face crop (no detection)")
    p.add_argument("--view-pitch", type=float, default=0.0, help="--aligned: camera pitch from frontal, degrees")
    p.add_argument("--view-yaw", type=float, default=0.0, help="--aligned: camera yaw from frontal, degrees")
    _model_args(p, torch)
    args = p.parse_args(argv)
    if args.look_at_camera and (args.pitch is not None or args.yaw is not None):
        raise CliError("--look-at-camera and --pitch/--yaw exclude each other")
    if not args.look_at_camera and (args.pitch is None or args.yaw is None):
        raise CliError("give --pitch and --yaw (degrees), or --look-at-camera")
    for name in ("pitch", "yaw", "view_pitch", "view_yaw"):
        if getattr(args, name) is not None:
            _angle(name.replace("_", "-"), getattr(args, name))
    if args.aligned:
        return _redirect_aligned(args)
    from .face.photo import load_photo, save_photo
    photo = load_photo(args.image)   # before the model: a bad file fails fast
    model = _load_model(args)
    red = _redirector(args, model, mask=args.mask)
    gaze = "camera" if args.look_at_camera else (math.radians(args.pitch), math.radians(args.yaw))
    from .face.pipeline import NoFaceError, draw_debug
    try:
        res = red(photo.rgb, gaze, "all" if args.all_faces else args.face)
    except NoFaceError as e:
        raise CliError(f"{args.image!r}: {e} (faces smaller than --min-face {args.min_face} px are not "
                       "searched for)") from None
    save_photo(res.image, args.output, photo.alpha)
    if args.debug:
        save_photo(draw_debug(res.image, res.all_faces, res.mask), args.debug)
    h, w = res.image.shape[:2]
    for f, g in zip(res.faces, res.prompts):
        hp = [round(math.degrees(a)) for a in f.head_pose]
        prompt = [round(math.degrees(a), 1) for a in g]
        print(f"face at {[int(v) for v in f.box]}: head pose (pitch, yaw) {hp} deg, prompt {prompt} "
              f"deg ({args.prompt_frame} frame)")
    print(f"wrote {args.output} ({w}x{h}, {len(res.faces)} of {len(res.all_faces)} face(s) redirected, "
          f"{int((res.mask > 0).sum())} pixels changed at most, backend {model.renderer.backend!r})")
    return 0


def _redirect_aligned(args) -> int:
    import torch
    from .camera import frontal_camera
    if args.look_at_camera:
        args.pitch = args.yaw = 0.0
    model = _load_model(args)
    device = torch.device(args.device)
    image = load_image(args.image, model.config.image_size).to(device)
    gaze = torch.tensor([[math.radians(args.pitch), math.radians(args.yaw)]], device=device)
    camera = frontal_camera(1, device=device, yaw=math.radians(args.view_yaw), pitch=math.radians(args.view_pitch))
    out = model.redirect(image, gaze, camera)
    save_image(out[0], args.output)
    print(f"wrote {args.output} ({out.shape[-1]}x{out.shape[-2]}, backend {model.renderer.backend!r})")
    return 0


def eye_contact_main(argv: Optional[List[str]] = None) -> int:
    import json
    import torch
    p = argparse.ArgumentParser(
        prog="rtgaze-fast eye-contact",
        description="Make the main face of a video look at the camera: per frame track the face, smooth its "
                    "landmarks and pose (1-euro filters), normalise, redirect (frames batched through the model), "
                    "warp back and blend; the original eyes return, cross-faded, when the face is lost or turns "
                    "past --max-angle. Audio is copied. Prints a per-stage latency table.")
    p.add_argument("video", help="input video (anything ffmpeg reads)")
    p.add_argument("-o", "--output", required=True, help="output video (e.g. .mp4)")
    p.add_argument("--batch", type=int, default=8, help="frames per model batch (default 8)")
    p.add_argument("--max-angle", type=float, default=35.0, help="keep the original eyes past this head angle, degrees")
    p.add_argument("--fade", type=int, default=5, help="cross-fade length, frames (default 5)")
    p.add_argument("--detect-every", type=int, default=15, help="full detection every N frames, tracking between")
    p.add_argument("--no-smooth", action="store_true", help="no temporal smoothing of landmarks and pose")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--no-audio", action="store_true", help="do not copy the audio")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", help="write the statistics (frames, per-stage seconds) here")
    _model_args(p, torch)
    args = p.parse_args(argv)
    if min(args.batch, args.fade, args.detect_every, 1 if args.max_frames is None else args.max_frames) < 1:
        raise CliError("--batch, --fade, --detect-every and --max-frames must be positive")
    if not (math.isfinite(args.max_angle) and 0 < args.max_angle <= 90):
        raise CliError("--max-angle must be in (0, 90] degrees")
    from .face.video import EyeContact, _ffmpeg, eye_contact_video
    _ffmpeg()
    if not os.path.isfile(args.video):
        raise CliError(f"video {args.video!r} does not exist")
    model = _load_model(args)
    red = _redirector(args, model, batch=args.batch)
    ec = EyeContact(red, max_angle_deg=args.max_angle, fade_frames=args.fade, detect_every=args.detect_every,
                    smooth=not args.no_smooth)
    stats = eye_contact_video(args.video, args.output, ec, batch=args.batch, progress=not args.no_progress,
                              max_frames=args.max_frames, audio=not args.no_audio)
    print(stats["table"])
    print(f"wrote {args.output} ({stats['frames']} frames, {stats['size'][0]}x{stats['size'][1]}, "
          f"{stats['fps']:g} fps, audio {'copied' if stats['audio'] else 'none'})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: v for k, v in stats.items() if k != "table"}, f, indent=1)
    return 0


def _demo(argv):
    from .demo import main
    return main(argv)


def _bench(argv):
    from .bench import main
    return main(argv)


def _eval(argv):
    from .evaluation import main
    return main(argv)


def _train(argv):
    from .train.recipe import main
    return main(argv)


def _train_gaze(argv):
    from .gaze_estimator import main
    return main(argv)


SUBCOMMANDS = {
    "redirect": (redirect_main, "redirect the gaze of the faces in a photo (pasted back into it)"),
    "eye-contact": (eye_contact_main, "make the face in a video look at the camera"),
    "demo": (_demo, "the main job: render the built-in scene with every backend, then benchmark"),
    "bench": (_bench, "side-by-side renderer benchmark: table, JSON and plot"),
    "eval": (_eval, "gaze-redirection quality on held-out faces (synthetic or ETH-XGaze) vs the identity baseline"),
    "train": (_train, "train RTGaze on synthetic data or ETH-XGaze; several GPUs under torchrun"),
    "train-gaze": (_train_gaze, "train the ResNet gaze estimator that scores redirection on real faces"),
}


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        lines = [f"  {name:<12} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
        print("usage: rtgaze-fast {" + ",".join(SUBCOMMANDS) + "} ...\n\n" + "\n".join(lines))
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        return SUBCOMMANDS[argv[0]][0](argv[1:])
    except UserError as e:
        print(f"rtgaze-fast: error: {e}", file=sys.stderr)
        return 2
