"""The training recipe: RTGaze on the synthetic gaze data (issue #8, the embedded weights) or on
ETH-XGaze (issue #18), on one process or many (torchrun; docs/training.md).

``rtgaze-fast train --config tiny --steps N -o rtgaze_fast/assets/rtgaze_tiny.safetensors``
(``--data synthetic``, the default):

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

``rtgaze-fast train --data ethxgaze --data-dir DIR`` reads the released ETH-XGaze files
(``rtgaze_fast.data.ethxgaze``): the official training subjects minus ``--val-subjects`` held out
for ``eval``, pairs drawn per epoch, images resized to the config's input and output sizes by
``--loader-workers`` DataLoader processes. There is no depth teacher for real faces here, so L_D
is off (the paper distils it from a pretrained 3D generator).

``--batch`` is the GLOBAL batch: under ``torchrun --nproc_per_node=N`` each process takes
``batch / N`` items of every global batch, and the data order is that of a single process with
the same seed, so a run resumes from its checkpoint onto any process count dividing the batch.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch

from .distributed import GlobalBatchSampler

CACHE_KEYS = ("image", "target", "novel_view", "depth", "depth_novel", "eye_mask", "eye_mask_novel",
              "gaze_target", "camera", "camera_novel")


def _render_range(args) -> Dict[str, torch.Tensor]:
    config_name, n_identities, seed, samples_per_identity, variety, lo, hi = args
    torch.set_num_threads(1)
    from ..model import CONFIGS
    ds = dataset_for(CONFIGS[config_name], n_identities, seed, samples_per_identity=samples_per_identity,
                     variety=variety)
    items = [ds[i] for i in range(lo, hi)]
    return {k: torch.stack([it[k] for it in items]) for k in CACHE_KEYS}


def dataset_for(config, n_identities: int, seed: int, split: str = "train", samples_per_identity: int = 4,
                variety: int = 2):
    """SyntheticGaze sized for ``config``: input at image_size, targets at output_size, depth at ray_res."""
    from ..data.synthetic import SyntheticGaze
    return SyntheticGaze(n_identities, seed=seed, resolution=config.image_size, split=split,
                         samples_per_identity=samples_per_identity, target_resolution=config.output_size,
                         depth_resolution=config.ray_res, variety=variety)


def build_cache(config, n_identities: int, seed: int, workers: int = 2, path: Optional[str] = None,
                samples_per_identity: int = 4, variety: int = 2) -> Dict[str, torch.Tensor]:
    """Render (or load from ``path``) the training pairs as stacked tensors (images as float16)."""
    from safetensors.torch import load_file, save_file
    # What the pairs depend on (not the config's name: configs of the same sizes share a cache).
    tag = {"sizes": f"{config.image_size},{config.output_size},{config.ray_res}", "n_identities": str(n_identities),
           "seed": str(seed), "samples_per_identity": str(samples_per_identity), "variety": str(variety)}
    if path and os.path.isfile(path):
        from safetensors import safe_open
        with safe_open(path, "pt") as f:
            if f.metadata() == tag:
                return load_file(path)
    n = n_identities * samples_per_identity
    bounds = [(i * n // (workers * 8), (i + 1) * n // (workers * 8)) for i in range(workers * 8)]
    jobs = [(config.name, n_identities, seed, samples_per_identity, variety, lo, hi) for lo, hi in bounds if hi > lo]
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


def batches(cache: Dict[str, torch.Tensor], batch_size: int, seed: int, novel_fraction: float = 0.5,
            start_step: int = 0, rank: int = 0, world: int = 1) -> Iterator[dict]:
    """Endless training batches of the cached pairs: this process's share of global batches
    ``start_step``, ``start_step + 1``, ... of ``batch_size`` items (``GlobalBatchSampler``); each
    item's target is its novel view with probability ``novel_fraction`` (its camera, depth and eye
    mask with it), drawn from (seed, epoch, item), so the batches are a function of the step."""
    n = cache["image"].shape[0]
    for keys in GlobalBatchSampler(n, batch_size, rank, world, seed, start_step):
        idx = torch.tensor([i for _, i in keys])
        novel = torch.tensor([bool(np.random.default_rng((seed, e, i, 1)).random() < novel_fraction)
                              for e, i in keys])

        def pick(same: str, other: str) -> torch.Tensor:
            a, b = cache[same][idx].float(), cache[other][idx].float()
            return torch.where(novel.reshape(-1, *[1] * (a.dim() - 1)), b, a)

        yield {"image": cache["image"][idx].float(), "gaze_target": cache["gaze_target"][idx],
               "target": pick("target", "novel_view"), "camera": pick("camera", "camera_novel"),
               "teacher_depth": pick("depth", "depth_novel"), "eye_mask": pick("eye_mask", "eye_mask_novel")}


def xgaze_batches(ds, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world: int = 1,
                  workers: int = 4, pin_memory: bool = False):
    """A DataLoader of an ETHXGazePairs over ``GlobalBatchSampler`` keys (the pairs' epoch travels
    with each key, so workers need no per-epoch state)."""
    sampler = GlobalBatchSampler(len(ds), batch_size, rank, world, seed, start_step)
    return torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                                       persistent_workers=workers > 0, prefetch_factor=4 if workers else None)


def save_weights(model, path: str, metadata: Dict[str, str]) -> None:
    """The model's weights as fp16 safetensors (a few MB) with string metadata."""
    from safetensors.torch import save_file
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, path, metadata=metadata)


