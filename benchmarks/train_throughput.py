"""Training throughput (images/s) on 1 and N processes: ``rtgaze-fast train --data ethxgaze`` under
torchrun, on files in ETH-XGaze's layout (issue #18).

    python benchmarks/train_throughput.py --runs 1x2 2x1 1x1 --out benchmarks/results/train_ddp_cpu.json
    python benchmarks/train_throughput.py --device cuda --runs 1x1 8x1 --config base --batch 64   # a GPU node

Each run ``PxT`` trains ``--steps`` steps of the same GLOBAL batch split over P processes of T
threads each (OMP_NUM_THREADS); the default, 1 x all cores and 2 x half, uses the whole machine.
Per step, process 0 records the time it waited for its batch and the time of the step itself
(forward, backward with the gradient all-reduce, optimiser); images/s is the global batch over
their sum, median over the steps after ``--warmup``. The JSON keeps every step's times, the
machine, and the load average before and after (other work on the machine slows every row).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(spec: str, args, data: str, work: str) -> dict:
    procs, threads = (int(x) for x in spec.split("x"))
    out = os.path.join(work, spec)
    train = ["-m", "rtgaze_fast", "train", "--data", "ethxgaze", "--data-dir", data, "--val-subjects", "0",
             "--config", args.config, "--steps", str(args.steps), "--batch", str(args.batch),
             "--loader-workers", str(args.loader_workers), "--every", str(10 ** 9),
             "--checkpoint", os.path.join(out, "ck.safetensors"), "-o", os.path.join(out, "w.safetensors")]
    if args.device:
        train += ["--device", args.device]
    cmd = [sys.executable] + (train if procs == 1 else
                              ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] + train)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=ROOT)
    load0 = os.getloadavg()
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode:
        raise SystemExit(f"{procs} process(es) failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    hist = json.load(open(os.path.join(out, "w.history.json")))["history"]
    steps = hist[args.warmup:]
    per_step = [h["seconds"] + h.get("data_seconds", 0.0) for h in steps]
    return {"processes": procs, "threads_per_process": threads, "global_batch": args.batch,
            "images_per_second": args.batch / statistics.median(per_step),
            "step_seconds_median": statistics.median(per_step),
            "data_wait_seconds_median": statistics.median(h.get("data_seconds", 0.0) for h in steps),
            "command_wall_seconds": wall, "load_average_before": load0, "load_average_after": os.getloadavg(),
            "step_seconds": [round(h["seconds"], 4) for h in hist],
            "data_seconds": [round(h.get("data_seconds", 0.0), 4) for h in hist]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = os.cpu_count() or 1
    p.add_argument("--runs", nargs="+", default=[f"1x{cores}", f"2x{max(cores // 2, 1)}"],
                   help="PxT: P processes of T threads each")
    p.add_argument("--config", default="tiny")
    p.add_argument("--batch", type=int, default=8, help="global batch")
    p.add_argument("--steps", type=int, default=14)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--loader-workers", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"))
    p.add_argument("--subjects", type=int, default=4)
    p.add_argument("--out", default="out/train_throughput.json")
    args = p.parse_args(argv)
    sys.path.insert(0, ROOT)
    import torch
    from rtgaze_fast.data.xgaze_fixture import write_dataset
    with tempfile.TemporaryDirectory() as work:
        data = os.path.join(work, "xgaze")
        write_dataset(data, train=range(args.subjects), test=(), n_frames=6, n_cams=4)
        rows = [run(spec, args, data, work) for spec in args.runs]
    device = args.device or "cpu"
    result = {"what": "rtgaze-fast train --data ethxgaze throughput, images/s of the global batch",
              "config": args.config, "steps": args.steps, "warmup": args.warmup, "device": device,
              "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
              "cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "command": "python benchmarks/train_throughput.py " +
              " ".join(sys.argv[1:] if argv is None else argv), "runs": rows}
    base = rows[0]["images_per_second"]
    for r in rows:
        print(f"{r['processes']} process(es) x {r['threads_per_process']} thread(s): "
              f"{r['images_per_second']:.2f} images/s ({r['images_per_second'] / base:.2f}x), "
              f"step {r['step_seconds_median'] * 1e3:.0f} ms, data wait {r['data_wait_seconds_median'] * 1e3:.0f} ms, "
              f"load {r['load_average_before'][0]:.1f} -> {r['load_average_after'][0]:.1f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
