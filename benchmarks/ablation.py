"""Issue #19's ablation: each model fix alone, fine-tuned from the embedded tiny weights (the regime
of the long run: on this CPU a from-scratch model of a few hundred steps is still a blob) for the
same steps on the same pairs (250 variety-2 subjects, 1000 pairs: more than the run draws), scored
on the validation split (never the test split) by ``rtgaze-fast eval --split val``.

    python benchmarks/ablation.py [--steps 100] [--arms tiny,tiny_skip,...] [--threads 1]

Each arm writes out/ablation/ARM.* and its validation JSON; an arm whose JSON exists is not rerun
(the runs are resumable: the trainer's checkpoint is resumed too). The table, with every run's exact
commands, goes to benchmarks/results/ablation_tiny_cpu.json.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "ablation_tiny_cpu.json"
# arm -> (config, extra train flags); every arm gets the same COMMON flags and so the same pairs.
ARMS = {
    "tiny": ("tiny", []),
    "tiny_skip": ("tiny_skip", []),
    "tiny_raw": ("tiny", ["--raw-weight", "0.5"]),
    "tiny_r64": ("tiny_r64", []),
    "tiny_hr_raw": ("tiny_hr", ["--raw-weight", "0.5"]),
}
COMMON = ["--init", "rtgaze_fast/assets/rtgaze_tiny.safetensors", "--batch", "8", "--lr", "3e-4", "--identities",
          "250", "--eye-weight", "8", "--novel-fraction", "0.25", "--workers", "2", "--every", "50"]
KEYS = ("psnr", "eye_psnr", "novel_psnr", "gaze_error_deg", "novel_gaze_error_deg", "ssim", "eye_l1")


def run(cmd, log, threads):
    print(" ".join(cmd), flush=True)
    # One OpenMP thread per process too (eval has no --threads): on shared cores, spinning threads
    # burn several times the CPU of the work.
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with open(log, "a") as f:
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    out = ROOT / "out" / "ablation"
    out.mkdir(parents=True, exist_ok=True)
    table = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"arms": {}}
    for arm in args.arms.split(","):
        config, extra = ARMS[arm]
        r = "64" if config in ("tiny_r64", "tiny_hr") else "32"
        train = ["rtgaze-fast", "train", "--config", config, "--steps", str(args.steps), *COMMON, *extra,
                 "--threads", str(args.threads), "--cache", f"out/cache_v2_250_r{r}.safetensors",
                 "--checkpoint", f"out/ablation/{arm}.ckpt.safetensors", "-o", f"out/ablation/{arm}.safetensors"]
        val = ["rtgaze-fast", "eval", "--config", config, "--weights", f"out/ablation/{arm}.safetensors",
               "--split", "val", "--no-baseline", "--json", f"out/ablation/{arm}_val.json"]
        if not (out / f"{arm}_val.json").exists():
            run([sys.executable, "-m", "rtgaze_fast", *train[1:]], out / f"{arm}.log", args.threads)
            run([sys.executable, "-m", "rtgaze_fast", *val[1:]], out / f"{arm}.log", args.threads)
        res = json.loads((out / f"{arm}_val.json").read_text())
        hist = json.loads((out / f"{arm}.history.json").read_text())["history"]
        last = hist[-50:]
        table["arms"][arm] = {
            "config": config, "train_command": " ".join(train), "val_command": " ".join(val),
            "steps": args.steps,
            # Wall time of the steps themselves (the trainer's per-step record: survives resumes).
            "train_step_minutes": sum(h["seconds"] for h in hist) / 60,
            "median_step_seconds": sorted(h["seconds"] for h in hist)[len(hist) // 2],
            "final_loss_mean_last_50": {k: sum(h.get(k, 0.0) for h in last) / len(last)
                                        for k in ("total", "L_R", "L_D", "L_P", "L_raw")},
            "val": {k: res["model"][k] for k in KEYS if k in res["model"]},
            "val_pairs": res["n"], "resolution": res["resolution"]}
        table.update({"what": "issue #19 ablation: each fix alone, fine-tuned from the embedded tiny weights, "
                              "same steps and pairs (250 variety-2 training subjects), scored on the validation split",
                      "device": "CPU, 2 cores shared with other sessions; 1 torch thread per run",
                      "split": "val", "date": time.strftime("%Y-%m-%d")})
        RESULTS.write_text(json.dumps(table, indent=1) + "\n")
        print(arm, table["arms"][arm]["val"], flush=True)


if __name__ == "__main__":
    main()
