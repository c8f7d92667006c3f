"""Issue #2: the reference renderer is EG3D-exact.

(a) golden files recorded from EG3D's own code (scripts/make_eg3d_golden.py), (b) an independent
naive float64 formulation written from the spec (tests/naive_renderer.py), (c) properties.
Validation errors are in tests/test_validation.py.
"""
from __future__ import annotations

import json
import math
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import rtgaze_fast as rf
from rtgaze_fast.camera import RaySampler, fov_to_intrinsics, look_at_pose
from rtgaze_fast.options import parse_options
from rtgaze_fast.reference.renderer import Noise, render_reference
from rtgaze_fast.reference.sampling import ray_limits_box
from rtgaze_fast.reference.triplane import sample_planes

import naive_renderer as naive
from scenes import make_scene, random_decoder, random_planes, render_scene
from tolerances import DEPTH_WSUM_MIN, FP32_DEPTH_ATOL, FP32_RGB_ATOL, FP32_WSUM_ATOL, NAIVE_ATOL

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
CASES = json.load(open(os.path.join(GOLDEN, "cases.json")))["cases"]


# ------------------------------------------------------------------ (a) EG3D golden files

class Golden:
    def __init__(self, name: str):
        path = os.path.join(GOLDEN, f"case_{name}.safetensors")
        self.t = load_file(path)
        with safe_open(path, "pt") as f:
            self.info = json.loads(f.metadata()["case"])
        base = load_file(os.path.join(GOLDEN, "planes.safetensors"))["planes"]
        self.planes = base[self.t["planes_idx"]].float() * self.info["scale"] + self.info["bias"]
        self.decoder = rf.OSGDecoder()
        self.decoder.load_state_dict({k[len("decoder."):]: v for k, v in self.t.items()
                                      if k.startswith("decoder.")})
        self.options = self.info["options"]  # as EG3D got them, unknown keys included
        self.opts = parse_options(self.options)

    def __getitem__(self, k):
        return self.t[k]

    def get(self, k):
        return self.t.get(k)


@pytest.fixture(scope="module", params=CASES)
def golden(request):
    return Golden(request.param)


def assert_matches_eg3d(rgb, depth, wsum, g: Golden):
    assert rgb.shape == g["rgb"].shape and depth.shape == g["depth"].shape and wsum.shape == g["weights_sum"].shape
    torch.testing.assert_close(rgb, g["rgb"], atol=FP32_RGB_ATOL, rtol=0)
    torch.testing.assert_close(wsum, g["weights_sum"], atol=FP32_WSUM_ATOL, rtol=0)
    m = g["weights_sum"] > DEPTH_WSUM_MIN
    torch.testing.assert_close(depth[m], g["depth"][m], atol=FP32_DEPTH_ATOL, rtol=0)
    # Where the weights vanish the depth is decided by the batch-wide clamp: still finite and in range.
    assert torch.isfinite(depth).all()


def test_golden_injected_noise(golden):
    if golden.opts.density_noise > 0:
        pytest.skip("density noise is not injectable through the public API; see the Noise test")
    r = rf.ImportanceRenderer(backend="torch")
    with torch.no_grad():
        out = r(golden.planes, golden.decoder, golden["ray_origins"], golden["ray_directions"], golden.options,
                stratified_u=golden["stratified_u"], importance_u=golden.get("importance_u"))
    assert_matches_eg3d(*out, golden)


def test_golden_recorded_noise_object(golden):
    """render_reference with every recorded draw, density noise included."""
    o = golden.opts
    b, r = golden["ray_origins"].shape[:2]
    scale = lambda k, n: None if golden.get(k) is None else golden[k].reshape(b, r, n) * o.density_noise  # noqa
    noise = Noise(golden["stratified_u"], golden.get("importance_u"),
                  scale("coarse_noise", o.depth_resolution), scale("fine_noise", o.depth_resolution_importance))
    with torch.no_grad():
        out = render_reference(golden.planes, golden.decoder, golden["ray_origins"], golden["ray_directions"],
                               o, noise)
    assert_matches_eg3d(*out, golden)


