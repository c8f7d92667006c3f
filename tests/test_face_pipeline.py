"""Faces in real photos end to end (issue #17): detection, paste-back that leaves everything outside
the blend mask bit-identical, the command line, awkward files, and synthetic heads at known poses.

Real photos come from registry packages: scikit-image's bundled ``astronaut`` and matplotlib's
``grace_hopper.jpg``."""
import ast
import math
import os
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from rtgaze_fast.cli import main
from rtgaze_fast.face import geometry as geo
from rtgaze_fast.face.mtcnn import FaceBackendMissing, MTCNN
from rtgaze_fast.face.photo import load_photo
from rtgaze_fast.face.pipeline import FaceAnalyzer, GazeRedirector, NoFaceError
from rtgaze_fast.model.weights import load_model

skimage_data = pytest.importorskip("skimage.data")


def _photo_path(name):
    if name == "astronaut":
        return os.path.join(os.path.dirname(skimage_data.__file__), "astronaut.png")
    import matplotlib
    return os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")


@pytest.fixture(scope="module")
def redirector():
    model, path = load_model("tiny")
    assert path is not None
    return GazeRedirector(model)


@pytest.fixture(scope="module")
def astronaut():
    return load_photo(_photo_path("astronaut")).rgb


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_real_photo_look_at_camera(redirector, name):
    rgb = load_photo(_photo_path(name)).rgb
    res = redirector(rgb, "camera")
    assert len(res.all_faces) == 1 and res.faces[0].score > 0.95
    assert res.image.shape == rgb.shape and res.image.dtype == np.uint8
    outside = res.mask == 0
    assert np.array_equal(res.image[outside], rgb[outside])          # bit-identical outside the mask
    assert outside.mean() > 0.95                                       # the mask is the eyes, not the photo
    eyes = res.faces[0].landmarks[:2]
    for x, y in eyes:                                                  # the eyes changed
        assert res.mask[int(y), int(x)] > 0.9
        win = (slice(int(y) - 3, int(y) + 4), slice(int(x) - 3, int(x) + 4))
        assert np.abs(res.image[win].astype(int) - rgb[win]).mean() > 2
    # the head pose is that of a person facing the camera, within the generic model's error
    assert abs(math.degrees(res.faces[0].norm.head_pose[1])) < 15


def test_gaze_target_changes_the_eye_region(redirector, astronaut):
    a = redirector(astronaut, "camera")
    b = redirector(astronaut, (math.radians(-20), math.radians(30)))
    assert not np.allclose(a.prompts, b.prompts)
    region = (a.mask > 0.5) & (b.mask > 0.5)
    assert np.abs(a.image[region].astype(int) - b.image[region]).mean() > 1.0


def test_face_selection_and_errors(redirector, astronaut):
    with pytest.raises(NoFaceError, match="only 1 face"):
        redirector(astronaut, "camera", faces=3)
    assert len(redirector(astronaut, "camera", faces="all").faces) == 1
    with pytest.raises(NoFaceError):
        redirector(np.full((120, 160, 3), 128, np.uint8), "camera")
    with pytest.raises(NoFaceError):
        redirector(np.zeros((1, 1, 3), np.uint8), "camera")


def test_missing_backend_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RTGAZE_FAST_MTCNN_DIR", str(tmp_path))
    with pytest.raises(FaceBackendMissing, match="facenet-pytorch"):
        MTCNN()


def test_cli_redirect_photo(tmp_path, capsys):
    src = _photo_path("astronaut")
    out, dbg = tmp_path / "out.png", tmp_path / "dbg.png"
    assert main(["redirect", src, "--look-at-camera", "-o", str(out), "--debug", str(dbg)]) == 0
    res, inp = np.asarray(Image.open(out)), load_photo(src).rgb
    assert res.shape == inp.shape and Image.open(dbg).size == (512, 512)
    changed = (res != inp).any(-1)
    assert 100 < changed.sum() < 0.05 * changed.size
    assert "1 of 1 face(s) redirected" in capsys.readouterr().out


def refused(argv, capsys, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(w in err for w in words), err


def test_cli_awkward_files(tmp_path, capsys, astronaut):
    # no face, grey, 1x1, corrupt: a one-line message and exit status 2
    Image.fromarray(np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (150, 1))).save(tmp_path / "grey.png")
    refused(["redirect", str(tmp_path / "grey.png"), "--look-at-camera", "-o", str(tmp_path / "o.png")], capsys,
            "no face found")
    Image.new("RGB", (1, 1)).save(tmp_path / "one.png")
    refused(["redirect", str(tmp_path / "one.png"), "--look-at-camera", "-o", str(tmp_path / "o.png")], capsys,
            "no face found")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    refused(["redirect", str(tmp_path / "bad.jpg"), "--look-at-camera", "-o", str(tmp_path / "o.png")], capsys,
            "cannot read image")
    refused(["redirect", str(tmp_path / "one.png"), "-o", str(tmp_path / "o.png")], capsys, "--look-at-camera")
    refused(["redirect", _photo_path("astronaut"), "--look-at-camera", "--face", "2", "-o", str(tmp_path / "o.png")],
            capsys, "only 1 face")


