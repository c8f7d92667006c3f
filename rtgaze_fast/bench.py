"""The side-by-side benchmark engine behind ``rtgaze-fast bench``.

For each case (rays per side, samples, batch) it renders one seeded FFHQ-class scene with every
available backend and precision mode, checks each against the eager fp32 reference (a fast
wrong kernel is reported WRONG, not fast), times them (CUDA events on a GPU, perf_counter on a
CPU; median and spread over repeats, the columns interleaved within each repeat so that a
machine's load drifts over all of them alike), and relates each to the floor.

The floor of a row is the largest of three times, each the spec's work over a rate measured in
the same run (``measure_rates``):

- the decoder MLP's FLOPs at the large-matmul rate of the row's precision mode (fp32 with TF32
  off, tf32, fp16, bf16 operands; a CPU has no TF32: its tf32 rate is the fp32 one);
- the planes' bytes read once from memory at the copy bandwidth of a buffer far larger than
  the caches (or the taps' bytes, if fewer);
- every texel tap (3 planes x 4 taps x C channels per point) at the read bandwidth of a
  cache-resident buffer.

It is a roofline bound: a kernel doing the spec's work cannot beat it unless it runs faster than
the rates measured here (e.g. taps served from registers or L1 faster than the measured cache
rate). A row faster than its floor is flagged, not hidden.
"""
from __future__ import annotations

import datetime
import json
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import ops
from .camera import frontal_camera, rays_from_label
from .options import FFHQ_OPTIONS, parse_options
from .precision import GRAD_RTOL_FP32, MODEL_IMAGE_BOUNDS, grad_errors, parity_errors, psnr_db, within
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
    floor_fraction: Optional[float] = None   # floor / median: above 1 means faster than the floor (flagged)
    floor_bound: Optional[str] = None        # which term of floor_terms sets the floor
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


