"""Compiler evidence for the CUDA kernels, without a GPU: registers, spills, shared memory, local
stack and the SASS instruction mix, read from what nvcc/ptxas emit for sm_90 (H100/H200).

    python -m rtgaze_fast.cuda_sass [--out benchmarks/results/cuda_sm90_sass.json]

Each ``.cu`` of ``build_config.CUDA_KERNEL_SOURCES`` is compiled with ``nvcc -cubin`` and the
project's flags; ``-Xptxas -v`` gives the spills, ``cuobjdump -res-usage`` the registers, shared
memory and stack, and ``cuobjdump -sass`` the instructions, counted per kernel by class:

- ``tensor_core``: HMMA / IMMA / HGMMA / ... (warp- or warpgroup-level MMA instructions);
- ``ldg_128``: 128-bit global loads (``LDG.E.128``), ``ldg``: every global load, ``ldg_16``: 16-bit;
- ``lds_128``/``ldsm``: 128-bit shared loads and ``ldmatrix``; ``lds``: every shared load;
- ``mufu``: the special-function unit (ex2, rcp, lg2, rsq, ...), with a per-op breakdown;
- ``ffma``, ``ldl``/``stl`` (local memory: register spills *and* per-thread arrays), ``total``.

These are static instruction counts (how often an opcode appears in the binary), not executed
counts: a loop body counts once. The CUDA kernels take N and N_f at run time, so the figures hold
for 48+48 and 96+96 alike (one binary per precision). cuobjdump/nvdisasm are not always installed
beside nvcc; Triton's wheel ships them, and :func:`find_tools` looks there too.

The committed JSON is what ``tests/test_cuda_sass.py`` holds the kernels to: a kernel that loses
its tensor-core or 128-bit load instructions, or spills / uses more local stack than recorded, fails.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Dict, Optional

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "cuda_sm90_sass.json"
ARCH = "sm_90"

# csrc/cuda/kernels.h's Precision enum, in order: the warp-tile kernels are templates on it.
PRECISION_ENUM = ("kFp32", "kTf32", "kFp16", "kBf16")
_MODE_OF = dict(zip(PRECISION_ENUM, ("fp32", "tf32", "fp16", "bf16")))
# Which kernel each precision mode runs: one instantiation per mode of the render, sample_decode
# and render_backward kernels; march and importance are fp32 in every mode.
MODES = {
    **{f"{k}<{e}>": (m,) for k in ("render_kernel", "sample_decode_kernel", "render_backward_kernel")
       for e, m in _MODE_OF.items()},
    "march_kernel": ("fp32", "tf32", "fp16", "bf16"),
    "importance_kernel": ("fp32", "tf32", "fp16", "bf16"),
}
# The warp-tile kernels: what the CI test holds them to beyond the recorded figures (tensor-core
# MMAs and 128-bit texel loads present, no local memory at all).
TILE_KERNELS = tuple(k for k in MODES if "<" in k)

_TC = re.compile(r"^(HMMA|IMMA|DMMA|HGMMA|IGMMA|QGMMA|BMMA|UTCHMMA|UTCQMMA|UTCIMMA|OMMA|QMMA)\b")
_INSTR = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)")


def find_tools() -> Dict[str, Optional[str]]:
    """Paths of nvcc, cuobjdump and nvdisasm (PATH, CUDA_HOME, then the ones Triton bundles)."""
    dirs = [Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        dirs.append(Path(nvcc).resolve().parent)
    try:
        import triton  # noqa: F401
        dirs.append(Path(sys.modules["triton"].__file__).parent / "backends" / "nvidia" / "bin")
    except Exception:
        pass
    out = {}
    for tool in ("nvcc", "cuobjdump", "nvdisasm"):
        found = shutil.which(tool)
        if found is None:
            found = next((str(d / tool) for d in dirs if (d / tool).exists()), None)
        out[tool] = found
    return out


def short_name(mangled: str) -> str:
    """``render_kernel<kFp16>`` from the mangled symbol (namespaces dropped): the last name of
    the nested name, and its first template argument when it is a plain type name or a Precision."""
    if not mangled.startswith("_ZN"):
        return mangled
    i, names = 3, []
    while i < len(mangled) and mangled[i].isdigit():
        m = re.match(r"\d+", mangled[i:])
        n = int(m.group(0))
        i += len(m.group(0))
        names.append(mangled[i:i + n])
        i += n
    if not names:
        return mangled
    name = names[-1]
    if mangled[i:i + 1] == "I":
        m = re.match(r"I(\d+)", mangled[i:])
        e = re.match(r"ILN\w*?(\d+)PrecisionE(\d+)E", mangled[i:])
        if e:  # a Precision template argument (csrc/cuda/kernels.h's enum)
            name += f"<{PRECISION_ENUM[int(e.group(2))]}>"
        elif m:
            n = int(m.group(1))
            start = i + len(m.group(0))
            name += f"<{mangled[start:start + n]}>"
    return name


def parse_ptxas(stderr: str) -> Dict[str, dict]:
    """Per-kernel spills, registers, stack and shared memory from ``-Xptxas -v`` output."""
    out: Dict[str, dict] = {}
    cur = None
    for line in stderr.splitlines():
        m = re.search(r"(?:Compiling entry function|Function properties for) '?([\w$]+)'?", line)
        if m:
            cur = short_name(m.group(1))
            out.setdefault(cur, {})
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            out[cur].update(stack_frame=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            out[cur]["registers"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            out[cur]["smem_static"] = int(s.group(1)) if s else 0
    return out


def parse_res_usage(text: str) -> Dict[str, dict]:
    """Per-kernel REG / STACK / SHARED / LOCAL from ``cuobjdump -res-usage``."""
    out, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*Function ([\w$]+):", line)
        if m:
            cur = short_name(m.group(1))
            continue
        if cur and "REG:" in line:
            vals = dict(re.findall(r"(\w+(?:\[\d\])?):(\d+)", line))
            out[cur] = {"registers": int(vals["REG"]), "stack": int(vals.get("STACK", 0)),
                        "shared": int(vals.get("SHARED", 0)), "local": int(vals.get("LOCAL", 0))}
            cur = None
    return out


def classify(opcodes: Counter) -> dict:
    """The instruction mix of one kernel from its opcode counts."""
    def count(pred):
        return sum(n for op, n in opcodes.items() if pred(op))
    mufu = {op.split(".", 1)[1]: n for op, n in sorted(opcodes.items()) if op.startswith("MUFU.")}
    return {
        "total": sum(opcodes.values()),
        "tensor_core": count(lambda op: bool(_TC.match(op))),
        "tensor_core_ops": {op: n for op, n in sorted(opcodes.items()) if _TC.match(op)},
        "ldg": count(lambda op: op.startswith("LDG")),
        "ldg_128": count(lambda op: op.startswith("LDG") and ".128" in op),
        "ldg_64": count(lambda op: op.startswith("LDG") and ".64" in op),
        "ldg_16": count(lambda op: op.startswith("LDG") and (".U16" in op or ".S16" in op)),
        "ld_generic": count(lambda op: op == "LD" or op.startswith("LD.")),
        "lds": count(lambda op: op.startswith("LDS") and not op.startswith("LDSM")),
        "lds_128": count(lambda op: op.startswith("LDS") and ".128" in op),
        "ldsm": count(lambda op: op.startswith("LDSM")),
        "mufu": sum(mufu.values()),
        "mufu_ops": mufu,
        "ffma": count(lambda op: op.startswith("FFMA")),
        "ldl": count(lambda op: op.startswith("LDL")),
        "stl": count(lambda op: op.startswith("STL")),
        "stg": count(lambda op: op.startswith("STG")),
    }


def parse_sass(text: str) -> Dict[str, dict]:
    """Per-kernel instruction mix from ``cuobjdump -sass`` (or nvdisasm) text."""
    per: Dict[str, Counter] = {}
    cur = None
    for line in text.splitlines():
        m = re.search(r"Function : ([\w$]+)", line) or re.match(r"\s*\.text\.([\w$]+):", line)
        if m:
            cur = short_name(m.group(1))
            per[cur] = Counter()
            continue
        if cur is None:
            continue
        m = _INSTR.search(line)
        if m:
            per[cur][m.group(1)] += 1
    return {k: classify(v) for k, v in per.items()}


def _run(cmd, timeout=900) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{res.stdout}\n{res.stderr}")
    return res


def analyse_source(source: str, tools: dict, workdir: Path, arch: str = ARCH) -> Dict[str, dict]:
    """Compile one .cu for ``arch`` and return its kernels' figures."""
    import build_config
    num = arch.split("_")[1]
    cubin = workdir / (Path(source).stem + f".{arch}.cubin")
    cmd = [tools["nvcc"], "-cubin", str(ROOT / source), "-o", str(cubin), "-Xptxas", "-v",
           *[f"-I{ROOT / d}" for d in build_config.INCLUDE_DIRS],
           *[f for f in build_config.NVCC_FLAGS if f != "-Xptxas=-v"],
           f"-gencode=arch=compute_{num},code={arch}"]
    ptxas = parse_ptxas(_run(cmd).stderr)
    res = parse_res_usage(_run([tools["cuobjdump"], "-res-usage", str(cubin)]).stdout)
    sass = parse_sass(_run([tools["cuobjdump"], "-sass", str(cubin)]).stdout)
    out = {}
    for name in sorted(sass):
        p, r = ptxas.get(name, {}), res.get(name, {})
        out[name] = {
            "source": source,
            "modes": list(MODES.get(name, ())),
            "registers": r.get("registers", p.get("registers")),
            "spill_store_bytes": p.get("spill_stores"),
            "spill_load_bytes": p.get("spill_loads"),
            "stack_bytes": r.get("stack", p.get("stack_frame")),
            "shared_bytes": r.get("shared", p.get("smem_static")),
            "sass": sass[name],
        }
    return out


