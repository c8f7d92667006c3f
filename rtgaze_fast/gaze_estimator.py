"""A gaze estimator to score redirection on real faces: ``rtgaze-fast train-gaze`` (issue #18).

The protocol of the gaze-redirection papers (ST-ED, GazeNeRF, RTGaze): a ResNet regressor trained
on ETH-XGaze's training subjects reads the gaze and head pose off each redirected image; its
angular error against the requested gaze (and the target's head pose) is the redirection score.
An estimator has an error of its own, so ``train-gaze`` measures it on held-out subjects and
stores it in the weights' metadata, and ``eval`` prints it beside every score it gives: a
redirection error near the estimator's own error is as good as this estimator can tell.

``GazeEstimator``: a ResNet (He et al. 2016; basic blocks, batch norm) on a normalised face patch
in [-1, 1] RGB, resized to the config's input size, regressing (gaze pitch, gaze yaw, head pitch,
head yaw) in radians in the NORMALISED CAMERA frame (``face_gaze``, ``face_head_pose``). Configs:
``resnet18`` (224 px; the usual backbone size) and ``small`` (112 px, a CPU-sized one). Trained
with an L1 loss on the four angles (as ETH-XGaze's baseline), Adam, cosine schedule, no pretrained
weights (none can be downloaded here).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class EstimatorConfig:
    name: str
    input_size: int
    widths: Tuple[int, ...]
    blocks: Tuple[int, ...]


ESTIMATOR_CONFIGS = {
    "resnet18": EstimatorConfig("resnet18", 224, (64, 128, 256, 512), (2, 2, 2, 2)),
    "small": EstimatorConfig("small", 112, (16, 32, 64, 128), (1, 1, 1, 1)),
}


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = None
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.skip is None else self.skip(x)))


class GazeEstimator(nn.Module):
    """``forward(image (B, 3, H, W) in [-1, 1])`` -> (B, 4): gaze (pitch, yaw), head (pitch, yaw), radians."""

    def __init__(self, config: str = "resnet18"):
        super().__init__()
        if config not in ESTIMATOR_CONFIGS:
            raise ValueError(f"config must be one of {sorted(ESTIMATOR_CONFIGS)}, got {config!r}")
        cfg = self.config = ESTIMATOR_CONFIGS[config]
        w0 = cfg.widths[0]
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 7, 2, 3, bias=False), nn.BatchNorm2d(w0), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        layers, cin = [], w0
        for i, (w, n) in enumerate(zip(cfg.widths, cfg.blocks)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, 4)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        s = self.config.input_size
        if image.shape[-2:] != (s, s):
            image = F.interpolate(image, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        x = self.layers(self.stem(image))
        return self.head(x.mean((2, 3)))

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        was = self.training
        self.eval()
        try:
            out = self(image.float())
        finally:
            self.train(was)
        return {"gaze": out[:, :2], "head_pose": out[:, 2:]}


def load_estimator(path: str, device="cpu") -> Tuple[GazeEstimator, Dict[str, str]]:
    """A trained estimator and its metadata (config, held-out errors, data)."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    if not os.path.isfile(path):
        raise FileNotFoundError(f"gaze estimator weights {path!r} do not exist "
                                "(train them with rtgaze-fast train-gaze)")
    with safe_open(path, "pt") as f:
        meta = dict(f.metadata() or {})
    if meta.get("kind") != "gaze_estimator":
        raise ValueError(f"{path!r} is not a gaze estimator written by rtgaze-fast train-gaze")
    model = GazeEstimator(meta["config"])
    model.load_state_dict(load_file(path))
    return model.to(device).eval(), meta


# ----------------------------------------------------------------- data

