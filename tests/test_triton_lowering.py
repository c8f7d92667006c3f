"""The Triton kernels lower to Hopper machine code, in every precision mode and autotune config,
at 48+48 and 96+96 samples, with the pinned Triton and with the one the GPU machines carry
(scripts/setup_env.sh puts it in .venv/triton-gpu). The interpreter (the rest of the suite)
never lowers them, and on a GPU one config that fails to compile aborts autotuning and so the
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
# Hopper's largest shared-memory allocation per block (227 KB) and registers per thread.
MAX_SHARED, MAX_REGISTERS = 227 * 1024, 255
# Stack (spill) bytes per thread allowed per kernel: the measured figures with headroom; more is
# a regression. The renderer and the backward's march kernel (its twin): 0-1 KB at 96+96 in the
# half/tf32 modes; the backward's decode kernel: 0.1-0.6 KB in every mode.
MAX_STACK = {"sample_decode": 512, "march": 512, "importance": 512, "render": 2048, "render_bwd_march": 2048,
             "render_bwd_decode": 1024}
# The fp32 (IEEE) renderer's dots run on CUDA cores with their operands in registers: 2.8 KB
# per thread at 48+48, 5.8 KB at 96+96 (32 registers and 11 / 31 KB without its maxnreg); the
# backward's march kernel 1.2 KB and 3.3-5.6 KB.
MAX_STACK_FP32_RENDER = 8192
FP32_RENDER_KERNELS = ("render", "render_bwd_march")


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
    out = tmp_path_factory.mktemp("aot") / "aot.json"
    res = subprocess.run([sys.executable, "-m", "rtgaze_fast.triton.aot", "--all-configs", "--samples", "48", "96",
                          "--jobs", "2", "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=2400)
    print(res.stdout)
    assert out.exists(), res.stdout + res.stderr[-3000:]
    report = json.loads(out.read_text())
    if expected_version is not None:
        assert report["triton"] == expected_version, "the GPU machines' Triton was not the one imported"
    return report["rows"]


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
    from rtgaze_fast.triton import march, render, render_bwd, sample_decode
    # sample_decode in 4 modes; render and the backward's two kernels in 4 modes at 2 sample
    # counts; march, importance at 2.
    expected = (len(sample_decode.CONFIGS) * 4 + len(render.CONFIGS) * 4 * 2 + len(march.MARCH_CONFIGS) * 2
                + len(march.IMPORTANCE_CONFIGS) * 2 + len(render_bwd.MARCH_BWD_CONFIGS) * 4 * 2
                + len(render_bwd.DECODE_BWD_CONFIGS) * 4 * 2)
    assert len(rows) == expected
    failed = [r for r in rows if "error" in r]
    assert not failed, failed


def test_resources_fit_the_chip(rows):
    for r in rows:
        if "error" in r:
            continue
        assert r["shared_bytes"] <= MAX_SHARED and r["registers"] <= MAX_REGISTERS, r
        fp32_render = r["precision"] == "fp32" and r["kernel"] in FP32_RENDER_KERNELS
        limit = MAX_STACK_FP32_RENDER if fp32_render else MAX_STACK[r["kernel"]]
        assert r["stack_bytes"] <= limit, f"spills grew: {r}"
