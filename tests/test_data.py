"""The ETH-XGaze reader against files in the released layout (issues #3, #18).

The files come from ``rtgaze_fast.data.xgaze_fixture``: a simulated multi-camera capture (rolled
cameras, head roll, missed detections) normalised as the dataset was, which also returns the
ground truth the stored labels hide (the head-frame gaze, the normalised head rotation)."""
import json
import os

import h5py
import numpy as np
import pytest
import torch

from rtgaze_fast.camera import frontal_camera
from rtgaze_fast.data import ETHXGazeImages, ETHXGazePairs, eye_mask
from rtgaze_fast.data.ethxgaze import (EYE_CENTRES_MM, FIXED_EYE_REGION, NORM_DISTANCE, NORM_FOCAL, XGazeIndex,
                                       _project, camera_frame_gaze, camera_from_head_pose, eye_mask_from_head_pose,
                                       head_frame_gaze, head_pose_of_camera, head_rotation, held_out, read_split,
                                       split_files, subject_id)
from rtgaze_fast.data.synthetic import head_pose_of_camera as synthetic_head_pose
from rtgaze_fast.data.synthetic import head_to_camera_gaze
from rtgaze_fast.data.xgaze_fixture import patterns, simulate, write_dataset, write_subject
from rtgaze_fast.train.distributed import GlobalBatchSampler

RELEASED_KEYS = {"face_patch", "face_gaze", "face_head_pose", "face_mat_norm", "frame_index", "cam_index"}


@pytest.fixture(scope="module")
def xgaze(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("xgaze"))
    write_dataset(d, train=(0, 3, 4, 7), test=(1,), n_frames=5, n_cams=4, drop=0.15)
    return d


def test_fixture_files_have_the_released_layout(xgaze):
    split = json.load(open(os.path.join(xgaze, "train_test_split.json")))
    assert split["train"] == ["subject0000.h5", "subject0003.h5", "subject0004.h5", "subject0007.h5"]
    with h5py.File(os.path.join(xgaze, "train", "subject0000.h5")) as f:
        n = f["face_patch"].shape[0]
        assert set(f.keys()) == RELEASED_KEYS
        assert f["face_patch"].shape == (n, 224, 224, 3) and f["face_patch"].dtype == np.uint8
        assert f["face_patch"].compression == "lzf" and f["face_patch"].chunks == (1, 224, 224, 3)
        for k, shape in (("face_gaze", (n, 2)), ("face_head_pose", (n, 2)), ("face_mat_norm", (n, 3, 3))):
            assert f[k].shape == shape and f[k].dtype == np.float64, k
        for k in ("frame_index", "cam_index"):
            assert f[k].shape == (n, 1) and f[k].dtype == np.int64, k
        frames = f["frame_index"][:, 0]
        assert np.all(np.diff(frames) >= 0)            # frame-major rows
        mats = f["face_mat_norm"][()]
        assert np.allclose(mats @ mats.transpose(0, 2, 1), np.eye(3), atol=1e-12)
    with h5py.File(os.path.join(xgaze, "test", "subject0001.h5")) as f:
        assert set(f.keys()) == RELEASED_KEYS - {"face_gaze"}   # the test split's labels are withheld


def test_head_frame_gaze_recovers_the_true_gaze_for_every_camera():
    rows = simulate(n_frames=30, n_cams=12, seed=5)     # cameras up to 60 deg off, some upside down
    truth = torch.from_numpy(rows["gaze_head"])
    got = head_frame_gaze(rows["face_gaze"], rows["face_head_pose"])
    assert (got - truth).abs().max() < 1e-9
    # ... so every camera of a frame gives the same gaze, unlike the stored camera-frame labels.
    for fr in np.unique(rows["frame_index"]):
        sel = rows["frame_index"] == fr
        assert float(got[sel].std(0).max()) < 1e-9 and rows["face_gaze"][sel].std(0).max() > 0.05
    assert (head_rotation(rows["face_head_pose"]) - torch.from_numpy(rows["head_rot_norm"])).abs().max() < 1e-9
    back = camera_frame_gaze(got, rows["face_head_pose"])
    assert (back - torch.from_numpy(rows["face_gaze"])).abs().max() < 1e-9


