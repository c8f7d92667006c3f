"""The benchmark script (``rtgaze-fast bench``) at a tiny size: table, JSON and plot; a wrong
kernel is reported WRONG, not timed; the model-only run."""
import json

import pytest
import torch

from rtgaze_fast import bench, ops

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
    assert set(rows) == {("torch", "fp32"), ("cpu", "fp32")}
    assert all(r["status"] == "ok" and r["median_ms"] > 0 for r in rows.values())
    assert rows["cpu", "fp32"]["errors"]["rgb"] <= 1e-5
    assert 0 < rows["cpu", "fp32"]["floor_fraction"]
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
    rates = {"copy_bytes_per_s": 1e10, "matmul_fp32_flops": 1e11}
    rows = bench.bench_case(bench.Case(res=8, n=8, n_f=8, plane_res=32), torch.device("cpu"), rates,
                            backends=["cpu"], precisions=["fp32"], repeats=1, compile_reference=False)
    fused = [r for r in rows if r.backend == "cpu"]
    assert len(fused) == 1 and fused[0].status == "WRONG" and fused[0].median_ms is None
    assert fused[0].errors["rgb"] == pytest.approx(1e-3, rel=0.01)


def test_model_only_run(tmp_path, capsys):
    assert bench.main(["--device", "cpu", "--repeats", "1", "--no-renderer", "--model", "tiny",
                       "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "RTGaze-tiny" in out and "speedup" in out
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["rows"] == [] and result["model"]["config"] == "tiny"
    assert not (tmp_path / "bench.png").exists()
