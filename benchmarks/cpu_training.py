"""Training through the renderer on the CPU: the fused cpu backend's forward + recompute backward
against autograd of the eager reference (issue #14's bars), after a gradient parity check.

- time: the renderer's forward+backward at the tiny model's training shapes (batch 8, 32x32 rays,
  16+16 samples, 64x64x32 planes; gradients to the planes and the decoder, as in RTGaze
  training), the fused one with the planes in both memory layouts (EG3D's (B, 3, C, H, W), which
  the renderer copies to channels-last at these sizes, and channels-last, which the kernels read
  in place), and one whole tiny-model training step
  (batch 8; the trainer's channels-last model), reference vs fused, interleaved repeats, medians;
  both also with one torch thread (single-threaded code suffers less from other jobs on a
  loaded machine than threads that wait for each other);
- memory: the peak resident memory that the renderer's forward+backward adds at 128x128 rays,
  48+48 samples, batch 1, 256x256x32 planes, each backend in its own process (the process's
  high-water mark, reset just before the call, minus its resident memory then), planes in both
  layouts (both read in place: 25 MiB of planes is above the renderer's copy limit).

    python benchmarks/cpu_training.py [--repeats 5] [--out benchmarks/results/cpu_training.json]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import rtgaze_fast as rf
from rtgaze_fast import RTGaze
from rtgaze_fast._ext import load
from rtgaze_fast.train import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_backend import _interleaved_seconds  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_training.json"
TINY = dict(batch=8, rays=32, planes=64, n=16, n_f=16)
FFHQ = dict(batch=1, rays=128, planes=256, n=48, n_f=48)


def scene(batch, rays, planes, n, n_f, seed=0):
    """Random planes, a random OSGDecoder, FFHQ-like cameras and injected noise."""
    gen = torch.Generator().manual_seed(seed)
    dec = rf.OSGDecoder()
    with torch.no_grad():
        for p in dec.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 if p.dim() == 2 else 0.5))
    o, d = rf.rays_from_label(rf.frontal_camera(batch, yaw=0.1, pitch=-0.05), rays)
    opts = dict(rf.FFHQ_OPTIONS, depth_resolution=n, depth_resolution_importance=n_f)
    r = o.shape[1]
    noise = dict(stratified_u=torch.rand(batch, r, n, generator=gen), importance_u=torch.rand(batch, r, n_f, generator=gen))
    return torch.randn(batch, 3, 32, planes, planes, generator=gen), dec, o, d, opts, noise


def channels_last_planes(planes):
    """The same (B, 3, C, H, W) planes with (B, 3, H, W, C) memory, as a model can produce them:
    the fused path then needs no layout copy (nor one for their gradient)."""
    return planes.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


def forward_backward(backend, planes, dec, o, d, opts, noise):
    """One forward+backward of the renderer; returns the planes' and decoder's gradients."""
    planes = planes.detach().requires_grad_(True)
    rgb, depth, wsum = rf.ImportanceRenderer(backend=backend)(planes, dec, o, d, opts, **noise)
    loss = rgb.square().mean() + depth.mean() + wsum.mean()
    return torch.autograd.grad(loss, [planes, *dec.parameters()])


def renderer_times(repeats, threads=None):
    if threads is not None:
        saved = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return dict(renderer_times(repeats), torch_threads=threads)
        finally:
            torch.set_num_threads(saved)
    case = scene(**TINY)
    ref = forward_backward("torch", *case)
    fused = forward_backward("cpu", *case)
    errors = [float((g - r).abs().max() / r.abs().max()) for g, r in zip(fused, ref)]
    if max(errors) > 1e-4:
        raise SystemExit(f"fused gradients off by {errors} (relative): not timing a wrong backward")
    case_cl = (channels_last_planes(case[0]),) + case[1:]
    t_ref, t_fused, t_fused_cl = _interleaved_seconds([lambda: forward_backward("torch", *case),
                                                       lambda: forward_backward("cpu", *case),
                                                       lambda: forward_backward("cpu", *case_cl)], repeats)
    with torch.no_grad():
        fwd = [lambda b=b: rf.ImportanceRenderer(backend=b)(*case[:5], **case[5]) for b in ("torch", "cpu")]
        f_ref, f_fused = _interleaved_seconds(fwd, repeats)
    med = {k: statistics.median(v) for k, v in dict(ref=t_ref, fused=t_fused, fused_cl=t_fused_cl, ref_fwd=f_ref,
                                                    fused_fwd=f_fused).items()}
    return {"shape": TINY, "gradient_max_rel_error": max(errors),
            "forward_backward_ms": {"reference": med["ref"] * 1e3, "fused_cpu": med["fused"] * 1e3,
                                    "fused_cpu_channels_last_planes": med["fused_cl"] * 1e3},
            "forward_only_ms": {"reference": med["ref_fwd"] * 1e3, "fused_cpu": med["fused_fwd"] * 1e3},
            "speedup_forward_backward": med["ref"] / med["fused"],
            "speedup_forward_backward_channels_last_planes": med["ref"] / med["fused_cl"],
            "speedup_forward": med["ref_fwd"] / med["fused_fwd"],
            # The spread: on a shared machine the two paths are not slowed alike from one moment
            # to the next (the fused one is FMA-bound, the reference memory-bound), so each
            # repeat's ratio is kept beside the ratio of medians.
            "speedup_forward_backward_per_repeat": [r / f for r, f in zip(t_ref, t_fused)],
            "speedup_forward_backward_channels_last_planes_per_repeat": [r / f for r, f in zip(t_ref, t_fused_cl)],
            "speedup_forward_backward_of_minima": min(t_ref) / min(t_fused),
            "speedup_forward_backward_channels_last_planes_of_minima": min(t_ref) / min(t_fused_cl)}


def training_step_times(repeats, threads=None):
    if threads is not None:
        saved = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return training_step_times(repeats)
        finally:
            torch.set_num_threads(saved)
    gen = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(8, 3, 128, 128, generator=gen) * 2 - 1,
             "target": torch.rand(8, 3, 64, 64, generator=gen) * 2 - 1,
             "gaze_target": torch.rand(8, 2, generator=gen) - 0.5,
             "eye_mask": (torch.rand(8, 1, 64, 64, generator=gen) > 0.8).float(),
             "teacher_depth": torch.full((8, 1, 32, 32), 2.6)}
    trainers = []
    for backend in ("torch", "auto"):
        torch.manual_seed(0)
        trainers.append(Trainer(RTGaze("tiny", backend=backend), lr=1e-3, device="cpu", decoder_lr_mul=30))
    assert trainers[1].model.renderer.backend == "auto"
    t_ref, t_fused = _interleaved_seconds([lambda: trainers[0].train_step(batch),
                                           lambda: trainers[1].train_step(batch)], repeats)
    ref, fused = statistics.median(t_ref), statistics.median(t_fused)
    return {"config": "tiny", "batch": 8, "torch_threads": torch.get_num_threads(),
            "step_ms": {"reference": ref * 1e3, "fused_cpu": fused * 1e3}, "speedup": ref / fused,
            "speedup_median_of_pairs": statistics.median(r / f for r, f in zip(t_ref, t_fused))}


_MEMORY_CHILD = """
import sys, torch
sys.path.insert(0, {here!r})
from cpu_training import FFHQ, channels_last_planes, forward_backward, scene
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
case = scene(**FFHQ)
if {channels_last!r}:
    case = (channels_last_planes(case[0]),) + case[1:]
