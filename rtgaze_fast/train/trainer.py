"""A small trainer: progress bar, mixed precision where the device has it, gradient clipping,
safetensors checkpoints (weights; optimiser state as a second safetensors file) and resume;
data-parallel over torch.distributed processes (``dist``, see ``distributed.py``).
Training renders through the model's renderer: with backend='auto', the fastest one that has a fused
backward (the cpu backend on a CPU), else the reference."""
from __future__ import annotations

import json
import math
import os
import time
from typing import Callable, Iterable, Optional

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .distributed import Dist
from .losses import RTGazeLoss

LOGGED = ("L_R", "L_D", "L_P", "L_raw", "total")


def _flat_optimizer_state(opt: torch.optim.Optimizer) -> tuple:
    """Optimiser state as flat tensors (safetensors) plus JSON metadata for the rest."""
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        meta["state"][str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.contiguous()
            else:
                meta["state"][str(pid)][k] = v
    return tensors, meta


def cosine_schedule(steps: int, warmup: int = 0, final: float = 0.05) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``final`` x lr at ``steps``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min((step - warmup) / max(steps - warmup, 1), 1.0)
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))
    return factor


class Trainer:
    def __init__(self, model, lr: float = 2e-4, loss: Optional[RTGazeLoss] = None, clip: float = 1.0,
                 amp: Optional[bool] = None, device=None, schedule: Optional[Callable[[int], float]] = None,
                 decoder_lr_mul: float = 1.0, dist: Optional[Dist] = None, seed: Optional[int] = None):
        """``schedule(step) -> factor`` scales ``lr`` at each step (e.g. ``cosine_schedule``); being a
        function of the step alone, it resumes with the step. ``decoder_lr_mul`` multiplies the lr of
        the OSGDecoder: its layers keep EG3D's equalised-lr parametrisation (unit-scale raw weights
        times 1/sqrt(fan_in)), so at the encoders' lr its densities would take thousands of steps to
        reach the scale of a surface (EG3D's ``decoder_lr_mul`` knob, as an optimiser group).

        ``dist`` (``distributed.setup()``) with more than one process: the model runs under
        DistributedDataParallel on ``dist.device``; each process passes its share of the global
        batch; the eye term's normaliser and the logged loss terms are reduced over processes, so a
        step equals a single-process step on the global batch up to float summation order. Only
        process 0 draws the progress bar and writes checkpoints. ``seed``: each step seeds torch's
        generator from (seed, rank, step) (the renderer's jitter), so a resumed run repeats the
        uninterrupted one."""
        self.dist = dist or Dist(device=torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
        self.device = self.dist.device
        self.seed = seed
        # Channels-last convolutions (as RTGaze.optimize() uses for inference): oneDNN's faster
        # layout on the CPU, no transposes around the transformer blocks, and the triplane
        # decoder's last conv writes the planes with whole texels contiguous, which the fused
        # renderer reads (and writes their gradient) in place.
        self.model = model.to(self.device).to(memory_format=torch.channels_last)
        self.loss = (loss or RTGazeLoss()).to(self.device)
        self._forward = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._forward = DistributedDataParallel(self.model, device_ids=ids)
            self.loss.mask_total = self.dist.mean
        decoder = [p for n, p in self.model.named_parameters() if n.startswith("decoder.")]
        rest = [p for n, p in self.model.named_parameters() if not n.startswith("decoder.")]
        groups = [{"params": rest, "lr_mul": 1.0}]
        if decoder:
            groups.append({"params": decoder, "lr_mul": float(decoder_lr_mul)})
        for g in groups:
            g["lr"] = lr * g["lr_mul"]
        self.opt = torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.99))
        self.clip = clip
        self.amp = self.device.type == "cuda" if amp is None else amp  # bf16 autocast on a GPU
        self.lr, self.schedule = lr, schedule
        self.step = 0
        self.history: list = []  # every step's terms, across resumes (saved beside the checkpoint)

    def train_step(self, batch: dict) -> dict:
        """One step on a batch with 'image', 'gaze_target', 'target' and optional 'camera',
        'eye_mask', 'teacher_depth' (tensors); returns its loss terms (also kept in ``history``)."""
        t0 = time.perf_counter()
        b = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        if self.seed is not None:
            torch.manual_seed(int(np.random.SeedSequence((self.seed, self.dist.rank, self.step)).generate_state(1)[0]))
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self._forward(b["image"], b["gaze_target"], b.get("camera"))
        total, terms = self.loss({k: v.float() for k, v in out.items()}, b["target"], b.get("eye_mask"),
                                 b.get("teacher_depth"))
        if self.dist.enabled:  # the global batch's terms (each process's mean, averaged)
            local = torch.tensor([terms.get(k, 0.0) for k in LOGGED], dtype=torch.float64, device=self.device)
            terms.update(zip(LOGGED, self.dist.mean(local).tolist()))
        if not math.isfinite(terms["total"]):
            raise FloatingPointError(f"non-finite training loss at step {self.step}: {terms} (lower the lr)")
        factor = self.schedule(self.step) if self.schedule is not None else 1.0
        for group in self.opt.param_groups:
            group["lr"] = self.lr * group["lr_mul"] * factor
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        terms["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip))
        # A non-finite gradient must not poison the weights: skip that update, as AMP's GradScaler
        # does. (Before the marcher's empty-ray fix, 0/0 in the composite depth's backward made
        # ~8% of the tiny model's steps non-finite through L_D.)
        terms["skipped"] = float(not math.isfinite(terms["grad_norm"]))
        if not terms["skipped"]:
            self.opt.step()
        terms["step"] = self.step
        terms["seconds"] = time.perf_counter() - t0
        self.history.append(terms)
        self.step += 1
        return terms

    def fit(self, batches: Iterable[dict], steps: int, checkpoint: Optional[str] = None, every: int = 100) -> list:
        """Train up to step ``steps``; returns ``self.history`` (this and any resumed run's steps)."""
        from tqdm import tqdm
        it = iter(batches)
        with tqdm(total=steps, initial=self.step, desc="train", dynamic_ncols=True, disable=not self.dist.main) as bar:
            while self.step < steps:
                t0 = time.perf_counter()
                batch = next(it)
                waited = time.perf_counter() - t0
                terms = self.train_step(batch)
                terms["data_seconds"] = waited  # time this process waited for its batch
                bar.set_postfix(loss=f"{terms['total']:.4f}")
                bar.update(1)
                if checkpoint and self.step % every == 0:
                    self.save(checkpoint)
        if checkpoint:
            self.save(checkpoint)
        self.dist.barrier()
        return self.history

    def save(self, path: str) -> None:
        """Weights to ``path`` (safetensors); optimiser state and step beside it (``.opt.safetensors``),
        the loss history as ``.history.json``. Process 0 only. Crash-safe: each file is written
        whole under a ``.tmp`` name and renamed, the weights last, so a run killed mid-save leaves
        the previous checkpoint or one that ``resume`` completes."""
        if not self.dist.main:
            return
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        meta_w = {"config": self.model.config.name, "step": str(self.step)}
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, path + ".tmp", metadata=meta_w)
        tensors, meta = _flat_optimizer_state(self.opt)
        meta["step"] = self.step
        save_file(tensors, path + ".opt.safetensors.tmp", metadata={"json": json.dumps(meta)})
        with open(path + ".history.json.tmp", "w") as f:
            json.dump(self.history, f)
        os.replace(path + ".opt.safetensors.tmp", path + ".opt.safetensors")
        os.replace(path + ".history.json.tmp", path + ".history.json")
        os.replace(path + ".tmp", path)

    @staticmethod
    def _recover(path: str) -> None:
        """Finish a save that was killed between its renames; drop partial temporary files."""
        def step_of(p: str, key: str = "step"):
            try:
                with safe_open(p, "pt") as f:
                    meta = f.metadata() or {}
                return int(json.loads(meta["json"])["step"]) if "json" in meta else int(meta[key])
            except Exception:  # noqa: BLE001 - a partial file
                return None
        tmp = path + ".tmp"
        if os.path.isfile(tmp):
            s_tmp, s_opt = step_of(tmp), step_of(path + ".opt.safetensors")
            if s_tmp is not None and s_tmp == s_opt:
                os.replace(tmp, path)
            else:
                os.remove(tmp)
        for extra in (".opt.safetensors.tmp", ".history.json.tmp"):
            if os.path.isfile(path + extra):
                os.remove(path + extra)

    def resume_if_present(self, path: str) -> bool:
        """``resume(path)`` when a checkpoint is there (every process; process 0 repairs it first)."""
        if self.dist.main and os.path.isfile(path + ".opt.safetensors"):
            self._recover(path)
        self.dist.barrier()
        if os.path.isfile(path) and os.path.isfile(path + ".opt.safetensors"):
            self.resume(path)
            return True
        return False

    def resume(self, path: str) -> None:
        self.model.load_state_dict(load_file(path, device=str(self.device)))
        with safe_open(path, "pt") as f:
            weights_step = (f.metadata() or {}).get("step")
        with safe_open(path + ".opt.safetensors", "pt") as f:
            meta = json.loads(f.metadata()["json"])
        if weights_step is not None and int(weights_step) != int(meta["step"]):
            raise RuntimeError(f"checkpoint {path!r}: weights at step {weights_step} but optimiser state at "
                               f"step {meta['step']} (an interrupted save): delete it or restore a backup")
        tensors = load_file(path + ".opt.safetensors", device=str(self.device))
        state = {}
        for pid, st in meta["state"].items():
            state[int(pid)] = dict(st)
        for key, v in tensors.items():
            pid, k = key.split(".", 1)
            state.setdefault(int(pid), {})[k] = v
        self.opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.step = int(meta["step"])
        if os.path.isfile(path + ".history.json"):  # absent for checkpoints written before it existed
            with open(path + ".history.json") as f:
                self.history = [h for h in json.load(f) if h["step"] < self.step]