def dynamic_smem(name: str) -> dict:
    """A warp-tile kernel's dynamic shared memory per block with 4 warps (sm_90), at 48+48 and 96+96."""
    from . import perf_model as pm
    out = {}
    for n in (48, 96):
        if name.startswith("render_backward"):
            block, warp = pm.cuda_bwd_smem(2 * n, n)
        elif name.startswith("render_kernel"):
            block, warp = pm.cuda_fwd_smem("kFp16" in name or "kBf16" in name, 2 * n, n)
        else:  # sample_decode: the weights and one activation tile per warp
            half = "kFp16" in name or "kBf16" in name
            block, warp = pm.cuda_fwd_smem(half)[0], pm.ROWS * pm.cuda_tile_ld(half) * 4
        out[f"{n}+{n}"] = block + pm.MAX_WARPS * warp
    return out


def _version(tool: str) -> str:
    try:
        lines = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=60).stdout.splitlines()
        return next((ln.strip() for ln in lines if "release" in ln), lines[-1].strip() if lines else "?")
    except Exception as e:  # pragma: no cover
        return f"unknown ({e})"


def collect(arch: str = ARCH) -> dict:
    """Every CUDA kernel's figures for ``arch`` (needs nvcc and cuobjdump; no GPU)."""
    sys.path.insert(0, str(ROOT))
    import build_config
    tools = find_tools()
    missing = [t for t in ("nvcc", "cuobjdump") if tools[t] is None]
    if missing:
        raise RuntimeError(f"needs {missing} (the CUDA toolkit, or Triton's bundled cuobjdump)")
    kernels = {}
    with tempfile.TemporaryDirectory() as d:
        for src in build_config.CUDA_KERNEL_SOURCES:
            kernels.update(analyse_source(src, tools, Path(d), arch))
    for name in TILE_KERNELS:  # sized at launch, so not in the binary: the plan (csrc/include/rtgaze/tile.h)
        if name in kernels:
            kernels[name]["dynamic_shared_bytes"] = dynamic_smem(name)
    return {
        "what": "static SASS of the CUDA kernels (no GPU run): per-kernel registers, spills, shared memory, "
                "local stack and instruction mix; static counts, a loop body counts once",
        "arch": arch,
        "nvcc": _version(tools["nvcc"]),
        "cuobjdump": _version(tools["cuobjdump"]),
        "nvcc_flags": [f for f in build_config.NVCC_FLAGS if f != "-Xptxas=-v"],
        "samples_note": "N and N_f are run-time arguments: one binary per precision serves 48+48 and 96+96 "
                        "(up to kMaxSamples=192 per ray); the warp-tile kernels' shared memory is sized at launch "
                        "(dynamic_shared_bytes: 4 warps per block)",
        "kernels": kernels,
    }


