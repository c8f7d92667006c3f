"""The gaze estimator and the ETH-XGaze evaluation (issue #18): the ResNet regressor learns, the
train-gaze command writes weights carrying their held-out error and resumes, `eval --data
ethxgaze` scores model, identity baseline and the estimator itself, and refuses bad input."""
import json

import pytest
import torch
from safetensors import safe_open

from rtgaze_fast import RTGaze
from rtgaze_fast.cli import main
from rtgaze_fast.data.xgaze_fixture import write_dataset
from rtgaze_fast.gaze_estimator import GazeEstimator, load_estimator
from rtgaze_fast.train.recipe import save_weights


@pytest.fixture(scope="module")
def xgaze(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("xgaze"))
    write_dataset(d, train=(0, 1, 2), test=(), n_frames=3, n_cams=3)
    return d


def test_estimator_shapes_and_start():
    est = GazeEstimator("small")
    out = est(torch.rand(2, 3, 64, 64) * 2 - 1)       # resized to its 112 px input
    assert out.shape == (2, 4) and torch.equal(out, torch.zeros(2, 4))   # zero-initialised head
    pred = est.predict(torch.rand(1, 3, 112, 112))
    assert pred["gaze"].shape == (1, 2) and pred["head_pose"].shape == (1, 2) and est.training
    with pytest.raises(ValueError, match="config"):
        GazeEstimator("resnet9000")


def test_estimator_fits_a_few_labelled_faces():
    torch.manual_seed(0)
    est = GazeEstimator("small")
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 112, 112, generator=g) * 2 - 1, (torch.rand(2, 4, generator=g) - 0.5)
    opt = torch.optim.Adam(est.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss = (est(x) - y).abs().mean()
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert min(losses[-3:]) < 0.5 * losses[0]


def test_train_gaze_then_eval_on_ethxgaze_files(xgaze, tmp_path, capsys):
    g = str(tmp_path / "gaze.safetensors")
    common = ["train-gaze", "--data-dir", xgaze, "--config", "small", "--batch", "4", "--loader-workers", "0",
              "--val-subjects", "1", "--eval-images", "6", "--checkpoint", str(tmp_path / "g.ckpt.safetensors"),
              "-o", g]
    assert main(common + ["--steps", "2"]) == 0
    with safe_open(g, "pt") as f:
        meta = f.metadata()
    assert meta["kind"] == "gaze_estimator" and meta["config"] == "small" and meta["steps"] == "2"
    assert float(meta["held_out_gaze_error_deg"]) > 0 and meta["held_out_images"] == "6"
    assert "subject0001.h5" in meta["held_out"]                      # the held-out subject, by name
    est, _ = load_estimator(g)
    assert not est.training
    assert main(common + ["--steps", "3"]) == 0                      # resumes from its checkpoint
    assert "resumed" in capsys.readouterr().out
    with safe_open(g, "pt") as f:
        meta = f.metadata()
    assert meta["steps"] == "3"

    w = str(tmp_path / "rtgaze.safetensors")
    save_weights(RTGaze("tiny"), w, {"config": "tiny"})
    out = str(tmp_path / "eval.json")
    assert main(["eval", "--data", "ethxgaze", "--data-dir", xgaze, "--val-subjects", "1", "--weights", w,
                 "--gaze-estimator", g, "--pairs", "3", "--json", out]) == 0
    printed = capsys.readouterr().out
    assert "estimator column" in printed and "head_error_deg" in printed
    result = json.load(open(out))
    assert result["n"] == 3 and result["subjects"] == [1]
    assert set(result["model"]) >= {"psnr", "ssim", "eye_psnr", "eye_l1", "gaze_error_deg", "head_error_deg"}
    assert set(result["estimator"]) >= {"gaze_error_deg", "head_error_deg"} and "psnr" not in result["estimator"]
    assert result["estimator_meta"]["held_out_gaze_error_deg"] == meta["held_out_gaze_error_deg"]
    # without an estimator: image metrics only, and the table says why
    assert main(["eval", "--data", "ethxgaze", "--data-dir", xgaze, "--val-subjects", "1", "--weights", w,
                 "--pairs", "2"]) == 0
    assert "no --gaze-estimator" in capsys.readouterr().out


def test_train_gaze_on_synthetic_faces(tmp_path):
    g = str(tmp_path / "g.safetensors")
    assert main(["train-gaze", "--data", "synthetic", "--identities", "1", "--config", "small", "--steps", "2",
                 "--batch", "2", "--loader-workers", "0", "--eval-images", "2",
                 "--checkpoint", str(tmp_path / "c.safetensors"), "-o", g]) == 0
    with safe_open(g, "pt") as f:
        assert f.metadata()["data"] == "synthetic"


def refused(argv, capsys, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(w in err for w in words), err


def test_eval_ethxgaze_refusals(xgaze, tmp_path, capsys):
    w = str(tmp_path / "rtgaze.safetensors")
    save_weights(RTGaze("tiny"), w, {"config": "tiny"})
    refused(["eval", "--data", "ethxgaze", "--weights", w], capsys, "--data-dir")
    refused(["eval", "--data", "ethxgaze", "--data-dir", xgaze], capsys, "--weights")
    ok = ["eval", "--data", "ethxgaze", "--data-dir", xgaze, "--weights", w, "--val-subjects", "1"]
    refused(ok + ["--gaze-estimator", w], capsys, "not a gaze estimator")
    refused(ok + ["--split", "nope"], capsys, "nope")
    refused(ok + ["--val-subjects", "5"], capsys, "cannot hold out 5 of 3")
    refused(["eval", "--data", "ethxgaze", "--data-dir", str(tmp_path / "none"), "--weights", w], capsys,
            "no train_test_split.json")
    with pytest.raises(SystemExit):
        main(["train-gaze", "--data", "ethxgaze"])            # argparse: --data-dir is needed
