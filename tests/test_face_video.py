"""Eye-contact video (issue #17): a short video written here goes through ``rtgaze-fast eye-contact``:
same frame count and size out, audio kept; the 1-euro filter and the tracker's smoothing reduce
landmark jitter; the cross-fade when the face goes away."""
import json
import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from rtgaze_fast.cli import main
from rtgaze_fast.face.pipeline import GazeRedirector
from rtgaze_fast.face.video import EyeContact, OneEuroFilter
from rtgaze_fast.model.weights import load_model

iio = pytest.importorskip("imageio_ffmpeg")
skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def face_frame():
    img = Image.open(os.path.join(os.path.dirname(skimage_data.__file__), "astronaut.png")).convert("RGB")
    canvas = Image.new("RGB", (320, 240), (40, 60, 80))
    canvas.paste(img.resize((300, 300)), (10, 0))
    return np.asarray(canvas)


def write_video(path, frames, fps=25, audio=False):
    h, w = frames[0].shape[:2]
    target = path if not audio else str(path) + ".noaudio.mp4"
    wr = iio.write_frames(str(target), (w, h), fps=fps, macro_block_size=1, quality=9)
    wr.send(None)
    for f in frames:
        wr.send(np.ascontiguousarray(f))
    wr.close()
    if audio:
        subprocess.run([iio.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", target, "-f", "lavfi", "-i",
                        "sine=frequency=440:sample_rate=22050", "-shortest", "-c:v", "copy", "-c:a", "aac", str(path)],
                       check=True)


def read_video(path):
    gen = iio.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    return meta, [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen]


@pytest.mark.parametrize("audio", [True, False])
def test_eye_contact_cli_keeps_frames_size_and_audio(tmp_path, face_frame, audio, capsys):
    frames = [np.roll(face_frame, (i % 4) - 2, axis=1) for i in range(12)]
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    write_video(src, frames, audio=audio)
    argv = ["eye-contact", str(src), "-o", str(dst), "--batch", "4", "--min-face", "30", "--no-progress",
            "--json", str(tmp_path / "stats.json")]
    assert main(argv) == 0
    meta_in, _ = read_video(src)
    meta, out = read_video(dst)
    assert len(out) == len(frames) and meta["size"] == (320, 240) and meta["fps"] == meta_in["fps"]
    assert bool(meta.get("audio_codec")) == audio
    table = capsys.readouterr().out
    for stage in ("decode", "detect", "normalise", "redirect", "paste", "encode"):
        assert stage in table
    stats = json.load(open(tmp_path / "stats.json"))
    assert stats["frames"] == 12 and stats["audio"] == audio
    # the eyes changed once faded in, the far corners did not (beyond the codec's noise)
    assert np.abs(out[-1].astype(int) - frames[-1]).max() > 40
    assert np.abs(out[-1][:30, -60:].astype(int) - frames[-1][:30, -60:]).mean() < 3


def test_eye_contact_refusals(tmp_path, capsys):
    assert main(["eye-contact", str(tmp_path / "none.mp4"), "-o", str(tmp_path / "o.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    assert main(["eye-contact", str(tmp_path / "bad.mp4"), "-o", str(tmp_path / "o.mp4"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot read video" in err and "Traceback" not in err


def test_one_euro_filter_reduces_jitter():
    rng = np.random.default_rng(0)
    t = np.arange(120) / 30
    truth = np.stack([100 + 20 * np.sin(t), 80 + 10 * np.cos(0.5 * t)], 1)
    noisy = truth + rng.normal(0, 1.5, truth.shape)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    smooth = np.stack([f(x, ti) for x, ti in zip(noisy, t)])
    err_raw = np.abs(noisy[10:] - truth[10:]).mean()
    err_smooth = np.abs(smooth[10:] - truth[10:]).mean()
    assert err_smooth < 0.6 * err_raw
    assert np.abs(np.diff(smooth[10:], axis=0)).mean() < 0.3 * np.abs(np.diff(noisy[10:], axis=0)).mean()


@pytest.fixture(scope="module")
def redirector():
    return GazeRedirector(load_model("tiny")[0], min_face=30)


def test_tracker_smoothing_reduces_landmark_jitter(redirector, face_frame):
    """A still face under per-frame sensor noise: the detector's landmarks jitter, the smoothed ones less."""
    rng = np.random.default_rng(1)
    frames = [np.clip(face_frame + rng.normal(0, 8, face_frame.shape), 0, 255).astype(np.uint8) for _ in range(16)]
    ec = EyeContact(redirector, fps=25, record=True, detect_every=4)
    ec.process_batch(frames)
    raw = np.stack([r["raw"] for r in ec.track_log])
    smooth = np.stack([r["smoothed"] for r in ec.track_log])
    jitter_raw = np.abs(np.diff(raw, axis=0)).mean()
    jitter_smooth = np.abs(np.diff(smooth, axis=0)).mean()
    assert len(ec.track_log) == 16
    assert jitter_smooth < 0.5 * jitter_raw, (jitter_raw, jitter_smooth)


def test_cross_fade_when_the_face_goes(redirector, face_frame):
    blank = np.full_like(face_frame, 70)
    frames = [face_frame] * 6 + [blank] * 6
    ec = EyeContact(redirector, fps=25, fade_frames=3)
    outs = ec.process_batch(frames)
    w = ec.weight_log
    assert w[:4] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])        # fades in
    assert w[6:9] == pytest.approx([2 / 3, 1 / 3, 0.0]) and w[-1] == 0   # fades out when lost
    for o, f in zip(outs[9:], frames[9:]):
        assert np.array_equal(o, f)                                   # then the frames are untouched
    # turned past the angle limit: the original eyes stay
    ec = EyeContact(redirector, fps=25, fade_frames=2, max_angle_deg=0.5)
    outs = ec.process_batch([face_frame] * 3)
    assert ec.weight_log == [0, 0, 0] and all(np.array_equal(o, face_frame) for o in outs)
