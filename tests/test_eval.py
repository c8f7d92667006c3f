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


def test_no_oracle_row_where_the_rays_are_at_the_output_size():
    """tiny_hr renders 64x64 rays for a 64x64 output: its ray-grid 'oracle' would be the target itself
    (126 dB), so there is no such row, and the table says why."""
    from rtgaze_fast.evaluation import format_table
    result = evaluate(RTGaze("tiny_hr", deterministic=True), n_identities=1, samples_per_identity=1, estimate=False,
                      progress=False)
    assert "identity" in result and "oracle" not in result and result["ray_res"] == result["resolution"] == 64
    assert "no oracle: rays at the output size" in format_table(result)


def test_eval_cli_writes_json(tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in RTGaze("tiny").state_dict().items()}, str(weights))
    out = tmp_path / "eval.json"
    assert cli_main(["eval", "--config", "tiny", "--weights", str(weights), "--identities", "1", "--samples", "1",
                     "--no-gaze", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "eye_psnr" in printed and "identity" in printed
    data = json.loads(out.read_text())
    assert data["n"] == 1 and "gaze_error_deg" not in data["model"] and "environment" in data


def test_eval_cli_refuses_bad_arguments(tmp_path, capsys):
    assert cli_main(["eval", "--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["eval", "--identities", "0", "--weights", "x"]) == 2


def test_shipped_weights_beat_the_identity_baseline_on_gaze_and_eye_region_error():
    """The embedded tiny weights (issue #8) on their original 16 held-out pairs (seed 0, the variety-1
    generator they were trained on; their issue-#19 protocol scores are in
    benchmarks/results/protocol_baseline_tiny.json). They must read the
    target gaze better than the unchanged input, have a lower eye-region squared error (eye PSNR)
    and beat it at the novel camera. Measured at commit time: gaze error 7.2 vs 21.8 deg, eye PSNR
    19.8 vs 18.3 dB, novel-view PSNR 22.2 vs 18.2 dB. Eye-region L1 (0.129 vs 0.106) does NOT beat
    the baseline (docs/model.md says why), so it is not asserted."""
    from rtgaze_fast.cli import default_weights, load_weights
    path = default_weights("tiny")
    assert path is not None, "rtgaze_fast/assets/rtgaze_tiny.safetensors is missing from the package"
    model = RTGaze("tiny", deterministic=True)
    load_weights(model, path)
    result = evaluate(model.float(), n_identities=8, samples_per_identity=2, seed=0, progress=False, variety=1)
    m, i = result["model"], result["identity"]
    assert m["gaze_error_deg"] < i["gaze_error_deg"] - 10
    assert m["novel_gaze_error_deg"] < i["novel_gaze_error_deg"] - 15
    assert m["eye_psnr"] > i["eye_psnr"] + 0.75
    assert m["novel_psnr"] > i["novel_psnr"] + 2
    assert m["psnr"] > 20   # a face, not noise (the step-345 model of the first recipe: 14.6)


def test_default_weights_beat_the_tiny_weights_on_held_out_pairs():
    """The default embedded model (DEFAULT_CONFIG = tiny_hr, issue #19) against the tiny weights it
    replaced as the default, on the first 16 test-split pairs (8 held-out subjects, seed 0, variety
    2): lower gaze error, higher eye-region and novel-view PSNR, as on the whole 256-pair test split
    (benchmarks/results/train_tiny_hr_cpu.json). Measured at commit time: gaze 7.7 vs 13.3 deg, eye
    PSNR 18.52 vs 17.87 dB, novel-view PSNR 16.85 vs 16.15 dB (on 32 pairs: 8.2 vs 11.4, 18.64 vs
    18.24, 17.02 vs 16.57)."""
    from rtgaze_fast.model import DEFAULT_CONFIG
    from rtgaze_fast.model.weights import default_weights, load_weights
    assert DEFAULT_CONFIG == "tiny_hr"
    scores = {}
    for config in ("tiny", DEFAULT_CONFIG):
        path = default_weights(config)
        assert path is not None, f"rtgaze_fast/assets/rtgaze_{config}.safetensors is missing from the package"
        model = RTGaze(config, deterministic=True)
        load_weights(model, path)
        scores[config] = evaluate(model.float(), n_identities=8, samples_per_identity=2, seed=0, progress=False,
                                  split="test", baselines=False)["model"]
    new, old = scores[DEFAULT_CONFIG], scores["tiny"]
    assert new["gaze_error_deg"] < old["gaze_error_deg"] - 2
    assert new["eye_psnr"] > old["eye_psnr"] + 0.2
    assert new["novel_psnr"] > old["novel_psnr"] + 0.2


# ---------------------------------------------------------------- evaluate() against hand computations

def _ssim_by_hand(x, y, data_range=2.0):
    """SSIM from its definition (Wang et al. 2004): an 11x11 Gaussian window (sigma 1.5) at every
    pixel, the image reflected at its borders, C1 = (0.01 L)^2, C2 = (0.03 L)^2, mean over pixels
    and channels; float64, one window at a time."""
    import numpy as np
    pad = ((0, 0), (5, 5), (5, 5))
    x, y = np.pad(x.double().numpy(), pad, mode="reflect"), np.pad(y.double().numpy(), pad, mode="reflect")
    g = np.exp(-(np.arange(11) - 5) ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / g.sum() ** 2
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for c in range(x.shape[0]):
        for i in range(x.shape[1] - 10):
            for j in range(x.shape[2] - 10):
                a, b = x[c, i:i + 11, j:j + 11], y[c, i:i + 11, j:j + 11]
                ma, mb = (w * a).sum(), (w * b).sum()
                va, vb, cov = (w * a * a).sum() - ma ** 2, (w * b * b).sum() - mb ** 2, (w * a * b).sum() - ma * mb
                vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_against_hand_computed_values():
    # Two flat images: only the luminance term is left, (2ab + C1) / (a^2 + b^2 + C1) with C1 = 0.02^2.
    a, b = torch.full((3, 16, 16), 0.5), torch.full((3, 16, 16), 0.2)
    assert ssim(a, b) == pytest.approx((2 * 0.5 * 0.2 + 4e-4) / (0.5 ** 2 + 0.2 ** 2 + 4e-4), abs=1e-5)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 20, 20, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(3, 20, 20, generator=g)).clamp(-1, 1)
    assert ssim(y, x) == pytest.approx(_ssim_by_hand(y, x), abs=1e-5)


class _Truth(torch.nn.Module):
    """A stub model whose redirect returns the generator's ground truth for the requested gaze and
    camera (the held-out item it was asked about) plus a per-item offset."""

    def __init__(self, config, ds, offsets):
        super().__init__()
        self.config, self.ds, self.offsets = config, ds, offsets
        self.weight = torch.nn.Parameter(torch.zeros(1))   # evaluate() reads the device from the parameters

    def redirect(self, image, gaze, camera):
        from rtgaze_fast.data.synthetic import render
        for i in range(len(self.ds)):
            lab = self.ds.sample_labels(i)
            if torch.equal(lab["gaze_target"], gaze[0]) and any(torch.equal(lab[k], camera[0])
                                                                 for k in ("camera", "camera_novel")):
                truth = render(self.ds.identity(i), camera[0], gaze[0], self.ds.target_resolution,
                               self.ds.supersample)["image"]
                return (truth + self.offsets[i])[None]
        raise AssertionError("asked about a pair the held-out set does not have")


def _truth_model(n, offsets, image_size=32, output_size=32):
    """The stub on held-out pairs at a small size (cheap renders): what evaluate() reads of a config."""
    from types import SimpleNamespace
    cfg = SimpleNamespace(name="stub", image_size=image_size, output_size=output_size, ray_res=8)
    return _Truth(cfg, dataset_for(cfg, 1, 5, split="test", samples_per_identity=n), offsets)


def test_evaluate_averages_match_a_hand_computation():
    """Three held-out pairs; the stub is off by a known constant per pair, so its per-pair scores are
    known in closed form (PSNR 10 log10(4 / c^2), eye L1 c); the identity baseline's by hand from
    the items. The averages must be the plain means over the pairs."""
    from torch.nn import functional as F
    offsets = [0.05, 0.1, 0.4]     # mean != median, so an average of the wrong kind shows
    stub = _truth_model(3, offsets)
    result = evaluate(stub, n_identities=1, samples_per_identity=3, seed=5, estimate=False, progress=False)
    assert result["n"] == 3 and len(result["per_sample"]) == 3
    psnr_c = [10 * math.log10(4 / c ** 2) for c in offsets]
    m = result["model"]
    for key in ("psnr", "eye_psnr", "novel_psnr"):
        assert m[key] == pytest.approx(sum(psnr_c) / 3, abs=1e-3), key
    assert m["eye_l1"] == pytest.approx(sum(offsets) / 3, abs=1e-5)
    psnrs, l1s = [], []
    for item in (stub.ds[i] for i in range(3)):
        same = F.interpolate(item["image"][None], size=stub.config.output_size, mode="area")[0]
        err = same - item["target"]
        psnrs.append(10 * math.log10(4 / float((err ** 2).mean())))
        inside = item["eye_mask"][0] > 0.5
        l1s.append(float(err.abs().mean(0)[inside].mean()))
    assert result["identity"]["psnr"] == pytest.approx(sum(psnrs) / 3, rel=1e-5)
    assert result["identity"]["eye_l1"] == pytest.approx(sum(l1s) / 3, rel=1e-5)


def test_evaluate_scores_the_ground_truth_as_perfect():
    """A model that returns the truth: gaze error ~0 at both cameras (the estimator reads the
    generator's own render), exact image scores."""
    result = evaluate(_truth_model(1, [0.0]), n_identities=1, samples_per_identity=1, seed=5, progress=False)
    m = result["model"]
    assert m["gaze_error_deg"] < 1.0 and m["novel_gaze_error_deg"] < 1.0, m
    assert m["eye_l1"] == 0.0 and m["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert m["psnr"] == pytest.approx(10 * math.log10(4 / 1e-12))   # evaluation.psnr's floor on the error
    assert result["identity"]["gaze_error_deg"] > 5   # the same pair is far from perfect unchanged


# ---------------------------------------------------------------- the protocol (issue #19)

def test_protocol_splits_hold_disjoint_subjects_on_separate_seeds():
    """Decisions on 'val', final figures on 'test' (at least 256 pairs), 'train' scores training
    pairs: the held-out splits share no subject with training or with each other, and differ in
    seed, so a held-out subject is not a re-draw of a training one."""
    from rtgaze_fast.data.synthetic import SyntheticGaze
    from rtgaze_fast.evaluation import PROTOCOL
    assert set(PROTOCOL) == {"val", "test", "train"}
    (t_split, t_seed, t_ids, t_per), (v_split, v_seed, v_ids, v_per) = PROTOCOL["test"], PROTOCOL["val"]
    assert t_ids * t_per >= 256 and v_ids * v_per >= 64
    assert t_split == "test" and v_split == "val" and PROTOCOL["train"][0] == "train" and t_seed != v_seed
    ids = {name: {ds.identity_id(i) for i in range(len(ds))}
           for name, (split, seed, n, per) in PROTOCOL.items()
           for ds in [SyntheticGaze(n, seed=seed, split=split, samples_per_identity=per)]}
    ids["recipe"] = set(range(100_000))   # any training run's subjects (rtgaze-fast train --identities)
    for a in ("val", "test"):
        for b in ("val", "test", "train", "recipe"):
            assert a == b or not ids[a] & ids[b], (a, b)


def test_eval_cli_states_split_pairs_and_resolution(tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in RTGaze("tiny").state_dict().items()}, str(weights))
    out = tmp_path / "eval.json"
    assert cli_main(["eval", "--config", "tiny", "--weights", str(weights), "--split", "val", "--identities", "1",
                     "--samples", "1", "--no-gaze", "--no-baseline", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 pairs of split 'val' (seed 1, variety 2); images scored at 64x64" in printed
    data = json.loads(out.read_text())
    assert data["resolution"] == 64 and data["split"] == "val" and data["seed"] == 1 and data["variety"] == 2
    assert "identity" not in data and "oracle" not in data
    assert cli_main(["eval", "--weights", str(weights), "--split", "nope"]) == 2
