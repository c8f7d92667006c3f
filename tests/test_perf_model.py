"""The GPU performance model (rtgaze_fast.perf_model): its arithmetic on the spec's cost figures,
the committed output, and the bench hook. Estimates, not measurements."""
import json

from rtgaze_fast import perf_model as pm


def test_counts_match_the_spec_cost_section():
    # 16,384 rays x 96 samples, 8,320 FLOP per decode: 13.1 GFLOP; 384 texel reads per point: 2.4 GB fp32.
    fl = pm.floor_work("fp32")
    assert abs(fl.flops_cuda_core - 13.08e9) < 0.01e9
    assert abs(fl.l2_bytes - 2.416e9) < 0.01e9
    # The CUDA kernels decode every sample twice (density pass, then colour pass).
    cu = pm.cuda_render("fp32", None)
    assert cu.flops_cuda_core == pm.RAYS * pm.S * (2 * pm.FC1 + pm.FC2_SIGMA + pm.FC2_FULL)
    assert cu.l2_bytes == 2 * fl.l2_bytes


def test_occupancy_from_registers():
    # render_kernel: 168 registers x 128 threads -> 3 CTAs per SM; 255 x 256 -> 1.
    assert pm.ctas_per_sm(pm.H100, 128, 168, 18052) == 3
    assert pm.ctas_per_sm(pm.H100, 256, 255, 24576) == 1
    assert pm.ctas_per_sm(pm.H100, 64, 154, 36288) == 6


def test_model_rows_and_floor():
    m = pm.model()
    rows = {(r["backend"], r["precision"]): r for r in m["rows"]}
    for gpu in ("H100 SXM", "H200 SXM"):
        for key, r in rows.items():
            p = r["per_gpu"][gpu]
            assert p["predicted_us"] >= p["floor_us"] > 0, (key, gpu)
        # The scalar-load CUDA kernel is predicted bound by L1 wavefronts, several ms (the review's 3-6 ms).
        cuda = rows[("cuda", "fp32")]["per_gpu"][gpu]
        assert cuda["bound"] == "l1_wavefronts" and 3000 < cuda["predicted_us"] < 6000
    assert "datasheet" in m["gpus"]["H100 SXM"]["source"]


def test_committed_output_is_current():
    committed = json.loads(pm.OUT_JSON.read_text())
    assert committed == json.loads(json.dumps(pm.model()))


def test_bench_flag_prints_the_model(capsys):
    from rtgaze_fast import bench
    assert bench.main(["--model-gpu"]) == 0
    out = capsys.readouterr().out
    assert "MODEL" in out and "render_kernel" in out and "H200" in out
