"""Evaluation (issue #8): the metrics by hand, the identity baseline reads what it should, the CLI."""
import json
import math

import pytest
import torch
from safetensors.torch import save_file

from rtgaze_fast import RTGaze
from rtgaze_fast.cli import main as cli_main
from rtgaze_fast.evaluation import evaluate, masked_l1, psnr, ray_res_oracle, ssim
from rtgaze_fast.gaze import angular_error_deg
from rtgaze_fast.train.recipe import dataset_for


def test_psnr_by_hand():
    target = torch.rand(3, 8, 8) * 2 - 1
    assert psnr(target + 0.1, target) == pytest.approx(10 * math.log10(4 / 0.01), rel=1e-4)
    mask = torch.zeros(1, 8, 8)
    mask[:, :2] = 1
    pred = target.clone()
    pred[:, :2] += 0.2          # only the masked rows are off
    pred[:, 5:] += 1.0          # outside the mask: must not count
    assert psnr(pred, target, mask) == pytest.approx(10 * math.log10(4 / 0.04), rel=1e-4)
    assert masked_l1(pred, target, mask) == pytest.approx(0.2, rel=1e-4)


def test_ssim_is_one_on_equal_images_and_lower_otherwise():
    x = torch.rand(3, 32, 32) * 2 - 1
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-5)
    assert ssim(x + 0.3 * torch.randn(3, 32, 32), x) < 0.9


def test_ray_res_oracle_keeps_what_the_ray_grid_resolves_and_loses_finer_detail():
    x = torch.rand(3, 16, 16) * 2 - 1
    assert torch.allclose(ray_res_oracle(x, 16), x, atol=1e-6)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2 * 2.0 - 1   # 1-pixel detail
    assert torch.allclose(ray_res_oracle(checker.expand(3, 16, 16), 8), torch.zeros(3, 16, 16), atol=1e-6)
    smooth = torch.linspace(-1, 1, 16)[None, None].expand(3, 16, 16)
    err = (ray_res_oracle(smooth, 8) - smooth).abs()
    assert err.max() < 0.1 and err[..., 2:-2].max() < 1e-5   # bilinear: a ramp is exact inside


def test_identity_baseline_reads_the_source_gaze_and_a_random_model_loses():
    torch.manual_seed(0)
    model = RTGaze("tiny", deterministic=True)
    result = evaluate(model, n_identities=1, samples_per_identity=1, seed=3, progress=False)
    item = dataset_for(model.config, 1, 3, split="test", samples_per_identity=1)[0]
    source_target = float(angular_error_deg(item["gaze_source"], item["gaze_target"]))
    assert source_target > 5
    # The unchanged input still looks along the source gaze: the estimator must read that.
    assert result["identity"]["gaze_error_deg"] == pytest.approx(source_target, abs=3.0)
    assert result["identity"]["psnr"] > 25 > result["model"]["psnr"]
    assert result["identity"]["novel_psnr"] < result["identity"]["psnr"]   # the camera moved
    for name in ("model", "identity", "oracle"):
        assert all(math.isfinite(v) for v in result[name].values())
    assert "gaze_error_deg" not in result["oracle"] and result["oracle"]["psnr"] > result["model"]["psnr"]
    assert result["n"] == 1 and result["seconds_per_image"] > 0


def test_eval_cli_writes_json(tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in RTGaze("tiny").state_dict().items()}, str(weights))
    out = tmp_path / "eval.json"
    assert cli_main(["eval", "--weights", str(weights), "--identities", "1", "--samples", "1", "--no-gaze",
                     "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "eye_psnr" in printed and "identity" in printed
    data = json.loads(out.read_text())
    assert data["n"] == 1 and "gaze_error_deg" not in data["model"] and "environment" in data


def test_eval_cli_refuses_bad_arguments(tmp_path, capsys):
    assert cli_main(["eval", "--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["eval", "--identities", "0", "--weights", "x"]) == 2


def test_shipped_weights_beat_the_identity_baseline_on_gaze_and_eye_region_error():
    """The embedded tiny weights (issue #8) on 16 held-out pairs, fixed seed. They must read the
    target gaze better than the unchanged input, have a lower eye-region squared error (eye PSNR)
    and beat it at the novel camera. Measured at commit time: gaze error 7.2 vs 21.8 deg, eye PSNR
    19.8 vs 18.3 dB, novel-view PSNR 22.2 vs 18.2 dB. Eye-region L1 (0.129 vs 0.106) does NOT beat
    the baseline (docs/model.md says why), so it is not asserted."""
    from rtgaze_fast.cli import default_weights, load_weights
    path = default_weights("tiny")
    assert path is not None, "rtgaze_fast/assets/rtgaze_tiny.safetensors is missing from the package"
    model = RTGaze("tiny", deterministic=True)
    load_weights(model, path)
    result = evaluate(model.float(), n_identities=8, samples_per_identity=2, seed=0, progress=False)
    m, i = result["model"], result["identity"]
    assert m["gaze_error_deg"] < i["gaze_error_deg"] - 10
    assert m["novel_gaze_error_deg"] < i["novel_gaze_error_deg"] - 15
    assert m["eye_psnr"] > i["eye_psnr"] + 0.75
    assert m["novel_psnr"] > i["novel_psnr"] + 2
    assert m["psnr"] > 20   # a face, not noise (the step-345 model of the first recipe: 14.6)
