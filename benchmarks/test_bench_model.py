"""End-to-end RTGaze benchmarks: the eager reference model vs ``optimize()``, per config.

Smoke size (CI): the tiny config at batch 1 on this device. ``RTGAZE_BENCH_SIZES=full``: tiny
and base, batch 1 and 8 on a GPU (with torch.compile and CUDA graphs); tiny at batch 1 on a CPU.
"""
import pytest
import torch

from conftest import DEVICE, FULL
from rtgaze_fast.model import RTGaze

CONFIGS = ["tiny", "base"] if FULL and DEVICE.type == "cuda" else ["tiny"]
BATCHES = [1, 8] if FULL and DEVICE.type == "cuda" else [1]


def _model(config, path):
    torch.manual_seed(0)
    model = RTGaze(config, backend="torch" if path == "eager" else "auto", deterministic=True).to(DEVICE).eval()
    if path == "optimized":
        gpu = DEVICE.type == "cuda"
        model.optimize(compile=gpu and FULL, cuda_graphs=gpu and FULL)
    return model


@pytest.mark.parametrize("path", ["eager", "optimized"])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("config", CONFIGS)
def test_rtgaze_end_to_end(benchmark, config, batch, path):
    model = _model(config, path)
    size = model.config.image_size
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(batch, 3, size, size, generator=gen) * 2 - 1).to(DEVICE)
    g = (torch.rand(batch, 2, generator=gen) - 0.5).to(DEVICE)

    def run():
        out = model(x, g)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return out
    with torch.no_grad():
        run()  # compile / capture outside the timing
        out = benchmark(run)
    assert out["image"].shape[0] == batch and torch.isfinite(out["image"]).all()
