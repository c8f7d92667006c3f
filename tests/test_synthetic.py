"""The synthetic gaze dataset (rtgaze_fast.data.synthetic): conventions, labels vs pixels, estimator."""
import dataclasses
import math

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rtgaze_fast.camera import frontal_camera, rays_from_label, split_camera_label
from rtgaze_fast.data.synthetic import (SyntheticGaze, angular_error_deg, estimate_gaze, gaze_to_world,
                                        head_pose_of_camera, head_to_camera_gaze, make_identity,
                                        render, render_depth, rig_cameras, world_to_gaze, write_hdf5)

FRONTAL = frontal_camera()[0]


def test_gaze_convention_in_world_and_frontal_camera():
    # (0, 0) looks along +z, at the frontal camera (which sits at +z looking along -z).
    assert torch.allclose(gaze_to_world(torch.tensor([0.0, 0.0])), torch.tensor([0.0, 0.0, 1.0]))
    rot = split_camera_label(FRONTAL[None])[0][0, :3, :3]
    assert torch.allclose(rot, torch.diag(torch.tensor([1.0, -1.0, -1.0])), atol=1e-6)
    # ETH-XGaze signs in the frontal camera: positive pitch up (camera -y), positive yaw camera -x.
    up, left = gaze_to_world(torch.tensor([0.3, 0.0])), gaze_to_world(torch.tensor([0.0, 0.3]))
    assert (rot.T @ up)[1] < 0 and up[1] > 0
    assert (rot.T @ left)[0] < 0 and left[0] < 0
    g = torch.tensor([0.2, -0.4])
    assert torch.allclose(head_to_camera_gaze(g, FRONTAL), g, atol=1e-5)
    assert torch.allclose(world_to_gaze(gaze_to_world(g)), g, atol=1e-6)
    assert torch.allclose(head_pose_of_camera(FRONTAL), torch.zeros(2), atol=1e-6)


def test_camera_frame_gaze_zero_looks_at_that_camera():
    cam = frontal_camera(yaw=0.3, pitch=-0.15)[0]
    c2w = split_camera_label(cam[None])[0][0]
    towards_camera = -c2w[:3, 2]
    assert torch.allclose(head_to_camera_gaze(world_to_gaze(towards_camera), cam), torch.zeros(2), atol=1e-5)
    # This camera sits at +x (the subject's left) and above: the head faces the camera's -x
    # (positive yaw) and looks down (negative pitch) in its frame.
    assert cam[3] > 0 and cam[7] > 0
    assert head_pose_of_camera(cam)[1] > 0 and head_pose_of_camera(cam)[0] < 0


def _pupil_weights(ip, camera, gaze, res=128):
    """Per-pixel darkening by the pupil: the render without a pupil minus the render."""
    with_pupil = render(ip, camera, gaze, res)
    without = render(dataclasses.replace(ip, pupil_angle=-1.0), camera, gaze, res)["image"]
    return (without - with_pupil["image"]).mean(0).clamp(min=0), with_pupil["eye_mask"][0]


def _centroid(w):
    rows, cols = torch.meshgrid(torch.arange(w.shape[0]).float(),
                                torch.arange(w.shape[1]).float(), indexing="ij")
    return float((w * rows).sum() / w.sum()), float((w * cols).sum() / w.sum())


def test_pupil_moves_with_gaze_and_lies_in_eye_mask():
    ip = make_identity(3)
    w0, mask = _pupil_weights(ip, FRONTAL, (0.0, 0.0))
    r0, c0 = _centroid(w0)
    # Pupils inside the eye mask; the mask is small relative to the face.
    assert float(w0[mask == 0].sum()) < 1e-3 * float(w0.sum())
    background = torch.tensor(ip.background)[:, None, None] * 2 - 1
    face = (render(ip, FRONTAL, (0.0, 0.0))["image"] - background).abs().sum(0) > 1e-3
    assert 0.005 < float(mask.sum()) / float(face.sum()) < 0.1
    # Positive yaw: towards camera -x = image left; positive pitch: up = smaller row.
    _, c_yaw = _centroid(_pupil_weights(ip, FRONTAL, (0.0, 0.4))[0])
    r_pitch, _ = _centroid(_pupil_weights(ip, FRONTAL, (0.25, 0.0))[0])
    _, c_yaw_neg = _centroid(_pupil_weights(ip, FRONTAL, (0.0, -0.4))[0])
    r_pitch_neg, _ = _centroid(_pupil_weights(ip, FRONTAL, (-0.25, 0.0))[0])
    assert c_yaw < c0 - 1 and c_yaw_neg > c0 + 1
    assert r_pitch < r0 - 0.5 and r_pitch_neg > r0 + 0.5
    # The two pupils sit left and right of the image centre, level, at (0, 0).
    left, right = w0[:, :64], w0[:, 64:]
    assert left.sum() > 0 and right.sum() > 0
    assert abs(_centroid(left)[0] - _centroid(right)[0]) < 0.5


