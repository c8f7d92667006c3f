"""The bad-input matrix (issue #7): every backend present, what users actually pass.

Each case asserts the exception type and that the message names the argument at fault, or the
exact documented output. Scenes are tiny: the Triton backend runs in its interpreter here, and
the CUDA backend's kernels and glue in the CPU emulation (``cuda-emulated``, tests/cuda_emu).
"""
import pytest
import torch
from torch import nn

import rtgaze_fast as rf
from rtgaze_fast import ops
from scenes import make_scene, render_scene
import cuda_emu

BACKENDS = ops.available_backends("cpu") + [cuda_emu.EMULATED]
FUSED = [b for b in BACKENDS if b != "torch"]


@pytest.fixture
def backend(request, monkeypatch):
    """The parametrized backend's name; the emulated CUDA backend renders as 'cuda'."""
    return cuda_emu.backend(request.param, monkeypatch)


def small(**kw):
    return make_scene(seed=kw.pop("seed", 3), res=2, plane_res=8, n=6, n_f=4, **kw)


def call(scene, backend="torch", renderer_kw=None, **overrides):
    """Render ``scene`` with some inputs replaced; returns the outputs."""
    args = dict(planes=scene.planes, decoder=scene.decoder, ray_origins=scene.ray_origins,
                ray_directions=scene.ray_directions, rendering_options=scene.options,
                stratified_u=scene.stratified_u, importance_u=scene.importance_u)
    args.update(overrides)
    r = rf.ImportanceRenderer(backend=backend, **(renderer_kw or {}))
    with torch.no_grad():
        return r(args.pop("planes"), args.pop("decoder"), args.pop("ray_origins"), args.pop("ray_directions"),
                 args.pop("rendering_options"), **args)


S = small()
B, R = S.ray_origins.shape[:2]

# (id, overrides-builder, exception type, substring the message must contain)
TENSOR_CASES = [
    ("planes-4d", lambda s: dict(planes=s.planes[0]), ValueError, "planes"),
    ("planes-two-planes", lambda s: dict(planes=s.planes[:, :2]), ValueError, "planes"),
    ("planes-float64", lambda s: dict(planes=s.planes.double()), TypeError, "planes"),
    ("planes-int", lambda s: dict(planes=s.planes.int()), TypeError, "planes"),
    ("planes-bool", lambda s: dict(planes=s.planes > 0), TypeError, "planes"),
    ("planes-half-in-fp32-mode", lambda s: dict(planes=s.planes.half()), TypeError, "planes"),
    ("planes-numpy", lambda s: dict(planes=s.planes.numpy()), TypeError, "planes"),
    ("planes-channels-vs-decoder", lambda s: dict(planes=s.planes[:, :, :16]), ValueError, "decoder"),
    ("decoder-not-module", lambda s: dict(decoder=lambda f, d: f), TypeError, "decoder"),
    ("origins-2-coords", lambda s: dict(ray_origins=s.ray_origins[..., :2]), ValueError, "ray_origins"),
    ("origins-2d", lambda s: dict(ray_origins=s.ray_origins[0]), ValueError, "ray_origins"),
    ("origins-batch", lambda s: dict(ray_origins=s.ray_origins.repeat(2, 1, 1)), ValueError, "ray_origins"),
    ("directions-shape", lambda s: dict(ray_directions=s.ray_directions[:, :1]), ValueError, "ray_directions"),
    ("origins-float64", lambda s: dict(ray_origins=s.ray_origins.double()), TypeError, "ray_origins"),
    ("directions-int", lambda s: dict(ray_directions=s.ray_directions.long()), TypeError, "ray_directions"),
    ("origins-other-device", lambda s: dict(ray_origins=s.ray_origins.to("meta")), ValueError, "ray_origins"),
    ("strat-u-shape", lambda s: dict(stratified_u=s.stratified_u[..., :-1]), ValueError, "stratified_u"),
    ("strat-u-float64", lambda s: dict(stratified_u=s.stratified_u.double()), TypeError, "stratified_u"),
    ("imp-u-missing", lambda s: dict(importance_u=None), ValueError, "importance_u"),
    ("imp-u-alone", lambda s: dict(stratified_u=None), ValueError, "importance_u"),
    ("imp-u-shape", lambda s: dict(importance_u=s.importance_u[:, :, :2]), ValueError, "importance_u"),
    ("imp-u-other-device", lambda s: dict(importance_u=s.importance_u.to("meta")), ValueError, "importance_u"),
    ("planes-6d", lambda s: dict(planes=s.planes[None]), ValueError, "planes"),
    ("planes-list", lambda s: dict(planes=s.planes.tolist()), TypeError, "planes"),
    ("directions-other-device", lambda s: dict(ray_directions=s.ray_directions.to("meta")), ValueError,
     "ray_directions"),
    ("directions-half", lambda s: dict(ray_directions=s.ray_directions.half()), TypeError, "ray_directions"),
    ("strat-u-4d", lambda s: dict(stratified_u=s.stratified_u[..., None]), ValueError, "stratified_u"),
    ("strat-u-other-device", lambda s: dict(stratified_u=s.stratified_u.to("meta")), ValueError, "stratified_u"),
    ("imp-u-with-N_f-0", lambda s: dict(rendering_options=dict(s.options, depth_resolution_importance=0)),
     ValueError, "importance_u"),
]