def test_golden_seeded(golden):
    """No injection: after torch.manual_seed(seed) the package draws EG3D's numbers in EG3D's order."""
    b, r = golden["ray_origins"].shape[:2]
    torch.manual_seed(golden.info["seed"])
    probe = torch.rand(golden["stratified_u"].numel()).sort().values  # layout-free: same numbers at all?
    if not torch.equal(probe, golden["stratified_u"].flatten().sort().values):
        pytest.skip("this torch's CPU generator stream differs from the one that recorded the golden files")
    torch.manual_seed(golden.info["seed"])
    with torch.no_grad():
        out = rf.ImportanceRenderer(backend="torch")(golden.planes, golden.decoder, golden["ray_origins"],
                                                     golden["ray_directions"], golden.options)
    assert_matches_eg3d(*out, golden)


def test_golden_cameras(golden):
    info, b = golden.info, golden["cam_h"].shape[0]
    pose = look_at_pose(golden["cam_h"], golden["cam_v"], golden["cam_lookat"].tolist(), radius=info["radius"])
    torch.testing.assert_close(pose, golden["cam2world"], atol=1e-6, rtol=0)
    intr = fov_to_intrinsics(info["fov"])
    torch.testing.assert_close(intr.expand(b, 3, 3), golden["intrinsics"], atol=0, rtol=0)
    ro, rd = RaySampler()(golden["cam2world"], golden["intrinsics"], info["res"])
    torch.testing.assert_close(ro, golden["ray_origins"], atol=0, rtol=0)
    torch.testing.assert_close(rd, golden["ray_directions"], atol=1e-7, rtol=0)
    # and the whole chain from the camera parameters
    ro2, rd2 = RaySampler()(pose, intr.expand(b, 3, 3), info["res"])
    torch.testing.assert_close(rd2, golden["ray_directions"], atol=1e-6, rtol=0)


def test_golden_cases_cover_the_issue():
    gs = [Golden(n) for n in CASES]
    opts = [g.opts for g in gs]
    assert any(o.depth_resolution == 48 and o.depth_resolution_importance == 48 for o in opts)
    assert any(o.depth_resolution_importance == 0 for o in opts)
    assert any(o.disparity_space_sampling for o in opts) and any(not o.disparity_space_sampling for o in opts)
    assert any(o.white_back for o in opts) and any(not o.white_back for o in opts)
    assert any(o.density_noise > 0 for o in opts)
    assert {g["ray_origins"].shape[0] for g in gs} >= {1, 2}
    autos = [g for g in gs if g.opts.auto_limits]
    assert autos
    for g in autos:
        s, e = ray_limits_box(g["ray_origins"], g["ray_directions"], g.opts.box_warp)
        raw_miss = ~_raw_hits(g["ray_origins"], g["ray_directions"], g.opts.box_warp)
        assert raw_miss.any() and not raw_miss.all()


def _raw_hits(o, d, box):
    import numpy as np
    return torch.from_numpy(np.array([[naive.box_limits(o[b, i].double().numpy(), d[b, i].double().numpy(), box)[2]
                                        for i in range(o.shape[1])] for b in range(o.shape[0])]))


def test_eg3d_state_dict_loads_without_key_changes():
    g = Golden(CASES[0])
    sd = {k[len("decoder."):]: v for k, v in g.t.items() if k.startswith("decoder.")}
    assert sorted(sd) == sorted(["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"])
    dec = rf.OSGDecoder()
    missing, unexpected = dec.load_state_dict(sd, strict=True)
    assert not missing and not unexpected
    assert sorted(dec.state_dict()) == sorted(sd)
    assert dec.net[0].weight_gain == pytest.approx(1 / math.sqrt(32))
    assert dec.net[2].weight_gain == pytest.approx(1 / math.sqrt(64))


def test_golden_vs_naive_float64():
    """The naive formulation reproduces EG3D's own outputs too (checks the checker)."""
    g = Golden("ffhq48")
    rgb, depth, wsum = naive.render(g.planes, g.decoder, g["ray_origins"][:, :12], g["ray_directions"][:, :12],
                                    g.options, g["stratified_u"][:, :12], g["importance_u"][:, :12])
    assert abs(rgb - g["rgb"][:, :12].double().numpy()).max() < 2e-5
    assert abs(wsum - g["weights_sum"][:, :12].double().numpy()).max() < 2e-5


# ------------------------------------------------------------------ (b) naive float64 vs the reference

