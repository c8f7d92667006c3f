"""The recipe that trains the embedded weights: RTGaze on the synthetic gaze data (issue #8).

``rtgaze-fast train --config tiny --steps N -o rtgaze_fast/assets/rtgaze_tiny.safetensors``:

1. renders a cache of SyntheticGaze training pairs once (``workers`` processes; inputs at the
   model's input size, targets at its output size, depths at its ray resolution), stored as one
   safetensors file so a resumed or repeated run skips it;
2. trains with the paper's loss (L_R with the eye mask, L_D against the generator's exact depth,
   L_P) through the fastest renderer with a backward (the fused cpu one on a CPU); a
   ``novel_fraction`` of each batch asks for the target gaze seen from the sample's second camera
   (the multi-view supervision that makes the triplane 3D); Adam with a cosine schedule;
3. writes the weights as fp16 safetensors (metadata: config, steps, the command, the time it
   took), and beside them the loss history of every step (across resumed runs) as JSON and as a
   plot.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Dict, Iterator, List, Optional

import torch

CACHE_KEYS = ("image", "target", "novel_view", "depth", "depth_novel", "eye_mask", "eye_mask_novel",
              "gaze_target", "camera", "camera_novel")


def _render_range(args) -> Dict[str, torch.Tensor]:
    config_name, n_identities, seed, samples_per_identity, lo, hi = args
    torch.set_num_threads(1)
    from ..model import CONFIGS
    ds = dataset_for(CONFIGS[config_name], n_identities, seed, samples_per_identity=samples_per_identity)
    items = [ds[i] for i in range(lo, hi)]
    return {k: torch.stack([it[k] for it in items]) for k in CACHE_KEYS}


def dataset_for(config, n_identities: int, seed: int, split: str = "train", samples_per_identity: int = 4):
    """SyntheticGaze sized for ``config``: input at image_size, targets at output_size, depth at ray_res."""
    from ..data.synthetic import SyntheticGaze
    return SyntheticGaze(n_identities, seed=seed, resolution=config.image_size, split=split,
                         samples_per_identity=samples_per_identity, target_resolution=config.output_size,
                         depth_resolution=config.ray_res)


def build_cache(config, n_identities: int, seed: int, workers: int = 2, path: Optional[str] = None,
                samples_per_identity: int = 4) -> Dict[str, torch.Tensor]:
    """Render (or load from ``path``) the training pairs as stacked tensors (images as float16)."""
    from safetensors.torch import load_file, save_file
    tag = {"config": config.name, "n_identities": str(n_identities), "seed": str(seed),
           "samples_per_identity": str(samples_per_identity)}
    if path and os.path.isfile(path):
        from safetensors import safe_open
        with safe_open(path, "pt") as f:
            if f.metadata() == tag:
                return load_file(path)
    ds = dataset_for(config, n_identities, seed, samples_per_identity=samples_per_identity)
    n = len(ds)
    bounds = [(i * n // (workers * 8), (i + 1) * n // (workers * 8)) for i in range(workers * 8)]
    jobs = [(config.name, n_identities, seed, samples_per_identity, lo, hi) for lo, hi in bounds if hi > lo]
    from tqdm import tqdm
    parts = []
    if workers > 1:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(workers) as pool:
            for part in tqdm(pool.imap(_render_range, jobs), total=len(jobs), desc="render data"):
                parts.append(part)
    else:
        parts = [_render_range(j) for j in tqdm(jobs, desc="render data")]
    cache = {k: torch.cat([p[k] for p in parts]) for k in CACHE_KEYS}
    for k in ("image", "target", "novel_view"):
        cache[k] = cache[k].half()
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save_file({k: v.contiguous() for k, v in cache.items()}, path, metadata=tag)
    return cache


def batches(cache: Dict[str, torch.Tensor], batch_size: int, seed: int,
            novel_fraction: float = 0.5) -> Iterator[dict]:
    """Endless shuffled training batches; each sample's target is the novel view with
    probability ``novel_fraction`` (its camera, depth and eye mask with it)."""
    g = torch.Generator().manual_seed(seed)
    n = cache["image"].shape[0]
    while True:
        perm = torch.randperm(n, generator=g)
        for lo in range(0, n - batch_size + 1, batch_size):
            idx = perm[lo:lo + batch_size]
            novel = (torch.rand(batch_size, generator=g) < novel_fraction)

            def pick(same: str, other: str) -> torch.Tensor:
                a, b = cache[same][idx].float(), cache[other][idx].float()
                return torch.where(novel.reshape(-1, *[1] * (a.dim() - 1)), b, a)

            yield {"image": cache["image"][idx].float(), "gaze_target": cache["gaze_target"][idx],
                   "target": pick("target", "novel_view"), "camera": pick("camera", "camera_novel"),
                   "teacher_depth": pick("depth", "depth_novel"), "eye_mask": pick("eye_mask", "eye_mask_novel")}


def save_weights(model, path: str, metadata: Dict[str, str]) -> None:
    """The model's weights as fp16 safetensors (a few MB) with string metadata."""
    from safetensors.torch import save_file
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, path, metadata=metadata)


