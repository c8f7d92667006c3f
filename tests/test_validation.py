"""Issue #2 (d): every validation error of parse_options, ImportanceRenderer and RaySampler.

Each case asserts the exception type and that the message names the argument at fault.
(tests/test_bad_inputs.py runs a bad-input matrix over every backend; this file covers the
reference's and the options' own checks one by one.)
"""
import math

import pytest
import torch

import rtgaze_fast as rf
from rtgaze_fast import ops
from rtgaze_fast.camera import RaySampler, split_camera_label
from rtgaze_fast.options import parse_options, plane_set_index
from scenes import make_scene

FULL = dict(rf.FFHQ_OPTIONS, white_back=True, density_noise=0.0, some_unknown_eg3d_key="ignored")


def with_(**kw):
    o = dict(FULL)
    for k, v in kw.items():
        if v is KeyError:
            del o[k]
        else:
            o[k] = v
    return o


def test_eg3d_kwargs_are_accepted_unknown_keys_ignored():
    o = parse_options(FULL)
    assert (o.depth_resolution, o.depth_resolution_importance, o.white_back) == (48, 48, True)
    assert parse_options(o) is o
    assert not parse_options(with_(white_back=KeyError, density_noise=KeyError)).white_back
    a = parse_options(with_(ray_start="auto", ray_end="auto"))
    assert a.auto_limits


REQUIRED = ["ray_start", "ray_end", "box_warp", "depth_resolution", "depth_resolution_importance",
            "disparity_space_sampling", "clamp_mode"]


@pytest.mark.parametrize("key", REQUIRED)
def test_missing_required_key(key):
    with pytest.raises(KeyError, match=key):
        parse_options(with_(**{key: KeyError}))


OPTION_CASES = [
    # (overrides, exception, words the message must contain)
    (dict(ray_start="2.25"), TypeError, ["ray_start"]),
    (dict(ray_end=None), TypeError, ["ray_end"]),
    (dict(ray_start=True), TypeError, ["ray_start"]),
    (dict(ray_start=math.nan), ValueError, ["ray_start"]),
    (dict(ray_end=math.inf), ValueError, ["ray_end"]),
    (dict(ray_start=3.3, ray_end=2.25), ValueError, ["ray_start", "ray_end"]),
    (dict(ray_start=2.0, ray_end=2.0), ValueError, ["ray_start", "ray_end"]),
    (dict(ray_start="auto"), ValueError, ["ray_start", "ray_end", "auto"]),
    (dict(ray_end="auto"), ValueError, ["ray_start", "ray_end", "auto"]),
    (dict(ray_start=0.0, disparity_space_sampling=True), ValueError, ["ray_start", "disparity"]),
    (dict(box_warp=0), ValueError, ["box_warp"]),
    (dict(box_warp=-1.0), ValueError, ["box_warp"]),
    (dict(box_warp="1"), TypeError, ["box_warp"]),
    (dict(depth_resolution=1), ValueError, ["depth_resolution", "2"]),
    (dict(depth_resolution=0), ValueError, ["depth_resolution"]),
    (dict(depth_resolution=48.0), TypeError, ["depth_resolution"]),
    (dict(depth_resolution=True), TypeError, ["depth_resolution"]),
    (dict(depth_resolution_importance=-1), ValueError, ["depth_resolution_importance"]),
    (dict(depth_resolution_importance=4.5), TypeError, ["depth_resolution_importance"]),
    (dict(depth_resolution=3, depth_resolution_importance=4), ValueError, ["depth_resolution"]),
    (dict(clamp_mode="relu"), ValueError, ["clamp_mode", "softplus"]),
    (dict(density_noise=-0.1), ValueError, ["density_noise"]),
    (dict(density_noise="x"), TypeError, ["density_noise"]),
    (dict(density_noise=math.nan), ValueError, ["density_noise"]),
]


@pytest.mark.parametrize("overrides,exc,words", OPTION_CASES, ids=[str(c[0]) for c in OPTION_CASES])
def test_bad_option_value(overrides, exc, words):
    with pytest.raises(exc) as e:
        parse_options(with_(**overrides))
    for w in words:
        assert w in str(e.value)


