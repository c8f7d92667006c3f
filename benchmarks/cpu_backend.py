"""The compiled CPU backend vs the torch reference at the FFHQ configuration (48+48 samples,
256x256x32 planes, fp32) at 64x64 and 128x128 rays: medians and the speed ratio, after a parity
check. Writes benchmarks/results/cpu_backend.json (or --out).

    python benchmarks/cpu_backend.py [--repeats 3] [--res 64 128] [--out FILE]
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import rtgaze_fast as rf
from rtgaze_fast import bench
from rtgaze_fast._ext import load
from rtgaze_fast.precision import parity_errors, within

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_backend.json"


def _interleaved_seconds(fns, repeats):
    """Per-function times, the functions alternating in each repeat so that load from other
    processes on this shared machine hits both alike (the ratio is the robust figure)."""
    for fn in fns:
        fn()  # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return times


def run(res_list, repeats):
    rows = []
    for res in res_list:
        case = bench.Case(res=res)
        planes, dec, o, d, opts, su, iu = bench.make_scene(case, "cpu")
        renderers = {b: rf.ImportanceRenderer(backend=b) for b in ("torch", "cpu")}

        def render(backend):
            with torch.no_grad():
                return renderers[backend](planes, dec, o, d, opts, stratified_u=su, importance_u=iu)

        errors = parity_errors(render("cpu"), render("torch"))
        assert within(errors, "fp32"), f"{case.name}: cpu backend fails the fp32 parity bound: {errors}"
        load_before = os.getloadavg()[0]
        ref_times, cpu_times = _interleaved_seconds([lambda: render("torch"), lambda: render("cpu")], repeats)
        t_ref, t_cpu = statistics.median(ref_times), statistics.median(cpu_times)
        ratios = [r / c for r, c in zip(ref_times, cpu_times)]
        row = dict(case=case.name, reference_median_s=t_ref, cpu_median_s=t_cpu, speedup=t_ref / t_cpu,
                   speedup_median_of_pairs=statistics.median(ratios), reference_times_s=ref_times,
                   cpu_times_s=cpu_times, load_average_1min=[load_before, os.getloadavg()[0]], parity=errors)
        print(f"{case.name}: reference {t_ref:.3f} s, cpu {t_cpu:.3f} s, {t_ref / t_cpu:.1f}x "
              f"(load {load_before:.1f})", flush=True)
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--res", type=int, nargs="+", default=[64, 128])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    env = bench.environment(torch.device("cpu"))
    env.update(machine=platform.node(), cpu_isa=load().cpu_isa())
    result = dict(environment=env, precision="fp32", config="FFHQ 48+48, planes 3x32x256x256, batch 1",
                  rows=run(args.res, args.repeats))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