def regressions(current: dict, recorded: dict) -> list:
    """What got worse against the recorded figures: lost tensor-core or 128-bit load instructions,
    more spill bytes or local stack, a kernel gone."""
    bad = []
    for name, rec in recorded["kernels"].items():
        cur = current["kernels"].get(name)
        if cur is None:
            bad.append(f"{name}: kernel missing")
            continue
        for key in ("tensor_core", "ldg_128", "lds_128", "ldsm"):
            if cur["sass"][key] < rec["sass"][key]:
                bad.append(f"{name}: {key} {rec['sass'][key]} -> {cur['sass'][key]}")
        for key in ("spill_store_bytes", "spill_load_bytes", "stack_bytes"):
            if (cur[key] or 0) > (rec[key] or 0):
                bad.append(f"{name}: {key} {rec[key]} -> {cur[key]}")
    return bad


def summary(data: dict) -> str:
    rows = [f"{'kernel':36s} {'modes':18s} {'regs':>4s} {'spill':>5s} {'stack':>5s} {'smem':>6s} "
            f"{'MMA':>4s} {'LDG':>4s} {'LDG128':>6s} {'LDS128':>6s} {'MUFU':>4s} {'FFMA':>5s} {'LDL':>4s} {'STL':>4s}"]
    for name, k in data["kernels"].items():
        s = k["sass"]
        rows.append(f"{name:36s} {','.join(k['modes']):18s} {k['registers']:4d} {k['spill_store_bytes'] or 0:5d} "
                    f"{k['stack_bytes']:5d} {k['shared_bytes']:6d} {s['tensor_core']:4d} {s['ldg']:4d} "
                    f"{s['ldg_128']:6d} {s['lds_128']:6d} {s['mufu']:4d} {s['ffma']:5d} {s['ldl']:4d} {s['stl']:4d}")
    return "\n".join(rows)


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m rtgaze_fast.cuda_sass", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default=ARCH)
    p.add_argument("--out", default=str(RESULT), help="JSON to write ('-' for none)")
    args = p.parse_args(argv)
    data = collect(args.arch)
    print(summary(data))
    if args.out != "-":
        Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
