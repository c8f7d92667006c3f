"""GPU parity of the fused backends (cuda, triton) in every precision mode; skipped without CUDA
(benchmarks/gpu_suite.sh sets RTGAZE_FAST_REQUIRE=cuda,triton: there a missing backend stops the
run instead).

The CPU suites prove the same kernels' arithmetic under the interpreter / CPU build; this file
is what benchmarks/gpu_suite.sh runs first on a GPU machine. Inputs are random scenes (box_warp
!= 1 and a non-EG3D decoder size among them), EG3D's golden files, and the cases of
tests/parity_cases.py (the renderer's own noise, non-contiguous importance_u, auto limits with
rays that miss the box, fixed limits with box_warp != 1); outputs are NaN-poisoned (conftest),
and a kernel made to skip its tail must fail; bounds come from rtgaze_fast.precision.
"""
import json
from pathlib import Path

import pytest
import torch

from rtgaze_fast import ops
from rtgaze_fast.precision import BOUNDS, parity_errors, within
from rtgaze_fast.reference.decoder import folded_decoder_weights
from rtgaze_fast.reference.marcher import march_unclamped
from rtgaze_fast.reference.sampling import importance_depths
from rtgaze_fast.reference.triplane import sample_decode_folded
import parity_cases
import rtgaze_fast as rf
from scenes import make_scene, render_scene

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

DEV = torch.device("cuda")
GPU_BACKENDS = [b for b in ("cuda", "triton") if ops.why_unavailable(b, DEV) is None]
SCENES = [
    dict(seed=1, res=16, n=48, n_f=48, plane_res=64),
    dict(seed=2, batch=3, rays=333, n=24, n_f=12, plane_res=32),
    dict(seed=3, res=8, n=17, n_f=0, plane_res=32, options=dict(white_back=True)),
    dict(seed=4, res=8, n=32, n_f=32, plane_res=32, options=dict(disparity_space_sampling=True)),
    dict(seed=5, res=8, n=16, n_f=16, plane_res=32, options=dict(ray_start="auto", ray_end="auto")),
    dict(seed=6, batch=2, res=8, n=24, n_f=24, plane_res=32, options=dict(box_warp=1.3, ray_start=1.9, ray_end=3.6)),
    dict(seed=8, res=8, n=16, n_f=16, plane_res=32, options=dict(ray_start="auto", ray_end="auto", box_warp=0.8)),
    dict(seed=9, batch=2, res=8, n=20, n_f=12, plane_res=32, channels=16, hidden=24, out_dim=3),
]


def to_gpu(scene):
    for name in ("planes", "ray_origins", "ray_directions", "stratified_u", "importance_u"):
        t = getattr(scene, name)
        if t is not None:
            setattr(scene, name, t.to(DEV))
    scene.decoder = scene.decoder.to(DEV)
    return scene


MODES = [(b, p) for b in GPU_BACKENDS for p in ops.BACKEND_PRECISIONS[b]]
# Read here, loaded in the test (test_reference needs safetensors, which a --no-deps install may lack).
GOLDEN_CASES = json.loads((Path(__file__).parent / "golden" / "cases.json").read_text())["cases"]


@pytest.mark.parametrize("backend, precision", MODES)
@pytest.mark.parametrize("kw", SCENES, ids=lambda kw: f"seed{kw['seed']}")
@pytest.mark.parametrize("plane_set", ["eg3d", "corrected"])
def test_render_parity(kw, backend, precision, plane_set):
    scene = to_gpu(make_scene(**kw))
    ref = render_scene(scene, "torch", plane_set=plane_set)
    out = render_scene(scene, backend, precision=precision, plane_set=plane_set)
    errors = parity_errors(out, ref)
    assert within(errors, precision), f"{backend}/{precision}: {errors} exceeds {BOUNDS[precision]}"