def warm_start(model, path: str) -> str:
    """Load the parameters of ``path`` whose name and shape match ``model``'s; refuse a file that
    matches nothing or has parameters the model lacks. Returns a line saying what was kept."""
    from safetensors.torch import load_file
    state, own = load_file(path), model.state_dict()
    extra = sorted(set(state) - set(own))
    shapes = sorted(k for k in state if k in own and state[k].shape != own[k].shape)
    if extra or shapes or not state:
        raise SystemExit(f"rtgaze-fast train: --init {path}: parameters the model lacks {extra[:5]}, "
                         f"wrong shapes {shapes[:5]}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    fresh = sorted(set(own) - set(state))
    return f"warm start from {path}: {len(state)} tensors loaded; initialised afresh: {fresh}"


def plot_history(history: List[dict], path: str, every: int = 100) -> str:
    """The loss terms averaged over each ``every`` steps, log scale, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("total", "L_R", "L_D", "L_P", "L_raw"):
        if not any(h.get(key, 0) > 0 for h in history):
            continue  # e.g. L_D without a depth teacher
        points = {}
        for h in history:
            points.setdefault(h["step"] // every, []).append(h.get(key, 0.0))
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
    from ..model import CONFIGS
    p = argparse.ArgumentParser(prog="rtgaze-fast train",
                                description="Train RTGaze on the synthetic gaze data (the embedded weights' recipe) "
                                            "or on ETH-XGaze; under torchrun, on several processes (docs/training.md).")
    p.add_argument("--config", default="tiny", choices=sorted(CONFIGS))
    p.add_argument("--data", default="synthetic", choices=("synthetic", "ethxgaze"))
    p.add_argument("--data-dir", help="ETH-XGaze: the folder holding train_test_split.json and train/")
    p.add_argument("--split-file", help="ETH-XGaze: another split JSON (default DATA_DIR/train_test_split.json)")
    p.add_argument("--val-subjects", type=int, default=5,
                   help="ETH-XGaze: training subjects held out for `eval --split val` (0: train on all)")
    p.add_argument("--loader-workers", type=int, default=4, help="ETH-XGaze: DataLoader processes per training process")
    p.add_argument("--steps", type=int, default=9600,
                   help="total steps (the embedded weights: 9600, trained in resumed segments)")
    p.add_argument("--batch", type=int, default=8, help="GLOBAL batch, split over the processes")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--identities", type=int, default=1000, help="synthetic: training subjects (4 pairs each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--novel-fraction", type=float, default=0.25,
                   help="share of targets seen from another camera (synthetic: a second camera; "
                        "ETH-XGaze: the same frame from another camera)")
    p.add_argument("--eye-weight", type=float, default=8.0)
    p.add_argument("--depth-weight", type=float, default=3.0, help="beta, the weight of L_D (synthetic only)")
    p.add_argument("--decoder-lr-mul", type=float, default=30.0, help="lr multiplier of the OSGDecoder")
    p.add_argument("--raw-weight", type=float, default=0.0,
                   help="weight of L_raw, the reconstruction loss on the raw (pre-super-resolution) render")
    p.add_argument("--variety", type=int, default=2, choices=(1, 2),
                   help="synthetic generator: 2 (wider, issue #19) or 1 (the embedded tiny weights' data)")
    p.add_argument("--init", help="warm start from these weights (another config's too: parameters of the same name "
                                  "and shape load, the rest keep their initialisation); ignored on resume")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--workers", type=int, default=2, help="synthetic: processes rendering the data cache")
    p.add_argument("--cache", default="out/train_cache_{config}.safetensors",
                   help="the rendered pairs, reused when their sizes, subjects, seed and variety match")
    p.add_argument("--checkpoint", help="fp32 checkpoint + optimiser state, resumed when present "
                                        "(default out/train_{config}[_ethxgaze].ckpt.safetensors)")
    p.add_argument("--every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available")
    p.add_argument("--deterministic", action="store_true", help="mid-stratum renderer samples instead of jitter")
    p.add_argument("-o", "--output", help="fp16 weights to write (default out/rtgaze_{config}[_ethxgaze].safetensors)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.every < 1:
        p.error("--steps, --batch and --every must be positive")
    if args.data == "synthetic" and args.identities * 4 < args.batch:
        p.error("--identities * 4 must be >= --batch")
    if args.data == "ethxgaze" and not args.data_dir:
        p.error("--data ethxgaze needs --data-dir")
    from .distributed import env_world, setup, teardown
    if args.batch % env_world():
        p.error(f"--batch {args.batch} must be a multiple of the {env_world()} processes")
    if args.threads:
        torch.set_num_threads(args.threads)
    dist = setup(args.device)
    try:
        return _train(args, dist, argv)
    finally:
        teardown(dist)


def _train(args, dist, argv) -> int:
    from ..model import CONFIGS, RTGaze
    from .losses import RTGazeLoss
    from .trainer import Trainer, cosine_schedule
    cfg = CONFIGS[args.config]
    suffix = "" if args.data == "synthetic" else "_" + args.data
    fmt = lambda s: s.format(config=args.config)  # noqa: E731
    say = print if dist.main else (lambda *a, **k: None)
    torch.manual_seed(args.seed)
    t0 = time.time()
    if args.data == "synthetic":
        if dist.enabled and not args.cache:
            raise SystemExit("rtgaze-fast train: several processes share the synthetic data through --cache")
        cache = build_cache(cfg, args.identities, args.seed, args.workers, fmt(args.cache),
                            variety=args.variety) if dist.main else None
        dist.barrier()
        if not dist.main:
            cache = build_cache(cfg, args.identities, args.seed, 1, fmt(args.cache), variety=args.variety)
    else:
        from ..data.ethxgaze import ETHXGazePairs, split_files
        files = split_files(args.data_dir, "train", args.val_subjects, args.split_file)
        ds = ETHXGazePairs(files, cfg.image_size, cfg.output_size, seed=args.seed, novel_fraction=args.novel_fraction)
        say(f"ETH-XGaze: {len(ds.index)} images of {len(files)} training subjects "
            f"({args.val_subjects} held out), {len(ds) // args.batch} global batches of {args.batch} per epoch")
    t_data = time.time() - t0
    model = RTGaze(args.config, backend="auto")  # the fastest backend that has a fused backward
    model.renderer.deterministic = args.deterministic
    if args.init:
        say(warm_start(model, args.init))
    loss = RTGazeLoss(beta=args.depth_weight, eye_weight=args.eye_weight, raw_weight=args.raw_weight)
    trainer = Trainer(model, lr=args.lr, loss=loss, decoder_lr_mul=args.decoder_lr_mul,
                      schedule=cosine_schedule(args.steps, warmup=min(100, args.steps // 10)), dist=dist,
                      seed=args.seed)
    ckpt = fmt(args.checkpoint or f"out/train_{{config}}{suffix}.ckpt.safetensors")
    if trainer.resume_if_present(ckpt):
        say(f"resumed {ckpt} at step {trainer.step} on {dist.world} process(es)")
    if args.data == "synthetic":
        stream = batches(cache, args.batch, args.seed, args.novel_fraction, trainer.step, dist.rank, dist.world)
    else:
        stream = xgaze_batches(ds, args.batch, args.seed, trainer.step, dist.rank, dist.world, args.loader_workers,
                               pin_memory=dist.device.type == "cuda")
    t1 = time.time()
    history = trainer.fit(stream, args.steps, checkpoint=ckpt, every=args.every)
    t_train = time.time() - t1
    if not dist.main:
        return 0
    device = str(trainer.device) if trainer.device.type != "cuda" else torch.cuda.get_device_name()
    meta = {"config": args.config, "steps": str(trainer.step), "batch": str(args.batch), "data": args.data,
            "processes": str(dist.world),
            "command": "rtgaze-fast train " + " ".join(sys.argv[2:] if argv is None else argv),
            "data_seconds": f"{t_data:.0f}", "train_seconds_this_run": f"{t_train:.0f}", "device": device,
            "cpu_threads": str(torch.get_num_threads()), "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    out = fmt(args.output or f"out/rtgaze_{{config}}{suffix}.safetensors")
    save_weights(trainer.model, out, meta)
    with open(os.path.splitext(out)[0] + ".history.json", "w") as f:
        json.dump({"meta": meta, "history": history}, f)
    plot_history(history, os.path.splitext(out)[0] + ".loss.png")
    print(f"wrote {out}: {args.config}, {trainer.step} steps; data {t_data:.0f} s, training {t_train:.0f} s "
          f"on {dist.world} x {device}")
    return 0
