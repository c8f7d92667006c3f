"""Whole-renderer and per-kernel benchmarks, one parametrised suite per op family and backend."""
import pytest
import torch

from conftest import DEVICE
from rtgaze_fast import ops
from rtgaze_fast.bench import make_scene
from rtgaze_fast.options import parse_options
from rtgaze_fast.reference.decoder import folded_decoder_weights
from rtgaze_fast.reference.marcher import march_unclamped
from rtgaze_fast.reference.sampling import importance_depths, stratified_depths
from rtgaze_fast.reference.triplane import sample_decode_folded
from rtgaze_fast.renderer import ImportanceRenderer

# Triton on a CPU is the interpreter: a test vehicle, not something to time.
BACKENDS = ["torch"] + [b for b in ops.available_backends(DEVICE)
                        if b != "torch" and (b != "triton" or DEVICE.type == "cuda")]


def _sync(fn):
    def run():
        out = fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return out
    return run


@pytest.mark.parametrize("backend", BACKENDS)
def test_render(benchmark, case, backend):
    planes, dec, o, d, opts, su, iu = make_scene(case, DEVICE)
    r = ImportanceRenderer(backend=backend)
    with torch.no_grad():
        out = benchmark(_sync(lambda: r(planes, dec, o, d, opts, stratified_u=su, importance_u=iu)))
    assert out[0].shape == (case.batch, case.res * case.res, 32)


def _coarse(case):
    """Inputs of the per-kernel benchmarks: coarse points, samples and weights of a scene."""
    planes, dec, o, d, opts, su, iu = make_scene(case, DEVICE)
    po = parse_options(opts)
    depths = stratified_depths(po.ray_start, po.ray_end, su)
    pts = (o.unsqueeze(-2) + depths.unsqueeze(-1) * d.unsqueeze(-2)).reshape(case.batch, -1, 3)
    w = folded_decoder_weights(dec)
    w = tuple(t.to(DEVICE) for t in w)
    return planes, w, pts, depths, iu, po


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_decode(benchmark, case, backend):
    planes, w, pts, *_ = _coarse(case)
    if backend == "torch":
        fn = lambda: sample_decode_folded(planes, *w, pts, 1.0)  # noqa: E731
    else:
        op, cl = ops.get_op("sample_decode", backend), planes.permute(0, 1, 3, 4, 2).contiguous()
        fn = lambda: op(cl, *w, pts, 1.0, 0, "fp32")  # noqa: E731
    with torch.no_grad():
        sigma, rgb = benchmark(_sync(fn))
    assert sigma.shape == pts.shape[:2]


@pytest.mark.parametrize("backend", BACKENDS)
def test_march_importance(benchmark, case, backend):
    planes, w, pts, depths, iu, po = _coarse(case)
    sigma, rgb = sample_decode_folded(planes, *w, pts, 1.0)
    b, r, n = depths.shape
    rgb, sigma = rgb.reshape(b, r, n, -1).contiguous(), sigma.reshape(b, r, n).contiguous()
    iu = torch.sort(iu, -1).values
    if backend == "torch":
        def fn():
            _, _, wts = march_unclamped(rgb, sigma.unsqueeze(-1), depths.unsqueeze(-1))
            return importance_depths(depths, wts.squeeze(-1), iu)
    else:
        march, imp = ops.get_op("march", backend), ops.get_op("importance", backend)
        fn = lambda: imp(depths, march(rgb, sigma, depths, False)[2], iu)  # noqa: E731
    with torch.no_grad():
        fine = benchmark(_sync(fn))
    assert fine.shape == iu.shape