def plot_history(history: List[dict], path: str, every: int = 100) -> str:
    """The loss terms averaged over each ``every`` steps, log scale, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("total", "L_R", "L_D", "L_P"):
        points = {}
        for h in history:
            points.setdefault(h["step"] // every, []).append(h[key])
        xs = sorted(points)
        ax.plot([(x + 1) * every for x in xs], [sum(points[x]) / len(points[x]) for x in xs], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss (mean over {every} steps)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Optional[List[str]] = None) -> int:
    from ..model import CONFIGS, RTGaze
    from .losses import RTGazeLoss
    from .trainer import Trainer, cosine_schedule
    p = argparse.ArgumentParser(prog="rtgaze-fast train",
                                description="Train RTGaze on the synthetic gaze data (the embedded weights' recipe).")
    p.add_argument("--config", default="tiny", choices=sorted(CONFIGS))
    p.add_argument("--steps", type=int, default=9600,
                   help="total steps (the embedded weights: 9600, trained in resumed segments)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--identities", type=int, default=1000, help="training subjects (4 pairs each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--novel-fraction", type=float, default=0.25)
    p.add_argument("--eye-weight", type=float, default=8.0)
    p.add_argument("--depth-weight", type=float, default=3.0, help="beta, the weight of L_D")
    p.add_argument("--decoder-lr-mul", type=float, default=30.0, help="lr multiplier of the OSGDecoder")
    p.add_argument("--workers", type=int, default=2, help="processes rendering the data cache")
    p.add_argument("--cache", default="out/train_cache_{config}.safetensors")
    p.add_argument("--checkpoint", default="out/train_{config}.ckpt.safetensors",
                   help="fp32 checkpoint + optimiser state (resumed when present)")
    p.add_argument("-o", "--output", default="out/rtgaze_{config}.safetensors", help="fp16 weights to write")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.identities * 4 < args.batch:
        p.error("--steps and --batch must be positive and --identities * 4 >= --batch")
    cfg = CONFIGS[args.config]
    fmt = lambda s: s.format(config=args.config)  # noqa: E731
    torch.manual_seed(args.seed)
    t0 = time.time()
    cache = build_cache(cfg, args.identities, args.seed, args.workers, fmt(args.cache))
    t_data = time.time() - t0
    model = RTGaze(args.config, backend="auto")  # the fastest backend that has a fused backward
    loss = RTGazeLoss(beta=args.depth_weight, eye_weight=args.eye_weight)
    trainer = Trainer(model, lr=args.lr, loss=loss, decoder_lr_mul=args.decoder_lr_mul,
                      schedule=cosine_schedule(args.steps, warmup=min(100, args.steps // 10)))
    ckpt = fmt(args.checkpoint)
    if os.path.isfile(ckpt) and os.path.isfile(ckpt + ".opt.safetensors"):
        trainer.resume(ckpt)
        print(f"resumed {ckpt} at step {trainer.step}")
    t1 = time.time()
    history = trainer.fit(batches(cache, args.batch, args.seed + trainer.step, args.novel_fraction), args.steps,
                          checkpoint=ckpt, every=100)
    t_train = time.time() - t1
    device = str(trainer.device) if trainer.device.type != "cuda" else torch.cuda.get_device_name()
    meta = {"config": args.config, "steps": str(trainer.step), "batch": str(args.batch),
            "command": "rtgaze-fast train " + " ".join(sys.argv[2:] if argv is None else argv),
            "data_seconds": f"{t_data:.0f}", "train_seconds_this_run": f"{t_train:.0f}", "device": device,
            "cpu_threads": str(torch.get_num_threads()), "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    out = fmt(args.output)
    save_weights(trainer.model, out, meta)
    with open(os.path.splitext(out)[0] + ".history.json", "w") as f:
        json.dump({"meta": meta, "history": history}, f)
    plot_history(history, os.path.splitext(out)[0] + ".loss.png")
    print(f"wrote {out}: {args.config}, {trainer.step} steps; data {t_data:.0f} s, training {t_train:.0f} s on {device}")
    return 0
