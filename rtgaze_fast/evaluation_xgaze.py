"""Gaze-redirection quality on held-out ETH-XGaze subjects: ``rtgaze-fast eval --data ethxgaze``.

Pairs of held-out subjects (``ETHXGazePairs`` of the split, epoch 0, an evenly drawn subset):
the source image is redirected to the target's head-frame gaze and rendered from the target's
camera; the output is compared with the real target at the model's output size. What can be
computed offline:

- ``psnr`` / ``ssim`` of the face (the whole normalised patch) and ``eye_psnr`` / ``eye_l1``
  inside the eye region (from the target's head pose, ``eye_mask_from_head_pose``);
- ``gaze_error_deg``: the gaze a trained estimator (``rtgaze-fast train-gaze``) reads off the
  output against the target's label (``face_gaze``, normalised camera frame);
- ``head_error_deg`` (head-pose consistency): the head pose the estimator reads off the output
  against the target's;
- ``novel_*``: the same restricted to pairs whose target is another camera (same frame).

Rows: ``model``; ``identity`` (the source unchanged: what ignoring the request scores); and
``estimator`` (the estimator on the real targets: its own error on these held-out images, the
floor below which a redirection score means nothing).
"""
from __future__ import annotations

import statistics
import time
from typing import Dict, List, Optional

import torch
from torch.nn import functional as F

IMAGE_METRICS = ("psnr", "ssim", "eye_psnr", "eye_l1")
ESTIMATOR_METRICS = ("gaze_error_deg", "head_error_deg")


def evaluate_xgaze(model, files: List[str], estimator=None, pairs: int = 64, seed: int = 0,
                   novel_fraction: float = 0.5, progress: bool = True) -> dict:
    from tqdm import tqdm
    from .data.ethxgaze import ETHXGazePairs
    from .evaluation import masked_l1, psnr, ssim
    from .gaze import angular_error_deg
    from .train.distributed import epoch_permutation
    cfg = model.config
    device = next(model.parameters()).device
    ds = ETHXGazePairs(files, cfg.image_size, cfg.output_size, seed=seed, novel_fraction=novel_fraction)
    picks = sorted(epoch_permutation(len(ds), seed, 0)[:pairs].tolist())
    rows: List[dict] = []
    times = []
    model.eval()
    for i in tqdm(picks, desc="eval", disable=not progress):
        item = ds[(0, i)]
        src = item["image"][None].to(device)
        t0 = time.perf_counter()
        pred = model.redirect(src, item["gaze_target"][None].to(device), item["camera"][None].to(device))[0].cpu()
        times.append(time.perf_counter() - t0)
        same = F.interpolate(item["image"][None], size=cfg.output_size, mode="area")[0]
        tgt, mask = item["target"], item["eye_mask"]
        row = {"novel": bool(item["novel"]), "subject": int(item["subject"]), "source": int(item["source_index"]),
               "target": int(item["target_index"])}
        for name, img in (("model", pred), ("identity", same)):
            row[name] = {"psnr": psnr(img, tgt), "ssim": ssim(img, tgt), "eye_psnr": psnr(img, tgt, mask),
                         "eye_l1": masked_l1(img, tgt, mask)}
        if estimator is not None:
            est = estimator.predict(torch.stack([pred, same, tgt]).to(next(estimator.parameters()).device))
            g, h = est["gaze"].cpu(), est["head_pose"].cpu()
            gl, hl = item["gaze_target_camera"].expand(3, 2), item["head_pose"].expand(3, 2)
            ge, he = angular_error_deg(g, gl), angular_error_deg(h, hl)
            for k, name in enumerate(("model", "identity", "estimator")):
                row.setdefault(name, {}).update({"gaze_error_deg": float(ge[k]), "head_error_deg": float(he[k])})
        rows.append(row)
    summary = {}
    for name in ("model", "identity", "estimator"):
        if name not in rows[0]:
            continue
        keys = list(rows[0][name])
        s = {k: statistics.fmean(r[name][k] for r in rows) for k in keys}
        novel = [r for r in rows if r["novel"]]
        if novel:
            s.update({f"novel_{k}": statistics.fmean(r[name][k] for r in novel) for k in keys
                      if k in ("psnr", "gaze_error_deg", "head_error_deg")})
        summary[name] = s
    return {**summary, "per_pair": rows, "n": len(rows), "n_novel": sum(r["novel"] for r in rows),
            "subjects": sorted({r["subject"] for r in rows}), "seconds_per_image": statistics.median(times)}


def format_table(result: dict, estimator_meta: Optional[Dict[str, str]] = None) -> str:
    order = ["psnr", "ssim", "eye_psnr", "eye_l1", "gaze_error_deg", "head_error_deg",
             "novel_psnr", "novel_gaze_error_deg", "novel_head_error_deg"]
    lower = {"eye_l1", "gaze_error_deg", "head_error_deg", "novel_gaze_error_deg", "novel_head_error_deg"}
    est = result.get("estimator", {})
    lines = [f"{'metric':<24}{'model':>10}{'identity':>10}{'estimator':>11}  better", "-" * 64]
    for m in order:
        if m not in result["model"]:
            continue
        e = f"{est[m]:>11.3f}" if m in est else f"{'-':>11}"
        lines.append(f"{m:<24}{result['model'][m]:>10.3f}{result['identity'][m]:>10.3f}{e}  "
                     f"{'lower' if m in lower else 'higher'}")
    lines.append(f"{result['n']} held-out pairs ({result['n_novel']} from another camera) of subjects "
                 f"{result['subjects']}; model {result['seconds_per_image'] * 1e3:.1f} ms per image")
    if "estimator" in result:
        line = "estimator column: the gaze estimator on the real targets (its own error on these images)"
        if estimator_meta:
            line += (f"; on its held-out set at training: gaze {estimator_meta.get('held_out_gaze_error_deg')} deg, "
                     f"head {estimator_meta.get('held_out_head_error_deg')} deg")
        lines.append(line)
    else:
        lines.append("no --gaze-estimator: gaze and head-pose errors not computed "
                     "(train one with rtgaze-fast train-gaze)")
    return "\n".join(lines)


def run(args) -> dict:
    """``eval --data ethxgaze``: the CLI's arguments -> the result (printed and written by the caller)."""
    from .errors import UserError as CliError
    from .model.weights import load_weights
    from .data.ethxgaze import split_files
    from .model import RTGaze
    if not args.data_dir:
        raise CliError("--data ethxgaze needs --data-dir")
    if not args.weights:
        raise CliError("--data ethxgaze needs --weights (the embedded weights were trained on synthetic faces)")
    try:
        files = split_files(args.data_dir, args.split, args.val_subjects, args.split_file)
    except (OSError, KeyError, ValueError) as e:
        raise CliError(e.args[0] if isinstance(e, KeyError) and e.args else str(e)) from None
    model = RTGaze(args.config, deterministic=True)
    load_weights(model, args.weights)
    model = model.float().to(args.device)
    estimator, meta = None, None
    if args.gaze_estimator:
        from .gaze_estimator import load_estimator
        try:
            estimator, meta = load_estimator(args.gaze_estimator, args.device)
        except (OSError, ValueError) as e:
            raise CliError(str(e)) from None
    result = evaluate_xgaze(model, files, estimator, pairs=args.pairs, seed=args.seed)
    result["table"] = format_table(result, meta)
    if meta:
        result["estimator_meta"] = meta
    return result
