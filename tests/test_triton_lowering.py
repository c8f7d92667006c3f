"""The Triton kernels lower to Hopper machine code, in every precision mode and autotune config at
48+48 samples, with the pinned Triton and with the one the GPU machines carry (scripts/setup_env.sh
puts it in .venv/triton-gpu); the latter also at 96+96 in fp32 and tf32x3 (the modes that spill
most there). Not more: the render kernels take 30-90 s each to lower here (Triton's Coalesce
passes), and both Tritons at both counts in every mode took a third of the suite's time. The
interpreter (the rest of the suite) never lowers them, and on a GPU one config that fails to compile aborts autotuning and so the
op (Triton 3.6 and 3.7 fail to lower some block shapes: see the CONFIGS comments). Compiled here
without a GPU by ``python -m rtgaze_fast.triton.aot``; its table goes to the test log."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from require import GPU_MACHINES_TRITON, ptxas_missing, skip_or_fail

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# The committed reports, per Triton: the pinned one (the venv's) and the GPU machines'.
REPORTS = {"pinned": RESULTS / "triton_sm90_lowering.json", "gpu-machines": RESULTS / "triton_sm90_lowering_3.6.json"}
# The aot runs per Triton: (samples, precisions (None: all), only the kernels whose shapes depend
# on the samples (aot.SAMPLE_DEPENDENT; the others were compiled at 48)).
RUNS = {"pinned": [("48", None, False)],
        "gpu-machines": [("48", None, False), ("96", ("fp32", "tf32x3"), True)]}
# Hopper's largest shared-memory allocation per block (227 KB) and registers per thread.
MAX_SHARED, MAX_REGISTERS = 227 * 1024, 255
# Stack (spill) bytes per thread: each row may use at most what the committed report records for
# it (the same kernel, mode, samples and config, compiled by the same Triton and ptxas), so more
# spilling is a regression; and never more than these ceilings per kernel.
MAX_STACK = {"sample_decode": 512, "march": 512, "importance": 512, "render": 1024, "render_bwd_march": 256,
             "render_bwd_decode": 256}
# Kernels whose every mode must leave room for 2 CTAs per SM (registers x threads, shared memory).
TWO_CTAS_PER_SM = ("render", "render_bwd_march")


def _key(row):
    return (row["kernel"], row["precision"], row["samples"], tuple(sorted(row["config"].items())), row["num_warps"],
            row["maxnreg"], row["num_stages"])


@pytest.fixture(scope="module", params=["pinned", "gpu-machines"])
def rows(request, tmp_path_factory):
    # Only a missing ptxas skips (fails where RTGAZE_FAST_REQUIRE has 'ptxas'); any other error
    # finding it is raised.
    why = ptxas_missing()
    if why is not None:
        skip_or_fail("ptxas", why)
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "RTGAZE_FAST_TRITON_AUTOTUNE")}
    expected_version = None
    if request.param == "gpu-machines":
        dist = sorted(GPU_MACHINES_TRITON.glob("triton-*.dist-info"))
        if not dist:
            skip_or_fail("triton-gpu", f"no Triton of the GPU machines under {GPU_MACHINES_TRITON} "
                         "(scripts/setup_env.sh)")
        expected_version = dist[0].name[len("triton-"):-len(".dist-info")]
        env["PYTHONPATH"] = os.pathsep.join([str(GPU_MACHINES_TRITON), str(ROOT)])
    from rtgaze_fast.triton.aot import SAMPLE_DEPENDENT
    recorded = json.loads(REPORTS[request.param].read_text())
    rows = []
    for i, (samples, precisions, sample_dependent_only) in enumerate(RUNS[request.param]):
        out = tmp_path_factory.mktemp("aot") / f"aot{i}.json"
        cmd = [sys.executable, "-m", "rtgaze_fast.triton.aot", "--all-configs", "--samples", samples, "--jobs", "2",
               "--json", str(out)]
        cmd += ["--precisions", *precisions] if precisions else []
        cmd += ["--kernels", *SAMPLE_DEPENDENT] if sample_dependent_only else []
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=2400)
        print(res.stdout)
        assert out.exists(), res.stdout + res.stderr[-3000:]
        report = json.loads(out.read_text())
        if expected_version is not None:
            assert report["triton"] == expected_version, "the GPU machines' Triton was not the one imported"
        assert recorded["triton"] == report["triton"], "the committed report is of another Triton: regenerate it"
        rows += report["rows"]
    return rows, {_key(r): r for r in recorded["rows"]}, RUNS[request.param]


def test_launch_configs_default_first_and_the_autotune_switch(monkeypatch):
    """What the kernels launch: every config with autotuning on (maxnreg carried when given),
    the first alone with RTGAZE_FAST_TRITON_AUTOTUNE=0, one block under the interpreter."""
    from rtgaze_fast.triton import _common
    pairs = ((1, 8, 255), (2, 4), (1, 8, 255, 1))
    monkeypatch.setattr(_common, "INTERPRET", False)
    monkeypatch.setattr(_common, "AUTOTUNE", True)
    got = [(c.kwargs["BLOCK_R"], c.num_warps, c.maxnreg, c.num_stages)
           for c in _common.launch_configs("BLOCK_R", pairs, 32)]
    assert got == [(1, 8, 255, 3), (2, 4, None, 3), (1, 8, 255, 1)]
    monkeypatch.setattr(_common, "AUTOTUNE", False)
    got = [(c.kwargs["BLOCK_R"], c.num_warps, c.maxnreg) for c in _common.launch_configs("BLOCK_R", pairs, 32)]
    assert got == [(1, 8, 255)]
    monkeypatch.setattr(_common, "INTERPRET", True)
    assert [c.kwargs for c in _common.launch_configs("BLOCK_R", pairs, 32)] == [{"BLOCK_R": 32}]


def test_every_kernel_config_and_mode_compiles_for_sm90(rows):
    from rtgaze_fast import ops
    from rtgaze_fast.triton import march, render, render_bwd, sample_decode
    from rtgaze_fast.triton.aot import PRECISION_DEPENDENT, SAMPLE_DEPENDENT
    rows, _, runs = rows
    configs = {"sample_decode": sample_decode.CONFIGS, "march": march.MARCH_CONFIGS,
               "importance": march.IMPORTANCE_CONFIGS, "render": render.CONFIGS,
               "render_bwd_march": render_bwd.MARCH_BWD_CONFIGS, "render_bwd_decode": render_bwd.DECODE_BWD_CONFIGS}
    # Per run: each of its kernels' every config, in each of the run's modes where the kernel's
    # arithmetic depends on the mode (march and importance: once).
    expected = sum(len(configs[k]) * (len(precisions or ops.PRECISIONS) if k in PRECISION_DEPENDENT else 1)
                   for _, precisions, only in runs for k in (SAMPLE_DEPENDENT if only else configs))
    assert len(rows) == expected
    failed = [r for r in rows if "error" in r]
    assert not failed, failed


def test_resources_fit_the_chip_and_spills_do_not_grow(rows):
    rows, recorded, _ = rows
    for r in rows:
        if "error" in r:
            continue
        assert r["shared_bytes"] <= MAX_SHARED and r["registers"] <= MAX_REGISTERS, r
        assert r["stack_bytes"] <= MAX_STACK[r["kernel"]], f"spills past the kernel's ceiling: {r}"
        old = recorded.get(_key(r))
        assert old is not None, f"not in the committed report (regenerate it): {r}"
        assert r["stack_bytes"] <= old["stack_bytes"] and r["spill_store_bytes"] <= old["spill_store_bytes"], \
            f"spills grew: {r} (recorded {old['stack_bytes']} B stack, {old['spill_store_bytes']} B stores)"


def test_tensor_cores_and_vector_loads_are_kept(rows):
    """The SASS mix (cuobjdump -sass of each cubin): every decoder kernel runs its dots on tensor
    cores (HMMA/HGMMA) in every mode but IEEE fp32, tf32x3 with at least twice tf32's MMAs (three
    passes), and no row loses the tensor-core instructions or 128-bit loads its recorded figure
    has."""
    from rtgaze_fast.triton.aot import PRECISION_DEPENDENT
    rows, recorded, _ = rows
    mma = {}
    for r in rows:
        if "error" in r:
            continue
        sass, old = r["sass"], recorded[_key(r)].get("sass", {})
        if r["kernel"] in PRECISION_DEPENDENT and r["precision"] != "fp32":
            assert sass["tensor_core"] > 0, f"no tensor-core instructions: {r}"
        for what in ("tensor_core", "ldg_128"):
            assert sass[what] > 0 or not old.get(what), f"lost its {what} instructions: {r} (recorded {old})"
        mma[_key(r)] = sass["tensor_core"]
    # Where both modes were compiled (every kernel at 48+48; 96+96 has no tf32 rows).
    pairs = [(k, n, mma[(k[0], "tf32") + k[2:]]) for k, n in mma.items()
             if k[1] == "tf32x3" and (k[0], "tf32") + k[2:] in mma]
    assert {k[0] for k, _, _ in pairs} >= set(PRECISION_DEPENDENT)
    for k, n, tf32 in pairs:
        assert n >= 2 * tf32, (k, n, tf32)


def test_the_renderer_runs_two_ctas_per_sm(rows):
    """The occupancy the compiler figures allow (registers allocated per warp, shared memory):
    at least 2 CTAs of the renderer (and its backward twin) per Hopper SM in every mode."""
    from rtgaze_fast.perf_model import H100, ctas_per_sm
    rows, _, _ = rows
    for r in rows:
        if r["kernel"] in TWO_CTAS_PER_SM and "error" not in r:
            assert ctas_per_sm(H100, 32 * r["num_warps"], r["registers"], r["shared_bytes"]) >= 2, r
