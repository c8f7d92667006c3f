"""Compile the Triton kernels for a GPU architecture on any machine (no GPU or driver needed):
the check that they lower to real machine code (the interpreter never lowers them), and their
resource figures: registers, stack (spills), shared memory, the SASS instruction mix (tensor-core
MMAs, 128-bit loads, MUFU) and compile time per autotune config.

    python -m rtgaze_fast.triton.aot [--arch 90] [--precisions fp32 ...] [--all-configs] [--jobs 2] [--json F]

Must run without TRITON_INTERPRET=1 (the interpreter replaces the kernels by Python functions).
Shapes are the FFHQ configuration: C=32 plane channels, hidden 64, 32 output features, and
48+48 samples per ray (``--samples`` for others)."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Dict, List, Optional, Tuple

import triton

from .. import ops
from ._common import INTERPRET, dot_mode, next_pow2

# The FFHQ decoder padded as prepare_decoder pads it: C=32, hidden 64, 32 colour features.
_DECODER = dict(CP=32, HD=64, OP=32)


def _dot(precision: str) -> Dict:
    return dict(zip(("DOT_DTYPE", "PREC"), dot_mode(precision)))


def _kernels():
    """name -> (autotuned kernel, block parameter, its configs (block, num_warps[, maxnreg]),
    constexprs of (precision, samples per pass))."""
    from . import march, render, render_bwd, sample_decode
    return {
        "sample_decode": (sample_decode._sample_decode_kernel, "BLOCK", sample_decode.CONFIGS,
                          lambda p, n: dict(_DECODER, PLANE_SET=0, **_dot(p))),
        "march": (march._march_kernel, "BLOCK_R", march.MARCH_CONFIGS,
                  lambda p, n: dict(WHITE_BACK=False, SP=next_pow2(2 * n), OP=32)),
        "importance": (march._importance_kernel, "BLOCK_R", march.IMPORTANCE_CONFIGS,
                       lambda p, n: dict(NP=next_pow2(n), FP=next_pow2(n))),
        "render": (render._render_kernel, "BLOCK_R", render.CONFIGS,
                   lambda p, n: dict(_DECODER, PLANE_SET=0, **_dot(p), DISPARITY=False, WHITE_BACK=False,
                                     HAS_FINE=True, MP=next_pow2(n, 16), CH=render.CH)),
        "render_bwd_march": (render_bwd._march_bwd_kernel, "BLOCK_R", render_bwd.MARCH_BWD_CONFIGS,
                             lambda p, n: dict(_DECODER, PLANE_SET=0, **_dot(p), DISPARITY=False, WHITE_BACK=False,
                                               HAS_FINE=True, MP=next_pow2(n, 16), CH=render.CH)),
        "render_bwd_decode": (render_bwd._decode_bwd_kernel, "BLOCK_R", render_bwd.DECODE_BWD_CONFIGS,
                              lambda p, n: dict(_DECODER, PLANE_SET=0, **_dot(p), PASSES=2, MP=next_pow2(n, 16),
                                                CHUNK=render.CH)),
    }


# Kernels whose arithmetic depends on the precision mode, or their shapes on the samples per
# ray; the others are compiled once (fp32, the first sample count).
PRECISION_DEPENDENT = ("sample_decode", "render", "render_bwd_march", "render_bwd_decode")
SAMPLE_DEPENDENT = ("march", "importance", "render", "render_bwd_march", "render_bwd_decode")


def _signature(fn, constexprs: Dict, precision: str) -> Dict[str, str]:
    """Argument types: pointers fp32 (planes in the mode's dtype), box_warp fp32, other scalars i32."""
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name == "planes_ptr":
            sig[name] = "*" + (precision if precision in ("fp16", "bf16") else "fp32")
        elif name.endswith("_ptr"):
            sig[name] = "*fp32"
        elif name == "box_warp":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def _attrs(fn, signature: Dict[str, str]) -> Dict:
    """What a launch at the FFHQ shape specialises: every tensor pointer (16-byte aligned) and every
    integer argument (rays, samples, channels, plane sizes: all multiples of 16 there) divisible
    by 16, as Triton's launcher marks them; it lets loads of contiguous channels vectorise."""
    return {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
            if signature[name] == "i32" or signature[name].startswith("*")}


# The SASS instruction mix kept per row (rtgaze_fast.cuda_sass's classes).
_SASS_KEYS = ("total", "tensor_core", "tensor_core_ops", "ldg", "ldg_128", "ldg_64", "mufu", "ffma", "ldl", "stl")


def _compiler_figures(ptxas_log: str, cubin: bytes) -> Dict:
    """Registers, stack frame and spill bytes from the ptxas -v log of Triton's own compile (its
    flags, its ptxas: no second run with flags of ours), and the instruction mix of the cubin it
    made (cuobjdump -sass): tensor-core MMAs, 128-bit global loads, MUFU, local-memory traffic."""
    from ..cuda_sass import find_tools, parse_sass
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        sass = subprocess.run([find_tools()["cuobjdump"], "-sass", path], capture_output=True, text=True,
                              check=True).stdout
    (mix,) = parse_sass(sass).values()

    def grab(pat):
        m = re.search(pat, ptxas_log)
        if m is None:
            raise RuntimeError(f"no {pat!r} in Triton's ptxas log (a cached compile prints none):\n{ptxas_log}")
        return int(m.group(1))
    return dict(registers=grab(r"Used (\d+) registers"), stack_bytes=grab(r"(\d+) bytes stack frame"),
                spill_store_bytes=grab(r"(\d+) bytes spill stores"), spill_load_bytes=grab(r"(\d+) bytes spill loads"),
                sass={k: mix[k] for k in _SASS_KEYS})


def compile_kernel(name: str, precision: str = "fp32", config: Optional[Tuple] = None, capability: int = 90,
                   samples: int = 48, maxnreg: Optional[int] = None) -> Dict:
    """Compile one kernel for ``sm_<capability>`` with a (block, num_warps[, maxnreg[, num_stages]])
    config (default: its default one; ``maxnreg`` overrides the config's, 0 for none) and return
    its resource figures, or the compiler's error."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    if INTERPRET:
        raise RuntimeError("rtgaze_fast.triton.aot compiles real kernels: unset TRITON_INTERPRET")
    autotuner, block_name, configs, consts = _kernels()[name]
    block, num_warps, *rest = config or configs[0]
    cap = (rest[0] if rest else None) if maxnreg is None else (maxnreg or None)
    stages = rest[1] if len(rest) > 1 else 3  # triton.Config's default
    row = dict(kernel=name, precision=precision, samples=samples, config={block_name: block}, num_warps=num_warps,
               maxnreg=cap, num_stages=stages)
    constexprs = dict(consts(precision, samples), **{block_name: block})
    fn = autotuner.fn
    t0 = time.perf_counter()
    log = io.StringIO()  # Triton prints its ptxas -v output with dump_ptxas_log
    try:
        sig = _signature(fn, constexprs, precision)
        with triton.knobs.nvidia.scope(), contextlib.redirect_stdout(log):
            triton.knobs.nvidia.dump_ptxas_log = True
            compiled = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=_attrs(fn, sig)),
                                      target=GPUTarget("cuda", capability, 32),
                                      options=dict(num_warps=num_warps, maxnreg=cap, num_stages=stages))
    except Exception as e:  # a compiler failure is a result: report it
        return dict(row, error=f"{type(e).__name__}: {e}".splitlines()[0])
    arch = "sm_90a" if capability == 90 else f"sm_{capability}"  # Triton targets sm_90a on Hopper
    return dict(row, arch=arch, shared_bytes=int(compiled.metadata.shared),
                compile_s=round(time.perf_counter() - t0, 2), **_compiler_figures(log.getvalue(), compiled.asm["cubin"]))


def _job(args) -> Dict:
    return compile_kernel(*args)


def report(kernels=None, precisions=("fp32",), all_configs: bool = False, capability: int = 90,
           jobs: int = 1, samples=(48,), maxnreg: Optional[int] = None) -> List[Dict]:
    """Compile each kernel in each mode (the precision-independent ones once), sample count (the
    kernels that depend on it) and config; print a line per compile as it finishes; return the
    rows in a fixed order."""
    todo = []
    for name in kernels or list(_kernels()):
        configs = _kernels()[name][2]
        for precision in (precisions if name in PRECISION_DEPENDENT else ("fp32",)):
            for n in (samples if name in SAMPLE_DEPENDENT else samples[:1]):
                todo += [(name, precision, c, capability, n, maxnreg)
                         for c in (configs if all_configs else configs[:1])]
    if jobs <= 1:
        rows = []
        for args in todo:
            rows.append(_job(args))
            print(_format(rows[-1]), flush=True)
        return rows
    # Separate processes: the compiler holds the GIL for much of its work.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_job, args) for args in todo]
        for f in as_completed(futures):
            print(_format(f.result()), flush=True)
        return [f.result() for f in futures]


def _format(row: Dict) -> str:
    cfg = ",".join(f"{k}={v}" for k, v in row["config"].items())
    head = (f"{row['kernel']:<17} {row['precision']:<5} N={row['samples']:<4} {cfg:<12} warps={row['num_warps']:<2} "
            f"maxnreg={row['maxnreg'] or '-':<4} ")
    if "error" in row:
        return head + "FAILED " + row["error"]
    return (head + f"{row['arch']:<7} "
            f"regs={row['registers']:<3} stack={row['stack_bytes']:<6} spill st/ld={row['spill_store_bytes']}/"
            f"{row['spill_load_bytes']:<7} smem={row['shared_bytes']:<6} mma={row['sass']['tensor_core']:<4} "
            f"ldg128={row['sass']['ldg_128']:<4} {row['compile_s']:.1f}s")


def _environment(capability: int) -> Dict:
    import datetime
    import platform

    import torch
    from triton.backends.nvidia.compiler import get_ptxas
    ptxas = get_ptxas(capability)
    return dict(what="Triton kernels compiled for a GPU target on a machine without a GPU: compiler figures, "
                     "not timings", date=datetime.date.today().isoformat(), host=platform.node(),
                triton=triton.__version__, torch=torch.__version__, ptxas=ptxas.version.strip().splitlines()[-1],
                target=f"sm_{capability}",
                shapes="C=32, hidden 64, out 32; samples per pass as in each row; pointers and integer arguments "
                       "specialised divisible by 16, as a launch at the FFHQ shape is")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rtgaze_fast.triton.aot", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (default 90: H100/H200)")
    p.add_argument("--kernels", nargs="+", choices=list(_kernels()), default=None)
    p.add_argument("--precisions", nargs="+", choices=ops.PRECISIONS, default=list(ops.PRECISIONS))
    p.add_argument("--all-configs", action="store_true", help="every autotune config (default: the first)")
    p.add_argument("--samples", nargs="+", type=int, default=[48], help="samples per pass, N = N_f (default 48)")
    p.add_argument("--maxnreg", type=int, default=None, help="register cap for every config (default: each "
                   "config's own; 0: none, ptxas decides)")
    p.add_argument("--jobs", type=int, default=1, help="compile in this many processes")
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:  # an empty cache: compile times are real
        os.environ["TRITON_CACHE_DIR"] = cache  # for the worker processes
        triton.knobs.cache.dir = cache
        rows = report(args.kernels, args.precisions, args.all_configs, args.arch, args.jobs, args.samples,
                      args.maxnreg)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(_environment(args.arch), rows=rows), f, indent=1)
    failed = [r for r in rows if "error" in r]
    print(f"{len(rows) - len(failed)} compiled, {len(failed)} failed (triton {triton.__version__})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