def test_camera_label_sees_the_canonical_head_as_the_normalised_camera_sees_the_subject():
    rows = simulate(n_frames=10, n_cams=9, seed=2)
    cams = camera_from_head_pose(rows["face_head_pose"])
    assert cams.shape == (len(cams), 25) and cams.dtype == torch.float32
    hp = torch.from_numpy(rows["face_head_pose"])
    assert (head_pose_of_camera(cams) - hp).abs().max() < 1e-6
    for g, cam, label in zip(rows["gaze_head"], cams, rows["face_gaze"]):
        # the package's own head -> camera conversion of the true gaze gives the stored label
        back = head_to_camera_gaze(torch.from_numpy(g).float(), cam)
        assert (back - torch.from_numpy(label).float()).abs().max() < 2e-6
        assert (synthetic_head_pose(cam).double() - head_pose_of_camera(cam)).abs().max() < 1e-6
    # the camera sits on FFHQ's sphere and looks at FFHQ's look-at point
    pos = cams[:, :16].reshape(-1, 4, 4)[:, :3, 3]
    assert torch.allclose(pos.norm(dim=1), torch.full((len(cams),), 2.7), atol=1e-5)


@pytest.mark.parametrize("convention", ["xgaze", "lookat"])
def test_head_pose_round_trips_over_a_grid(convention):
    p, y = torch.meshgrid(torch.linspace(-0.8, 0.8, 9), torch.linspace(-1.2, 1.2, 13), indexing="ij")
    hp = torch.stack([p.flatten(), y.flatten()], -1).double()
    assert (head_pose_of_camera(camera_from_head_pose(hp, convention)) - hp).abs().max() < 1e-6


def test_lookat_convention_inverts_the_packages_cameras_over_a_grid():
    yaw, pitch = torch.meshgrid(torch.linspace(-1.0, 1.0, 11), torch.linspace(-0.6, 0.6, 7), indexing="ij")
    cams = frontal_camera(yaw.numel(), yaw=yaw.flatten(), pitch=pitch.flatten())
    back = camera_from_head_pose(head_pose_of_camera(cams), "lookat")
    assert (back - cams).abs().max() < 2e-5
    # The two conventions differ only by where the camera sits around the face's forward axis:
    # equal when pitch or yaw is 0.
    axis = torch.tensor([[0.0, 0.5], [0.4, 0.0], [-0.3, 0.0], [0.0, -0.9]], dtype=torch.float64)
    assert (camera_from_head_pose(axis, "xgaze") - camera_from_head_pose(axis, "lookat")).abs().max() < 1e-5


def test_the_issues_two_examples():
    # A camera at yaw 0.3 (the old reader mapped it 1.66 off); pitch 0.2 is head pitch 0.138 in
    # EG3D's sampler (arccos mapping), and comes back to the same camera.
    for cam in (frontal_camera(yaw=0.3), frontal_camera(pitch=0.2)):
        hp = head_pose_of_camera(cam)
        assert (camera_from_head_pose(hp, "lookat") - cam).abs().max() < 1e-5
    assert float(head_pose_of_camera(frontal_camera(pitch=0.2))[0, 0]) == pytest.approx(0.138, abs=1e-3)
    # a head turned to positive yaw (facing camera -x) is seen by a camera at positive world x
    assert float(camera_from_head_pose(torch.tensor([0.0, 0.3]))[3]) > 0


def test_bgr_patches_become_rgb(tmp_path):
    rows = simulate(n_frames=2, n_cams=2, seed=0)
    rgb = patterns(4, 224)
    rgb[0] = (0, 0, 255)                                        # pure blue in RGB
    path = write_subject(str(tmp_path / "subject0009.h5"), rgb, rows)
    with h5py.File(path) as f:
        assert tuple(f["face_patch"][0, 0, 0]) == (255, 0, 0)  # stored BGR
    img = ETHXGazeImages([path], image_size=16)[0]["image"]
    assert torch.allclose(img[2], torch.ones(16, 16)) and torch.allclose(img[0], -torch.ones(16, 16))


