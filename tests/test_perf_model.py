"""The GPU performance model (rtgaze_fast.perf_model): its arithmetic on the spec's cost figures,
the committed output, and the bench hook. Estimates, not measurements."""
import json

from rtgaze_fast import perf_model as pm


def test_counts_match_the_spec_cost_section():
    # 16,384 rays x 96 samples, 8,320 FLOP per decode: 13.1 GFLOP; 384 texel reads per point: 2.4 GB fp32.
    fl = pm.floor_work("fp32")
    assert abs(fl.flops_cuda_core - 13.08e9) < 0.01e9
    assert abs(fl.l2_bytes - 2.416e9) < 0.01e9
    # The CUDA forward decodes every sample once on tensor cores (16-row tiles, the second layer
    # padded to 40 outputs; fp32 is 3xTF32: three MMAs per product), one L1 wavefront per texel tap.
    cu = pm.cuda_render("fp32", None)
    assert cu.flops_tensor == pm.RAYS * pm.S * (pm.FC1 + 2 * pm.HD * 40) * 3
    assert pm.cuda_render("fp16", None).flops_tensor == cu.flops_tensor / 3
    assert cu.l2_bytes == fl.l2_bytes and cu.l1_wavefronts == pm.RAYS * pm.S * pm.TAPS


def test_occupancy_from_registers():
    # 168 registers x 128 threads -> 3 CTAs per SM; 255 x 256 -> 1.
    assert pm.ctas_per_sm(pm.H100, 128, 168, 18052) == 3
    assert pm.ctas_per_sm(pm.H100, 256, 255, 24576) == 1
    assert pm.ctas_per_sm(pm.H100, 64, 154, 36288) == 6


def test_model_rows_and_floor():
    m = pm.model()
    rows = {(r["backend"], r["precision"], r["direction"]): r for r in m["rows"]}
    for gpu in ("H100 SXM", "H200 SXM"):
        for key, r in rows.items():
            p = r["per_gpu"][gpu]
            assert p["predicted_us"] >= p["floor_us"] > 0, (key, gpu)
            assert p["ctas_per_sm"] >= 1, (key, gpu)
        # The warp-tile CUDA forward is predicted at its mode's floor (bound by texel lines from L2),
        # far below the old scalar-load kernel's 3-6 ms; its backward within 2x of the ideal backward.
        for mode in ("fp32", "tf32", "fp16", "bf16"):
            fwd = rows[("cuda", mode, "forward")]["per_gpu"][gpu]
            assert fwd["predicted_us"] < 1.1 * fwd["floor_us"], (mode, fwd)
            bwd = rows[("cuda", mode, "backward")]["per_gpu"][gpu]
            assert bwd["predicted_us"] < 2 * bwd["floor_us"], (mode, bwd)
    assert "datasheet" in m["gpus"]["H100 SXM"]["source"]
    assert "PREDICTED" in m["what"] and "nothing measured" in m["what"]


def test_committed_output_is_current():
    committed = json.loads(pm.OUT_JSON.read_text())
    assert committed == json.loads(json.dumps(pm.model()))


def test_bench_flag_prints_the_model(capsys):
    from rtgaze_fast import bench
    assert bench.main(["--model-gpu"]) == 0
    out = capsys.readouterr().out
    assert "MODEL" in out and "PREDICTED" in out and "render_backward_kernel<kFp32>" in out and "H200" in out
