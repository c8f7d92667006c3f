"""The benchmark script (``rtgaze-fast bench``) at a tiny size: table, JSON and plot; a wrong
kernel is reported WRONG, not timed; the model-only run."""
import json

import pytest
import torch

from rtgaze_fast import bench, ops
from rtgaze_fast.precision import MODEL_IMAGE_BOUNDS

TINY = ["--device", "cpu", "--res", "8", "--samples", "8", "--repeats", "1", "--no-compile"]


@pytest.fixture
def needs_cpu_backend():
    if ops.why_unavailable("cpu", torch.device("cpu")) is not None:
        pytest.skip("the compiled cpu backend is not built")


def test_bench_writes_table_json_and_plot(tmp_path, capsys, needs_cpu_backend):
    assert bench.main(TINY + ["--backends", "cpu", "--model", "none", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "x eager" in out and "% floor" in out
    result = json.loads((tmp_path / "bench.json").read_text())
    rows = {(r["backend"], r["precision"]): r for r in result["rows"]}
    assert set(rows) == {("torch", "fp32"), ("cpu", "fp32"), ("torch fwd+bwd", "fp32"), ("cpu fwd+bwd", "fp32")}
    assert all(r["status"] == "ok" and r["median_ms"] > 0 for r in rows.values())
    # The training rows: the fused backward checked against autograd of the reference, then timed.
    err = rows["cpu fwd+bwd", "fp32"]["errors"]
    assert err["grad_rel"] <= 1e-4 or err["grad_rel_f64"] <= 2 * err["reference_rel_f64"], err
    assert rows["cpu fwd+bwd", "fp32"]["speedup_vs_eager"] > 0 and rows["torch fwd+bwd", "fp32"]["speedup_vs_eager"] == 1
    assert rows["cpu", "fp32"]["errors"]["rgb"] <= 1e-5
    assert 0 < rows["cpu", "fp32"]["floor_fraction"]
    # The floor is a bound: the eager reference is nowhere near it.
    assert 0 < rows["torch", "fp32"]["floor_fraction"] < 1 and rows["torch", "fp32"]["floor_bound"] in ("mlp", "dram",
                                                                                                       "taps")
    assert set(result["rates"]) == {"matmul_fp32_flops", "copy_bytes_per_s", "cache_bytes_per_s"}
    assert result["environment"]["torch"] == torch.__version__
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_a_wrong_kernel_is_reported_wrong_not_timed(monkeypatch, needs_cpu_backend):
    real = ops.get_op

    def off_by_a_bit(family, backend):
        op = real(family, backend)
        if family != "render":
            return op
        return lambda *a: (lambda out: (out[0] + 1e-3,) + tuple(out[1:]))(op(*a))
    monkeypatch.setattr(ops, "get_op", off_by_a_bit)
    rates = {"copy_bytes_per_s": 1e10, "matmul_fp32_flops": 1e11, "cache_bytes_per_s": 1e11}
    rows = bench.bench_case(bench.Case(res=8, n=8, n_f=8, plane_res=32), torch.device("cpu"), rates,
                            backends=["cpu"], precisions=["fp32"], repeats=1, compile_reference=False)
    fused = [r for r in rows if r.backend == "cpu"]
    assert len(fused) == 1 and fused[0].status == "WRONG" and fused[0].median_ms is None
    assert fused[0].errors["rgb"] == pytest.approx(1e-3, rel=0.01)


def test_a_wrong_backward_is_reported_wrong_not_timed(monkeypatch, needs_cpu_backend):
    real = ops.get_op

    def planes_gradient_off(family, backend):
        op = real(family, backend)
        if family != "render_backward":
            return op
        return lambda *a: (lambda g: (g[0] * 1.01,) + tuple(g[1:]))(op(*a))
    monkeypatch.setattr(ops, "get_op", planes_gradient_off)
    rows = bench.bench_training(bench.Case(res=8, n=8, n_f=8, plane_res=32), torch.device("cpu"), backends=["cpu"],
                                repeats=1)
    fused = [r for r in rows if r.backend == "cpu fwd+bwd"]
    assert len(fused) == 1 and fused[0].status == "WRONG" and fused[0].median_ms is None
    assert fused[0].errors["grad_rel"] == pytest.approx(1e-2, rel=0.05)


def test_model_only_run(tmp_path, capsys, monkeypatch):
    seen, real = [], bench._time_interleaved
    monkeypatch.setattr(bench, "_time_interleaved", lambda fns, *a, **k: seen.append(set(fns)) or real(fns, *a, **k))
    assert bench.main(["--device", "cpu", "--repeats", "1", "--no-renderer", "--model", "tiny",
                       "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "RTGaze-tiny" in out and "speedup" in out
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["rows"] == [] and result["model"]["config"] == "tiny"
    m = result["model"]
    assert m["status"] == "ok" and m["max_abs_image_diff"] <= m["image_atol"] == MODEL_IMAGE_BOUNDS["fp32"][0]
    assert m["speedup"] > 0 and {"eager", "optimized"} in seen   # the two models timed interleaved
    assert not (tmp_path / "bench.png").exists()


def test_a_wrong_optimised_model_is_reported_wrong_not_timed(tmp_path, capsys, monkeypatch):
    from rtgaze_fast.model import RTGaze
    real = RTGaze.optimize

    def optimize_wrongly(self, **kw):   # a fast path that lost a little of one layer
        real(self, **kw)
        with torch.no_grad():
            next(self.superres.parameters()).mul_(0.99)
        return self
    monkeypatch.setattr(RTGaze, "optimize", optimize_wrongly)
    assert bench.main(["--device", "cpu", "--repeats", "1", "--no-renderer", "--model", "tiny",
                       "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "WRONG" in out and "speedup" not in out
    m = json.loads((tmp_path / "bench.json").read_text())["model"]
    assert m["status"] == "WRONG" and m["speedup"] is None and "optimized" not in m
    assert m["max_abs_image_diff"] > m["image_atol"]


def test_floor_per_precision_mode():
    """Each mode's MLP time at its own matmul rate; planes once at the copy rate; taps at the cache rate."""
    rates = {"matmul_fp32_flops": 1e12, "matmul_tf32_flops": 4e12, "matmul_fp16_flops": 16e12,
             "matmul_bf16_flops": 32e12, "copy_bytes_per_s": 1e12, "cache_bytes_per_s": 1e13}
    case = bench.Case(res=128, n=48, n_f=48, plane_res=256)
    points = 128 * 128 * 96
    for mode in ("fp32", "tf32", "fp16", "bf16"):
        terms = bench.floor_terms(case, rates, mode)
        texel = 2 if mode in ("fp16", "bf16") else 4
        assert terms["mlp"] == pytest.approx(points * 8320 / rates[f"matmul_{mode}_flops"])
        assert terms["dram"] == pytest.approx(3 * 32 * 256 * 256 * texel / 1e12)   # the planes, once
        assert terms["taps"] == pytest.approx(points * 3 * 4 * 32 * texel / 1e13)
        assert bench.floor_seconds(case, rates, mode) == max(terms.values())
    # A small image touches less than the whole planes: at most its taps' bytes come from memory.
    tiny = bench.Case(res=2, n=4, n_f=4, plane_res=256)
    assert bench.floor_terms(tiny, rates, "fp32")["dram"] == pytest.approx(4 * 8 * 384 * 4 / 1e12)


def test_rates_are_measured_per_mode():
    rates = bench.measure_rates(torch.device("cpu"), ["tf32", "tf32x3"])
    assert set(rates) == {"matmul_fp32_flops", "matmul_tf32_flops", "matmul_tf32x3_flops", "copy_bytes_per_s",
                          "cache_bytes_per_s"}
    assert rates["matmul_tf32_flops"] == rates["matmul_fp32_flops"] == rates["matmul_tf32x3_flops"]  # no TF32 on a CPU
    assert all(v > 0 for v in rates.values())


def test_columns_are_timed_interleaved(monkeypatch, needs_cpu_backend):
    calls = []
    times = bench._time_interleaved({k: (lambda k=k: calls.append(k)) for k in "abc"}, torch.device("cpu"), 3)
    assert calls == list("abc") * 4 and all(len(v) == 3 for v in times.values())   # one warm-up round, 3 timed
    # bench_case times all its correct columns together (bench_model its two models the same way).
    seen = []
    real, rates = bench._time_interleaved, bench.measure_rates("cpu")
    monkeypatch.setattr(bench, "_time_interleaved", lambda fns, *a, **k: seen.append(set(fns)) or real(fns, *a, **k))
    bench.bench_case(bench.Case(res=4, n=4, n_f=4, plane_res=16), torch.device("cpu"), rates,
                     backends=["cpu"], precisions=["fp32"], repeats=2, compile_reference=False)
    assert seen == [{("torch", "fp32"), ("cpu", "fp32")}]
