"""The side-by-side benchmark engine behind ``rtgaze-fast bench``.

For each case (rays per side, samples, batch) it renders one seeded FFHQ-class scene with every
available backend and precision mode, checks each against the eager fp32 reference (a fast
wrong kernel is reported WRONG, not fast), times it (CUDA events on a GPU, perf_counter on a
CPU; median and spread over repeats), and relates it to the floor: the spec's FLOPs and bytes
over rates measured in the same run (a large matmul, a device-to-device copy).
"""
from __future__ import annotations

import datetime
import json
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from . import ops
from .camera import frontal_camera, rays_from_label
from .options import FFHQ_OPTIONS, parse_options
from .precision import parity_errors, within
from .reference.decoder import OSGDecoder
from .reference.renderer import draw_noise, render_reference
from .renderer import ImportanceRenderer

MLP_FLOP_PER_POINT = 2 * (32 * 64 + 64 * 33)   # 8,320 (spec: 'Cost of one 128x128 image')
TEXELS_PER_POINT = 3 * 4 * 32                  # 3 planes x 4 bilinear taps x 32 channels
EAGER_BYTES_PER_IMAGE_128 = 1 << 30            # spec: the eager renderer peaks near 1 GiB


@dataclass(frozen=True)
class Case:
    res: int = 128          # rays per side
    n: int = 48             # coarse samples
    n_f: int = 48           # importance samples
    batch: int = 1
    plane_res: int = 256
    channels: int = 32

    @property
    def name(self) -> str:
        return f"{self.res}x{self.res} {self.n}+{self.n_f} b{self.batch}"

    @property
    def points(self) -> int:
        return self.batch * self.res * self.res * (self.n + self.n_f)

    def eager_bytes(self) -> int:
        """Rough peak memory of the eager reference, to skip cases that cannot fit."""
        return int(EAGER_BYTES_PER_IMAGE_128 * self.points / (128 * 128 * 96))


@dataclass
class Row:
    case: str
    backend: str
    precision: str
    status: str                       # "ok", "WRONG", "skipped: ..." or "error: ..."
    median_ms: Optional[float] = None
    iqr_ms: Optional[float] = None
    speedup_vs_eager: Optional[float] = None
    speedup_vs_compile: Optional[float] = None
    peak_mem_mib: Optional[float] = None
    floor_ms: Optional[float] = None
    floor_fraction: Optional[float] = None
    errors: Dict[str, float] = field(default_factory=dict)


def make_scene(case: Case, device, seed: int = 0):
    """A seeded scene: planes with FFHQ-like statistics, a random decoder, frontal rays, noise."""
    gen = torch.Generator().manual_seed(seed)
    planes = torch.randn(case.batch, 3, case.channels, case.plane_res, case.plane_res, generator=gen)
    dec = OSGDecoder(case.channels)
    with torch.no_grad():
        for p in dec.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 if p.dim() == 2 else 0.3))
    origins, dirs = rays_from_label(frontal_camera(case.batch), case.res)
    opts = dict(FFHQ_OPTIONS, depth_resolution=case.n, depth_resolution_importance=case.n_f)
    noise = draw_noise(case.batch, case.res * case.res, parse_options(opts), "cpu", gen)
    move = lambda t: None if t is None else t.to(device)  # noqa: E731
    return (planes.to(device), dec.to(device), origins.to(device), dirs.to(device), opts,
            move(noise.stratified_u), move(noise.importance_u))