# name: (make_scene kwargs, plane_set, sigma bias added to the decoder's density output)
NAIVE_CASES = {
    "48+48_b1_eg3d": (dict(seed=1, n=48, n_f=48, rays=5), "eg3d", 2.0),
    "48+48_b2_corrected_white": (dict(seed=2, batch=2, n=48, n_f=48, rays=3, options=dict(white_back=True)),
                                 "corrected", 4.0),
    "12+8_b2_disparity": (dict(seed=3, batch=2, res=6, n=12, n_f=8,
                               options=dict(disparity_space_sampling=True)), "eg3d", 3.0),
    "16+0_b1_white": (dict(seed=4, res=6, n=16, n_f=0, options=dict(white_back=True)), "corrected", 1.0),
    "2+0_b1": (dict(seed=5, res=6, n=2, n_f=0), "eg3d", 6.0),
    "auto_12+12_b2": (dict(seed=6, batch=2, res=6, n=12, n_f=12,
                           options=dict(ray_start="auto", ray_end="auto", box_warp=0.45)), "eg3d", 3.0),
    "auto_disparity_8+6_b1": (dict(seed=7, res=6, n=8, n_f=6,
                                   options=dict(ray_start="auto", ray_end="auto", box_warp=0.4,
                                                disparity_space_sampling=True)), "corrected", 2.0),
    "warp_limits_10+10_b1": (dict(seed=8, res=6, n=10, n_f=10,
                                  options=dict(box_warp=1.3, ray_start=1.9, ray_end=3.6)), "eg3d", 0.0),
}


def _scene(kw, sigma_bias):
    s = make_scene(**kw)
    with torch.no_grad():
        s.decoder.net[2].bias[0] += sigma_bias
    return s


def assert_close_to_naive(out, ref, atol=NAIVE_ATOL):
    rgb, depth, wsum = (t.double().numpy() for t in out)
    n_rgb, n_depth, n_wsum = ref
    assert abs(rgb - n_rgb).max() < atol, abs(rgb - n_rgb).max()
    assert abs(wsum - n_wsum).max() < atol, abs(wsum - n_wsum).max()
    m = n_wsum > DEPTH_WSUM_MIN
    assert abs(depth[m] - n_depth[m]).max(initial=0) < atol * max(1.0, abs(n_depth[m]).max(initial=0)) , \
        abs(depth[m] - n_depth[m]).max()


@pytest.mark.parametrize("name", list(NAIVE_CASES))
def test_reference_vs_naive_float64(name):
    kw, plane_set, bias = NAIVE_CASES[name]
    s = _scene(kw, bias)
    out = render_scene(s, plane_set=plane_set)
    ref = naive.render(s.planes, s.decoder, s.ray_origins, s.ray_directions, s.options, s.stratified_u,
                       s.importance_u, plane_set=plane_set)
    assert_close_to_naive(out, ref)
    if s.options["ray_start"] == "auto":  # the case exercises rays that miss the box
        hits = _raw_hits(s.ray_origins, s.ray_directions, s.options["box_warp"])
        assert hits.any() and not hits.all()


def test_reference_vs_naive_density_noise():
    s = _scene(dict(seed=9, batch=2, res=5, n=10, n_f=10, options=dict(density_noise=0.7)), 2.0)
    gen = torch.Generator().manual_seed(9)
    cn, fn = (torch.randn(2, 25, k, generator=gen) * 0.7 for k in (10, 10))
    opts = parse_options(s.options)
    with torch.no_grad():
        out = render_reference(s.planes, s.decoder, s.ray_origins, s.ray_directions, opts,
                               Noise(s.stratified_u, s.importance_u, cn, fn))
    ref = naive.render(s.planes, s.decoder, s.ray_origins, s.ray_directions, s.options, s.stratified_u,
                       s.importance_u, coarse_noise=cn, fine_noise=fn)
    assert_close_to_naive(out, ref)


# ------------------------------------------------------------------ (c) properties