def test_options_must_be_a_mapping():
    with pytest.raises(TypeError, match="rendering_options"):
        parse_options([("ray_start", 2.25)])


def test_smallest_valid_sample_counts():
    assert parse_options(with_(depth_resolution=2, depth_resolution_importance=0)).n_samples == 2
    assert parse_options(with_(depth_resolution=4, depth_resolution_importance=1)).n_samples == 5


@pytest.mark.parametrize("kw,exc,word", [
    (dict(backend="jax"), ValueError, "backend"),
    (dict(precision="fp8"), ValueError, "precision"),
    (dict(plane_set="yz"), ValueError, "plane_set"),
    (dict(chunk_size=0), ValueError, "chunk_size"),
    (dict(chunk_size=2.5), ValueError, "chunk_size"),
])
def test_bad_renderer_arguments(kw, exc, word):
    with pytest.raises(exc, match=word):
        rf.ImportanceRenderer(**kw)
    if "plane_set" in kw:
        with pytest.raises(ValueError, match="plane_set"):
            plane_set_index(kw["plane_set"])


S = make_scene(seed=21, batch=2, res=2, plane_res=8, n=6, n_f=4)
B, R = S.ray_origins.shape[:2]


def render(backend="torch", renderer_kw=None, **over):
    a = dict(planes=S.planes, decoder=S.decoder, ray_origins=S.ray_origins, ray_directions=S.ray_directions,
             rendering_options=S.options, stratified_u=S.stratified_u, importance_u=S.importance_u)
    a.update(over)
    r = rf.ImportanceRenderer(backend=backend, **(renderer_kw or {}))
    return r(a.pop("planes"), a.pop("decoder"), a.pop("ray_origins"), a.pop("ray_directions"),
             a.pop("rendering_options"), **a)


TENSOR_CASES = [
    ("planes-4d", dict(planes=S.planes[0]), ValueError, "planes"),
    ("planes-6d", dict(planes=S.planes[None]), ValueError, "planes"),
    ("planes-not-3-planes", dict(planes=S.planes[:, :2]), ValueError, "planes"),
    ("planes-float64", dict(planes=S.planes.double()), TypeError, "planes"),
    ("planes-list", dict(planes=S.planes.tolist()), TypeError, "planes"),
    ("planes-C-vs-decoder", dict(planes=S.planes[:, :, :16]), ValueError, "decoder"),
    ("decoder-not-a-module", dict(decoder=object()), TypeError, "decoder"),
    ("origins-on-meta", dict(ray_origins=S.ray_origins.to("meta")), ValueError, "ray_origins"),
    ("directions-on-meta", dict(ray_directions=S.ray_directions.to("meta")), ValueError, "ray_directions"),
    ("origins-float64", dict(ray_origins=S.ray_origins.double()), TypeError, "ray_origins"),
    ("directions-half", dict(ray_directions=S.ray_directions.half()), TypeError, "ray_directions"),
    ("origins-2d", dict(ray_origins=S.ray_origins[0]), ValueError, "ray_origins"),
    ("origins-xy-only", dict(ray_origins=S.ray_origins[..., :2]), ValueError, "ray_origins"),
    ("origins-wrong-batch", dict(ray_origins=S.ray_origins[:1]), ValueError, "ray_origins"),
    ("directions-shape", dict(ray_directions=S.ray_directions[:, :1]), ValueError, "ray_directions"),
    ("strat-u-shape", dict(stratified_u=S.stratified_u[..., :-1]), ValueError, "stratified_u"),
    ("strat-u-4d", dict(stratified_u=S.stratified_u[..., None]), ValueError, "stratified_u"),
    ("strat-u-float64", dict(stratified_u=S.stratified_u.double()), TypeError, "stratified_u"),
    ("strat-u-meta", dict(stratified_u=S.stratified_u.to("meta")), ValueError, "stratified_u"),
    ("imp-u-shape", dict(importance_u=S.importance_u[:, :1]), ValueError, "importance_u"),
    ("imp-u-missing", dict(importance_u=None), ValueError, "importance_u"),
    ("imp-u-without-strat", dict(stratified_u=None), ValueError, "importance_u"),
    ("imp-u-with-N_f-0", dict(rendering_options=dict(S.options, depth_resolution_importance=0)),
     ValueError, "importance_u"),
    ("options-missing-key", dict(rendering_options={k: v for k, v in S.options.items() if k != "box_warp"}),
     KeyError, "box_warp"),
    ("options-N<2", dict(rendering_options=dict(S.options, depth_resolution=1)), ValueError, "depth_resolution"),
]