@pytest.mark.parametrize("kind", ["L", "CMYK", "RGBA", "I;16", "exif"])
def test_photo_modes(tmp_path, astronaut, kind):
    """Grey, CMYK JPEG, RGBA (alpha kept), 16-bit PNG and an EXIF-rotated JPEG: read right, a face found."""
    img = Image.fromarray(astronaut).resize((256, 256))
    path = tmp_path / ("in.jpg" if kind in ("CMYK", "exif") else "in.png")
    if kind == "L":
        img.convert("L").save(path)
    elif kind == "CMYK":
        img.convert("CMYK").save(path, quality=95)
    elif kind == "RGBA":
        rgba = img.convert("RGBA")
        rgba.putalpha(Image.fromarray(np.tile(np.linspace(80, 255, 256, dtype=np.uint8), (256, 1))))
        rgba.save(path)
    elif kind == "I;16":
        grey16 = (np.asarray(img.convert("L"), dtype=np.uint16) * 257)
        Image.fromarray(grey16).save(path)   # 16-bit greyscale PNG
    else:  # stored on its side with orientation 6 ("rotate 90 CW to view")
        exif = Image.Exif()
        exif[0x0112] = 6
        img.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes(), quality=95)
    photo = load_photo(str(path))
    assert photo.rgb.shape == (256, 256, 3) and photo.rgb.dtype == np.uint8
    if kind == "I;16":
        assert np.abs(photo.rgb[..., 0].astype(int) - np.asarray(img.convert("L"))).max() <= 1   # scaled, not clipped
    out = tmp_path / "out.png"
    assert main(["redirect", str(path), "--pitch", "0", "--yaw", "0", "--min-face", "20", "-o", str(out)]) == 0
    res = Image.open(out)
    assert res.size == (256, 256)
    if kind == "RGBA":
        assert res.mode == "RGBA" and np.array_equal(np.asarray(res)[..., 3], photo.alpha)


def test_synthetic_heads_detected_at_known_poses():
    """The package's synthetic heads rendered at known poses into a larger frame: MTCNN finds them and
    the head pose from its 5 landmarks is within the stated error of the truth.

    The error is large because MTCNN's nose and mouth points on these procedural faces (a flat
    ellipsoid nose, painted lips) are off by 2-8 px at a 43 px eye distance, and 5-point PnP turns
    that into degrees of pitch: the bound says what the detector gives, the exact geometry is
    tested in test_face_geometry.py. |yaw| >= 0.3 rad is not detected on these heads."""
    from rtgaze_fast.camera import frontal_camera, split_camera_label
    from rtgaze_fast.data.synthetic import TEST_ID_OFFSET, make_identity, render
    analyzer = FaceAnalyzer(geo.model_spec(128), min_face=20)
    s, ox, oy = 160, 200, 60
    errors = []
    for i, (yaw, pitch) in enumerate([(0.0, 0.0), (0.25, 0.0), (-0.25, 0.1), (0.1, -0.15)]):
        ip = make_identity(TEST_ID_OFFSET + i)
        cam = frontal_camera(1, yaw=yaw, pitch=pitch)[0]
        img = render(ip, cam, (0.0, 0.0), s, 2)["image"]
        frame = np.full((360, 480, 3), 90, np.uint8)
        frame[oy:oy + s, ox:ox + s] = ((img.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        f = float(split_camera_label(cam[None])[1][0, 0, 0]) * s
        k = np.array([[f, 0, s / 2 + ox], [0, f, s / 2 + oy], [0, 0, 1.0]])
        rot, t = geo.pose_from_label(cam, k, np.array([0, ip.eye_y, ip.eye_z + ip.eye_radius]), 63 / (2 * ip.eye_x))
        faces = analyzer.faces(frame, k)
        assert len(faces) == 1
        truth_eyes = geo.project(geo.FACE_MODEL[:2], rot, t, k)
        assert np.abs(faces[0].landmarks[:2] - truth_eyes).max() < 6.0   # eye centres within 6 px
        fwd = faces[0].r_head @ [0, 0, -1.0]
        errors.append(math.degrees(math.acos(np.clip(fwd @ (rot @ [0, 0, -1.0]), -1, 1))))
    assert max(errors) < 35 and np.median(errors) < 25, errors


def test_layering_cli_is_imported_by_nobody():
    """The command line imports the pipeline and the model, never the reverse."""
    root = pathlib.Path(__file__).resolve().parents[1] / "rtgaze_fast"
    for path in root.rglob("*.py"):
        if path.name in ("cli.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                names = [a.name for a in node.names]
                assert not (mod.endswith("cli") or (mod in ("", "rtgaze_fast") and "cli" in names)), path
            elif isinstance(node, ast.Import):
                assert all(not a.name.endswith(".cli") for a in node.names), path
