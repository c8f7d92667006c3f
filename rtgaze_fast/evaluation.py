"""Gaze-redirection quality on held-out synthetic subjects: ``rtgaze-fast eval`` (issue #8).

For each held-out pair (source image, target gaze) of ``SyntheticGaze(split="test")`` the model
redirects the source to the target gaze, from the source camera and from a second (novel)
camera, and is compared with the generator's ground-truth renders at the model's output size:

- ``psnr`` / ``ssim``: the whole image (images in [-1, 1], data range 2);
- ``eye_psnr`` / ``eye_l1``: inside the eye-region mask (eyeballs, lids, lashes, brows);
- ``gaze_error_deg``: angle between the target gaze and the gaze the analytic estimator
  (``estimate_gaze``: analysis by synthesis with the subject's known geometry) reads off the
  image, both in the head frame;
- ``novel_psnr`` / ``novel_gaze_error_deg``: the same at the novel camera (head-pose consistency:
  the face must turn with the camera while its gaze stays fixed in the head frame);
- ``seconds_per_image``: median wall time of one redirect call at batch 1.

The trivial baseline ``identity`` returns the input unchanged (area-resized to the output size)
for every request, so its gaze error is the source-target angle and its novel-view scores show
what ignoring the camera costs. A model is useful where it beats ``identity``.

The ``oracle`` row is the ground truth seen through the configuration's neural-rendering
resolution: each target area-downsampled to ``ray_res`` and bilinearly upsampled back (image
metrics only). It is what a perfect R x R render would score before super-resolution adds detail,
i.e. how much of the output's detail the super-resolution must invent at that configuration. A
configuration whose rays are at the output size (tiny_hr) has none: the target itself would score.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Dict, List, Optional

import torch
from torch.nn import functional as F

METRICS = ("psnr", "ssim", "eye_psnr", "eye_l1", "gaze_error_deg", "novel_psnr", "novel_gaze_error_deg")


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> float:
    """PSNR in dB of (3, H, W) images in [-1, 1] (peak-to-peak 2), over ``mask`` (1, H, W) when given."""
    err = ((pred.float() - target.float()) ** 2).mean(0, keepdim=True)
    if mask is not None:
        err = err[mask > 0.5]
    return float(10 * torch.log10(4.0 / err.mean().clamp_min(1e-12)))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """SSIM (Gaussian window 11, sigma 1.5) of (3, H, W) images in [-1, 1]."""
    from torchmetrics.functional.image import structural_similarity_index_measure
    return float(structural_similarity_index_measure(pred[None].float(), target[None].float(), data_range=2.0))


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    return float((pred.float() - target.float()).abs().mean(0, keepdim=True)[mask > 0.5].mean())


def ray_res_oracle(target: torch.Tensor, ray_res: int) -> torch.Tensor:
    """(3, H, W) -> the same image through a ray_res x ray_res bottleneck (area down, bilinear up)."""
    low = F.interpolate(target[None].float(), size=ray_res, mode="area")
    return F.interpolate(low, size=target.shape[-2:], mode="bilinear", align_corners=False)[0]


def _scores(pred, pred_novel, item, ip, estimate: bool) -> Dict[str, float]:
    from .data.synthetic import estimate_gaze
    from .gaze import angular_error_deg
    s = {"psnr": psnr(pred, item["target"]), "ssim": ssim(pred, item["target"]),
         "eye_psnr": psnr(pred, item["target"], item["eye_mask"]),
         "eye_l1": masked_l1(pred, item["target"], item["eye_mask"]),
         "novel_psnr": psnr(pred_novel, item["novel_view"])}
    if estimate:
        for key, img, cam in (("gaze_error_deg", pred, item["camera"]),
                              ("novel_gaze_error_deg", pred_novel, item["camera_novel"])):
            s[key] = float(angular_error_deg(estimate_gaze(img.float(), ip, cam), item["gaze_target"]))
    return s


# The protocol (issue #19): every decision (ablations, checkpoints) on "val", the final figures on
# "test", with the training split's score beside them. Each split is (dataset split, seed, subjects,
# pairs per subject); the subject id ranges of the splits are disjoint (synthetic.ID_OFFSETS) and the
# seeds differ, so no held-out subject is a training one. "train" scores pairs the recipe trains on
# (its seed 0, 4 pairs per subject).
PROTOCOL = {"test": ("test", 0, 128, 2), "val": ("val", 1, 32, 2), "train": ("train", 0, 64, 4)}


def evaluate(model, n_identities: int = 8, samples_per_identity: int = 2, seed: int = 0,
             estimate: bool = True, progress: bool = True, split: str = "test", variety: int = 2,
             baselines: bool = True) -> dict:
    """Scores of ``model`` and of the identity baseline on synthetic pairs of ``split``.

    Returns ``{"model": {metric: mean}, "identity": {...}, "oracle": {...}, "per_sample": [...],
    "seconds_per_image", "n", "resolution"}`` (every image metric is at ``resolution``, the model's
    output size); gaze errors need the estimator (``estimate=False`` skips them: faster); the oracle
    has image metrics only, and no row where the rays are at the output size; ``baselines=False``
    skips the identity and oracle rows (they do not depend on the model). ``variety`` 1 is the generator of the embedded tiny weights' original
    figures, 2 the wider one (synthetic.make_identity).
    """
    from tqdm import tqdm
    from .train.recipe import dataset_for
    cfg = model.config
    device = next(model.parameters()).device
    ds = dataset_for(cfg, n_identities, seed, split=split, samples_per_identity=samples_per_identity, variety=variety)
    per_sample, times = [], []
    model.eval()
    for i in tqdm(range(len(ds)), desc="eval", disable=not progress):
        item = ds[i]
        src = item["image"][None].to(device)
        gaze = item["gaze_target"][None].to(device)
        t0 = time.perf_counter()
        pred = model.redirect(src, gaze, item["camera"][None].to(device))[0].cpu()
        times.append(time.perf_counter() - t0)
        pred_novel = model.redirect(src, gaze, item["camera_novel"][None].to(device))[0].cpu()
        same = F.interpolate(item["image"][None], size=cfg.output_size, mode="area")[0]
        ip = ds.identity(i)
        row = {"index": i, "identity": item["identity"], "model": _scores(pred, pred_novel, item, ip, estimate)}
        if baselines:
            row["identity_baseline"] = _scores(same, same, item, ip, estimate)
        if baselines and cfg.ray_res < cfg.output_size:
            row["oracle"] = _scores(ray_res_oracle(item["target"], cfg.ray_res),
                                    ray_res_oracle(item["novel_view"], cfg.ray_res), item, ip, False)
        per_sample.append(row)
    rows = (("model", "model"), ("identity", "identity_baseline"), ("oracle", "oracle"))
    summary = {name: {k: statistics.fmean(s[key][k] for s in per_sample) for k in per_sample[0][key]}
               for name, key in rows if key in per_sample[0]}
    return {**summary, "per_sample": per_sample, "n": len(ds), "ray_res": cfg.ray_res,
            "resolution": cfg.output_size, "split": split, "seed": seed, "variety": variety,
            "seconds_per_image": statistics.median(times)}


def format_table(result: dict) -> str:
    names = [m for m in METRICS if m in result["model"]]
    better = {"eye_l1": "lower", "gaze_error_deg": "lower", "novel_gaze_error_deg": "lower"}
    oracle = result.get("oracle", {})
    ident = result.get("identity", {})
    lines = [f"{'metric':<22}{'model':>10}{'identity':>10}{'oracle':>10}  better", "-" * 60]
    for m in names:
        o = f"{oracle[m]:>10.3f}" if m in oracle else f"{'-':>10}"
        i = f"{ident[m]:>10.3f}" if m in ident else f"{'-':>10}"
        lines.append(f"{m:<22}{result['model'][m]:>10.3f}{i}{o}  {better.get(m, 'higher')}")
    res, rays = result.get("resolution", "?"), result.get("ray_res", "?")
    oracle_note = (f"; oracle: the targets through the {rays}^2 ray grid" if oracle else
                   "; no oracle: rays at the output size" if rays == res else "")
    lines.append(f"{result['n']} pairs of split {result.get('split', 'test')!r} (seed {result.get('seed', '?')}, "
                 f"variety {result.get('variety', '?')}); images scored at {res}x{res}; model "
                 f"{result['seconds_per_image'] * 1e3:.1f} ms per image (median, batch 1)" + oracle_note)
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    from .errors import UserError
    from .model.weights import config_of, default_weights, load_weights
    from .model import CONFIGS, DEFAULT_CONFIG, RTGaze
    p = argparse.ArgumentParser(prog="rtgaze-fast eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS),
                   help=f"default: the one in --weights' metadata, else {DEFAULT_CONFIG} (the default embedded model)")
    p.add_argument("--weights", help="safetensors weights (default: the embedded ones for the config)")
    p.add_argument("--split", help="synthetic (default 'test'): 'val' for every decision, 'test' for the final "
                                   "figures, 'train' for the training-split score (subjects, pairs, seed: PROTOCOL); "
                                   "ETH-XGaze (default 'val'): 'val' (the subjects `train` held out) or a labelled "
                                   "official split")
    p.add_argument("--identities", type=int, help="subjects (default: the protocol's)")
    p.add_argument("--samples", type=int, help="pairs per subject (default: the protocol's)")
    p.add_argument("--seed", type=int, help="default: the protocol's")
    p.add_argument("--variety", type=int, default=2, choices=(1, 2),
                   help="synthetic generator: 2 (wider, issue #19) or 1 (the embedded tiny weights' original)")
    p.add_argument("--no-baseline", action="store_true", help="skip the identity and oracle rows (faster)")
    p.add_argument("--no-gaze", action="store_true", help="skip the gaze estimator (faster)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", help="write the results here")
    x = p.add_argument_group("ETH-XGaze (--data ethxgaze; rtgaze_fast/evaluation_xgaze.py)")
    x.add_argument("--data", default="synthetic", choices=("synthetic", "ethxgaze"))
    x.add_argument("--data-dir", help="the folder holding train_test_split.json and train/")
    x.add_argument("--split-file")
    x.add_argument("--val-subjects", type=int, default=5, help="as given to `train`")
    x.add_argument("--pairs", type=int, default=200, help="held-out pairs scored")
    x.add_argument("--gaze-estimator", help="weights from `rtgaze-fast train-gaze` (gaze and head-pose errors)")
    args = p.parse_args(argv)
    args.config = args.config or config_of(args.weights)
    if args.data == "ethxgaze":
        args.split = args.split or "val"
        args.seed = 0 if args.seed is None else args.seed
        return _eval_xgaze(args)
    args.split = args.split or "test"
    if args.split not in PROTOCOL:
        raise UserError(f"--split must be one of {tuple(PROTOCOL)} for synthetic data, got {args.split!r}")
    split, seed, identities, samples = PROTOCOL[args.split]
    args.identities = identities if args.identities is None else args.identities
    args.samples = samples if args.samples is None else args.samples
    args.seed = seed if args.seed is None else args.seed
    if args.identities < 1 or args.samples < 1:
        raise UserError("--identities and --samples must be positive")
    weights = args.weights or default_weights(args.config)
    if weights is None:
        raise UserError(f"no embedded weights for config {args.config!r}: pass --weights")
    model = RTGaze(args.config, deterministic=True)
    load_weights(model, weights)
    model = model.float().to(args.device)
    result = evaluate(model, args.identities, args.samples, args.seed, estimate=not args.no_gaze, split=split,
                      variety=args.variety, baselines=not args.no_baseline)
    result["weights"] = os.path.relpath(weights)
    return _report(result, format_table(result), args)


def _report(result: dict, table: str, args) -> int:
    """Print the table; add the environment and write the JSON when asked (both eval paths)."""
    result["environment"] = {"device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
                             "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    print(table)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")
    return 0


def _eval_xgaze(args) -> int:
    from .errors import UserError
    from .evaluation_xgaze import run
    if args.pairs < 1:
        raise UserError("--pairs must be positive")
    result = run(args)
    result["weights"] = os.path.relpath(args.weights)
    return _report(result, result["table"], args)