@pytest.mark.parametrize("over,exc,word", [c[1:] for c in TENSOR_CASES], ids=[c[0] for c in TENSOR_CASES])
def test_bad_render_inputs(over, exc, word):
    with pytest.raises(exc) as e:
        with torch.no_grad():
            render(**over)
    assert word in str(e.value)


def test_precision_modes_are_for_fused_backends():
    with pytest.raises(ValueError, match="precision"), torch.no_grad():
        render(renderer_kw=dict(precision="fp16"))


def test_deterministic_mode_refuses_injected_u():
    with pytest.raises(ValueError, match="stratified_u"), torch.no_grad():
        render(renderer_kw=dict(deterministic=True))


def test_validate_checks_values():
    bad = S.planes.clone()
    bad[0, 0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="planes"), torch.no_grad():
        render(planes=bad, renderer_kw=dict(validate=True))
    with pytest.raises(ValueError, match="ray_directions"), torch.no_grad():
        render(ray_directions=torch.zeros_like(S.ray_directions), renderer_kw=dict(validate=True))
    with pytest.raises(ValueError, match="stratified_u"), torch.no_grad():
        render(stratified_u=S.stratified_u + 2, renderer_kw=dict(validate=True))


FUSED = [b for b in ops.FUSED_BACKENDS if ops.why_unavailable(b, "cpu") is None]


@pytest.mark.parametrize("backend", ["cuda", "triton", "cpu"])
def test_fused_backend_with_requires_grad_is_refused(backend):
    planes = S.planes.clone().requires_grad_()
    exc = RuntimeError
    with pytest.raises(exc) as e:
        render(backend=backend, planes=planes)
    msg = str(e.value)
    assert backend in msg and ("grad" in msg or "not available" in msg)


@pytest.mark.parametrize("backend", FUSED or [pytest.param("cpu", marks=pytest.mark.skip("no fused CPU backend"))])
def test_fused_backend_refuses_density_noise(backend):
    with pytest.raises(ValueError) as e, torch.no_grad():
        render(backend=backend, rendering_options=dict(S.options, density_noise=0.5))
    assert "density_noise" in str(e.value) and backend in str(e.value)


def test_unknown_backend_in_the_registry():
    with pytest.raises(ValueError, match="backend"):
        ops.resolve_backend("jax", "cpu")
    with pytest.raises(ValueError, match="backend"):
        ops.why_unavailable("jax", "cpu")


# ---- RaySampler / camera labels

def test_ray_sampler_errors():
    c2w = rf.look_at_pose(math.pi / 2, math.pi / 2)
    k = rf.fov_to_intrinsics(18.837)[None]
    rs = RaySampler()
    with pytest.raises(ValueError, match="cam2world"):
        rs(c2w[0], k, 4)
    with pytest.raises(ValueError, match="cam2world"):
        rs(c2w[:, :3], k, 4)
    with pytest.raises(ValueError, match="intrinsics"):
        rs(c2w, k[0], 4)
    with pytest.raises(ValueError, match="intrinsics"):
        rs(c2w, k.repeat(2, 1, 1), 4)
    with pytest.raises(ValueError, match="resolution"):
        rs(c2w, k, 0)
    o, d = rs(c2w, k, 1)  # one ray works
    assert o.shape == d.shape == (1, 1, 3)
    with pytest.raises(ValueError, match="camera label"):
        split_camera_label(torch.zeros(2, 24))
    with pytest.raises(ValueError, match="camera label"):
        rf.rays_from_label(torch.zeros(25), 4)
