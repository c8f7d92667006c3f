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
- CUDA ``render_kernel<mode>`` (csrc/cuda/render_fwd.cu): one warp per ray (persistent grid, 4
  warps per block), samples in 16-row tiles decoded once each on tensor cores (mma.sync: 3xTF32
  in fp32, i.e. three tf32 MMAs per product, tf32, fp16, bf16; B from shared memory in fragment
  order, A from an fp32 activation tile), colours kept in shared memory until the ray's weights
  are known. A texel is read by 16-byte loads over 8 (fp32) or 4 (16-bit) lanes: one 128-byte
  line per texel, one L1 wavefront. MUFU: EX2 + LG2 (fast, tf32/fp16/bf16) or EX2 + RCP (the
  accurate log1p, fp32) per hidden unit, EX2 + RCP per colour. The ray's serial steps (the
  transmittance scan, the pdf, the merge) run on one lane: latency, not modelled.
- CUDA ``render_backward_kernel<mode>`` (render_bwd.cu): the same warp per ray; the forward decode
  again (raw density and colour dot), then per 16 merged samples the decoder recomputed and its
  four backward products (dL/dh, dL/dfeatures, dW2, dW1) on tf32-family MMAs (3xTF32 in fp32),
  and fp32 atomics (128-bit on sm_90) into the planes' gradient; the decoder's gradient by
  shared-memory atomics. Modelled without the rays' gradients (RTGaze trains from fixed cameras),
  which would read every tap's texel once more.
