"""GPU parity of the fused backends (cuda, triton) in every precision mode; skipped without CUDA.

The CPU suites prove the same kernels' arithmetic under the interpreter / CPU build; this file
is what benchmarks/gpu_suite.sh runs first on a GPU machine. Inputs are random scenes, noise is
injected identically into both paths, outputs are NaN-poisoned (conftest), bounds come from
rtgaze_fast.precision.
"""
import pytest
import torch

from rtgaze_fast import ops
from rtgaze_fast.precision import BOUNDS, parity_errors, within
from rtgaze_fast.reference.decoder import folded_decoder_weights
from rtgaze_fast.reference.marcher import march_unclamped
from rtgaze_fast.reference.sampling import importance_depths
from rtgaze_fast.reference.triplane import sample_decode_folded
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
]


def to_gpu(scene):
    for name in ("planes", "ray_origins", "ray_directions", "stratified_u", "importance_u"):
        t = getattr(scene, name)
        if t is not None:
            setattr(scene, name, t.to(DEV))
    scene.decoder = scene.decoder.to(DEV)
    return scene


MODES = [(b, p) for b in GPU_BACKENDS for p in ops.BACKEND_PRECISIONS[b]]


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