def measure_rates(device: torch.device) -> Dict[str, float]:
    """Measured device rates for the floor: fp32 matmul FLOP/s and copy bytes/s."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device)
    t_mm = _median(_time(lambda: a @ a, device, repeats=5, warmup=2))
    buf = torch.empty(64 << 20 if device.type == "cuda" else 16 << 20, dtype=torch.float32, device=device)
    t_cp = _median(_time(lambda: buf.clone(), device, repeats=5, warmup=2))
    return {"matmul_fp32_flops": 2 * n ** 3 / t_mm, "copy_bytes_per_s": 2 * buf.numel() * 4 / t_cp}


def floor_seconds(case: Case, rates: Dict[str, float], precision: str) -> float:
    """max(MLP FLOPs / matmul rate, texel bytes / copy bandwidth): the larger bounds the kernel."""
    texel_bytes = 2 if precision in ("fp16", "bf16") else 4
    flops = case.points * MLP_FLOP_PER_POINT
    bytes_ = case.points * TEXELS_PER_POINT * texel_bytes
    return max(flops / rates["matmul_fp32_flops"], bytes_ / rates["copy_bytes_per_s"])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable, device: torch.device, repeats: int, warmup: int = 1) -> List[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return out


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def _iqr(xs: Sequence[float]) -> float:
    if len(xs) < 4:
        return max(xs) - min(xs)
    q = statistics.quantiles(xs, n=4)
    return q[2] - q[0]


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import os
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fused_columns(device: torch.device, backends: Optional[Sequence[str]], precisions: Sequence[str]):
    """(backend, precision) pairs to time besides the eager and compiled reference."""
    avail = [b for b in ops.available_backends(device) if b != "torch"]
    if device.type == "cpu":
        avail = [b for b in avail if b != "triton"]  # the interpreter is for tests, not timing
    if backends is not None:
        avail = [b for b in avail if b in backends]
    return [(b, p) for b in avail for p in precisions if p in ops.BACKEND_PRECISIONS[b]]


def bench_case(case: Case, device: torch.device, rates: Dict[str, float], backends=None,
               precisions: Sequence[str] = ("fp32", "tf32", "fp16", "bf16"), repeats: int = 5,
               compile_reference: bool = True, progress: Optional[Callable[[str], None]] = None) -> List[Row]:
    say = progress or (lambda s: None)
    if case.eager_bytes() > 0.8 * _free_bytes(device):
        return [Row(case.name, "torch", "fp32", "skipped: the eager reference would not fit in memory")]
    planes, dec, o, d, opts, su, iu = make_scene(case, device)
    po = parse_options(opts)

    def reference():
        from .reference.renderer import Noise
        return render_reference(planes, dec, o, d, po, Noise(su, iu))

    def renderer_fn(backend, precision):
        r = ImportanceRenderer(backend=backend, precision=precision)
        return lambda: r(planes, dec, o, d, opts, stratified_u=su, importance_u=iu)

    rows: List[Row] = []
    with torch.no_grad():
        say(f"{case.name}: eager reference")
        ref = reference()
        eager = _timed_row(case, "torch", "fp32", reference, ref, device, rates, repeats)
        rows.append(eager)
        compiled = None
        if compile_reference:
            say(f"{case.name}: torch.compile(reference) (compiling)")
            mode = "max-autotune" if device.type == "cuda" else None
            try:
                cfn = torch.compile(reference, mode=mode)
                compiled = _timed_row(case, "torch.compile", "fp32", cfn, ref, device, rates, repeats)
            except Exception as e:  # a compile failure is a result, not a crash of the benchmark
                compiled = Row(case.name, "torch.compile", "fp32", f"error: {type(e).__name__}: {e}"[:200])
            rows.append(compiled)
        for backend, precision in fused_columns(device, backends, precisions):
            say(f"{case.name}: {backend} {precision}")
            try:
                fn = renderer_fn(backend, precision)
                rows.append(_timed_row(case, backend, precision, fn, ref, device, rates, repeats))
            except Exception as e:
                rows.append(Row(case.name, backend, precision, f"error: {type(e).__name__}: {e}"[:200]))
    for row in rows:
        if row.median_ms:
            if eager.median_ms:
                row.speedup_vs_eager = eager.median_ms / row.median_ms
            if compiled is not None and compiled.median_ms:
                row.speedup_vs_compile = compiled.median_ms / row.median_ms
    return rows


def _timed_row(case, backend, precision, fn, ref, device, rates, repeats) -> Row:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    errors = parity_errors(out, ref)
    if not within(errors, precision):
        return Row(case.name, backend, precision, "WRONG", errors=errors)
    times = _time(fn, device, repeats)
    floor = floor_seconds(case, rates, precision)
    med = _median(times)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    return Row(case.name, backend, precision, "ok", med * 1e3, _iqr(times) * 1e3, peak_mem_mib=peak,
               floor_ms=floor * 1e3, floor_fraction=floor / med, errors=errors)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "device_type": device.type,
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    return env


def format_table(rows: Sequence[Row]) -> str:
    head = f"{'case':<20} {'backend':<14} {'mode':<5} {'status':<7} {'median ms':>10} {'iqr ms':>8} " \
           f"{'x eager':>8} {'x compile':>9} {'peak MiB':>9} {'floor ms':>9} {'% floor':>8} {'max|drgb|':>10}"
    lines = [head, "-" * len(head)]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        status = r.status if len(r.status) <= 7 else r.status[:7]
        lines.append(f"{r.case:<20} {r.backend:<14} {r.precision:<5} {status:<7} {fmt(r.median_ms, '10.3f')} "
                     f"{fmt(r.iqr_ms, '8.3f')} {fmt(r.speedup_vs_eager, '8.1f')} {fmt(r.speedup_vs_compile, '9.1f')} "
                     f"{fmt(r.peak_mem_mib, '9.1f')} {fmt(r.floor_ms, '9.3f')} "
                     f"{fmt(None if r.floor_fraction is None else 100 * r.floor_fraction, '8.1f')} "
                     f"{fmt(r.errors.get('rgb'), '10.2e')}")
        if r.status not in ("ok", "WRONG") and len(r.status) > 7:
            lines.append(f"    {r.status}")
    return "\n".join(lines)


def plot(rows: Sequence[Row], path: str, title: str) -> str:
    """A bar chart of median time per backend/mode for each case (log scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cases = list(dict.fromkeys(r.case for r in rows))
    fig, axes = plt.subplots(1, len(cases), figsize=(5 * len(cases), 4), squeeze=False)
    for ax, case in zip(axes[0], cases):
        ok = [r for r in rows if r.case == case and r.median_ms]
        labels = [f"{r.backend}\n{r.precision}" for r in ok]
        ax.bar(range(len(ok)), [r.median_ms for r in ok], color=["#888" if r.backend.startswith("torch") else "#2a7" for r in ok])
        ax.set_xticks(range(len(ok)), labels, fontsize=7)
        ax.set_yscale("log")
        if ok:  # start the log axis below the fastest bar so every bar is visible
            ax.set_ylim(bottom=0.5 * min(r.median_ms for r in ok))
        ax.set_ylabel("median ms (log)")
        ax.set_title(case)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(cases: Sequence[Case], device="cpu", backends=None, precisions=("fp32", "tf32", "fp16", "bf16"),
        repeats: int = 5, compile_reference: bool = True, json_path: Optional[str] = None,
        plot_path: Optional[str] = None, extra: Optional[dict] = None, progress=None) -> dict:
    """Benchmark every case; print nothing, return (and optionally write) the results dict."""
    device = torch.device(device)
    rates = measure_rates(device)
    rows: List[Row] = []
    for case in cases:
        rows += bench_case(case, device, rates, backends, precisions, repeats, compile_reference, progress)
    result = {"environment": environment(device), "rates": rates,
              "cases": [asdict(c) for c in cases], "rows": [asdict(r) for r in rows]}
    if extra:
        result.update(extra)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(_finite(result), f, indent=1)
    if plot_path and rows:
        plot(rows, plot_path, f"ImportanceRenderer on {result['environment']['device']}")
    result["table"] = format_table(rows)
    return result


def bench_model(config: str = "tiny", device="cpu", batch: int = 1, repeats: int = 5,
                optimize_kw: Optional[dict] = None, progress=None) -> dict:
    """End-to-end RTGaze: the eager reference model vs ``RTGaze.optimize(**optimize_kw)`` with the
    same (seeded random) weights; median latency, per-stage breakdown, and the output difference."""
    from .model import STAGES, RTGaze
    say = progress or (lambda s: None)
    device = torch.device(device)
    torch.manual_seed(0)
    eager = RTGaze(config, backend="torch", deterministic=True).to(device).eval()
    fast = RTGaze(config, deterministic=True).to(device)
    fast.load_state_dict(eager.state_dict())
    kw = dict(optimize_kw or {})
    fast.optimize(**kw)
    gen = torch.Generator().manual_seed(1)
    size = eager.config.image_size
    x = (torch.rand(batch, 3, size, size, generator=gen) * 2 - 1).to(device)
    g = (torch.rand(batch, 2, generator=gen) - 0.5).to(device)
    result = {"config": config, "batch": batch, "optimize": kw, "stages": list(STAGES)}
    with torch.no_grad():
        for name, model in (("eager", eager), ("optimized", fast)):
            say(f"RTGaze-{config} {name}")
            out = model(x, g)
            times = _time(lambda: model(x, g), device, repeats)
            with model.time_stages() as st:
                model(x, g)
            result[name] = {"median_ms": _median(times) * 1e3, "iqr_ms": _iqr(times) * 1e3,
                            "stages_ms": {k: st.get(k, 0.0) * 1e3 for k in STAGES}}
            result[name + "_image"] = out["image"]
    diff = (result.pop("eager_image") - result.pop("optimized_image")).abs().max()
    result["max_abs_image_diff"] = float(diff)
    result["speedup"] = result["eager"]["median_ms"] / result["optimized"]["median_ms"]
    result["parameters"] = sum(p.numel() for p in eager.parameters())
    return result


def format_model(r: dict) -> str:
    head = f"{'RTGaze-' + r['config']:<16} {'total ms':>9} " + " ".join(f"{s:>9}" for s in r["stages"])
    lines = [head, "-" * len(head)]
    for name in ("eager", "optimized"):
        e = r[name]
        lines.append(f"{name:<16} {e['median_ms']:9.2f} " + " ".join(f"{e['stages_ms'][s]:9.2f}" for s in r["stages"]))
    lines.append(f"speedup {r['speedup']:.2f}x, max |image difference| {r['max_abs_image_diff']:.2e}, "
                 f"{r['parameters'] / 1e6:.1f} M parameters, optimize({r['optimize']})")
    return "\n".join(lines)


def _finite(v):
    """Strict JSON: non-finite floats (an exact match's infinite PSNR) become strings."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def main(argv=None) -> int:
    """``rtgaze-fast bench``: the side-by-side table, JSON and plot."""
    import argparse
    import os
    p = argparse.ArgumentParser(prog="rtgaze-fast bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--res", type=int, nargs="+", default=None,
                   help="rays per side (default: 64 128 on a CPU, 128 on a GPU)")
    p.add_argument("--samples", type=int, nargs="+", default=[48], help="N (= N_f) per ray (default 48)")
    p.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default: 1; 1 8 on a GPU)")
    p.add_argument("--backends", nargs="+", default=None, help="fused backends to include (default: all available)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "tf32", "fp16", "bf16"])
    p.add_argument("--repeats", type=int, default=None, help="timed runs per column (default 3 CPU, 20 GPU)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile(reference) column")
    p.add_argument("--model", default=None, choices=["tiny", "base", "none"],
                   help="also time RTGaze end to end (default: base on a GPU, tiny on a CPU)")
    p.add_argument("--no-renderer", action="store_true", help="skip the renderer table (time only the model)")
    p.add_argument("--out", default="out", help="folder for bench.json and bench.png (default out/)")
    p.add_argument("--model-gpu", action="store_true",
                   help="print the GPU performance model (rtgaze_fast.perf_model: estimates, no timing) and exit")
    args = p.parse_args(argv)
    if args.model_gpu:
        from . import perf_model
        return perf_model.main(["--out", "-"])
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    res = args.res or ([128] if gpu else [64, 128])
    batch = args.batch or ([1, 8] if gpu else [1])
    cases = [] if args.no_renderer else [Case(res=r, n=n, n_f=n, batch=b) for r in res for n in args.samples
                                         for b in batch]
    os.makedirs(args.out, exist_ok=True)
    say = lambda s: print(f"[bench] {s}", flush=True)  # noqa: E731
    model = args.model or ("base" if gpu else "tiny")
    extra = {}
    if model != "none":
        kw = dict(compile=True, cuda_graphs=True) if gpu else {}
        extra["model"] = bench_model(model, device, repeats=args.repeats or (20 if gpu else 3), optimize_kw=kw,
                                     progress=say)
    result = run(cases, device, args.backends, args.precisions, args.repeats or (20 if gpu else 3),
                 not args.no_compile, os.path.join(args.out, "bench.json"), os.path.join(args.out, "bench.png"),
                 extra=extra, progress=say)
    if cases:
        print(result["table"])
    if extra:
        print(format_model(extra["model"]))
    plot_note = f" and {os.path.join(args.out, 'bench.png')}" if cases else ""
    print(f"wrote {os.path.join(args.out, 'bench.json')}{plot_note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