def test_pairs_are_lazy_seeded_and_follow_the_rules(xgaze):
    files = split_files(xgaze, "train", val_subjects=0)
    ds = ETHXGazePairs(files, image_size=32, target_size=16, seed=3, novel_fraction=0.5)
    ix = ds.index
    n = len(ix)
    big = [k for k, v in vars(ix).items() if isinstance(v, np.ndarray) and v.size > 9 * n]
    assert not big, big                                  # O(images): nothing holds pairs
    kinds = []
    for epoch in (0, 1):
        for i in range(len(ds)):
            src, tgt, novel = ds.pair(epoch, i)
            assert ix.file[src] == ix.file[tgt] and src != tgt
            if novel:
                assert ix.frame[src] == ix.frame[tgt] and ix.cam[src] != ix.cam[tgt]
            else:
                assert ix.cam[src] == ix.cam[tgt] and ix.frame[src] != ix.frame[tgt]
            kinds.append(novel)
    assert 0.3 < np.mean(kinds) < 0.7
    assert [ds.pair(0, i) for i in range(len(ds))] == [ds.pair(0, i) for i in range(len(ds))]
    assert [ds.pair(0, i) for i in range(len(ds))] != [ds.pair(1, i) for i in range(len(ds))]
    # Items: keys from a sampler carry the epoch; an int key uses set_epoch's.
    ds.set_epoch(1)
    a, b = ds[(1, 5)], ds[5]
    assert torch.equal(a["target"], b["target"]) and int(a["target_index"]) == ds.pair(1, 5)[1]
    keys = next(iter(GlobalBatchSampler(len(ds), 4, seed=0)))
    batch = torch.utils.data.default_collate([ds[k] for k in keys])
    assert batch["image"].shape == (4, 3, 32, 32) and batch["target"].shape == (4, 3, 16, 16)
    assert batch["camera"].shape == (4, 25) and batch["eye_mask"].shape == (4, 1, 16, 16)


def test_pair_labels_are_head_frame_and_camera_comes_from_the_target(xgaze):
    ds = ETHXGazePairs(split_files(xgaze, "train", val_subjects=0), image_size=32, target_size=16, novel_fraction=1.0)
    item = ds[(0, 0)]
    src, tgt, novel = ds.pair(0, 0)
    assert novel  # same frame, another camera: the head-frame gaze is the same, the camera-frame labels differ
    assert torch.allclose(item["gaze_source"], item["gaze_target"], atol=1e-6)
    assert not torch.allclose(item["gaze_target_camera"], torch.from_numpy(ds.index.face_gaze[src]).float())
    assert torch.equal(item["camera"], camera_from_head_pose(torch.from_numpy(ds.index.head_pose[tgt])))
    truth = head_frame_gaze(ds.index.face_gaze[tgt], ds.index.head_pose[tgt]).float()
    assert torch.allclose(item["gaze_target"], truth)


def test_eye_mask_from_the_normalised_geometry():
    size = 224
    frontal = eye_mask_from_head_pose(torch.zeros(2), size)[0]
    ys, xs = frontal.nonzero(as_tuple=True)
    assert torch.equal(frontal, frontal.flip(1))                   # symmetric
    x0, y0, x1, y1 = FIXED_EYE_REGION                               # the frontal region, as fractions
    assert abs(xs.min() / size - x0) < 0.01 and abs((xs.max() + 1) / size - x1) < 0.01
    assert abs(ys.min() / size - y0) < 0.01 and abs((ys.max() + 1) / size - y1) < 0.01
    # the eye centres of the mean face project inside it, 50 px either side of the middle
    for cx, cy, cz in EYE_CENTRES_MM:
        u = NORM_FOCAL * cx / (NORM_DISTANCE + cz) + size / 2
        v = NORM_FOCAL * cy / (NORM_DISTANCE + cz) + size / 2
        assert frontal[int(v), int(u)] == 1 and 45 < abs(u - size / 2) < 55
    assert frontal[size // 2:].sum() == 0                          # nothing below the face centre
    # The region turns with the head about the face centre, which the normalised camera keeps at
    # the image centre: mirrored head, mirrored mask; the eyes foreshorten by cos(angle).
    turned = eye_mask_from_head_pose(torch.tensor([0.1, 0.5]), size)[0]
    mirror = eye_mask_from_head_pose(torch.tensor([0.1, -0.5]), size)[0]
    assert (turned != mirror.flip(1)).float().mean() < 0.002
    width = lambda m: float(m.nonzero()[:, 1].max() - m.nonzero()[:, 1].min() + 1)  # noqa: E731
    height = lambda m: float(m.nonzero()[:, 0].max() - m.nonzero()[:, 0].min() + 1)  # noqa: E731
    assert abs(width(eye_mask_from_head_pose(torch.tensor([0.0, 0.5]), size)[0]) / width(frontal) - np.cos(0.5)) < 0.03
    assert height(eye_mask_from_head_pose(torch.tensor([0.4, 0.0]), size)[0]) < height(frontal) * 0.97
    # the projection: head rotation, then the normalised camera (face centre at 600 mm, 960 px focal)
    hp = torch.tensor([0.3, -0.4], dtype=torch.float64)
    eye = torch.tensor([EYE_CENTRES_MM[0]], dtype=torch.float64)
    cam = head_rotation(hp) @ eye[0] + torch.tensor([0.0, 0.0, NORM_DISTANCE], dtype=torch.float64)
    assert torch.allclose(_project(eye, hp, size)[0], NORM_FOCAL * cam[:2] / cam[2] + size / 2)
    small = eye_mask_from_head_pose(torch.zeros(2), 64)
    assert small.shape == (1, 64, 64) and abs(float(small.mean()) - float(frontal.mean())) < 0.02
    pts = _project(torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64), torch.zeros(2, dtype=torch.float64), size)
    assert torch.allclose(pts, torch.tensor([[112.0, 112.0]], dtype=torch.float64))  # face centre at the centre