class SyntheticImages(torch.utils.data.Dataset):
    """Rendered synthetic faces with camera-frame labels (``rtgaze_fast.data.synthetic``), drawn like
    SyntheticGaze's targets: ``image``, ``gaze`` (normalised camera frame), ``head_pose``."""

    def __init__(self, n_identities: int, size: int, seed: int = 0, split: str = "train", per_identity: int = 8):
        from .data.synthetic import SyntheticGaze
        self.ds = SyntheticGaze(n_identities, seed=seed, resolution=size, split=split,
                                samples_per_identity=per_identity)
        self.size = size

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index) -> Dict[str, torch.Tensor]:
        from .data.synthetic import head_pose_of_camera, head_to_camera_gaze, render
        i = int(index[1]) if isinstance(index, (tuple, list)) else int(index)
        lab = self.ds.sample_labels(i)
        img = render(self.ds.identity(i), lab["camera"], lab["gaze_target"], self.size, 1)["image"]
        return {"image": img, "gaze": head_to_camera_gaze(lab["gaze_target"], lab["camera"]).float(),
                "head_pose": head_pose_of_camera(lab["camera"]).float()}


def datasets(args) -> Tuple[torch.utils.data.Dataset, torch.utils.data.Dataset, str]:
    """(train, held-out, description) for ``--data``."""
    size = ESTIMATOR_CONFIGS[args.config].input_size
    if args.data == "synthetic":
        return (SyntheticImages(args.identities, size, args.seed, "train"),
                SyntheticImages(max(args.identities // 8, 1), size, args.seed, "test"),
                f"synthetic: {args.identities} training identities, held-out identities")
    from .data.ethxgaze import ETHXGazeImages, split_files
    train = split_files(args.data_dir, "train", args.val_subjects, args.split_file)
    val = split_files(args.data_dir, args.eval_split, args.val_subjects, args.split_file)
    names = ", ".join(os.path.basename(v) for v in val)
    train_ds, val_ds = ETHXGazeImages(train, size), ETHXGazeImages(val, size)
    for ds, what in ((train_ds, "training"), (val_ds, "held-out")):
        if not ds.index.has_gaze:
            raise SystemExit(f"rtgaze-fast train-gaze: the {what} files have no face_gaze labels")
    return train_ds, val_ds, f"ETH-XGaze: held-out split {args.eval_split!r} ({names})"


@torch.no_grad()
def estimator_errors(model: GazeEstimator, ds, max_images: int = 2000, batch: int = 32, device="cpu",
                     seed: int = 0) -> Dict[str, float]:
    """Mean angular errors (degrees) of gaze and head pose on up to ``max_images`` images of ``ds``
    (an evenly spaced subset when larger)."""
    from .gaze import angular_error_deg
    n = len(ds)
    idx = list(range(n)) if n <= max_images else [int(i * n / max_images) for i in range(max_images)]
    gaze_err, head_err = [], []
    for lo in range(0, len(idx), batch):
        items = [ds[i] for i in idx[lo:lo + batch]]
        img = torch.stack([it["image"] for it in items]).to(device)
        pred = model.predict(img)
        gaze_err.append(angular_error_deg(pred["gaze"].cpu(), torch.stack([it["gaze"] for it in items])))
        head_err.append(angular_error_deg(pred["head_pose"].cpu(), torch.stack([it["head_pose"] for it in items])))
    g, h = torch.cat(gaze_err), torch.cat(head_err)
    return {"gaze_error_deg": float(g.nanmean()), "head_error_deg": float(h.nanmean()), "images": len(idx)}


# ----------------------------------------------------------------- training

def main(argv: Optional[List[str]] = None) -> int:
    from safetensors.torch import load_file, save_file
    from .train.distributed import GlobalBatchSampler
    from .train.trainer import _flat_optimizer_state, cosine_schedule
    p = argparse.ArgumentParser(prog="rtgaze-fast train-gaze", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="ethxgaze", choices=("ethxgaze", "synthetic"))
    p.add_argument("--data-dir", help="ETH-XGaze: the folder holding train_test_split.json and train/")
    p.add_argument("--split-file")
    p.add_argument("--val-subjects", type=int, default=5, help="training subjects held out (as `train` holds them out)")
    p.add_argument("--eval-split", default="val", help="split scored at the end ('val' or an official labelled one)")
    p.add_argument("--identities", type=int, default=200, help="synthetic: training identities (8 images each)")
    p.add_argument("--config", default="resnet18", choices=sorted(ESTIMATOR_CONFIGS))
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--loader-workers", type=int, default=4)
    p.add_argument("--eval-images", type=int, default=2000, help="held-out images scored at the end")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--checkpoint", default="out/gaze_{config}.ckpt.safetensors", help="resumed when present")
    p.add_argument("-o", "--output", default="out/gaze_{config}.safetensors")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 1:
        p.error("--steps and --batch must be positive")
    if args.data == "ethxgaze" and not args.data_dir:
        p.error("--data ethxgaze needs --data-dir")
    fmt = lambda s: s.format(config=args.config)  # noqa: E731
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    train_ds, val_ds, desc = datasets(args)
    model = GazeEstimator(args.config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = cosine_schedule(args.steps, warmup=min(500, args.steps // 10))
    ckpt, step = fmt(args.checkpoint), 0
    if os.path.isfile(ckpt) and os.path.isfile(ckpt + ".opt.safetensors"):
        from safetensors import safe_open
        model.load_state_dict(load_file(ckpt, device=str(device)))
        with safe_open(ckpt + ".opt.safetensors", "pt") as f:
            meta = json.loads(f.metadata()["json"])
        state = {int(k): dict(v) for k, v in meta["state"].items()}
        for key, v in load_file(ckpt + ".opt.safetensors", device=str(device)).items():
            pid, k = key.split(".", 1)
            state.setdefault(int(pid), {})[k] = v
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        step = int(meta["step"])
        print(f"resumed {ckpt} at step {step}")

    def save_ckpt():
        os.makedirs(os.path.dirname(os.path.abspath(ckpt)), exist_ok=True)
        tensors, meta = _flat_optimizer_state(opt)
        meta["step"] = step
        save_file(tensors, ckpt + ".opt.safetensors.tmp", metadata={"json": json.dumps(meta)})
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, ckpt + ".tmp")
        os.replace(ckpt + ".opt.safetensors.tmp", ckpt + ".opt.safetensors")
        os.replace(ckpt + ".tmp", ckpt)

    sampler = GlobalBatchSampler(len(train_ds), args.batch, seed=args.seed, start_step=step)
    loader = torch.utils.data.DataLoader(train_ds, batch_sampler=sampler, num_workers=args.loader_workers,
                                         persistent_workers=args.loader_workers > 0,
                                         pin_memory=device.type == "cuda")
    from tqdm import tqdm
    t0, losses = time.time(), []
    it = iter(loader)
    model.train()
    with tqdm(total=args.steps, initial=step, desc="train-gaze", dynamic_ncols=True) as bar:
        while step < args.steps:
            b = next(it)
            target = torch.cat([b["gaze"], b["head_pose"]], 1).to(device)
            pred = model(b["image"].to(device, non_blocking=True))
            loss = (pred - target).abs().mean()
            for g in opt.param_groups:
                g["lr"] = args.lr * schedule(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            l1 = float(loss.detach())
            losses.append({"step": step, "l1": l1})
            step += 1
            bar.set_postfix(l1=f"{l1:.4f}")
            bar.update(1)
            if step % args.every == 0:
                save_ckpt()
    save_ckpt()
    t_train = time.time() - t0
    model.eval()
    err = estimator_errors(model, val_ds, args.eval_images, device=device)
    meta = {"kind": "gaze_estimator", "config": args.config, "input_size": str(model.config.input_size),
            "steps": str(step), "batch": str(args.batch), "data": args.data, "held_out": desc,
            "held_out_gaze_error_deg": f"{err['gaze_error_deg']:.3f}",
            "held_out_head_error_deg": f"{err['head_error_deg']:.3f}", "held_out_images": str(err["images"]),
            "command": "rtgaze-fast train-gaze " + " ".join(sys.argv[2:] if argv is None else argv),
            "train_seconds_this_run": f"{t_train:.0f}", "device": str(device),
            "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"), "architecture": json.dumps(asdict(model.config))}
    out = fmt(args.output)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out, metadata=meta)
    with open(os.path.splitext(out)[0] + ".json", "w") as f:
        json.dump({"meta": meta, "loss": losses}, f)
    print(f"wrote {out}: {args.config}, {step} steps ({t_train:.0f} s); on {desc}: gaze error "
          f"{err['gaze_error_deg']:.2f} deg, head pose error {err['head_error_deg']:.2f} deg ({err['images']} images)")
    return 0
