"""The command line end to end on the default config, and its refusals (issue #3, #7)."""
import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file

from rtgaze_fast import RTGaze
from rtgaze_fast.cli import main
from rtgaze_fast.model import DEFAULT_CONFIG

ALIGNED = ["--aligned"]  # these tests feed a crop, not a photo with a face


@pytest.fixture
def face(tmp_path):
    path = tmp_path / "face.png"
    Image.fromarray((np.random.default_rng(0).random((150, 120, 3)) * 255).astype("uint8")).save(path)
    return str(path)


def test_redirect_end_to_end_on_the_embedded_weights(face, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert main(["redirect", face, "--pitch", "10", "--yaw", "-15", "--view-yaw", "5", "-o", str(out)] + ALIGNED) == 0
    img = Image.open(out)
    assert img.size == (64, 64)
    assert "RANDOMLY" not in capsys.readouterr().err


def test_redirect_without_any_weights_warns(face, tmp_path, capsys, monkeypatch):
    import rtgaze_fast.cli as cli
    monkeypatch.setattr(cli, "default_weights", lambda config: None)
    assert main(["redirect", face, "--pitch", "0", "--yaw", "0", "-o", str(tmp_path / "o.png")] + ALIGNED) == 0
    assert "RANDOMLY" in capsys.readouterr().err


def test_redirect_with_weights(face, tmp_path):
    w = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in RTGaze(DEFAULT_CONFIG).state_dict().items()}, str(w))
    argv = ["redirect", face, "--pitch", "0", "--yaw", "0", "--weights", str(w), "-o", str(tmp_path / "o.png")]
    assert main(argv + ALIGNED) == 0
    # weights of another config: their metadata names it (as `rtgaze-fast train` writes it), else
    # --config must, else they are refused (missing keys)
    tiny = {k: v.contiguous() for k, v in RTGaze("tiny").state_dict().items()}
    save_file(tiny, str(w))
    assert main(argv + ALIGNED) == 2
    assert main(argv + ALIGNED + ["--config", "tiny"]) == 0
    save_file(tiny, str(w), metadata={"config": "tiny"})
    assert main(argv + ALIGNED) == 0


def refused(argv, capsys, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(w in err for w in words), err


def test_refuses_missing_and_non_images(face, tmp_path, capsys):
    refused(["redirect", str(tmp_path / "nope.png"), "--pitch", "0", "--yaw", "0", "-o", "x.png"] + ALIGNED, capsys,
            "does not exist")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"definitely not a png")
    refused(["redirect", str(bad), "--pitch", "0", "--yaw", "0", "-o", "x.png"] + ALIGNED, capsys, "cannot read image")


def test_refuses_truncated_images(face, tmp_path, capsys):
    data = open(face, "rb").read()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    refused(["redirect", str(cut), "--pitch", "0", "--yaw", "0", "-o", "x.png"] + ALIGNED, capsys, "cannot read image")


def test_refuses_decompression_bombs(tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.new("L", (8000, 6000)).save(big)  # 48 Mpixel, a few kB compressed
    refused(["redirect", str(big), "--pitch", "0", "--yaw", "0", "-o", "x.png"] + ALIGNED, capsys, "pixel")


def test_refuses_bad_weights(face, tmp_path, capsys):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    refused(["redirect", face, "--pitch", "0", "--yaw", "0", "--weights", str(junk), "-o", "x.png"] + ALIGNED, capsys,
            "cannot read weights")
    wrong = tmp_path / "wrong.safetensors"
    state = {k: v.contiguous() for k, v in RTGaze(DEFAULT_CONFIG).state_dict().items()}
    state.pop("decoder.net.0.weight")
    state["superres.inp.0.weight"] = state["superres.inp.0.weight"][:1].contiguous()
    save_file(state, str(wrong))
    refused(["redirect", face, "--pitch", "0", "--yaw", "0", "--weights", str(wrong), "-o", "x.png"] + ALIGNED, capsys,
            "missing keys", "decoder.net.0.weight", "wrong shapes")


def test_refuses_bad_angles(face, capsys):
    refused(["redirect", face, "--pitch", "nan", "--yaw", "0", "-o", "x.png"] + ALIGNED, capsys, "--pitch")


def test_usage_lists_subcommands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for name in ("redirect", "demo", "bench", "eval", "train"):
        assert name in out


def test_demo_exits_with_the_benchmarks_status(monkeypatch, tmp_path):
    """The main job fails when the benchmark's gate reports a WRONG backend row (bench exits 1)."""
    from rtgaze_fast import demo
    monkeypatch.setattr(demo, "gaze_grid", lambda *a: {"path": "grid.png"})
    monkeypatch.setattr(demo, "render_orbit",
                        lambda *a: {"path": "orbit.png", "backend": "cpu", "max_abs_rgb_diff_vs_reference": 0.0})
    for status in (1, 0):
        monkeypatch.setattr(demo.bench, "main", lambda argv, s=status: s)
        assert demo.main(["--out", str(tmp_path), "--no-eval", "--device", "cpu"]) == status
