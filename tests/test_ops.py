"""The fused backends that run on this CPU (the compiled `cpu` backend; `triton` in its
interpreter; `cuda-emulated`, the CUDA backend's own kernels and glue in tests/cuda_emu): each
op against its reference twin, the renderer against backend='torch', NaN/Inf checks, precision
modes, opcheck, torch.compile (cpu), and the op schemas."""
import re
from pathlib import Path

import pytest
import torch

from rtgaze_fast import ops
from rtgaze_fast.precision import parity_errors, within
from rtgaze_fast.reference.decoder import folded_decoder_weights
from rtgaze_fast.reference.marcher import march_unclamped
from rtgaze_fast.reference.sampling import importance_depths
from rtgaze_fast.reference.triplane import sample_decode_folded
import cuda_emu
import parity_cases
import rtgaze_fast as rf
from scenes import make_scene, random_decoder, render_scene
from test_reference import CASES as GOLDEN_CASES, Golden, assert_matches_eg3d
from test_render_grad import TRAINING_BACKENDS
from tolerances import FP32_DEPTH_ATOL, FP32_RGB_ATOL, FP32_WSUM_ATOL

BACKENDS = [b for b in ("cpu", "triton") if ops.why_unavailable(b, "cpu") is None]
if not BACKENDS:
    pytest.skip("no fused backend runs on this CPU", allow_module_level=True)
ROOT = Path(__file__).resolve().parents[1]
PLANE_SETS = ("eg3d", "corrected")
needs_cpu = pytest.mark.skipif("cpu" not in BACKENDS, reason="the compiled cpu backend is not built")


@pytest.fixture(params=BACKENDS + [cuda_emu.EMULATED])  # the CUDA kernels emulated on this CPU
def backend(request):
    return cuda_emu.backend(request.param, request.getfixturevalue("monkeypatch"))


def _op(family, backend="cpu"):
    return ops.get_op(family, backend)


def _decode_inputs(seed, batch=2, m=37, channels=32, hidden=64, out_dim=32, res=16):
    gen = torch.Generator().manual_seed(seed)
    planes = torch.randn(batch, 3, channels, res, res, generator=gen)
    w = folded_decoder_weights(random_decoder(gen, channels, hidden, out_dim))
    # Points spill past the box so the zero padding of out-of-plane taps is exercised.
    points = (torch.rand(batch, m, 3, generator=gen) * 2 - 1) * 0.7
    return planes, w, points


def _march_inputs(seed, batch=2, rays=13, s=17, o=32):
    gen = torch.Generator().manual_seed(seed)
    rgb = torch.rand(batch, rays, s, o, generator=gen)
    sigma = torch.randn(batch, rays, s, generator=gen) * 3
    depths = torch.sort(2 + torch.rand(batch, rays, s, generator=gen), -1).values
    return rgb, sigma, depths


