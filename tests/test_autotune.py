"""'auto' by measurement (rtgaze_fast.autotune): the selection logic on the CPU with injected
backends and timers (no GPU): parity first, then the fastest; a backend failing parity or raising
is never chosen; the in-memory and on-disk caches; a CPU keeps the static order."""
import json

import pytest
import torch

from rtgaze_fast import autotune


@pytest.fixture(autouse=True)
def fresh_cache():
    autotune.clear_cache()
    yield
    autotune.clear_cache()


def _outputs(err=0.0):
    g = torch.Generator().manual_seed(0)
    rgb, depth, wsum = torch.rand(1, 8, 32, generator=g), 2 + torch.rand(1, 8, 1, generator=g), torch.rand(1, 8, 1, generator=g)
    return rgb + err, depth, wsum


def _select(times, errors, precision="fp32", key="k", raising=()):
    calls = []

    def run(b):
        calls.append(b)
        if b in raising:
            raise RuntimeError("no kernel image")
        return _outputs(errors[b])

    timer = lambda fn, device: (fn(), times[calls[-1]])[1]  # noqa: E731
    return autotune.select(key, list(times), run, lambda: _outputs(), precision, timer=timer), calls


def test_fastest_passing_backend_wins_and_a_failing_one_never_does():
    # triton is fastest but 1e-3 off: outside fp32's 1e-5 bound, so cuda wins.
    choice, _ = _select({"cuda": 2e-3, "triton": 1e-3}, {"cuda": 0.0, "triton": 1e-3})
    assert choice.backend == "cuda"
    assert "triton" in choice.rejected and "parity" in choice.rejected["triton"]
    assert set(choice.timings_ms) == {"cuda"} and choice.timings_ms["cuda"] == pytest.approx(2.0)


def test_the_mode_bound_decides():
    # The same 1e-3 error is inside tf32's 5e-3 bound: then the faster one is chosen.
    choice, _ = _select({"cuda": 2e-3, "triton": 1e-3}, {"cuda": 0.0, "triton": 1e-3}, precision="tf32")
    assert choice.backend == "triton"


def test_nan_or_raising_backends_are_rejected_and_none_passing_gives_torch():
    choice, _ = _select({"cuda": 1e-3, "triton": 1e-3}, {"cuda": float("nan"), "triton": 0.0}, raising=("triton",))
    assert choice.backend == "torch" and set(choice.rejected) == {"cuda", "triton"}
    assert "raised RuntimeError" in choice.rejected["triton"]


def test_choice_is_cached_per_key():
    c1, calls1 = _select({"cuda": 2e-3, "triton": 1e-3}, {"cuda": 0.0, "triton": 0.0})
    assert c1.backend == "triton"
    c2, calls2 = _select({"cuda": 1e-4, "triton": 1e-3}, {"cuda": 0.0, "triton": 0.0})
    assert c2 is c1 and calls2 == []  # not re-measured
    c3, _ = _select({"cuda": 1e-4, "triton": 1e-3}, {"cuda": 0.0, "triton": 0.0}, key="other")
    assert c3.backend == "cuda"


def test_disk_cache(tmp_path, monkeypatch):
    path = tmp_path / "auto.json"
    monkeypatch.setenv(autotune.CACHE_ENV, str(path))
    c1, _ = _select({"cuda": 2e-3, "triton": 1e-3}, {"cuda": 0.0, "triton": 0.0})
    assert json.loads(path.read_text())["k"]["backend"] == "triton"
    autotune.clear_cache()
    c2, calls = _select({"cuda": 1e-4, "triton": 1e-3}, {"cuda": 0.0, "triton": 0.0})
    assert calls == [] and c2.backend == "triton" and c2.source == "disk cache"
    path.write_text("not json")  # an unreadable cache is re-measured, never fatal
    autotune.clear_cache()
    c3, _ = _select({"cuda": 1e-4, "triton": 1e-3}, {"cuda": 0.0, "triton": 0.0})
    assert c3.backend == "cuda"


def test_key_separates_device_precision_grad_and_shape_class():
    cls = autotune.shape_class((1, 3, 32, 256, 256), torch.float32, 16384, 48, 48)
    assert cls == autotune.shape_class((1, 3, 32, 256, 256), torch.float32, 9000, 48, 48)  # rays round to 2^k
    keys = {autotune.make_key(d, cls, p, g) for d in ("cuda:0", "cuda:1") for p in ("fp32", "fp16")
            for g in (False, True)}
    assert len(keys) == 8


def test_cpu_keeps_the_static_order(monkeypatch):
    """On a CPU the renderer never measures ('cpu' stays first) and explain_backend says so."""
    from rtgaze_fast import ImportanceRenderer, OSGDecoder, explain_backend
    from rtgaze_fast.options import FFHQ_OPTIONS

    def boom(*a, **k):
        raise AssertionError("measured on a CPU")
    monkeypatch.setattr(autotune, "select", boom)
    assert not autotune.enabled(torch.device("cpu")) and autotune.enabled(torch.device("cuda:0"))
    planes = torch.randn(1, 3, 32, 8, 8)
    o = torch.tensor([[[0.0, 0.0, 2.7]]]).expand(1, 4, 3).contiguous()
    d = torch.tensor([[[0.0, 0.0, -1.0]]]).expand(1, 4, 3).contiguous()
    opts = dict(FFHQ_OPTIONS, depth_resolution=8, depth_resolution_importance=8)
    with torch.no_grad():
        ImportanceRenderer(backend="auto", deterministic=True)(planes, OSGDecoder(32), o, d, opts)
    info = explain_backend("cpu")
    assert "CPU" in info["rule"] and info["choices"] == []
