"""The command line: ``rtgaze-fast {redirect,demo,bench,eval,train}`` (also ``python -m rtgaze_fast``).

Each subcommand is a ``main(argv)`` in its own module; this file only dispatches, plus
``redirect``, the user-facing gaze redirection of one image.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import List, Optional

MAX_PIXELS = 40_000_000  # refuse larger images (decompression bombs) before decoding them


class CliError(Exception):
    """A user error: printed as one line, exit status 2, no traceback."""


def load_image(path: str, size: int):
    """An RGB image file -> (1, 3, size, size) float tensor in [-1, 1] (resized; aspect not kept)."""
    import numpy as np
    import torch
    from PIL import Image
    if not os.path.isfile(path):
        raise CliError(f"image {path!r} does not exist")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise CliError(f"image {path!r} is {img.width}x{img.height}, over the {MAX_PIXELS} pixel limit")
            img.load()
            rgb = img.convert("RGB").resize((size, size), Image.BICUBIC)
    except CliError:
        raise
    except Image.DecompressionBombError as e:
        raise CliError(f"image {path!r} refused as a decompression bomb: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:  # not an image, truncated, corrupt
        raise CliError(f"cannot read image {path!r}: {e}") from None
    arr = torch.from_numpy(np.asarray(rgb, dtype=np.float32)).permute(2, 0, 1)
    return (arr / 127.5 - 1).unsqueeze(0)


def save_image(t, path: str) -> None:
    from PIL import Image
    arr = ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr).save(path)


def load_weights(model, path: str) -> None:
    """Load a safetensors state dict; name missing/unexpected keys and shape mismatches."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    if not os.path.isfile(path):
        raise CliError(f"weights file {path!r} does not exist")
    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CliError(f"cannot read weights {path!r} (expected a safetensors file): {e}") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"wrong shapes {shapes[:3]}")
        raise CliError(f"weights {path!r} do not match config {model.config.name!r}: " + "; ".join(parts))
    model.load_state_dict(state)


def default_weights(config: str) -> Optional[str]:
    path = os.path.join(os.path.dirname(__file__), "assets", f"rtgaze_{config}.safetensors")
    return path if os.path.isfile(path) else None


def redirect_main(argv: Optional[List[str]] = None) -> int:
    import torch
    from .camera import frontal_camera
    from .model import CONFIGS, RTGaze
    from .ops import BACKENDS
    p = argparse.ArgumentParser(
        prog="rtgaze-fast redirect",
        description="Redirect the gaze of a face image. Angles are in DEGREES on the command line "
                    "(ETH-XGaze convention: pitch up, yaw; 0 0 looks into the camera). The image is "
                    "resized to the model's input size (aspect ratio not kept).")
    p.add_argument("image", help="input face image (any format Pillow reads)")
    p.add_argument("--pitch", type=float, required=True, help="target gaze pitch, degrees")
    p.add_argument("--yaw", type=float, required=True, help="target gaze yaw, degrees")
    p.add_argument("--view-pitch", type=float, default=0.0, help="camera pitch from frontal, degrees")
    p.add_argument("--view-yaw", type=float, default=0.0, help="camera yaw from frontal, degrees")
    p.add_argument("--config", default="tiny", choices=sorted(CONFIGS))
    p.add_argument("--weights", help="safetensors weights (default: the embedded ones for the config, if any)")
    p.add_argument("--backend", default="auto", choices=[b for b in BACKENDS])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("-o", "--output", required=True, help="output PNG")
    args = p.parse_args(argv)
    for name in ("pitch", "yaw", "view_pitch", "view_yaw"):
        if not math.isfinite(getattr(args, name)) or abs(getattr(args, name)) > 90:
            raise CliError(f"--{name.replace('_', '-')} must be a finite angle within [-90, 90] degrees")
    model = RTGaze(args.config, backend=args.backend, deterministic=True)
    weights = args.weights or default_weights(args.config)
    if weights:
        load_weights(model, weights)
    else:
        print(f"WARNING: no weights for config {args.config!r} (pass --weights): the model is RANDOMLY "
              "initialised and its output is noise", file=sys.stderr)
    device = torch.device(args.device)
    model = model.to(device).eval()
    image = load_image(args.image, model.config.image_size).to(device)
    gaze = torch.tensor([[math.radians(args.pitch), math.radians(args.yaw)]], device=device)
    camera = frontal_camera(1, device=device, yaw=math.radians(args.view_yaw), pitch=math.radians(args.view_pitch))
    out = model.redirect(image, gaze, camera)
    save_image(out[0], args.output)
    print(f"wrote {args.output} ({out.shape[-1]}x{out.shape[-2]}, backend {model.renderer.backend!r})")
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
    "redirect": (redirect_main, "redirect the gaze of a face image"),
    "demo": (_demo, "the main job: render the built-in scene with every backend, then benchmark"),
    "bench": (_bench, "side-by-side renderer benchmark: table, JSON and plot"),
    "eval": (_eval, "gaze-redirection quality on held-out faces (synthetic or ETH-XGaze) vs the identity baseline"),
    "train": (_train, "train RTGaze on synthetic data or ETH-XGaze; several GPUs under torchrun"),
    "train-gaze": (_train_gaze, "train the ResNet gaze estimator that scores redirection on real faces"),
}


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        lines = [f"  {name:<9} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
        print("usage: rtgaze-fast {" + ",".join(SUBCOMMANDS) + "} ...\n\n" + "\n".join(lines))
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        return SUBCOMMANDS[argv[0]][0](argv[1:])
    except CliError as e:
        print(f"rtgaze-fast: error: {e}", file=sys.stderr)
        return 2
