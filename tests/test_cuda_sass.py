"""Compiler evidence for the CUDA kernels (rtgaze_fast.cuda_sass): the parsers on canned
cuobjdump/ptxas text, the committed figures' claims, and a fresh sm_90 compile held to the
committed benchmarks/results/cuda_sm90_sass.json (no lost tensor-core or 128-bit load
instructions, no more spills or local stack than recorded). No GPU needed."""
import json

import pytest

from rtgaze_fast import cuda_sass

RECORDED = json.loads(cuda_sass.RESULT.read_text())

SASS = """
	code for sm_90
		Function : _ZN6rtgaze4cuda46_GLOBAL__N__37b0b4fc_13_render_fwd_cu_7b0cb58713render_kernelILNS0_9PrecisionE2EEEvNS0_12RenderParamsE
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/              @!P0 LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0020*/                   HMMA.16816.F32 R8, R12, R16, R8 ;
        /*0030*/                   MUFU.EX2 R3, R3 ;
        /*0040*/               @P1 MUFU.RCP R3, R3 ;
        /*0050*/                   LDL.64 R2, [R1] ;
		Function : _ZN6rtgaze4cuda46_GLOBAL__N__b3d962e6_13_render_fwd_cu_7b0cb58712march_kernelEPKfS3_S3_xiibPfS4_S4_
        /*0000*/                   FFMA R1, R2, R3, R4 ;
        /*0010*/                   LDG.E.U16 R1, desc[UR4][R2.64] ;
"""
PTXAS = """ptxas info    : Compiling entry function '_ZN6rtgaze4cuda46_GLOBAL__N__b3d962e6_13_render_fwd_cu_7b0cb58712march_kernelEPKfS3_S3_xiibPfS4_S4_' for 'sm_90'
ptxas info    : Function properties for _ZN6rtgaze4cuda46_GLOBAL__N__b3d962e6_13_render_fwd_cu_7b0cb58712march_kernelEPKfS3_S3_xiibPfS4_S4_
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 0 barriers, 17028 bytes smem
"""


def test_sass_parser_counts_the_instruction_classes():
    mix = cuda_sass.parse_sass(SASS)
    h = mix["render_kernel<kFp16>"]
    assert (h["tensor_core"], h["ldg_128"], h["ldg"], h["mufu"], h["ldl"]) == (1, 1, 1, 2, 1)
    assert h["mufu_ops"] == {"EX2": 1, "RCP": 1}
    m = mix["march_kernel"]
    assert (m["ffma"], m["ldg_16"], m["ldg_128"], m["tensor_core"]) == (1, 1, 0, 0)


def test_ptxas_parser_reads_spills_and_registers():
    k = cuda_sass.parse_ptxas(PTXAS)["march_kernel"]
    assert k == {"stack_frame": 8, "spill_stores": 4, "spill_loads": 4, "registers": 40, "smem_static": 17028}


def test_a_regression_is_reported():
    cur = json.loads(json.dumps(RECORDED))
    cur["kernels"]["render_kernel<kFp16>"]["sass"]["tensor_core"] = 0
    cur["kernels"]["render_backward_kernel<kFp32>"]["sass"]["ldg_128"] = 0
    cur["kernels"]["render_kernel<kFp32>"]["spill_store_bytes"] = 64
    bad = cuda_sass.regressions(cur, RECORDED)
    assert any("render_kernel<kFp16>: tensor_core" in b for b in bad)
    assert any("render_backward_kernel<kFp32>: ldg_128" in b for b in bad)
    assert any("render_kernel<kFp32>: spill_store_bytes" in b for b in bad)
    assert cuda_sass.regressions(RECORDED, RECORDED) == []


def test_recorded_figures_say_what_the_kernels_are():
    k = RECORDED["kernels"]
    assert RECORDED["arch"] == "sm_90"
    assert set(k) >= set(cuda_sass.MODES)
    # Every warp-tile kernel (each precision mode of render, sample_decode and render_backward): its
    # decoder on tensor cores (HMMA: tf32 for fp32 (3xTF32) and tf32, 16-bit for fp16 and bf16),
    # 128-bit texel loads, no local memory at all (no spills, no per-thread arrays).
    for name in cuda_sass.TILE_KERNELS:
        s = k[name]["sass"]
        assert s["tensor_core"] > 0 and s["ldg_128"] > 0, name
        assert s["ldl"] == s["stl"] == 0 and k[name]["stack_bytes"] == 0, name
        want = "TF32" if ("kFp32" in name or "kTf32" in name or "backward" in name) else (
            "BF16" if "kBf16" in name else "16816.F32")
        assert any(want in op for op in s["tensor_core_ops"]), (name, s["tensor_core_ops"])
    # Fast transcendentals where the mode's bound admits them: MUFU.LG2 (the fast softplus's log) in
    # the tf32 / fp16 / bf16 forwards only; the fp32 forward keeps the accurate log1p (no LG2).
    assert "LG2" not in k["render_kernel<kFp32>"]["sass"]["mufu_ops"]
    for e in ("kTf32", "kFp16", "kBf16"):
        assert k[f"render_kernel<{e}>"]["sass"]["mufu_ops"].get("LG2", 0) > 0, e
    for name, v in k.items():
        assert v["spill_store_bytes"] is not None and v["registers"] <= 255, name


@pytest.mark.skipif(any(cuda_sass.find_tools()[t] is None for t in ("nvcc", "cuobjdump")),
                    reason="needs nvcc and cuobjdump")
def test_fresh_compile_keeps_the_recorded_figures():
    """~2-3 min on 2 CPU cores: both .cu files for sm_90."""
    bad = cuda_sass.regressions(cuda_sass.collect(), RECORDED)
    assert not bad, "kernels regressed against benchmarks/results/cuda_sm90_sass.json " \
                    "(re-record with python -m rtgaze_fast.cuda_sass if intended):\n" + "\n".join(bad)