- Triton ``render``: BLOCK_R rays per program (the lowering report's config), their samples
  decoded 16 depths per ray at a time (48 samples: 3 chunks, no padding to 64), a (points, C)
  tile per tap loaded with contiguous channels (one line per texel: 1 wavefront per 128 bytes),
  one decode per sample (colours kept), MLP by ``tl.dot`` (tensor cores in tf32/fp16/bf16 and, as
  three tf32 passes per product, tf32x3; fp32 with input_precision='ieee' runs on CUDA cores).
Shared-memory traffic (128 bytes per SM per clock) is modelled for the CUDA kernels only.
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
    smem_bytes_per_sm_clk: int = 128
    regs_per_sm: int = 65536
    max_warps_per_sm: int = 64
    max_ctas_per_sm: int = 32
    smem_per_sm: int = 228 * 1024
    source: str = ""


_SRC = ("NVIDIA H100 / H200 SXM datasheets (FP32 67 TFLOPS, TF32 494.5 / FP16 and BF16 989.5 TFLOPS dense "
        "tensor core, HBM3 3.35 TB/s (H100), HBM3e 4.8 TB/s (H200), 132 SMs at 1.98 GHz boost); MUFU: CUDA C++ "
        "Programming Guide, arithmetic instruction throughput, compute capability 9.0 (16 results/clock/SM for "
        "exp2, rcp, rsqrt, lg2); L1: one 128-byte wavefront per SM per clock (Nsight Compute's L1 model: "
        "assumption); shared memory 128 bytes per SM per clock (32 banks x 4 bytes); "
        "L2 5.5 TB/s: assumption (not published; measure with a gather microbenchmark)")
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
    smem_traffic: float = 0.0  # bytes read and written in shared memory (CUDA kernels)


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


# The CUDA warp-tile kernels (csrc/include/rtgaze/tile.h, mirrored here; tests/test_cuda_layout.py
# checks the figures against the header): 16-row tiles, the second layer padded to 40 outputs.
ROWS, O1_PAD, MAX_WARPS = 16, 40, 4
FC2_PAD = 2 * HD * O1_PAD
GATHER_FMA = TAPS * C * 2       # the bilinear sums on CUDA cores, per point


def _align16(n: int) -> int:
    return (n + 15) // 16 * 16


def cuda_tile_ld(half: bool) -> int:
    return HD + (8 if half else 4)


def cuda_fwd_smem(half: bool, s: int = S, n: int = N) -> tuple:
    """(block, per-warp) dynamic shared memory of render_kernel (tile.h's fwd_block_bytes / fwd_warp_bytes)."""
    elem = 2 if half else 4
    block = _align16((C * HD + HD * O1_PAD) * elem) + _align16((HD + O1_PAD) * 4)
    warp = _align16(4 * (4 * s + 2 * n + 4)) + _align16(s * O1 * elem) + _align16(ROWS * cuda_tile_ld(half) * 4)
    return block, warp


def cuda_bwd_smem(s: int = S, n: int = N) -> tuple:
    """(block, per-warp) dynamic shared memory of render_backward_kernel (tile.h's bwd_*_bytes)."""
    block = (_align16((2 * C * HD + 2 * HD * O1_PAD) * 4) + _align16((HD + O1_PAD) * 4)
             + _align16((C * HD + HD + HD * O1_PAD + O1_PAD) * 4))
    warp = _align16(4 * (11 * s + 2 * n + 8)) + _align16(ROWS * (2 * (C + 4) + 2 * (HD + 4) + (O1_PAD + 4)) * 4)
    return block, warp


def _persistent(gpu: "Gpu", regs: int, smem: int) -> int:
    return ctas_per_sm(gpu, 32 * MAX_WARPS, regs, smem) * gpu.sms


def cuda_render(precision: str, sass: Optional[dict]) -> Work:
    half = precision in ("fp16", "bf16")
    points = RAYS * S
    tb = _texel_bytes(precision)
    passes = 3 if precision == "fp32" else 1  # 3xTF32: three tf32 MMAs per product
    tensor = points * (FC1 + FC2_PAD) * passes
    # MUFU: two per hidden unit, two per colour (see the module docstring), ~6 for the march's alphas.
    mufu = points * (2 * HD + 2 * (O1 - 1) + 6)
    # Shared memory per 16-row tile: the weights' B fragments (read once per tile), the A loads
    # (features, hidden), the tile's writes (features, hidden), colours stored and read back.
    w_bytes = (C * HD + HD * O1_PAD) * (2 if half else 4)
    tile_bytes = w_bytes + 2 * ROWS * (C + HD) * 4 + 2 * ROWS * (O1 - 1) * (2 if half else 4)
    name = f"render_kernel<{_ENUM[precision]}>"
    k = (sass or {}).get("kernels", {}).get(name, {})
    block, warp = cuda_fwd_smem(half)
    smem = block + MAX_WARPS * warp
    regs = k.get("registers", 128)
    return Work(name, "cuda", precision, points * GATHER_FMA, tensor, mufu, points * TAPS,
                points * TAPS * max(C * tb, 32), _io_bytes(), 32 * MAX_WARPS, _persistent(H100, regs, smem), regs,
                smem, "one warp per ray, 16-sample MMA tiles, one decode per sample; 16-byte coalesced texel loads"
                + ("; 3xTF32" if precision == "fp32" else ""), points / ROWS * tile_bytes)


def cuda_render_backward(precision: str, sass: Optional[dict]) -> Work:
    points = RAYS * S
    tb = _texel_bytes(precision)
    passes = 3 if precision == "fp32" else 1
    # The forward decode, the recompute, dL/dh (K = 40), dL/dfeatures, dW2, dW1.
    per_point = 2 * (FC1 + FC2_PAD) + 2 * O1_PAD * HD + 2 * HD * C + 2 * HD * O1_PAD + 2 * C * HD
    mufu = points * (2 * (2 * HD + 2 * (O1 - 1)) + 2 * (O1 - 1) + 12)
    w_bytes = (2 * C * HD + 2 * HD * O1_PAD) * 4
    tile_bytes = (w_bytes + ROWS * (C + HD) * 4 * 6 + ROWS * O1_PAD * 4 * 4
                  + (C * HD + HD * O1_PAD) * 4 * 2)  # + the decoder gradient's shared atomics (RMW)
    name = f"render_backward_kernel<{_ENUM[precision]}>"
    k = (sass or {}).get("kernels", {}).get(name, {})
    block, warp = cuda_bwd_smem()
    smem = block + MAX_WARPS * warp
    regs = k.get("registers", 192)
    line = max(C * tb, 32)
    # Texels read twice (forward decode, recompute; the taps backward reads them only for the rays'
    # gradients); the planes' gradient: 12 fp32 texel lines of atomics per point (read-modify-write
    # at L2).
    l2 = points * TAPS * (2 * line + 2 * C * 4)
    dram = _io_bytes() + 2 * 3 * PLANE * PLANE * C * 4
    return Work(name, "cuda", precision, points * 5 * GATHER_FMA, points * per_point * passes, mufu,
                points * TAPS * 4, l2, dram, 32 * MAX_WARPS, _persistent(H100, regs, smem), regs, smem,
                "recompute backward: forward decode, then decoder backward on tf32-family MMAs per 16 merged "
                "samples; planes' gradient by fp32 atomics", points / ROWS * tile_bytes)


_ENUM = {"fp32": "kFp32", "tf32": "kTf32", "fp16": "kFp16", "bf16": "kBf16"}


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


def floor_backward_work(precision: str) -> Work:
    """The ideal fused backward: one recompute decode and the four backward products (unpadded) on the
    mode's fastest units (fp32: CUDA cores; the others tf32 tensor cores), texel lines read twice,
    the planes' gradient written once per tap."""
    points = RAYS * S
    tb = _texel_bytes(precision)
    flops = points * (2 * (FC1 + FC2_FULL) + 2 * (2 * HD * O1) + 2 * (2 * C * HD))
    tc = precision != "fp32"
    return Work("floor", "ideal", "tf32" if tc else "fp32", 0.0 if tc else flops, flops if tc else 0.0,
                points * (2 * _mufu_per_decode(True) + 4), points * TAPS * 2,
                points * TAPS * (2 * C * tb + C * 4), _io_bytes() + 2 * 3 * PLANE * PLANE * C * 4, 256, 10 ** 6, 64,
                0, "ideal backward")


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
        "shared": w.smem_traffic / (gpu.smem_bytes_per_sm_clk * gpu.sms * clk),
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

    def add(w: Work, floor: Work, direction: str):
        row = {k: v for k, v in asdict(w).items()}
        row["direction"] = direction
        row["per_gpu"] = {}
        for g in GPUS:
            pr, fl = predict(w, g), predict(floor, g)
            pr["floor_us"], pr["floor_bound"] = fl["predicted_us"], fl["bound"]
            row["per_gpu"][g.name] = pr
        rows.append(row)

    for precision in ("fp32", "tf32", "fp16", "bf16", "tf32x3"):
        add(triton_render(precision, lowering), floor_work(precision), "forward")
        if precision != "tf32x3":  # a Triton mode (CUDA's fp32 is already 3xTF32)
            add(cuda_render(precision, sass), floor_work(precision), "forward")
            add(cuda_render_backward(precision, sass), floor_backward_work(precision), "backward")
    return {
        "what": "performance MODEL: PREDICTED times (estimates from the compiler's figures and peak rates, no GPU "
                "run, nothing measured) of one 128x128 render, 48+48 samples, batch 1, forward and the CUDA "
                "backward; to be replaced by measurements",
        "shape": {"rays": RAYS, "N": N, "N_f": NF, "C": C, "hidden": HD, "out1": O1, "plane": PLANE},
        "gpus": {g.name: asdict(g) for g in GPUS},
        "rows": rows,
    }


def format_model(m: dict) -> str:
    g0, g1 = (g for g in m["gpus"])
    lines = ["GPU performance MODEL, PREDICTED (estimates, not measurements): 128x128, 48+48 samples, batch 1",
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