@pytest.mark.parametrize("name", ["48+48_b1_eg3d", "12+8_b2_disparity", "16+0_b1_white", "auto_12+12_b2"])
def test_weights_sum_and_depth_ranges(name):
    kw, plane_set, bias = NAIVE_CASES[name]
    s = _scene(kw, bias)
    rgb, depth, wsum = render_scene(s, plane_set=plane_set)
    assert torch.isfinite(rgb).all() and torch.isfinite(depth).all()
    assert (wsum >= 0).all() and (wsum <= 1).all()
    o = parse_options(s.options)
    if o.auto_limits:
        lo, hi = ray_limits_box(s.ray_origins, s.ray_directions, o.box_warp)
        lo, hi = lo.min(), hi.max() + (hi - lo).max() / (o.depth_resolution - 1)
    elif o.disparity_space_sampling:
        lo, hi = o.ray_start, 1 / (1 / o.ray_end - (1 / o.ray_start - 1 / o.ray_end) / (o.depth_resolution - 1))
    else:
        lo, hi = o.ray_start, o.ray_end + (o.ray_end - o.ray_start) / (o.depth_resolution - 1)
    assert (depth >= lo - 1e-5).all() and (depth <= hi + 1e-5).all()


def test_empty_ray_depth_is_inf_with_a_finite_gradient():
    """A ray whose weights all underflow (EG3D: 0/0 -> NaN -> inf, then the clamp) keeps that
    forward value, and its backward is zero, not NaN (which reached training through L_D)."""
    from rtgaze_fast.reference.marcher import march, march_unclamped
    gen = torch.Generator().manual_seed(5)
    depths = torch.sort(torch.rand(1, 3, 12, 1, generator=gen) + 1, -2).values
    densities = torch.randn(1, 3, 12, 1, generator=gen) * 3
    densities[:, 1] = -500.0  # softplus(-501) underflows: every weight of ray 1 is exactly 0
    densities.requires_grad_(True)
    colors = torch.rand(1, 3, 12, 4, generator=gen, requires_grad=True)
    _, unclamped, weights = march_unclamped(colors, densities, depths)
    assert (weights[:, 1] == 0).all() and unclamped[0, 1, 0] == float("inf")
    assert torch.isfinite(unclamped[:, [0, 2]]).all()
    rgb, depth, _ = march(colors, densities, depths)
    assert depth[0, 1, 0] == depths.max()
    (depth.sum() + rgb.sum()).backward()
    assert torch.isfinite(densities.grad).all() and torch.isfinite(colors.grad).all()
    assert (densities.grad[:, [0, 2]] != 0).any()


@pytest.mark.parametrize("plane_set", ["eg3d", "corrected"])
def test_points_outside_the_box_sample_zero_features(plane_set):
    """A plane's taps are zero once its (u, v) leave the plane (beyond the outer half texel):
    outside the box in every coordinate -> all three planes zero; outside in one coordinate ->
    exactly the planes that project onto that coordinate are zero."""
    from rtgaze_fast.reference.triplane import PLANE_AXES
    gen = torch.Generator().manual_seed(11)
    planes = random_planes(gen, batch=1)  # 32x32: |q| >= 1 + 1/32 samples nothing
    box = 0.9
    inside = torch.tensor([[[0.1, 0.2, -0.3]]]) * box / 2
    assert (sample_planes(planes, inside, box, plane_set) != 0).all()
    everywhere_out = torch.tensor([[[1.1, -1.2, 1.05], [-1.5, 1.1, -1.1], [2.0, 3.0, -4.0]]]) * box / 2
    assert (sample_planes(planes, everywhere_out, box, plane_set) == 0).all()
    for axis in range(3):
        q = torch.tensor([0.3, -0.2, 0.1])
        q[axis] = 1.1
        f = sample_planes(planes, (q * box / 2).reshape(1, 1, 3), box, plane_set)
        for k, uv in enumerate(PLANE_AXES[plane_set]):
            assert bool((f[0, k] == 0).all()) == (axis in uv), (axis, k)


def test_far_points_decode_the_zero_feature_vector():
    gen = torch.Generator().manual_seed(11)
    planes = random_planes(gen, batch=1)
    dec = random_decoder(gen)
    # A point outside the box decodes the zero feature vector.
    from rtgaze_fast.reference.triplane import sample_decode
    far = torch.tensor([[[3.0, -2.0, 2.5]]])
    sigma, rgb = sample_decode(planes, dec, far, 1.0)
    z = dec(torch.zeros(1, 3, 1, 32))
    torch.testing.assert_close(sigma, z["sigma"], atol=0, rtol=0)
    torch.testing.assert_close(rgb, z["rgb"], atol=0, rtol=0)
    # ... and a ray that never enters the box composites that constant colour.
    opts = dict(rf.FFHQ_OPTIONS, depth_resolution=8, depth_resolution_importance=4)
    o = torch.tensor([[[5.0, 5.0, -3.0]]])
    d = torch.nn.functional.normalize(torch.tensor([[[0.1, 0.2, 1.0]]]), dim=-1)
    with torch.no_grad():
        c, _, w = rf.ImportanceRenderer(backend="torch")(planes, dec, o, d, opts)
        torch.testing.assert_close(c, 2 * w * z["rgb"].reshape(1, 1, -1) - 1, atol=1e-6, rtol=0)