@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("case", TENSOR_CASES, ids=[c[0] for c in TENSOR_CASES])
def test_bad_tensor(case, backend):
    _, build, exc, word = case
    with pytest.raises(exc, match=word):
        call(S, backend, **build(S))


def test_reduced_precision_on_reference_is_refused():
    with pytest.raises(ValueError, match="precision"):
        call(S, "torch", renderer_kw=dict(precision="fp16"))


@pytest.mark.parametrize("backend", FUSED, indirect=True)
def test_fused_refuses_density_noise(backend):
    with pytest.raises(ValueError, match="density_noise"):
        call(S, backend, rendering_options=dict(S.options, density_noise=0.5))


@pytest.mark.parametrize("backend", FUSED, indirect=True)
def test_fused_refuses_non_osg_decoder(backend):
    class Other(nn.Module):
        def forward(self, f, d):
            return {"rgb": f.mean(1), "sigma": f.mean(1)[..., :1]}
    with pytest.raises(TypeError, match="decoder"):
        call(S, backend, decoder=Other())


@pytest.mark.parametrize("backend", FUSED, indirect=True)
def test_a_fused_backend_without_backward_refuses_grad(backend, monkeypatch):
    """A backend with no render_backward is inference-only: named, it raises; 'auto' skips it."""
    monkeypatch.setattr(ops, "has_backward", lambda b: b == "torch")
    planes = S.planes.clone().requires_grad_(True)
    r = rf.ImportanceRenderer(backend=backend)
    with pytest.raises(RuntimeError, match="inference-only"):
        r(planes, S.decoder, S.ray_origins, S.ray_directions, S.options,
          stratified_u=S.stratified_u, importance_u=S.importance_u)
    assert ops.resolve_backend("auto", "cpu", requires_grad=True) == "torch"


def test_auto_with_grad_gradients_flow():
    planes = S.planes.clone().requires_grad_(True)
    rgb, depth, wsum = rf.ImportanceRenderer(backend="auto")(
        planes, S.decoder, S.ray_origins, S.ray_directions, S.options,
        stratified_u=S.stratified_u, importance_u=S.importance_u)
    rgb.sum().backward()
    assert planes.grad is not None and planes.grad.abs().sum() > 0


def test_backend_for_the_wrong_device_is_refused():
    for backend in ("cuda",) if not torch.cuda.is_available() else ():
        with pytest.raises(RuntimeError, match="cuda"):
            call(S, backend)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("b, r", [(0, 4), (1, 0), (0, 0)])
def test_empty_batch_and_zero_rays(backend, b, r):
    s = small()
    out = call(s, backend, planes=s.planes.expand(b, -1, -1, -1, -1) if b == 0 else s.planes,
               ray_origins=s.ray_origins[:b, :r] if b == 0 else s.ray_origins[:, :r],
               ray_directions=s.ray_directions[:b, :r] if b == 0 else s.ray_directions[:, :r],
               stratified_u=s.stratified_u[:b, :r] if b == 0 else s.stratified_u[:, :r],
               importance_u=s.importance_u[:b, :r] if b == 0 else s.importance_u[:, :r])
    assert [tuple(t.shape) for t in out] == [(b, r, 32), (b, r, 1), (b, r, 1)]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_one_ray(backend):
    s = small(rays=1)
    ref, out = render_scene(s, "torch"), render_scene(s, backend)
    for a, b in zip(out, ref):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_nan_in_gives_nan_out_and_validate_refuses(backend):
    s = small()
    planes = s.planes.clone()
    planes[...] = float("nan")
    rgb, _, wsum = call(s, backend, planes=planes)
    assert torch.isnan(rgb).all() and torch.isnan(wsum).all()
    with pytest.raises(ValueError, match="planes"):
        call(s, backend, planes=planes, renderer_kw=dict(validate=True))