_MATMUL_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _matmul_rate(device: torch.device, precision: str) -> float:
    """FLOP/s of a large square matmul in ``precision`` (fp32 with TF32 off; tf32 with it on, CUDA only)."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device).to(_MATMUL_DTYPES[precision])
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        t = _median(_time(lambda: a @ a, device, repeats=5, warmup=2))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return 2 * n ** 3 / t


def measure_rates(device: torch.device, precisions: Sequence[str] = ("fp32",)) -> Dict[str, float]:
    """Device rates for the floor, measured now: ``matmul_<mode>_flops`` for fp32 and each mode of
    ``precisions`` (on a CPU, tf32 is fp32: no TF32 there); ``copy_bytes_per_s``, read + write of a
    buffer far larger than the caches (memory bandwidth); ``cache_bytes_per_s``, gathers of 128-byte
    rows (a tap's 32 fp32 channels) at random from a cache-resident table (16 MiB on a GPU, inside
    an H100/H200's 50 MB L2; 256 KiB on a CPU), summed in bags of 64 so that little is written."""
    device = torch.device(device)
    gpu = device.type == "cuda"
    rates = {}
    for p in dict.fromkeys(("fp32",) + tuple(precisions)):
        if p in ("tf32", "tf32x3") and not gpu:
            rates[f"matmul_{p}_flops"] = rates["matmul_fp32_flops"]
        elif p == "tf32x3":  # three tf32 tensor-core passes per product
            rates["matmul_tf32x3_flops"] = _matmul_rate(device, "tf32") / 3
        else:
            rates[f"matmul_{p}_flops"] = _matmul_rate(device, p)
    src = torch.ones(64 << 20 if gpu else 16 << 20, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    t_cp = _median(_time(lambda: dst.copy_(src), device, repeats=5, warmup=2))
    rates["copy_bytes_per_s"] = 2 * src.numel() * 4 / t_cp
    del src, dst
    rows, n = ((16 << 20) // 128, 16 << 20) if gpu else ((256 << 10) // 128, 1 << 20)
    gen = torch.Generator().manual_seed(0)
    table = torch.rand(rows, 32, generator=gen).to(device)
    idx = torch.randint(0, rows, (n,), generator=gen).to(device)
    offsets = torch.arange(0, n, 64, device=device)
    bag = torch.nn.functional.embedding_bag
    t_c = _median(_time(lambda: bag(idx, table, offsets, mode="sum"), device, repeats=5, warmup=2))
    rates["cache_bytes_per_s"] = n * 128 / t_c
    return rates


def floor_terms(case: Case, rates: Dict[str, float], precision: str) -> Dict[str, float]:
    """Seconds of each bound of the floor (module docstring): ``mlp``, ``dram``, ``taps``."""
    texel_bytes = 2 if precision in ("fp16", "bf16") else 4
    flops = case.points * MLP_FLOP_PER_POINT
    tap_bytes = case.points * TEXELS_PER_POINT * texel_bytes
    plane_bytes = case.batch * 3 * case.channels * case.plane_res ** 2 * texel_bytes
    return {"mlp": flops / rates[f"matmul_{precision}_flops"],
            "dram": min(plane_bytes, tap_bytes) / rates["copy_bytes_per_s"],
            "taps": tap_bytes / rates["cache_bytes_per_s"]}


def floor_seconds(case: Case, rates: Dict[str, float], precision: str) -> float:
    """The floor: the largest of ``floor_terms`` (a kernel must pay each)."""
    return max(floor_terms(case, rates, precision).values())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(fn: Callable, device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _time(fn: Callable, device: torch.device, repeats: int, warmup: int = 1) -> List[float]:
    return _time_interleaved({None: fn}, device, repeats, warmup)[None]


def _time_interleaved(fns: Dict[object, Callable], device: torch.device, repeats: int,
                      warmup: int = 1) -> Dict[object, List[float]]:
    """Seconds per call of each function, ``repeats`` rounds that each call every function once in
    turn (a, b, c, a, b, c, ...): drift in the machine's load spreads over all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    out = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            out[key].append(_time_once(fn, device))
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

    columns = [("torch", "fp32", reference)]
    if compile_reference:
        mode = "max-autotune" if device.type == "cuda" else None
        columns.append(("torch.compile", "fp32", torch.compile(reference, mode=mode)))
    columns += [(b, p, renderer_fn(b, p)) for b, p in fused_columns(device, backends, precisions)]
    rows: Dict[tuple, Row] = {}
    timed: Dict[tuple, Callable] = {}
    with torch.no_grad():
        say(f"{case.name}: eager reference")
        ref = reference()
        # Each column's first call (compilation, autotuning) is checked against the reference and
        # gives its peak memory; only the correct ones are timed, all together.
        for backend, precision, fn in columns:
            say(f"{case.name}: {backend} {precision}" + (" (compiling)" if backend == "torch.compile" else ""))
            key = (backend, precision)
            try:
                rows[key], ok = _checked_row(case, backend, precision, fn, ref, device, rates)
            except Exception as e:  # a failure is a result, not a crash of the benchmark
                rows[key], ok = Row(case.name, backend, precision, f"error: {type(e).__name__}: {e}"[:200]), False
            if ok:
                timed[key] = fn
        say(f"{case.name}: timing {len(timed)} columns, {repeats} interleaved rounds")
        for key, times in _time_interleaved(timed, device, repeats).items():
            row = rows[key]
            row.median_ms, row.iqr_ms = _median(times) * 1e3, _iqr(times) * 1e3
            row.floor_fraction = row.floor_ms / row.median_ms
    eager, compiled = rows[("torch", "fp32")], rows.get(("torch.compile", "fp32"))
    for row in rows.values():
        if row.median_ms:
            if eager.median_ms:
                row.speedup_vs_eager = eager.median_ms / row.median_ms
            if compiled is not None and compiled.median_ms:
                row.speedup_vs_compile = compiled.median_ms / row.median_ms
    return list(rows.values())


def bench_training(case: Case, device: torch.device, backends=None, repeats: int = 5,
                   progress: Optional[Callable[[str], None]] = None) -> List[Row]:
    """Training rows: the renderer's forward+backward (gradients to the planes and the decoder, as
    in RTGaze training) with autograd of the eager reference and with every fused backend that
    has a backward, fp32. Each fused backward is checked against the reference's gradients
    first (a wrong one is reported WRONG, not timed), then all are timed interleaved. Speedups
    are against the reference's forward+backward; no floor (the model is the forward's)."""
    say = progress or (lambda s: None)
    if 3 * case.eager_bytes() > 0.8 * _free_bytes(device):
        return [Row(case.name, "torch fwd+bwd", "fp32", "skipped: autograd of the reference would not fit")]
    planes, dec, o, d, opts, su, iu = make_scene(case, device)
    gen = torch.Generator().manual_seed(1)
    weights = [torch.randn(shape, generator=gen).to(device) for shape in
               ((case.batch, case.res * case.res, dec.out_dim), (case.batch, case.res * case.res, 1))]

    def fwd_bwd(backend):
        leaf = planes.detach().requires_grad_(True)
        rgb, depth, wsum = ImportanceRenderer(backend=backend)(leaf, dec, o, d, opts, stratified_u=su,
                                                               importance_u=iu)
        # depth's gradient only where the reference defines it (weights_sum > 1e-4)
        loss = (rgb * weights[0]).sum() + (wsum * weights[1]).sum() + (depth * (wsum.detach() > 1e-4)).sum()
        return torch.autograd.grad(loss, [leaf, *dec.parameters()])

    names = ["torch"] + [b for b in (backends or ops.available_backends(device))
                         if b != "torch" and ops.why_unavailable(b, device) is None and ops.has_backward(b)]
    rows: Dict[str, Row] = {}
    timed: Dict[str, Callable] = {}
    def fwd_bwd_f64():  # the oracle's own rounding, measured where the fp32 bound is not met
        import copy
        from .reference.renderer import Noise
        dec64 = copy.deepcopy(dec).cpu().double()
        leaf = planes.detach().cpu().double().requires_grad_(True)
        w64 = [w.cpu().double() for w in weights]
        rgb, depth, wsum = render_reference(leaf, dec64, o.cpu().double(), d.cpu().double(), parse_options(opts),
                                            Noise(su.cpu().double(), iu.cpu().double()))
        loss = (rgb * w64[0]).sum() + (wsum * w64[1]).sum() + (depth * (wsum.detach() > 1e-4)).sum()
        return torch.autograd.grad(loss, [leaf, *dec64.parameters()])

    say(f"{case.name}: training, autograd of the reference")
    ref = fwd_bwd("torch")
    exact = None
    for b in names:
        label = f"{b} fwd+bwd"
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            grads = fwd_bwd(b)
            errors = grad_errors(grads, ref) if b != "torch" else [0.0]
            peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
            ok, err = max(errors) <= GRAD_RTOL_FP32, {"grad_rel": max(errors)}
            if not ok and max(errors) < float("inf"):
                # fp32 autograd of the reference is itself off the derivative by up to ~2e-4 on some
                # scenes: then, as flash-attention's tests do, allow twice the reference's own error
                # (both against autograd of the reference in float64).
                exact = exact or fwd_bwd_f64()
                own, ours = grad_errors(ref, exact), grad_errors(grads, exact)
                ok = all(e <= max(2 * r, GRAD_RTOL_FP32) for e, r in zip(ours, own))
                err.update(grad_rel_f64=max(ours), reference_rel_f64=max(own))
            rows[b] = Row(case.name, label, "fp32", "ok" if ok else "WRONG", peak_mem_mib=peak, errors=err)
        except Exception as e:  # a failure is a result, not a crash of the benchmark
            rows[b], ok = Row(case.name, label, "fp32", f"error: {type(e).__name__}: {e}"[:200]), False
        if ok:
            timed[b] = (lambda b=b: fwd_bwd(b))
    say(f"{case.name}: timing {len(timed)} training columns, {repeats} interleaved rounds")
    for b, times in _time_interleaved(timed, device, repeats).items():
        rows[b].median_ms, rows[b].iqr_ms = _median(times) * 1e3, _iqr(times) * 1e3
    eager = rows["torch"]
    for row in rows.values():
        if row.median_ms and eager.median_ms:
            row.speedup_vs_eager = eager.median_ms / row.median_ms
    return list(rows.values())


def _checked_row(case, backend, precision, fn, ref, device, rates):
    """(row, correct): the row of one column after its first call, checked against the reference."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    _sync(device)
    errors = parity_errors(out, ref)
    if not within(errors, precision):
        return Row(case.name, backend, precision, "WRONG", errors=errors), False
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    terms = floor_terms(case, rates, precision)
    return Row(case.name, backend, precision, "ok", peak_mem_mib=peak, floor_ms=max(terms.values()) * 1e3,
               floor_bound=max(terms, key=terms.get), errors=errors), True


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
           f"{'x eager':>8} {'x compile':>9} {'peak MiB':>9} {'floor ms':>9} {'% floor':>8} {'max err':>10}"
    lines = [head, "-" * len(head)]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        status = r.status if len(r.status) <= 7 else r.status[:7]
        lines.append(f"{r.case:<20} {r.backend:<14} {r.precision:<5} {status:<7} {fmt(r.median_ms, '10.3f')} "
                     f"{fmt(r.iqr_ms, '8.3f')} {fmt(r.speedup_vs_eager, '8.1f')} {fmt(r.speedup_vs_compile, '9.1f')} "
                     f"{fmt(r.peak_mem_mib, '9.1f')} {fmt(r.floor_ms, '9.3f')} "
                     f"{fmt(None if r.floor_fraction is None else 100 * r.floor_fraction, '8.1f')} "
                     f"{fmt(r.errors.get('rgb', r.errors.get('grad_rel')), '10.2e')}")
        if r.status not in ("ok", "WRONG") and len(r.status) > 7:
            lines.append(f"    {r.status}")
    lines.append("max err: max |rgb - reference|; on fwd+bwd rows (the renderer's forward+backward, gradients to "
                 "the planes and decoder; 'x eager' against the reference's fwd+bwd) the largest gradient error "
                 "relative to that gradient's largest magnitude")
    fast = [r for r in rows if r.floor_fraction is not None and r.floor_fraction > 1]
    if fast:
        lines.append("faster than the floor (a rate measured in this run is below what the kernel reaches, see "
                     "rtgaze_fast.bench): " + ", ".join(f"{r.backend} {r.precision} ({r.floor_bound})" for r in fast))
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
        plot_path: Optional[str] = None, extra: Optional[dict] = None, progress=None, training: bool = True) -> dict:
    """Benchmark every case; print nothing, return (and optionally write) the results dict."""
    device = torch.device(device)
    rates = measure_rates(device, [p for _, p in fused_columns(device, backends, precisions)])
    rows: List[Row] = []
    for case in cases:
        rows += bench_case(case, device, rates, backends, precisions, repeats, compile_reference, progress)
        if training:
            rows += bench_training(case, device, backends, repeats, progress)
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


def model_image_bound(precision: str, renderer_precision: str = "fp32", device="cpu") -> Tuple[float, float]:
    """(max |image difference|, min PSNR dB) the optimised model must keep from the eager one: the
    looser of its autocast mode's and its renderer mode's bound (``precision.MODEL_IMAGE_BOUNDS``);
    on a GPU an fp32 model runs its convolutions in TF32 (cuDNN's default), so at least 'tf32'."""
    modes = [precision, renderer_precision]
    if torch.device(device).type == "cuda" and torch.backends.cudnn.allow_tf32:
        modes.append("tf32")
    bounds = [MODEL_IMAGE_BOUNDS[m] for m in modes]
    return max(b[0] for b in bounds), min(b[1] for b in bounds)


def bench_model(config: str = "tiny", device="cpu", batch: int = 1, repeats: int = 5,
                optimize_kw: Optional[dict] = None, progress=None) -> dict:
    """End-to-end RTGaze: the eager reference model vs ``RTGaze.optimize(**optimize_kw)`` with the
    same (seeded random) weights; median latency (the two interleaved), per-stage breakdown, and
    the output difference, gated: beyond ``model_image_bound`` the optimised model is reported
    ``WRONG`` and not timed (no speedup for a wrong model)."""
    from .model import STAGES, RTGaze
    say = progress or (lambda s: None)
    device = torch.device(device)
    torch.manual_seed(0)
    eager = RTGaze(config, backend="torch", deterministic=True).to(device).eval()
    fast = RTGaze(config, deterministic=True).to(device)
    fast.load_state_dict(eager.state_dict())
    kw = dict(optimize_kw or {})
    fast.optimize(**kw)
    mode = {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[fast._amp_dtype]
    atol, min_psnr = model_image_bound(mode, kw.get("renderer_precision", "fp32"), device)
    gen = torch.Generator().manual_seed(1)
    size = eager.config.image_size
    x = (torch.rand(batch, 3, size, size, generator=gen) * 2 - 1).to(device)
    g = (torch.rand(batch, 2, generator=gen) - 0.5).to(device)
    result = {"config": config, "batch": batch, "optimize": kw, "stages": list(STAGES), "precision": mode,
              "image_atol": atol, "image_min_psnr_db": min_psnr}
    with torch.no_grad():
        say(f"RTGaze-{config} eager and optimized: first calls, checked")
        images = {name: model(x, g)["image"] for name, model in (("eager", eager), ("optimized", fast))}
        diff = float((images["eager"].float() - images["optimized"].float()).abs().max())
        psnr = psnr_db(images["optimized"], images["eager"])
        result["max_abs_image_diff"], result["image_psnr_db"] = diff, psnr
        ok = diff <= atol and psnr >= min_psnr   # NaN fails both
        result["status"] = "ok" if ok else "WRONG"
        models = {"eager": eager, "optimized": fast} if ok else {"eager": eager}
        say(f"RTGaze-{config}: timing {' and '.join(models)}, {repeats} interleaved rounds")
        times = _time_interleaved({name: (lambda m=m: m(x, g)) for name, m in models.items()}, device, repeats)
        for name, model in models.items():
            with model.time_stages() as st:
                model(x, g)
            result[name] = {"median_ms": _median(times[name]) * 1e3, "iqr_ms": _iqr(times[name]) * 1e3,
                            "stages_ms": {k: st.get(k, 0.0) * 1e3 for k in STAGES}}
    result["speedup"] = result["eager"]["median_ms"] / result["optimized"]["median_ms"] if ok else None
    result["parameters"] = sum(p.numel() for p in eager.parameters())
    return result


def format_model(r: dict) -> str:
    head = f"{'RTGaze-' + r['config']:<16} {'total ms':>9} " + " ".join(f"{s:>9}" for s in r["stages"])
    lines = [head, "-" * len(head)]
    for name in ("eager", "optimized"):
        e = r.get(name)
        if e is None:
            lines.append(f"{name:<16} {'WRONG: not timed':>9}")
            continue
        lines.append(f"{name:<16} {e['median_ms']:9.2f} " + " ".join(f"{e['stages_ms'][s]:9.2f}" for s in r["stages"]))
    bound = f"bound {r['image_atol']:.0e}"
    if r["image_min_psnr_db"]:
        bound += f", PSNR >= {r['image_min_psnr_db']:g} dB"
    check = (f"max |image difference| {r['max_abs_image_diff']:.2e}, PSNR {r['image_psnr_db']:.1f} dB ({bound}, "
             f"{r['precision']})")
    if r["status"] != "ok":
        lines.append(f"WRONG: the optimised model is outside its bound: {check}; "
                     f"{r['parameters'] / 1e6:.1f} M parameters, optimize({r['optimize']})")
    else:
        lines.append(f"speedup {r['speedup']:.2f}x, {check}, {r['parameters'] / 1e6:.1f} M parameters, "
                     f"optimize({r['optimize']})")
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
    p.add_argument("--no-training", action="store_true",
                   help="skip the training rows (the renderer's forward+backward, reference vs fused backwards)")
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
                 extra=extra, progress=say, training=not args.no_training)
    if cases:
        print(result["table"])
    if extra:
        print(format_model(extra["model"]))
    plot_note = f" and {os.path.join(args.out, 'bench.png')}" if cases else ""
    print(f"wrote {os.path.join(args.out, 'bench.json')}{plot_note}")
    wrong = [f"{r['case']} {r['backend']} {r['precision']}" for r in result["rows"] if r["status"] == "WRONG"]
    if extra and extra["model"]["status"] == "WRONG":
        wrong.append(f"RTGaze-{model} optimize()")
    if wrong:
        print(f"WRONG (outside their bounds, not timed): {'; '.join(wrong)}")
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