def test_estimator_recovers_gaze():
    g = torch.Generator().manual_seed(5)
    errors = []
    for i in range(4):
        ip = make_identity(200 + i)
        gaze = (torch.rand(2, generator=g) * 2 - 1) * torch.tensor([0.35, 0.5])
        view = (torch.rand(2, generator=g) * 2 - 1) * torch.tensor([0.2, 0.35])
        cam = frontal_camera(yaw=float(view[1]), pitch=float(view[0]))[0]
        image = render(ip, cam, gaze, 96)["image"]
        noisy = image + 0.1 * torch.randn(image.shape, generator=g)
        # A blurry output, as from a model: 2x2 average then bilinear upsampling.
        blurry = F.interpolate(F.avg_pool2d(image[None], 2), scale_factor=2, mode="bilinear")[0]
        errors.append([float(angular_error_deg(gaze, torch.tensor(estimate_gaze(x, ip, cam))))
                       for x in (noisy, blurry)])
    errors = torch.tensor(errors)
    assert errors[:, 0].max() < 0.5 and errors[:, 1].max() < 3.0, errors


def test_angular_error():
    assert float(angular_error_deg(torch.tensor([0.0, 0.0]), torch.tensor([0.0, math.radians(10)]))) == pytest.approx(10, abs=1e-4)
    assert float(angular_error_deg(torch.tensor([0.1, 0.2]), torch.tensor([0.1, 0.2]))) < 1e-3


def _ellipsoid_t(o, d, c, r):
    oo, dd = (o - c) / r, d / r
    a, b, cc = dd @ dd, oo @ dd, oo @ oo - 1
    disc = b * b - a * cc
    return (-b - math.sqrt(disc)) / a if disc > 0 else math.inf


def test_depth_is_ray_distance_to_the_surface():
    ip = make_identity(7)
    res = 32
    depth = render_depth(ip, FRONTAL, res)[0]
    o, d = rays_from_label(FRONTAL[None], res)
    o, d = o[0].double().numpy(), d[0].double().numpy()
    head = np.array(ip.head_center), np.array(ip.head_radii)
    nose = np.array(ip.nose_center), np.array(ip.nose_radii)
    for row, col in [(res // 2, res // 2), (6, res // 2), (res // 2, 10)]:   # face centre, forehead, cheek
        k = row * res + col
        expect = min(_ellipsoid_t(o[k], d[k], *head), _ellipsoid_t(o[k], d[k], *nose))
        assert 2.25 < expect < 2.7
        assert abs(float(depth[row, col]) - expect) < 1e-4
    assert float(depth[0, 0]) == pytest.approx(3.3)   # background fill


def test_dataset_deterministic_and_shapes():
    a, b = SyntheticGaze(2, seed=3, resolution=32, samples_per_identity=2), SyntheticGaze(2, seed=3, resolution=32, samples_per_identity=2)
    assert len(a) == 4
    sa, sb = a[3], b[3]
    for k, v in sa.items():
        assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb[k])), k
    assert sa["image"].shape == sa["target"].shape == sa["novel_view"].shape == (3, 32, 32)
    assert sa["depth"].shape == (1, 8, 8) and sa["eye_mask"].shape == (1, 32, 32)
    assert sa["camera"].shape == sa["camera_novel"].shape == (25,)
    assert sa["image"].min() >= -1 and sa["image"].max() <= 1
    assert not torch.equal(sa["image"], sa["target"])        # the gaze changed
    assert not torch.equal(sa["target"], sa["novel_view"])   # the camera changed
    other = SyntheticGaze(2, seed=4, resolution=32, samples_per_identity=2)[3]
    assert not torch.equal(sa["image"], other["image"])