@pytest.mark.parametrize("backend, precision", MODES)
def test_sample_decode_parity(backend, precision):
    scene = to_gpu(make_scene(seed=7, batch=2, plane_res=64))
    w = folded_decoder_weights(scene.decoder)
    pts = (torch.rand(2, 1000, 3, device=DEV) - 0.5) * 1.1   # some points outside the box
    sigma_r, rgb_r = sample_decode_folded(scene.planes, *w, pts, 1.0)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    cl = scene.planes.permute(0, 1, 3, 4, 2).to(dtype).contiguous()
    sigma, rgb = ops.get_op("sample_decode", backend)(cl, *w, pts, 1.0, 0, precision)
    bound = BOUNDS[precision]
    assert torch.isfinite(rgb).all() and torch.isfinite(sigma).all()
    assert (rgb - rgb_r).abs().max() <= bound.rgb_atol
    # sigma_raw is unbounded (|sigma| ~ 10 here): judge it relative to its scale.
    assert (sigma - sigma_r).abs().max() <= bound.rgb_atol * max(1.0, float(sigma_r.abs().max()))


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_march_and_importance_parity(backend):
    g = torch.Generator(device=DEV).manual_seed(0)
    b, r, s = 2, 300, 24
    depths = torch.sort(torch.rand(b, r, s, device=DEV, generator=g) + 2.25, -1).values
    sigma = torch.randn(b, r, s, device=DEV, generator=g) * 3
    rgb = torch.rand(b, r, s, 32, device=DEV, generator=g)
    out = ops.get_op("march", backend)(rgb, sigma, depths, False)
    ref = march_unclamped(rgb, sigma.unsqueeze(-1), depths.unsqueeze(-1))
    assert torch.allclose(out[0], ref[0], atol=1e-5, rtol=0)
    assert torch.allclose(out[1], ref[1].squeeze(-1), atol=1e-4, rtol=0)
    assert torch.allclose(out[2], ref[2].squeeze(-1), atol=1e-5, rtol=0)
    u = torch.sort(torch.rand(b, r, 16, device=DEV, generator=g), -1).values
    fine = ops.get_op("importance", backend)(depths, ref[2].squeeze(-1), u)
    assert torch.allclose(fine, importance_depths(depths, ref[2].squeeze(-1), u), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_golden_parity(name, backend):
    """EG3D's own recorded outputs (tests/golden) at the fp32 bounds; the density-noise case is refused."""
    from test_reference import Golden, assert_matches_eg3d
    g = Golden(name)
    args = [g.planes.to(DEV), g.decoder.to(DEV), g["ray_origins"].to(DEV), g["ray_directions"].to(DEV), g.options]
    iu = g.get("importance_u")
    noise = dict(stratified_u=g["stratified_u"].to(DEV), importance_u=None if iu is None else iu.to(DEV))
    r = rf.ImportanceRenderer(backend=backend)
    with torch.no_grad():
        if g.opts.density_noise > 0:
            with pytest.raises(ValueError, match="density_noise"):
                r(*args, **noise)
            return
        out = [t.cpu() for t in r(*args, **noise)]
    assert_matches_eg3d(*out, g)
    errors = parity_errors(out, (g["rgb"], g["depth"], g["weights_sum"]))
    assert within(errors, "fp32"), errors


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("name", parity_cases.CASES)
def test_parity_cases(name, backend):
    out, ref = parity_cases.render_pair(name, backend, DEV)
    errors = parity_errors(out, ref)
    assert within(errors, "fp32"), errors


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("b, r", parity_cases.ZERO_SHAPES)
@pytest.mark.parametrize("family", ops.FORWARD_FAMILIES)
def test_zero_rays_at_the_op_level(family, b, r, backend):
    args, shapes = parity_cases.zero_ray_call(family, b, r, DEV)
    out = ops.get_op(family, backend)(*args)
    out = out if isinstance(out, tuple) else (out,)
    torch.cuda.synchronize()
    assert [tuple(t.shape) for t in out] == shapes and all(t.device.type == "cuda" for t in out)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_a_kernel_leaving_its_tail_unwritten_fails_parity(backend, monkeypatch):
    scene = to_gpu(make_scene(seed=3, batch=2, rays=20, n=6, n_f=4, plane_res=8))
    ref = render_scene(scene, "torch")
    assert within(parity_errors(render_scene(scene, backend), ref), "fp32")
    parity_cases.skip_tail(backend, monkeypatch, rays=8)
    out = render_scene(scene, backend)
    errors = parity_errors(out, ref)
    assert not errors["finite"] and not within(errors, "fp32"), errors
    assert parity_cases.unwritten_tail(out[0].cpu()) >= 1


def _grads(scene, backend, precision="fp32", upstream=None):
    """Gradients of sum(out * upstream) for planes, decoder parameters, ray origins and directions."""
    import rtgaze_fast as rf
    leaves = [scene.planes.clone().requires_grad_(True), *scene.decoder.parameters(),
              scene.ray_origins.clone().requires_grad_(True), scene.ray_directions.clone().requires_grad_(True)]
    out = rf.ImportanceRenderer(backend=backend, precision=precision)(
        leaves[0], scene.decoder, leaves[-2], leaves[-1], scene.options, stratified_u=scene.stratified_u,
        importance_u=scene.importance_u)
    if upstream is None:
        g = torch.Generator(device=out[0].device).manual_seed(123)
        upstream = [torch.randn(o.shape, device=o.device, generator=g) for o in out]
        upstream[1] = upstream[1] * (out[2].detach() > 1e-4)
    loss = sum((o * u).sum() for o, u in zip(out, upstream))
    return torch.autograd.grad(loss, leaves), upstream


TRAINING_GPU_BACKENDS = [b for b in GPU_BACKENDS if ops.has_backward(b)]


@pytest.mark.parametrize("backend", TRAINING_GPU_BACKENDS)
@pytest.mark.parametrize("kw", SCENES[:2], ids=lambda kw: f"seed{kw['seed']}")
def test_render_gradient_parity_fp32(kw, backend):
    """The fused backward (fp32) against the reference's autograd: each gradient within 1e-4 of its
    largest magnitude (the spec's bound; measured in the interpreter, not yet on a GPU)."""
    scene = to_gpu(make_scene(**kw))
    ref, up = _grads(scene, "torch")
    got, _ = _grads(scene, backend, upstream=up)
    for name, g, r in zip(("planes", "w1", "b1", "w2", "b2", "origins", "directions"), got, ref):
        assert torch.isfinite(g).all(), name
        assert float((g - r).abs().max()) <= 1e-4 * float(r.abs().max()), name


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_render_on_a_device_that_is_not_current(backend):
    """Tensors on cuda:1 while cuda:0 is current: the kernels must run on cuda:1 (Triton launches
    on the current device unless the op guards it)."""
    global DEV
    dev0, DEV = DEV, torch.device("cuda", 1)
    try:
        scene = to_gpu(make_scene(seed=1, res=8, n=16, n_f=16, plane_res=32))
    finally:
        DEV = dev0
    with torch.cuda.device(0):
        ref = render_scene(scene, "torch")
        out = render_scene(scene, backend)
        assert out[0].device == torch.device("cuda", 1)
        assert within(parity_errors(out, ref), "fp32")
        if ops.has_backward(backend):
            got, up = _grads(scene, backend)
            ref_g, _ = _grads(scene, "torch", upstream=up)
            assert float((got[0] - ref_g[0]).abs().max()) <= 1e-4 * float(ref_g[0].abs().max())
