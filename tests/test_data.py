"""The ETH-XGaze reader reads what the tests write (issue #3)."""
import h5py
import numpy as np
import pytest
import torch

from rtgaze_fast.data import ETHXGazePairs, eye_mask
from rtgaze_fast.data.ethxgaze import FIXED_EYE_REGION


def write_subject(path, frames=2, cams=3, size=32, landmarks=True, indices=True):
    rng = np.random.default_rng(0)
    n = frames * cams
    with h5py.File(path, "w") as f:
        patch = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        patch[0, :, :] = (255, 0, 0)   # image 0 is pure blue in BGR
        f["face_patch"] = patch
        f["face_gaze"] = rng.uniform(-0.5, 0.5, (n, 2)).astype(np.float32)
        f["face_head_pose"] = rng.uniform(-0.3, 0.3, (n, 2)).astype(np.float32)
        if indices:
            f["frame_index"] = np.repeat(np.arange(frames), cams)[:, None]
            f["cam_index"] = np.tile(np.arange(cams), frames)[:, None]
        if landmarks:
            lm = np.zeros((n, 68, 2), np.float32)
            lm[:, 36:48] = [[8, 10], [24, 14]] * 6
            f["facial_landmarks"] = lm
    return path


def test_reads_pairs_images_and_labels(tmp_path):
    path = write_subject(str(tmp_path / "subject0000.h5"))
    ds = ETHXGazePairs([path], image_size=16, target_size=8)
    # 2 frames x (3 cams: 6 ordered pairs) + 3 cams x (2 frames: 2 ordered pairs)
    assert len(ds) == 2 * 6 + 3 * 2
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and item["target"].shape == (3, 8, 8)
    assert item["camera"].shape == (25,) and item["eye_mask"].shape == (1, 8, 8)
    fi, a, b = ds.pairs[0]
    with h5py.File(path) as f:
        assert torch.allclose(item["gaze_target"], torch.from_numpy(f["face_gaze"][b]))
    blue = [i for i, (_, a, _) in enumerate(ds.pairs) if a == 0][0]
    img = ds[blue]["image"]
    assert torch.allclose(img[2], torch.ones(16, 16)) and torch.allclose(img[0], -torch.ones(16, 16))  # BGR -> RGB


def test_pairs_without_indices_and_fixed_mask(tmp_path):
    path = write_subject(str(tmp_path / "s.h5"), frames=1, cams=3, landmarks=False, indices=False)
    ds = ETHXGazePairs([path], image_size=16, target_size=20)
    assert len(ds) == 6
    m = ds[0]["eye_mask"][0]
    x0, y0, x1, y1 = FIXED_EYE_REGION
    assert m[int(0.4 * 20), int(0.5 * 20)] == 1 and m[int(0.9 * 20), int(0.5 * 20)] == 0


def test_landmark_mask_covers_the_eye_points():
    lm = np.zeros((68, 2), np.float32)
    lm[36:48] = [[8, 10], [24, 14]] * 6
    m = eye_mask(32, lm, 32)[0]
    assert m[12, 16] == 1 and m[28, 16] == 0 and m[12, 1] == 0


def test_refuses_missing_files_and_keys(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        ETHXGazePairs([str(tmp_path / "nope.h5")])
    bad = str(tmp_path / "bad.h5")
    with h5py.File(bad, "w") as f:
        f["face_patch"] = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(KeyError, match="face_gaze"):
        ETHXGazePairs([bad])
