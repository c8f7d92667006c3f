"""Face geometry (issue #17): rotations, PnP, ETH-XGaze normalisation and its inverse, gaze frames, and
the model's camera label, checked against the package's camera convention and synthetic renders."""
import math

import numpy as np
import pytest
import torch

from rtgaze_fast.camera import frontal_camera, split_camera_label
from rtgaze_fast.data.synthetic import TEST_ID_OFFSET, head_pose_of_camera, make_identity, render
from rtgaze_fast.face import geometry as geo
from rtgaze_fast.gaze import gaze_to_vector, vector_to_gaze

RNG = np.random.default_rng(17)
K = geo.default_intrinsics(640, 480)


def random_pose(rng, max_angle=0.5):
    rot = geo.euler_to_rotation(*rng.uniform(-max_angle, max_angle, 3))
    return rot, np.array([rng.uniform(-80, 80), rng.uniform(-60, 60), rng.uniform(400, 1200)])


def rot_err_deg(a, b):
    return math.degrees(np.linalg.norm(geo.rotvec(a @ b.T)))


def test_rotations_round_trip():
    for _ in range(20):
        axis = RNG.normal(size=3)
        r = axis / np.linalg.norm(axis) * RNG.uniform(0, 3.1)
        assert np.allclose(geo.rotvec(geo.rodrigues(r)), r, atol=1e-9)
    near_pi = geo.rodrigues([0, math.pi - 1e-8, 0])
    assert np.allclose(geo.rodrigues(geo.rotvec(near_pi)), near_pi, atol=1e-6)
    rot = geo.euler_to_rotation(0.2, -0.4, 0.3)
    assert np.allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert np.allclose(geo.head_pose_pitchyaw(rot), [0.2, -0.4], atol=1e-12)


def test_pitchyaw_matches_the_package_gaze_convention():
    py = RNG.uniform(-1.2, 1.2, (50, 2))
    assert np.allclose(geo.pitchyaw_to_vector(py), gaze_to_vector(torch.tensor(py)).numpy(), atol=1e-12)
    assert np.allclose(geo.vector_to_pitchyaw(geo.pitchyaw_to_vector(py)), py, atol=1e-12)
    assert np.allclose(geo.vector_to_pitchyaw(geo.pitchyaw_to_vector(py)),
                       vector_to_gaze(torch.tensor(geo.pitchyaw_to_vector(py))).numpy(), atol=1e-12)


def test_head_pose_and_roll_free_rotation_are_inverse():
    for py in RNG.uniform(-1.0, 1.0, (20, 2)):
        rot = geo.rotation_from_head_pose(py)
        assert np.allclose(geo.head_pose_pitchyaw(rot), py, atol=1e-12)
        assert abs(rot[1, 0]) < 1e-12   # head x-axis has no y component: no roll


def test_pnp_recovers_exact_poses():
    for _ in range(10):
        rot, t = random_pose(RNG)
        pts = geo.project(geo.FACE_MODEL, rot, t, K)
        r2, t2, rms = geo.solve_pnp(pts, K)
        assert rms < 1e-6 and rot_err_deg(r2, rot) < 1e-4 and np.abs(t2 - t).max() < 1e-3
        # warm start from a nearby pose converges to the same answer
        r3, t3, _ = geo.solve_pnp(pts, K, init=(geo.euler_to_rotation(0.05, 0.05, 0) @ rot, t + 20))
        assert rot_err_deg(r3, rot) < 1e-4


def test_pnp_under_landmark_noise():
    errs = []
    for _ in range(30):
        rot, t = random_pose(RNG, 0.4)
        t[2] = 600.0   # eye distance about 60 px at 640x480
        pts = geo.project(geo.FACE_MODEL, rot, t, K) + RNG.normal(0, 0.5, (5, 2))
        errs.append(rot_err_deg(geo.solve_pnp(pts, K)[0], rot))
    assert np.median(errs) < 3.0, errs   # 0.5 px of noise on 5 points: a few degrees (the nose carries depth)


def test_normalisation_properties():
    spec = geo.model_spec(128)
    for _ in range(10):
        rot, t = random_pose(RNG)
        n = geo.normalization(K, rot, t, spec)
        # the normalisation centre lands on the patch centre, at the spec's distance
        centre_px = geo.project(np.array([spec.centre]), rot, t, K)
        assert np.allclose(n.to_patch(centre_px), [[64, 64]], atol=1e-6)
        # roll cancelled: the head's x-axis has no y component in the normalised camera
        assert abs(n.r_head[1, 0]) < 1e-12
        assert np.allclose(n.r_norm @ n.r_norm.T, np.eye(3), atol=1e-12)
        # round trip of points, at the patch size and at the model's output size
        pts = RNG.uniform([0, 0], [640, 480], (100, 2))
        for size in (128, 64):
            assert np.abs(n.to_image(n.to_patch(pts, size), size) - pts).max() < 1e-6
        # a head point lands in the patch about where a camera at spec.distance would see it: the
        # warp rotates and zooms the real camera, which is that camera up to the face's depth
        # relief seen from another distance (ETH-XGaze's approximation; 0.25 to 1.2 m here)
        eyes = geo.project(geo.FACE_MODEL[:2], rot, t, K)
        pe = n.to_patch(eyes)
        cam = (n.r_head @ geo.FACE_MODEL[:2].T).T + np.array([0, 0, spec.distance]) - n.r_head @ np.array(spec.centre)
        virt = (cam @ spec.intrinsics().T)
        virt = virt[:, :2] / virt[:, 2:]
        assert np.abs(pe - virt).max() < 2.0