@pytest.mark.parametrize("backend", FUSED, indirect=True)
@pytest.mark.parametrize("n_f", (4, 6))
def test_partly_nan_planes_give_the_references_nan_pattern(backend, n_f):
    """NaN in part of one batch item's planes: NaN samples make their rays' depths NaN, and the
    batch-wide depth clamp (torch.amin/amax of every depth, as EG3D) then makes every ray's depth
    NaN. A fused backend must give the reference's NaN pattern in every output: its per-ray depth
    range must carry a NaN, which min/max instructions (and Triton's tl.min) drop by default."""
    s = make_scene(seed=3, res=2, plane_res=8, n=6, n_f=n_f, batch=2)
    planes = s.planes.clone()
    planes[0, :, :, :4] = float("nan")
    ref, out = call(s, "torch", planes=planes), call(s, backend, planes=planes)
    for name, a, b in zip(("rgb", "depth", "weights_sum"), out, ref):
        assert torch.equal(torch.isnan(a), torch.isnan(b)), (name, torch.isnan(a).flatten(1).any(1),
                                                             torch.isnan(b).flatten(1).any(1))


@pytest.mark.parametrize("backend", FUSED, indirect=True)
@pytest.mark.parametrize("n_f", (0, 4))
def test_a_nan_noise_value_gives_the_references_nan_pattern(backend, n_f):
    """A NaN in one ray's injected stratified noise makes one coarse depth NaN, after finite ones:
    the ray's depth range must still carry it (a min/max that kept the first depth and compared
    the rest lost it), so the batch clamp makes every depth NaN, as in the reference."""
    s = make_scene(seed=4, res=2, plane_res=8, n=6, n_f=n_f, batch=2)
    u = s.stratified_u.clone()
    u[1, 2, 3] = float("nan")
    ref, out = call(s, "torch", stratified_u=u), call(s, backend, stratified_u=u)
    for name, a, b in zip(("rgb", "depth", "weights_sum"), out, ref):
        assert torch.equal(torch.isnan(a), torch.isnan(b)), (name, torch.isnan(a).flatten(1).any(1),
                                                             torch.isnan(b).flatten(1).any(1))


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_validate_checks_rays_and_noise(backend):
    s = small()
    inf_o = s.ray_origins.clone()
    inf_o[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="ray_origins"):
        call(s, backend, ray_origins=inf_o, renderer_kw=dict(validate=True))
    zero_d = s.ray_directions.clone()
    zero_d[0, 0] = 0
    with pytest.raises(ValueError, match="ray_directions"):
        call(s, backend, ray_directions=zero_d, renderer_kw=dict(validate=True))
    call(s, backend, ray_directions=zero_d)  # without validate: no value checks, no crash
    with pytest.raises(ValueError, match="stratified_u"):
        call(s, backend, stratified_u=s.stratified_u + 2, renderer_kw=dict(validate=True))


@pytest.mark.parametrize("backend", FUSED, indirect=True)
def test_sizes_overflowing_int32_are_refused(backend):
    # A shape check on the meta device: nothing that large is allocated.
    planes = torch.empty(1, 3, 32, 8192, 8192, device="meta")
    with pytest.raises(ValueError, match="planes.*2\\*\\*31"):
        call(S, backend, planes=planes, ray_origins=S.ray_origins.to("meta"),
             ray_directions=S.ray_directions.to("meta"), stratified_u=S.stratified_u.to("meta"),
             importance_u=S.importance_u.to("meta"))


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_non_contiguous_and_channels_last_inputs_are_handled(backend):
    s = small(batch=2)
    ref = render_scene(s, "torch")
    planes_cl = s.planes.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)  # strided view
    o = s.ray_origins.transpose(0, 1).contiguous().transpose(0, 1)
    d = s.ray_directions.transpose(0, 1).contiguous().transpose(0, 1)
    su = s.stratified_u.transpose(0, 1).contiguous().transpose(0, 1)
    assert not (planes_cl.is_contiguous() or o.is_contiguous() or su.is_contiguous())
    out = call(s, backend, planes=planes_cl, ray_origins=o, ray_directions=d, stratified_u=su)
    for a, b in zip(out, ref):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_repeated_calls_are_bitwise_identical(backend):
    s = small(batch=2)
    first = render_scene(s, backend)
    for _ in range(2):
        again = render_scene(s, backend)
        for a, b in zip(first, again):
            assert torch.equal(a, b)
    det = rf.ImportanceRenderer(backend=backend, deterministic=True)
    with torch.no_grad():
        x = det(s.planes, s.decoder, s.ray_origins, s.ray_directions, s.options)
        y = det(s.planes, s.decoder, s.ray_origins, s.ray_directions, s.options)
    for a, b in zip(x, y):
        assert torch.equal(a, b)


def test_deterministic_mode_refuses_injected_noise():
    with pytest.raises(ValueError, match="deterministic"):
        call(S, "torch", renderer_kw=dict(deterministic=True))