def test_landmark_mask_covers_the_eye_points():
    lm = np.zeros((68, 2), np.float32)
    lm[36:48] = [[8, 10], [24, 14]] * 6
    m = eye_mask(32, lm, 32)[0]
    assert m[12, 16] == 1 and m[28, 16] == 0 and m[12, 1] == 0


def test_splits_by_subject(xgaze):
    splits = read_split(xgaze)
    assert set(splits) == {"train", "test", "test_person_specific"}
    assert held_out(splits["train"], 1) == ["subject0004.h5"] and held_out(splits["train"], 0) == []
    train, val = split_files(xgaze, "train", 1), split_files(xgaze, "val", 1)
    assert {os.path.basename(p) for p in train} | {os.path.basename(p) for p in val} == set(splits["train"])
    assert not {subject_id(p) for p in train} & {subject_id(p) for p in val}
    assert [subject_id(p) for p in val] == [4]
    test = split_files(xgaze, "test")
    assert [subject_id(p) for p in test] == [1]
    with pytest.raises(KeyError, match="face_gaze"):
        ETHXGazePairs(test)                                  # no training pairs without labels
    item = ETHXGazeImages(test, image_size=32)[0]            # ... but the images read, labels NaN
    assert item["image"].shape == (3, 32, 32) and torch.isnan(item["gaze"]).all()
    with pytest.raises(KeyError, match="val"):
        split_files(xgaze, "nope")
    with pytest.raises(ValueError, match="hold out"):
        split_files(xgaze, "train", val_subjects=4)


def test_without_a_split_file_every_subject_is_training(tmp_path):
    rows = simulate(2, 2)
    for sid in (5, 2):
        write_subject(str(tmp_path / "train" / f"subject{sid:04d}.h5"), patterns(4, 32), rows)
    assert read_split(str(tmp_path)) == {"train": ["subject0002.h5", "subject0005.h5"]}
    with pytest.raises(FileNotFoundError, match="no train_test_split.json"):
        read_split(str(tmp_path / "train" / "nothing"))


def test_refuses_missing_files_and_bad_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        XGazeIndex([str(tmp_path / "nope.h5")])
    bad = str(tmp_path / "bad.h5")
    with h5py.File(bad, "w") as f:
        f["face_patch"] = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(KeyError, match="face_head_pose"):
        XGazeIndex([bad])
    with h5py.File(bad, "a") as f:
        f["face_head_pose"] = np.zeros((2, 2))
        f["frame_index"] = np.zeros((3, 1), np.int64)
    with pytest.raises(ValueError, match=r"frame_index must be \(2, 1\)"):
        XGazeIndex([bad])
    floats = str(tmp_path / "floats.h5")
    with h5py.File(floats, "w") as f:
        f["face_patch"] = np.zeros((2, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="uint8"):
        XGazeIndex([floats])
