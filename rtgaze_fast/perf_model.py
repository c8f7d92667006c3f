"""A performance model of the GPU kernels for one 128x128 image, 48+48 samples, batch 1: what each
kernel must move and compute, and the time that implies on an H100 / H200 SXM. Estimates, not
measurements: to be replaced by ``rtgaze-fast bench`` figures from a GPU.

    python -m rtgaze_fast.bench --model-gpu        (or python -m rtgaze_fast.perf_model)

Per kernel: FLOPs (MLP, on CUDA cores or tensor cores), MUFU ops, texel traffic as L1
wavefronts (one per distinct 128-byte line a warp-wide load touches) and as bytes from L2 (whole
texel lines), DRAM bytes, CTAs per SM (registers, threads and shared memory from the recorded
compiler figures, benchmarks/results/cuda_sm90_sass.json and triton_sm90_lowering.json), and the
time of each resource at its peak rate. The prediction is the slowest resource times the wave
imbalance (the busiest SM's share of the CTAs); it ignores latency, so a kernel with few warps
per SM will be slower than predicted. The floor is that of an ideal fused renderer in the mode
(shared/spec/renderer.md, 'Cost of one 128x128 image'): one decode per sample, the MLP on the
mode's fastest units, each texel line read once per tap from L2.

Kernel structure, read from the sources:
- CUDA ``render_kernel`` (fp32, tf32) and ``render_half_kernel`` (fp16/bf16): one thread per ray.
  Every sample is decoded twice: the density pass (features + FC1 + the sigma row of FC2) and,
  after the weights, the colour pass (features + the whole MLP). A texel's 32 channels are read
  by 32 scalar loads (``LDG.E`` / ``LDG.E.U16``, no 128-bit loads in the SASS), and the 32 lanes
  of a warp read 32 different rays' texels: each warp load touches ~32 lines, so 32 wavefronts.
  fp32 MLP on CUDA cores (FFMA); fp16/bf16 MLP on tensor cores (WMMA -> HMMA). Accurate math:
  exp is one MUFU.EX2 plus FFMAs, log a polynomial (no MUFU), division MUFU.RCP plus Newton steps.
- Triton ``render``: BLOCK_R rays per program (the lowering report's config), their samples
  decoded 16 depths per ray at a time (48 samples: 3 chunks, no padding to 64), a (points, C)
  tile per tap loaded with contiguous channels (one line per texel: 1 wavefront per 128 bytes),
  one decode per sample (colours kept), MLP by ``tl.dot`` (tensor cores in tf32/fp16/bf16 and, as
  three tf32 passes per product, tf32x3; fp32 with input_precision='ieee' runs on CUDA cores).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
OUT_JSON = RESULTS / "perf_model_h100_h200.json"


@dataclass(frozen=True)
class Gpu:
    name: str
    sms: int
    clock_ghz: float          # boost clock
    fp32_tflops: float        # FFMA on CUDA cores (2 FLOP each)
    tc_tflops: Dict[str, float]  # dense tensor-core peak per operand type
    mufu_per_sm_clk: int      # special-function results per SM per clock
    l1_lines_per_sm_clk: float  # L1 wavefronts (128-byte lines) per SM per clock
    l2_tbps: float            # L2 -> SM bandwidth (assumed, not published)
    dram_tbps: float
    regs_per_sm: int = 65536
    max_warps_per_sm: int = 64
    max_ctas_per_sm: int = 32
    smem_per_sm: int = 228 * 1024
    source: str = ""


_SRC = ("NVIDIA H100 / H200 SXM datasheets (FP32 67 TFLOPS, TF32 494.5 / FP16 and BF16 989.5 TFLOPS dense "
        "tensor core, HBM3 3.35 TB/s (H100), HBM3e 4.8 TB/s (H200), 132 SMs at 1.98 GHz boost); MUFU: CUDA C++ "
        "Programming Guide, arithmetic instruction throughput, compute capability 9.0 (16 results/clock/SM for "
        "exp2, rcp, rsqrt, lg2); L1: one 128-byte wavefront per SM per clock (Nsight Compute's L1 model: "
        "assumption); L2 5.5 TB/s: assumption (not published; measure with a gather microbenchmark)")
H100 = Gpu("H100 SXM", 132, 1.98, 67.0, {"tf32": 494.5, "fp16": 989.5, "bf16": 989.5}, 16, 1.0, 5.5, 3.35,
           source=_SRC)
H200 = Gpu("H200 SXM", 132, 1.98, 67.0, {"tf32": 494.5, "fp16": 989.5, "bf16": 989.5}, 16, 1.0, 5.5, 4.8,
           source=_SRC)
GPUS = (H100, H200)

# The FFHQ-class shape: 128x128 rays, N = N_f = 48, C = 32, hidden 64, 1 + 32 outputs, 256^2 planes.
RAYS, N, NF, C, HD, O1, PLANE = 128 * 128, 48, 48, 32, 64, 33, 256
S = N + NF
FC1 = 2 * C * HD                # 4096 FLOP
FC2_FULL = 2 * HD * O1          # 4224
FC2_SIGMA = 2 * HD              # 128: the sigma row only
TAPS = 3 * 4                    # planes x bilinear taps per point
LINE = 128


# tf32x3: fp32 operands as tf32 hi + lo, three tensor-core products each, at the tf32 rate.
_TC_PASSES = {"tf32x3": 3}
_TC_RATE = {"tf32x3": "tf32"}


def ctas_per_sm(gpu: Gpu, threads: int, regs: int, smem: int) -> int:
    """Resident CTAs per SM from registers (allocated per warp in units of 256), warps and smem."""
    warps = math.ceil(threads / 32)
    regs_warp = math.ceil(regs * 32 / 256) * 256
    by_regs = gpu.regs_per_sm // (regs_warp * warps)
    by_warps = gpu.max_warps_per_sm // warps
    by_smem = gpu.smem_per_sm // max(smem + 1024, 1)  # 1 KiB per CTA reserved by the system
    return max(0, min(by_regs, by_warps, by_smem, gpu.max_ctas_per_sm))


@dataclass
class Work:
    kernel: str
    backend: str
    precision: str
    flops_cuda_core: float
    flops_tensor: float
    mufu: float
    l1_wavefronts: float
    l2_bytes: float
    dram_bytes: float
    threads: int
    ctas: int
    registers: int
    shared_bytes: int
    note: str = ""


def _texel_bytes(precision: str) -> int:
    return 2 if precision in ("fp16", "bf16") else 4


def _mufu_per_decode(colour: bool) -> int:
    # softplus: one EX2 per hidden unit (log1p is a polynomial); sigmoid: EX2 + RCP per colour.
    return HD + (2 * (O1 - 1) if colour else 0)


def _io_bytes() -> float:
    # Planes once (they fit in L2), per-ray inputs (o, d, start, end, noise) and outputs.
    planes = 3 * PLANE * PLANE * C * 4
    per_ray = 4 * (3 + 3 + 1 + 1 + N + NF) + 4 * (32 + 1 + 1 + 2)
    return planes + RAYS * per_ray


def cuda_render(precision: str, sass: Optional[dict]) -> Work:
    half = precision in ("fp16", "bf16")
    points = RAYS * S
    tb = _texel_bytes(precision)
    flops = points * (FC1 + FC2_SIGMA) + points * (FC1 + FC2_FULL)  # density pass + colour pass
    mufu = points * (_mufu_per_decode(False) + _mufu_per_decode(True) + 2)  # + the march's exp, rcp
    # Per decoded point: 12 taps x 32 scalar loads, each a warp load over 32 rays' lines: 32 wavefronts
    # per warp load = 1 per lane; lines stay in L1 across a texel's 32 loads, so L2 sees one line (or
    # half a line in 16-bit) per tap and point.
    loads_per_point = TAPS * C
    wavefronts = 2 * points * loads_per_point
    l2 = 2 * points * TAPS * max(C * tb, 32)
    name = "render_half_kernel<__half>" if precision == "fp16" else (
        "render_half_kernel<__nv_bfloat16>" if precision == "bf16" else "render_kernel")
    k = (sass or {}).get("kernels", {}).get(name, {})
    threads = 64 if half else 128
    return Work(name, "cuda", precision, 0.0 if half else flops, flops if half else 0.0, mufu, wavefronts, l2,
                _io_bytes(), threads, math.ceil(RAYS / threads), k.get("registers", 168 if not half else 154),
                k.get("shared_bytes", 36288 if half else 18052),
                "two decodes per sample; scalar texel loads, 32 lines per warp load"
                + ("; MLP on tensor cores (HMMA)" if half else "; MLP on CUDA cores (tf32 runs these fp32 kernels)"))


def triton_render(precision: str, lowering: Optional[dict]) -> Work:
    points = RAYS * S
    tb = _texel_bytes(precision)
    flops = points * (FC1 + FC2_FULL)
    mufu = points * (_mufu_per_decode(True) + 2)
    lines_per_tap = max(1, C * tb // LINE)
    wavefronts = points * TAPS * lines_per_tap
    l2 = points * TAPS * max(C * tb, 32)
    row = None
    for r in (lowering or {}).get("rows", []):
        if r["kernel"] == "render" and r["precision"] == precision and r["samples"] == N:
            row = r
            break
    warps = (row or {}).get("num_warps", 8)
    block = (row or {}).get("config", {}).get("BLOCK_R", 1)
    ieee = precision == "fp32"
    tensor = _TC_PASSES.get(precision, 1) * flops
    return Work("render", "triton", precision, flops if ieee else 0.0, 0.0 if ieee else tensor, mufu, wavefronts, l2,
                _io_bytes(), 32 * warps, math.ceil(RAYS / block), (row or {}).get("registers", 255),
                (row or {}).get("shared_bytes", 0),
                f"{block} rays per program, 16-depth chunks; one decode per sample; channel-contiguous tile loads"
                + ("; three tf32 passes per product" if precision == "tf32x3" else "")
                + (f"; {row['spill_store_bytes']} B spilled per thread (not modelled)"
                   if row and row.get("spill_store_bytes") else ""))


def floor_work(precision: str) -> Work:
    """The ideal fused renderer: one decode per sample on the mode's fastest units, each texel line once."""
    points = RAYS * S
    tb = _texel_bytes(precision)
    flops = points * (FC1 + FC2_FULL)
    tc = precision != "fp32"
    return Work("floor", "ideal", precision, 0.0 if tc else flops, _TC_PASSES.get(precision, 1) * flops if tc else 0.0,
                points * (_mufu_per_decode(True) + 2), points * TAPS * max(1, C * tb // LINE),
                points * TAPS * C * tb, _io_bytes(), 256, 10 ** 6, 64, 0, "spec's floor")


def predict(w: Work, gpu: Gpu) -> dict:
    clk = gpu.clock_ghz * 1e9
    terms = {
        "fp32_cores": w.flops_cuda_core / (gpu.fp32_tflops * 1e12),
        "tensor_cores": w.flops_tensor / (gpu.tc_tflops.get(_TC_RATE.get(w.precision, w.precision),
                                                             gpu.tc_tflops["fp16"]) * 1e12),
        "mufu": w.mufu / (gpu.mufu_per_sm_clk * gpu.sms * clk),
        "l1_wavefronts": w.l1_wavefronts / (gpu.l1_lines_per_sm_clk * gpu.sms * clk),
        "l2": w.l2_bytes / (gpu.l2_tbps * 1e12),
        "dram": w.dram_bytes / (gpu.dram_tbps * 1e12),
    }
    per_sm = ctas_per_sm(gpu, w.threads, w.registers, w.shared_bytes)
    imbalance = math.ceil(w.ctas / gpu.sms) * gpu.sms / w.ctas if w.ctas < 10 ** 6 else 1.0
    bound = max(terms, key=terms.get)
    resident_warps = min(per_sm, math.ceil(w.ctas / gpu.sms)) * math.ceil(w.threads / 32)
    return {
        "terms_us": {k: round(v * 1e6, 2) for k, v in terms.items()},
        "bound": bound,
        "ctas_per_sm": per_sm,
        "resident_warps_per_sm": min(resident_warps, gpu.max_warps_per_sm),
        "wave_imbalance": round(imbalance, 3),
        "predicted_us": round(terms[bound] * imbalance * 1e6, 1),
    }


def _load(name: str) -> Optional[dict]:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.exists() else None


def model() -> dict:
    sass, lowering = _load("cuda_sm90_sass.json"), _load("triton_sm90_lowering.json")
    rows: List[dict] = []
    for precision in ("fp32", "tf32", "fp16", "bf16", "tf32x3"):
        floor = {g.name: predict(floor_work(precision), g) for g in GPUS}
        kernels = (triton_render(precision, lowering),)
        if precision != "tf32x3":  # a Triton mode
            kernels = (cuda_render(precision, sass),) + kernels
        for w in kernels:
            row = {k: v for k, v in asdict(w).items()}
            row["per_gpu"] = {}
            for g in GPUS:
                pr = predict(w, g)
                pr["floor_us"] = floor[g.name]["predicted_us"]
                pr["floor_bound"] = floor[g.name]["bound"]
                row["per_gpu"][g.name] = pr
            rows.append(row)
    return {
        "what": "performance MODEL (estimates, no GPU run) of one 128x128 render, 48+48 samples, batch 1; "
                "to be replaced by measurements",
        "shape": {"rays": RAYS, "N": N, "N_f": NF, "C": C, "hidden": HD, "out1": O1, "plane": PLANE},
        "gpus": {g.name: asdict(g) for g in GPUS},
        "rows": rows,
    }


def format_model(m: dict) -> str:
    g0, g1 = (g for g in m["gpus"])
    lines = ["GPU performance MODEL (estimates, not measurements): 128x128, 48+48 samples, batch 1",
             f"{'backend':7s} {'mode':6s} {'kernel':34s} {'GFLOP':>6s} {'MUFU M':>7s} {'L1 wf M':>8s} {'L2 GB':>6s} "
             f"{'CTA/SM':>6s} {'bound':>13s} {g0 + ' us':>12s} {'floor':>6s} {g1 + ' us':>12s} {'floor':>6s}"]
    for r in m["rows"]:
        a, b = r["per_gpu"][g0], r["per_gpu"][g1]
        flops = (r["flops_cuda_core"] + r["flops_tensor"]) / 1e9
        lines.append(f"{r['backend']:7s} {r['precision']:6s} {r['kernel']:34s} {flops:6.1f} {r['mufu'] / 1e6:7.0f} "
                     f"{r['l1_wavefronts'] / 1e6:8.0f} {r['l2_bytes'] / 1e9:6.2f} {a['ctas_per_sm']:6d} "
                     f"{a['bound']:>13s} {a['predicted_us']:12.0f} {a['floor_us']:6.0f} {b['predicted_us']:12.0f} "
                     f"{b['floor_us']:6.0f}")
    lines.append("Peak rates: " + next(iter(m["gpus"].values()))["source"])
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m rtgaze_fast.perf_model", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(OUT_JSON), help="JSON to write ('-' for none)")
    args = p.parse_args(argv)
    m = model()
    print(format_model(m))
    if args.out != "-":
        Path(args.out).write_text(json.dumps(m, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