def test_gaze_conversions_are_exact():
    rot, t = random_pose(RNG)
    n = geo.normalization(K, rot, t, geo.ETH_XGAZE_SPEC)
    g = geo.pitchyaw_to_vector(RNG.uniform(-0.8, 0.8, (20, 2)))
    back = geo.gaze_normalized_to_camera(geo.gaze_camera_to_normalized(g, n.r_norm), n.r_norm)
    assert np.allclose(back, g, atol=1e-12)
    assert np.allclose(geo.gaze_head_to_camera(geo.gaze_camera_to_head(g, rot), rot), g, atol=1e-12)
    # head frame reached through the normalised camera equals the direct conversion
    via = geo.gaze_camera_to_head(geo.gaze_camera_to_normalized(g, n.r_norm), n.r_head)
    assert np.allclose(via, geo.gaze_camera_to_head(g, rot), atol=1e-12)
    # looking along the head's forward axis is (0, 0) in the head frame
    assert np.allclose(geo.vector_to_pitchyaw(geo.gaze_camera_to_head(rot @ [0, 0, -1.0], rot)), [0, 0], atol=1e-12)


def test_camera_label_follows_the_package_camera_convention():
    spec = geo.model_spec(128)
    # the identity rotation is the model's frontal camera, exactly
    assert torch.allclose(geo.camera_label(np.eye(3), spec), frontal_camera(1)[0], atol=1e-6)
    for yaw, pitch in RNG.uniform(-0.4, 0.4, (8, 2)):
        lab = frontal_camera(1, yaw=float(yaw), pitch=float(pitch))[0]
        hp = geo.head_pose_from_label(lab)
        assert np.allclose(hp, head_pose_of_camera(lab).numpy(), atol=1e-5)   # the synthetic data's reading
        mine = geo.camera_from_head_pose(hp, spec)
        assert np.allclose(geo.head_pose_from_label(mine), hp, atol=1e-6)
        # the rebuilt camera differs from EG3D's only by the roll convention (ETH-XGaze keeps the
        # head's x-axis in the camera's x-z plane, EG3D the world's horizontal): a rotation about
        # the head's forward axis (world +z), growing with yaw x pitch (under 3 degrees here); its optical axis passes
        # through EG3D's look-at point
        c2w = split_camera_label(mine[None])[0][0].double().numpy()
        ref = split_camera_label(lab[None])[0][0].double().numpy()
        rel = c2w[:3, :3] @ ref[:3, :3].T
        assert np.allclose(rel @ [0, 0, 1.0], [0, 0, 1.0], atol=1e-6)
        assert math.degrees(np.linalg.norm(geo.rotvec(rel))) < 3.0
        to_lookat = geo.EG3D_LOOKAT - c2w[:3, 3]
        assert np.allclose(to_lookat / np.linalg.norm(to_lookat), c2w[:3, 2], atol=1e-6)


@pytest.mark.parametrize("yaw,pitch", [(0.25, 0.0), (-0.2, 0.12)])
def test_normalised_synthetic_frame_equals_the_render_from_the_camera_label(yaw, pitch):
    """A synthetic head rendered at a known pose into a larger frame, normalised with its true pose,
    must be the image the model's camera label renders: the paste-back keeps the head in place."""
    s, ox, oy = 160, 200, 60
    ip = make_identity(TEST_ID_OFFSET + 3)
    cam = frontal_camera(1, yaw=yaw, pitch=pitch)[0]
    img = render(ip, cam, (0.1, -0.2), s, 2)["image"]
    frame = torch.full((3, 360, 480), -0.3)
    frame[:, oy:oy + s, ox:ox + s] = img
    f = float(split_camera_label(cam[None])[1][0, 0, 0]) * s
    k = np.array([[f, 0, s / 2 + ox], [0, f, s / 2 + oy], [0, 0, 1.0]])
    origin, mm = np.array([0, ip.eye_y, ip.eye_z + ip.eye_radius]), 63 / (2 * ip.eye_x)
    rot, t = geo.pose_from_label(cam, k, origin, mm)
    spec = geo.model_spec(128)
    n = geo.normalization(k, rot, t, spec)
    patch = torch.nn.functional.avg_pool2d(geo.warp_image(frame, n.warp_at(256), 256, 256)[None], 2)[0]
    label = geo.camera_label(n.r_head, spec, origin, mm)
    target = render(ip, label, (0.1, -0.2), 128, 2)["image"]
    assert float((patch - target).abs().mean()) < 0.02
    # the eyes: through the warp and through the label's camera, within 1 px
    eyes_h = np.array([[-31.5, 0, 0], [31.5, 0, 0]])
    c2w, kn = (x[0].double().numpy() for x in split_camera_label(label[None]))
    kn[:2] *= 128
    pc = ((geo._D @ eyes_h.T).T / mm + origin - c2w[:3, 3]) @ c2w[:3, :3]
    uv = pc @ kn.T
    assert np.abs(n.to_patch(geo.project(eyes_h, rot, t, k)) - uv[:, :2] / uv[:, 2:]).max() < 1.0