@pytest.mark.parametrize("plane_set", [0, 1])
@pytest.mark.parametrize("sizes", [(32, 64, 32), (16, 24, 3)])
def test_sample_decode_matches_reference(plane_set, sizes, backend):
    c, h, o = sizes
    planes, (w1, b1, w2, b2), points = _decode_inputs(plane_set, channels=c, hidden=h, out_dim=o)
    sigma, rgb = _op("sample_decode", backend)(planes.permute(0, 1, 3, 4, 2).contiguous(), w1, b1, w2, b2, points, 1.1,
                                      plane_set, "fp32")
    sigma_r, rgb_r = sample_decode_folded(planes, w1, b1, w2, b2, points, 1.1, PLANE_SETS[plane_set])
    torch.testing.assert_close(sigma, sigma_r, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(rgb, rgb_r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("white_back", [False, True])
def test_march_matches_reference(white_back, backend):
    rgb, sigma, depths = _march_inputs(3)
    out, depth, w = _op("march", backend)(rgb, sigma, depths, white_back)
    out_r, depth_r, w_r = march_unclamped(rgb, sigma[..., None], depths[..., None], white_back)
    torch.testing.assert_close(out, out_r, atol=FP32_RGB_ATOL, rtol=0)
    torch.testing.assert_close(depth, depth_r[..., 0], atol=FP32_DEPTH_ATOL, rtol=0)
    torch.testing.assert_close(w, w_r[..., 0], atol=FP32_WSUM_ATOL, rtol=0)


def test_march_zero_weights_give_inf_depth(backend):
    rgb, sigma, depths = _march_inputs(4, rays=3)
    _, depth, w = _op("march", backend)(rgb, torch.full_like(sigma, -200.0), depths, False)
    assert bool(torch.isinf(depth).all()) and float(w.abs().max()) == 0.0


@pytest.mark.parametrize("n,n_f", [(4, 1), (12, 7), (48, 48)])
def test_importance_matches_reference(n, n_f, backend):
    gen = torch.Generator().manual_seed(n)
    depths = torch.sort(2 + torch.rand(2, 11, n, generator=gen), -1).values
    weights = torch.rand(2, 11, n - 1, generator=gen) ** 4  # peaky, like real interval weights
    u = torch.rand(2, 11, n_f, generator=gen)
    u[0, 0, 0] = 0.0  # searchsorted's edge cases
    out = _op("importance", backend)(depths, weights, u)
    torch.testing.assert_close(out, importance_depths(depths, weights, u), atol=1e-5, rtol=1e-6)


SCENES = {
    "ffhq-small": dict(batch=2, rays=37, n=48, n_f=48),
    "odd-counts": dict(batch=3, rays=13, n=9, n_f=5),
    "coarse-only": dict(batch=2, rays=21, n=7, n_f=0),
    "disparity": dict(batch=1, rays=29, n=16, n_f=11, options=dict(disparity_space_sampling=True)),
    "white-auto": dict(batch=2, rays=19, n=10, n_f=6, options=dict(white_back=True, ray_start="auto",
                                                                   ray_end="auto", box_warp=1.3)),
    "small-decoder": dict(batch=1, rays=17, n=8, n_f=8, channels=16, hidden=24, out_dim=3),
    "one-ray": dict(batch=1, rays=1, n=5, n_f=3),
}


@pytest.mark.parametrize("plane_set", PLANE_SETS)
@pytest.mark.parametrize("name", SCENES)
def test_render_matches_torch_backend(name, plane_set, backend):
    s = make_scene(seed=len(name), plane_res=24, **SCENES[name])
    ref = render_scene(s, plane_set=plane_set)
    out = render_scene(s, backend, plane_set=plane_set)
    errors = parity_errors(out, ref)
    assert within(errors, "fp32"), errors
    assert all(bool(t.isfinite().all()) for t in (out[0], out[2]))
    assert not bool(out[1].isnan().any())


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_render_matches_eg3d_golden(name, backend):
    """The fused backend on EG3D's own recorded outputs (tests/golden), at the fp32 bounds, with
    EG3D's recorded noise. Density noise cannot be injected into a fused backend: that case must be
    refused by name."""
    g = Golden(name)
    r = rf.ImportanceRenderer(backend=backend)
    args = (g.planes, g.decoder, g["ray_origins"], g["ray_directions"], g.options)
    noise = dict(stratified_u=g["stratified_u"], importance_u=g.get("importance_u"))
    if g.opts.density_noise > 0:
        with pytest.raises(ValueError, match="density_noise"), torch.no_grad():
            r(*args, **noise)
        return
    with torch.no_grad():
        out = r(*args, **noise)
    assert_matches_eg3d(*out, g)
    errors = parity_errors(out, (g["rgb"], g["depth"], g["weights_sum"]))
    assert within(errors, "fp32"), errors


@pytest.mark.parametrize("name", parity_cases.CASES)
def test_render_parity_cases(name, backend):
    """The renderer's own noise, non-contiguous importance_u, auto limits with rays that miss the
    box, fixed limits with box_warp != 1 (tests/parity_cases.py)."""
    out, ref = parity_cases.render_pair(name, backend)
    errors = parity_errors(out, ref)
    assert within(errors, "fp32"), errors


@pytest.mark.parametrize("b, r", parity_cases.ZERO_SHAPES)
@pytest.mark.parametrize("family", ops.FORWARD_FAMILIES)
def test_zero_rays_at_the_op_level(family, b, r, backend):
    """The renderer returns early on zero rays; called directly, each op's wrapper and kernel must
    cope with B*R = 0 and return empty outputs of the right shapes."""
    args, shapes = parity_cases.zero_ray_call(family, b, r)
    out = _op(family, backend)(*args)
    out = out if isinstance(out, tuple) else (out,)
    assert [tuple(t.shape) for t in out] == shapes
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in out)


def test_render_zero_rays(backend):
    s = make_scene(seed=1, rays=1, n=6, n_f=4)
    s.ray_origins, s.ray_directions = s.ray_origins[:, :0], s.ray_directions[:, :0]
    s.stratified_u, s.importance_u = s.stratified_u[:, :0], s.importance_u[:, :0]
    rgb, depth, wsum = render_scene(s, backend)
    assert rgb.shape == (1, 0, 32) and depth.shape == (1, 0, 1) and wsum.shape == (1, 0, 1)


def _render_args(seed=0, n=8, n_f=6, rays=9):
    s = make_scene(seed=seed, rays=rays, n=n, n_f=n_f, plane_res=16)
    b, r = s.ray_origins.shape[:2]
    planes = s.planes.permute(0, 1, 3, 4, 2).contiguous()
    return (planes, *folded_decoder_weights(s.decoder), s.ray_origins, s.ray_directions,
            torch.full((b, r), 2.25), torch.full((b, r), 3.3), s.stratified_u,
            torch.sort(s.importance_u, -1).values, 1.0, False, False, 0, "fp32")


@needs_cpu
def test_cpu_render_refuses_other_precisions():
    args = list(_render_args())
    args[-1] = "fp16"
    with pytest.raises(ValueError, match="precision"):
        _op("render")(*args)


def test_render_refuses_non_contiguous_input_by_name(backend):
    args = list(_render_args())
    args[5] = torch.cat([args[5], args[5]], -1)[..., ::2]  # right shape, strided
    with pytest.raises(ValueError, match="ray_origins"):
        _op("render", backend)(*args)


@needs_cpu
def test_opcheck_every_op():
    planes, w, points = _decode_inputs(5, batch=1, m=6)
    torch.library.opcheck(_op("sample_decode"), (planes.permute(0, 1, 3, 4, 2).contiguous(), *w, points, 1.0, 0,
                                                 "fp32"))
    torch.library.opcheck(_op("march"), (*_march_inputs(6, batch=1, rays=3, s=5, o=4), True))
    gen = torch.Generator().manual_seed(7)
    depths = torch.sort(torch.rand(1, 3, 6, generator=gen), -1).values
    torch.library.opcheck(_op("importance"), (depths, torch.rand(1, 3, 5, generator=gen),
                                              torch.rand(1, 3, 4, generator=gen)))
    torch.library.opcheck(_op("render"), _render_args())
    args = _render_args()
    b, r = args[5].shape[:2]
    for ray_grads in (True, False):
        upstream = (torch.randn(b, r, 32, generator=gen), torch.randn(b, r, generator=gen),
                    torch.randn(b, r, generator=gen))
        torch.library.opcheck(_op("render_backward"), (*upstream, *args, ray_grads))


@needs_cpu
def test_render_under_torch_compile_fullgraph():
    args = _render_args(seed=2)
    op = _op("render")
    compiled = torch.compile(lambda *a: op(*a), fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(*args), op(*args)):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


@needs_cpu
def test_schemas_header_equals_ops_schemas():
    text = (ROOT / "csrc/include/rtgaze/schemas.h").read_text()
    found = {}
    for name, body in re.findall(r"#define RTGAZE_SCHEMA_(\w+)((?:.*\\\n)*.*)", text):
        found[name.lower()] = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', body))
    assert found == ops.SCHEMAS


def test_every_backend_registers_the_family_schemas(backend):
    """One schema per family: each backend's op has the arguments and types of ops.SCHEMAS."""
    for family, schema in ops.SCHEMAS.items():
        if family == "render_backward" and backend not in TRAINING_BACKENDS + ("cuda",):
            continue
        got = str(_op(family, backend).default._schema).split("(", 1)[1]
        # triton_op infers int arguments as SymInt, which accepts the same values.
        assert got.replace("SymInt", "int").replace(" ", "") == schema.split("(", 1)[1].replace(" ", ""), family


# Reduced precision (triton): the bound each mode meets here, against rtgaze_fast.precision's.
# fp16: planes and MLP operands rounded to 11-bit mantissas, fp32 accumulation: measured ~3e-4
# on these scenes, 10x margin below. tf32 runs as fp32 in the interpreter. bf16 arithmetic does
# not work in the interpreter (it computes on the raw bits): GPU only (tests/test_gpu_parity.py).
@pytest.mark.skipif("triton" not in BACKENDS, reason="triton unavailable")
@pytest.mark.parametrize("precision, rgb_atol", [("tf32", 1e-5), ("fp16", 3e-3)])
def test_triton_reduced_precision(precision, rgb_atol):
    s = make_scene(seed=11, batch=2, rays=40, n=16, n_f=8, plane_res=24)
    ref = render_scene(s)
    planes = s.planes.half() if precision == "fp16" else s.planes
    errors = parity_errors(render_scene_with(s, planes, "triton", precision), ref)
    assert errors["rgb"] <= rgb_atol and within(errors, precision), errors


def render_scene_with(s, planes, backend, precision):
    import rtgaze_fast as rf
    with torch.no_grad():
        return rf.ImportanceRenderer(backend=backend, precision=precision)(
            planes, s.decoder, s.ray_origins, s.ray_directions, s.options,
            stratified_u=s.stratified_u, importance_u=s.importance_u)


def test_a_wrong_decoder_fails_parity(backend):
    """The parity check can fail: one corrupted weight is caught."""
    s = make_scene(seed=12, rays=20, n=8, n_f=4, plane_res=16)
    ref = render_scene(s)
    with torch.no_grad():
        s.decoder.net[2].weight[3, 5] += 0.5
    assert not within(parity_errors(render_scene(s, backend), ref), "fp32")