def test_dataset_target_resolution_and_novel_view_labels():
    ds = SyntheticGaze(1, seed=5, resolution=32, target_resolution=16, depth_resolution=8, samples_per_identity=1)
    s = ds[0]
    assert s["image"].shape == (3, 32, 32)
    assert s["target"].shape == s["novel_view"].shape == (3, 16, 16)
    assert s["eye_mask"].shape == s["eye_mask_novel"].shape == (1, 16, 16)
    ip = ds.identity(0)
    assert torch.equal(s["depth"], render_depth(ip, s["camera"], 8))
    assert torch.equal(s["depth_novel"], render_depth(ip, s["camera_novel"], 8))
    assert not torch.equal(s["depth"], s["depth_novel"])
    # The target is the generator's render at the output size, not a resize of the input.
    assert torch.equal(s["target"], render(ip, s["camera"], s["gaze_target"], 16)["image"])


def test_train_test_and_val_identities_differ():
    sets = {s: SyntheticGaze(3, seed=0, split=s) for s in ("train", "test", "val")}
    ids = {s: {ds.identity_id(i) for i in range(len(ds))} for s, ds in sets.items()}
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["val"] and not ids["test"] & ids["val"]
    assert sets["train"].identity(0).to_dict() != sets["test"].identity(0).to_dict()
    with pytest.raises(ValueError, match="split"):
        SyntheticGaze(1, split="nope")
    with pytest.raises(ValueError, match="variety"):
        SyntheticGaze(1, variety=3)


def test_variety_1_is_the_original_generator_and_2_widens_it():
    """Variety 1 must stay the generator the embedded tiny weights were trained and scored on
    (a fixed identity's parameters, pinned); variety 2 keeps its geometry and widens the rest."""
    v1, v2 = make_identity(5, seed=0, variety=1), make_identity(5, seed=0, variety=2)
    assert v1 == make_identity(5, seed=0) and v1.background2 is None and v1.light_color == (1.0, 1.0, 1.0)
    assert abs(v1.head_radii[0] - 0.23394) < 1e-4 and abs(v1.skin[0] - 0.37537) < 1e-4
    assert v2.head_radii == v1.head_radii and v2.eye_radius == v1.eye_radius
    assert v2.skin != v1.skin and v2.background2 is not None
    skins = [make_identity(i, seed=0, variety=2).skin[0] for i in range(64)]
    hairs = {make_identity(i, seed=0, variety=2).hair for i in range(64)}
    assert min(skins) < 0.3 and max(skins) > 0.85 and len(hairs) > 16   # dark to pale; jittered hair


def test_hdf5_round_trip(tmp_path):
    paths = write_hdf5(str(tmp_path), n_identities=1, seed=2, n_frames=2, n_cams=3, resolution=32)
    ip = make_identity(0, seed=2)
    cams = rig_cameras(3)
    with h5py.File(paths[0], "r") as h:
        assert h["face_patch"].shape == (6, 32, 32, 3) and h["face_patch"].dtype == np.uint8
        assert h["face_gaze"].shape == h["face_head_pose"].shape == h["face_gaze_head"].shape == (6, 2)
        assert h["cam_index"][:, 0].tolist() == [0, 1, 2, 0, 1, 2]
        assert h["frame_index"][:, 0].tolist() == [0, 0, 0, 1, 1, 1]
        assert h["depth"].shape == (6, 8, 8) and h["eye_mask"].shape == (6, 32, 32)
        row = 4   # frame 1, camera 1
        gaze = torch.from_numpy(h["face_gaze_head"][row])
        rgb = render(ip, cams[1], gaze, 32)["image"]
        expect = ((rgb.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()[..., ::-1]
        assert np.array_equal(h["face_patch"][row], expect)      # BGR
        assert np.allclose(h["camera"][row], cams[1].numpy())
        assert np.allclose(h["face_gaze"][row], head_to_camera_gaze(gaze, cams[1]).numpy(), atol=1e-6)
        assert np.allclose(h["face_gaze"][3], h["face_gaze_head"][3], atol=1e-5)   # camera 0 is frontal
        assert np.allclose(h["depth"][row], render_depth(ip, cams[1], 8)[0].numpy())
        assert h.attrs["identity"] == 0 and h.attrs["split"] == "train"