forward_backward({backend!r}, *scene(batch=1, rays=4, planes=8, n=4, n_f=4))  # load kernels, warm up
before = status('VmRSS')
open('/proc/self/clear_refs', 'w').write('5')  # reset the high-water mark to the current RSS
grads = forward_backward({backend!r}, *case)
print(status('VmHWM') - before)
"""


def peak_memory_bytes(backend, channels_last=False):
    code = _MEMORY_CHILD.format(here=str(Path(__file__).resolve().parent), backend=backend,
                                channels_last=channels_last)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    if load() is None:
        raise SystemExit("the compiled cpu backend is not built")
    mem = {b: peak_memory_bytes(b) for b in ("torch", "cpu")}
    mem_cl = peak_memory_bytes("cpu", channels_last=True)
    load_avg = [os.getloadavg()[0]]
    result = {
        "what": "fused cpu backward (recompute) vs autograd of the eager reference",
        "device": f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                  f"{torch.get_num_threads()} torch threads, isa {load().cpu_isa()}",
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
        "command": (f"PYTHONPATH={os.environ['PYTHONPATH']} " if os.environ.get("PYTHONPATH") else "")
                   + "python benchmarks/cpu_training.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "renderer": renderer_times(args.repeats),
        "renderer_1_thread": renderer_times(args.repeats, threads=1),
        "training_step": training_step_times(args.repeats),
        "training_step_1_thread": training_step_times(args.repeats, threads=1),
        "peak_memory": {"shape": FFHQ, "what": "resident memory the forward+backward adds (2 threads)",
                        "reference_mib": mem["torch"] / 2 ** 20, "fused_cpu_mib": mem["cpu"] / 2 ** 20,
                        "ratio": mem["torch"] / max(mem["cpu"], 1),
                        "fused_cpu_channels_last_planes_mib": mem_cl / 2 ** 20,
                        "ratio_channels_last_planes": mem["torch"] / max(mem_cl, 1)},
    }
    result["load_average_1min"] = load_avg + [os.getloadavg()[0]]  # before, after: other jobs on the machine
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