@pytest.mark.parametrize("plane_set", ["eg3d", "corrected"])
def test_eg3d_plane_quirk_third_plane_is_zx(plane_set):
    """Only plane 2 is non-zero: channel 0 ramps along width (u), channel 1 along height (v).

    Bilinear sampling of a linear ramp is exact, so the sampled values name the coordinates used:
    EG3D's plane 2 is ZX ((u, v) = (z, x)); the corrected set's is YZ ((u, v) = (y, z)).
    """
    h = w = 16
    planes = torch.zeros(1, 3, 4, h, w)
    planes[0, 2, 0] = torch.arange(w, dtype=torch.float32).expand(h, w)
    planes[0, 2, 1] = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    box = 1.0
    p = torch.tensor([[[0.11, -0.23, 0.31]]])
    f = sample_planes(planes, p, box, plane_set)
    assert (f[:, :2] == 0).all()
    x, y, z = (2 / box) * p[0, 0]
    u, v = (z, x) if plane_set == "eg3d" else (y, z)
    ix, iy = ((u + 1) * w - 1) / 2, ((v + 1) * h - 1) / 2
    torch.testing.assert_close(f[0, 2, 0, :2], torch.stack([ix, iy]), atol=1e-5, rtol=0)
    # the naive formulation agrees
    import numpy as np
    nf = naive.point_features(planes[0].double().numpy(), p[0, 0].double().numpy(), box, plane_set) * 3
    assert np.allclose(nf[:2], [float(ix), float(iy)], atol=1e-5)


def test_injected_noise_is_bitwise_deterministic():
    s = _scene(NAIVE_CASES["auto_12+12_b2"][0], 3.0)
    a, b = render_scene(s), render_scene(s)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.parametrize("chunk", [1, 7, 36])
def test_chunked_equals_unchunked(chunk):
    s = _scene(dict(seed=12, batch=2, res=6, n=12, n_f=12, options=dict(ray_start="auto", ray_end="auto",
                                                                         box_warp=0.7)), 3.0)
    full = render_scene(s)
    part = render_scene(s, chunk_size=chunk)
    for x, y in zip(full, part):
        torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


def test_one_ray_and_zero_rays():
    """EG3D's sample_importance squeezes (B*R, 1, N) to (N,) with one ray and crashes; we must not."""
    s = _scene(dict(seed=13, n=12, n_f=12, rays=1), 3.0)
    out = render_scene(s)
    assert [t.shape for t in out] == [(1, 1, 32), (1, 1, 1), (1, 1, 1)]
    assert_close_to_naive(out, naive.render(s.planes, s.decoder, s.ray_origins, s.ray_directions, s.options,
                                            s.stratified_u, s.importance_u))
    r = rf.ImportanceRenderer(backend="torch")
    for b, n_rays in ((1, 0), (2, 0), (0, 4)):
        planes = torch.randn(max(b, 0), 3, 32, 8, 8)
        o = torch.zeros(b, n_rays, 3)
        rgb, depth, wsum = r(planes, s.decoder, o, o.clone(), s.options)
        assert rgb.shape == (b, n_rays, 32) and depth.shape == (b, n_rays, 1) and wsum.shape == (b, n_rays, 1)


def test_deterministic_mode_is_repeatable_and_uses_mid_strata():
    s = _scene(dict(seed=14, res=5, n=12, n_f=8), 2.0)
    r = rf.ImportanceRenderer(backend="torch", deterministic=True)
    with torch.no_grad():
        a = r(s.planes, s.decoder, s.ray_origins, s.ray_directions, s.options)
        b = r(s.planes, s.decoder, s.ray_origins, s.ray_directions, s.options)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    su = torch.full_like(s.stratified_u, 0.5)
    iu = torch.linspace(0, 1, 8).expand_as(s.importance_u)
    assert_close_to_naive(a, naive.render(s.planes, s.decoder, s.ray_origins, s.ray_directions, s.options, su, iu))
