"""Per-stage latency of the eye-contact pipeline per 640x480 frame (issue #17).

Writes a 640x480 video of a real photo (scikit-image's astronaut, moving sideways) with audio,
runs ``eye_contact_video`` on it with the embedded tiny weights, and records the per-stage
milliseconds per frame (decode, detect, normalise, redirect, paste, encode) with the machine,
torch threads and settings. Also times one ``redirect`` of the photo itself.

    PYTHONPATH=. python benchmarks/face_latency.py --frames 48 --threads 1 2 \
        --out benchmarks/results/face_latency_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time

import numpy as np
import torch
from PIL import Image


def make_video(path: str, frames: int, fps: int = 25) -> None:
    import imageio_ffmpeg as iio
    import skimage.data
    img = Image.open(os.path.join(os.path.dirname(skimage.data.__file__), "astronaut.png")).convert("RGB")
    tmp = path + ".v.mp4"
    w = iio.write_frames(tmp, (640, 480), fps=fps, macro_block_size=1, quality=8)
    w.send(None)
    for i in range(frames):
        canvas = Image.new("RGB", (640, 480), (40, 60, 80))
        canvas.paste(img, (64 + int(30 * np.sin(i / 10)), -20))
        w.send(np.asarray(canvas))
    w.close()
    subprocess.run([iio.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", tmp, "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=44100", "-shortest", "-c:v", "copy", "-c:a", "aac", path],
                   check=True)
    os.remove(tmp)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="out/face_latency.json")
    args = p.parse_args()
    from rtgaze_fast.face.pipeline import GazeRedirector
    from rtgaze_fast.face.video import EyeContact, eye_contact_video
    from rtgaze_fast.model.weights import load_model
    runs = []
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "in.mp4")
        make_video(src, args.frames)
        for threads in args.threads:
            torch.set_num_threads(threads)
            model, weights = load_model("tiny", device=args.device)
            red = GazeRedirector(model, batch=args.batch)
            photo = np.asarray(Image.open(os.path.join(os.path.dirname(__import__("skimage.data").data.__file__),
                                                       "astronaut.png")).convert("RGB"))
            red(photo, "camera")  # warm up
            t0 = time.perf_counter()
            red(photo, "camera")
            photo_s = time.perf_counter() - t0
            stats = eye_contact_video(src, os.path.join(d, "out.mp4"), EyeContact(red), batch=args.batch,
                                      progress=False)
            print(f"torch threads {threads}: one 512x512 photo {photo_s * 1e3:.0f} ms; video per 640x480 frame:")
            print(stats["table"])
            runs.append({"torch_threads": threads, "photo_512_seconds": photo_s,
                         **{k: v for k, v in stats.items() if k != "table"}, "table": stats["table"].splitlines()})
    result = {"what": "eye-contact pipeline, per 640x480 frame, embedded tiny weights, batch "
                      f"{args.batch}, full detection every 15 frames with tracking between",
              "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
              "cpu": cpu_name(), "cores": os.cpu_count(),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "note": "shared 2-core machine with other jobs running: timings are noisy upper bounds",
              "runs": runs}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
