"""The Triton backend (issue #4) in its interpreter (TRITON_INTERPRET=1, set by conftest): each
kernel family against its reference twin, and ImportanceRenderer(backend='triton') against
backend='torch' on random scenes with injected noise. Scenes are tiny and blocks large: the
interpreter costs ~5 ms per program instance."""
import pytest
import torch

import rtgaze_fast as rf
from rtgaze_fast import ops
from rtgaze_fast.precision import parity_errors, within
from rtgaze_fast.reference.decoder import folded_decoder_weights
from rtgaze_fast.reference.marcher import march_unclamped
from rtgaze_fast.reference.sampling import importance_depths, stratified_depths
from rtgaze_fast.reference.triplane import sample_decode_folded
from scenes import make_scene, random_decoder, render_scene
from tolerances import FP16_MIN_PSNR_DB, FP16_RGB_ATOL, FP32_DEPTH_ATOL, FP32_RGB_ATOL, FP32_WSUM_ATOL, TF32_RGB_ATOL

if ops.why_unavailable("triton", "cpu") is not None:
    pytest.skip(f"triton unavailable: {ops.why_unavailable('triton', 'cpu')}", allow_module_level=True)

import triton  # noqa: E402  (after the skip: triton is present)
import triton.language as tl  # noqa: E402

from rtgaze_fast.triton.march import inverse_cdf  # noqa: E402
from rtgaze_fast.triton.render import _merge_order  # noqa: E402

PLANE_SETS = ("eg3d", "corrected")
INTERPRETED = True  # this module runs on CPU tensors, hence always in the interpreter
BF16_SKIP = "bf16 arithmetic does not work in Triton's interpreter (it computes on the raw bits); GPU only"

# fp16 (planes and MLP operands rounded to fp16, fp32 accumulation and compositing): measured max
# |rgb| error 0.5e-4..2.3e-4 (4 seeds, 16+8 samples; PSNR 87-102 dB) (fp16 has an 11-bit mantissa: ~5e-4 relative per rounded
# operand, averaged down by the sums). Bound 3e-3: ~10x margin, and 3x tighter than
# tolerances.FP16_RGB_ATOL (1e-2), which the test also asserts.
FP16_RGB_BOUND = 3e-3
assert FP16_RGB_BOUND <= FP16_RGB_ATOL


def op(family):
    return ops.get_op(family, "triton")


def cl(planes):
    return planes.permute(0, 1, 3, 4, 2).contiguous()


def _decode_inputs(seed, batch=2, m=300, channels=32, hidden=64, out_dim=32, res=16):
    gen = torch.Generator().manual_seed(seed)
    planes = torch.randn(batch, 3, channels, res, res, generator=gen)
    w = folded_decoder_weights(random_decoder(gen, channels, hidden, out_dim))
    # Points spill past the box so the zero padding of out-of-plane taps is exercised.
    points = (torch.rand(batch, m, 3, generator=gen) * 2 - 1) * 0.7
    return planes, w, points


@pytest.mark.parametrize("plane_set", [0, 1])
@pytest.mark.parametrize("sizes", [(32, 64, 32), (16, 24, 3)])
def test_sample_decode_matches_twin(plane_set, sizes):
    c, h, o = sizes
    planes, (w1, b1, w2, b2), points = _decode_inputs(plane_set, channels=c, hidden=h, out_dim=o)
    sigma, rgb = op("sample_decode")(cl(planes), w1, b1, w2, b2, points, 1.1, plane_set, "fp32")
    sigma_r, rgb_r = sample_decode_folded(planes, w1, b1, w2, b2, points, 1.1, PLANE_SETS[plane_set])
    torch.testing.assert_close(sigma, sigma_r, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(rgb, rgb_r, atol=FP32_RGB_ATOL, rtol=0)


def test_sample_decode_fp16():
    planes, (w1, b1, w2, b2), points = _decode_inputs(7)
    sigma, rgb = op("sample_decode")(cl(planes).half(), w1, b1, w2, b2, points, 1.0, 0, "fp16")
    sigma_r, rgb_r = sample_decode_folded(planes, w1, b1, w2, b2, points, 1.0)
    assert float((rgb - rgb_r).abs().max()) <= FP16_RGB_BOUND
    assert float((sigma - sigma_r).abs().max()) <= 10 * FP16_RGB_BOUND  # pre-sigmoid: ~4x the slope


def _march_inputs(seed, batch=2, rays=45, s=17, o=32):
    gen = torch.Generator().manual_seed(seed)
    rgb = torch.rand(batch, rays, s, o, generator=gen)
    sigma = torch.randn(batch, rays, s, generator=gen) * 3
    depths = torch.sort(2 + torch.rand(batch, rays, s, generator=gen), -1).values
    return rgb, sigma, depths


@pytest.mark.parametrize("white_back", [False, True])
@pytest.mark.parametrize("s", [2, 17])
def test_march_matches_twin(white_back, s):
    rgb, sigma, depths = _march_inputs(3, s=s)
    out, depth, w = op("march")(rgb, sigma, depths, white_back)
    out_r, depth_r, w_r = march_unclamped(rgb, sigma[..., None], depths[..., None], white_back)
    torch.testing.assert_close(out, out_r, atol=FP32_RGB_ATOL, rtol=0)
    torch.testing.assert_close(depth, depth_r[..., 0], atol=FP32_DEPTH_ATOL, rtol=0)
    torch.testing.assert_close(w, w_r[..., 0], atol=FP32_WSUM_ATOL, rtol=0)


def test_march_zero_weights_give_inf_depth():
    rgb, sigma, depths = _march_inputs(4, rays=3)
    _, depth, w = op("march")(rgb, torch.full_like(sigma, -200.0), depths, False)
    assert bool(torch.isinf(depth).all()) and float(w.abs().max()) == 0.0


@pytest.mark.parametrize("n,n_f", [(4, 1), (12, 7), (48, 48)])
def test_importance_matches_twin(n, n_f):
    gen = torch.Generator().manual_seed(n)
    depths = torch.sort(2 + torch.rand(2, 11, n, generator=gen), -1).values
    weights = torch.rand(2, 11, n - 1, generator=gen) ** 4  # peaky, like real interval weights
    u = torch.rand(2, 11, n_f, generator=gen)
    u[0, 0, 0] = 0.0  # searchsorted's edge cases: u = 0 and u = 1
    u[1, 0, -1] = 1.0
    torch.testing.assert_close(op("importance")(depths, weights, u), importance_depths(depths, weights, u),
                               atol=1e-5, rtol=1e-6)


# Ray counts are not multiples of the interpreter's block (32 rays); N, N_f other than 48.
SCENES = {
    "ffhq-counts": dict(batch=2, rays=37, n=48, n_f=48),
    "odd-counts": dict(batch=3, rays=13, n=9, n_f=5),
    "coarse-only": dict(batch=2, rays=21, n=7, n_f=0),
    "two-coarse": dict(batch=1, rays=5, n=2, n_f=0),
    "more-fine": dict(batch=1, rays=33, n=6, n_f=20),
    "disparity": dict(batch=2, rays=29, n=16, n_f=11, options=dict(disparity_space_sampling=True)),
    "white-auto": dict(batch=2, rays=19, n=10, n_f=6, options=dict(white_back=True, ray_start="auto",
                                                                   ray_end="auto", box_warp=1.3)),
    "small-decoder": dict(batch=1, rays=17, n=8, n_f=8, channels=16, hidden=24, out_dim=3),
    "one-ray": dict(batch=1, rays=1, n=5, n_f=3),
}


@pytest.mark.parametrize("plane_set", PLANE_SETS)
@pytest.mark.parametrize("name", SCENES)
def test_renderer_matches_torch_backend(name, plane_set):
    s = make_scene(seed=len(name), plane_res=24, **SCENES[name])
    ref = render_scene(s, plane_set=plane_set)
    out = render_scene(s, "triton", plane_set=plane_set)
    errors = parity_errors(out, ref)
    assert within(errors, "fp32"), errors
    assert not bool(out[1].isnan().any())


def _render_args(s, sort_u=True, precision="fp32"):
    b, r = s.ray_origins.shape[:2]
    iu = s.importance_u if s.importance_u is not None else torch.empty(b, r, 0)
    return (cl(s.planes), *folded_decoder_weights(s.decoder), s.ray_origins, s.ray_directions,
            torch.full((b, r), 2.25), torch.full((b, r), 3.3), s.stratified_u,
            torch.sort(iu, -1).values if sort_u else iu.contiguous(), 1.0, False, False, 0, precision)


def test_render_depth_range_is_the_sampled_min_max():
    s = make_scene(seed=5, batch=2, rays=11, n=9, n_f=0)
    rng = op("render")(*_render_args(s))[3]
    t = stratified_depths(2.25, 3.3, s.stratified_u)
    torch.testing.assert_close(rng, torch.stack([t.amin(-1), t.amax(-1)], -1), atol=1e-6, rtol=0)


def test_render_merge_does_not_need_sorted_u():
    s = make_scene(seed=6, rays=10, n=8, n_f=8)
    for a, b in zip(op("render")(*_render_args(s)), op("render")(*_render_args(s, sort_u=False))):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def _render_with(s, precision, planes):
    with torch.no_grad():
        return rf.ImportanceRenderer(backend="triton", precision=precision)(
            planes, s.decoder, s.ray_origins, s.ray_directions, s.options,
            stratified_u=s.stratified_u, importance_u=s.importance_u)


def test_renderer_fp16():
    s = make_scene(seed=11, batch=2, rays=40, n=16, n_f=8, plane_res=24)
    errors = parity_errors(_render_with(s, "fp16", s.planes.half()), render_scene(s))
    assert errors["rgb"] <= FP16_RGB_BOUND and errors["psnr_db"] >= FP16_MIN_PSNR_DB and within(errors, "fp16"), errors


def test_renderer_tf32():
    # The interpreter evaluates tf32 dots in fp32, so this checks the mode's plumbing, not its
    # rounding (that is measured on a GPU); the bound is tolerances.TF32_RGB_ATOL.
    s = make_scene(seed=12, rays=20, n=8, n_f=4, plane_res=16)
    errors = parity_errors(_render_with(s, "tf32", s.planes), render_scene(s))
    assert errors["rgb"] <= TF32_RGB_ATOL and within(errors, "tf32"), errors


def test_renderer_tf32x3():
    # Plumbing only, as for tf32: the interpreter evaluates every fp32 dot in IEEE fp32.
    s = make_scene(seed=14, rays=20, n=8, n_f=4, plane_res=16)
    assert within(parity_errors(_render_with(s, "tf32x3", s.planes), render_scene(s)), "tf32x3")


def _tf32(x):
    """Round to tf32 (10-bit mantissa, to nearest, ties away: PTX cvt.rna.tf32.f32)."""
    return ((x.contiguous().view(torch.int32) + 0x1000) & ~0x1FFF).view(torch.float32)


def _addmm_tf32(passes):
    def addmm(b, x, w):
        xh, wh = _tf32(x), _tf32(w)
        if passes == 1:
            return b + xh @ wh
        return b + (xh @ _tf32(w - wh) + _tf32(x - xh) @ wh) + xh @ wh
    return addmm


def test_tf32x3_arithmetic_meets_the_fp32_bound(monkeypatch):
    """The tf32x3 mode's bound (the fp32 one) on its arithmetic, emulated on the CPU: the decoder's
    products as tf32 hi/lo splits (hi*hi + hi*lo + lo*hi; tf32 x tf32 products are exact in fp32)
    in the reference renderer at 48+48 samples. Measured: rgb 2-6e-7, depth 0.7-1.2e-6 (4 seeds).
    One tf32 pass (the tf32 mode) is ~100x further off and misses the fp32 bound, which shows the
    emulation is in effect."""
    from rtgaze_fast.reference import decoder as ref_decoder
    s = make_scene(seed=21, res=8, n=48, n_f=48, plane_res=32)
    ref = render_scene(s)
    errors = {}
    for passes in (3, 1):
        monkeypatch.setattr(ref_decoder.torch, "addmm", _addmm_tf32(passes))
        errors[passes] = parity_errors(render_scene(s), ref)
        monkeypatch.undo()
    assert within(errors[3], "tf32x3") and errors[3]["rgb"] <= 2e-6, errors[3]
    assert not within(errors[1], "tf32x3") and within(errors[1], "tf32"), errors[1]


@pytest.mark.skipif(INTERPRETED, reason=BF16_SKIP)
def test_renderer_bf16():
    s = make_scene(seed=13, rays=20, n=8, n_f=4, plane_res=16)
    assert within(parity_errors(_render_with(s, "bf16", s.planes.bfloat16()), render_scene(s)), "bf16")


def test_a_wrong_decoder_fails_parity():
    s = make_scene(seed=12, rays=20, n=8, n_f=4, plane_res=16)
    ref = render_scene(s)
    with torch.no_grad():
        s.decoder.net[2].weight[3, 5] += 0.5
    assert not within(parity_errors(render_scene(s, "triton"), ref), "fp32")


BAD = [
    ("hidden-256", lambda a: a[:1] + [torch.zeros(256, 32), torch.zeros(256), torch.zeros(33, 256)] + a[4:],
     ValueError, "at most 128"),
    ("precision", lambda a: a[:-1] + ["fp8"], ValueError, "precision"),
    ("strided-origins", lambda a: a[:5] + [torch.cat([a[5], a[5]], -1)[..., ::2]] + a[6:], ValueError, "ray_origins"),
    ("start-shape", lambda a: a[:7] + [a[7][:, :1]] + a[8:], ValueError, "ray_start"),
    ("half-planes-in-fp32", lambda a: [a[0].half()] + a[1:], TypeError, "planes"),
    ("double-u", lambda a: a[:9] + [a[9].double()] + a[10:], TypeError, "stratified_u"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_render_op_refuses_bad_inputs_by_name(case):
    _, edit, exc, word = case
    with pytest.raises(exc, match=word):
        op("render")(*edit(list(_render_args(make_scene(seed=1, rays=3, n=6, n_f=4)))))


def test_schemas_are_the_registry_s():
    for family, schema in ops.SCHEMAS.items():
        got = str(op(family).default._schema).split("(", 1)[1].replace("SymInt", "int")
        assert got.replace(" ", "") == schema.split("(", 1)[1].replace(" ", ""), family


# NaN in the planes or the rays: the merge's ranks stay a permutation (render._merge_order). Before
# the fix every NaN depth ranked 0 and the merge gathered from column ~2300 of a 128-wide row at
# 48+48 samples (the interpreter raised IndexError; a GPU reads out of bounds).
@pytest.mark.parametrize("where", ["planes", "ray"])
def test_render_with_nan_keeps_the_merge_in_range(where):
    s = make_scene(seed=31, rays=4, n=48, n_f=48, plane_res=8)
    if where == "planes":
        s.planes[:] = float("nan")
    else:
        s.ray_origins[0, 1] = float("nan")
    ref = render_scene(s)
    out = render_scene(s, "triton")
    nan_rays = torch.ones(4, dtype=torch.bool) if where == "planes" else torch.arange(4) == 1
    for o, r in zip(out, ref):  # NaN in, NaN out, where the reference has NaN
        assert bool(o[0, nan_rays].isnan().all()) or o is out[1], (o, r)
    rgb, _, wsum = out
    assert bool(wsum[0, nan_rays].isnan().all()) and bool(rgb[0, nan_rays].isnan().all())
    if where == "ray":  # the other rays are rendered as usual
        keep = ~nan_rays
        torch.testing.assert_close(rgb[0, keep], ref[0][0, keep], atol=FP32_RGB_ATOL, rtol=0)
        torch.testing.assert_close(wsum[0, keep], ref[2][0, keep], atol=FP32_WSUM_ATOL, rtol=0)


@triton.jit
def _merge_order_kernel(t_ptr, w_ptr, u_ptr, tf_ptr, rank_ptr, src_ptr, N, NF, MP: tl.constexpr):
    """One ray per program: its fine depths from the inverse CDF (u sorted by the caller), then
    the merge's ranks of the (MP coarse, MP fine) interleaved columns and their inverse."""
    row = tl.program_id(0)
    k = tl.arange(0, MP)[None, :]
    t_c = tl.load(t_ptr + row * MP + k)
    w = tl.load(w_ptr + row * MP + k)
    u = tl.load(u_ptr + row * MP + k)
    t_f, lo = inverse_cdf(t_c, w, N, u, NF)
    rank, src = _merge_order(t_c, t_f, lo, N, NF)
    tl.store(tf_ptr + row * MP + k, t_f)
    j = tl.arange(0, 2 * MP)[None, :]
    tl.store(rank_ptr + row * 2 * MP + j, rank)
    tl.store(src_ptr + row * 2 * MP + j, src)


def _merge_case(t_c, w, u, n, n_f, mp=16):
    rows = t_c.shape[0]
    pad = lambda x, v: torch.cat([x, torch.full((rows, mp - x.shape[1]), v)], 1).contiguous()  # noqa: E731
    t_f = torch.empty(rows, mp)
    rank = torch.empty(rows, 2 * mp, dtype=torch.int32)
    src = torch.empty(rows, 2 * mp, dtype=torch.int32)
    _merge_order_kernel[(rows,)](pad(t_c, 9.0), pad(w, 0.0), pad(u, 0.5), t_f, rank, src, n, n_f, MP=mp)
    return t_f[:, :n_f], rank, src


def test_merge_order_is_the_stable_sort_and_a_permutation():
    """render._merge_order (ranks from the inverse-CDF bins, O(M)) against torch.sort of
    cat(coarse, fine), stable, on rows with padding columns (N=11, N_f=9 of 16): random weights,
    EG3D's deterministic u (0 and 1 included: fine depths on bin edges), zero weights, a ray of
    zero length (every depth tied), fine depths equal to coarse ones. Ranks are a permutation of
    all 32 columns, src its inverse, real samples first."""
    gen = torch.Generator().manual_seed(3)
    n, n_f = 11, 9
    base = torch.linspace(2.0, 3.0, n)
    t_c = torch.stack([base + torch.rand(n, generator=gen) * 0.09, base, torch.full((n,), 2.5),
                       torch.tensor([2.0, 2.0, 2.0, 2.5, 2.5, 3.0, 3.0, 3.0, 3.0, 3.5, 4.0])])
    w = torch.stack([torch.rand(n - 1, generator=gen), torch.zeros(n - 1), torch.rand(n - 1, generator=gen),
                     torch.rand(n - 1, generator=gen)])
    u = torch.stack([torch.rand(n_f, generator=gen).sort().values, torch.linspace(0, 1, n_f),
                     torch.rand(n_f, generator=gen).sort().values, torch.linspace(0, 1, n_f)])
    t_f, rank, src = _merge_case(t_c, w, u, n, n_f)
    torch.testing.assert_close(t_f, importance_depths(t_c[:, None], w[:, None], u[:, None])[:, 0], atol=1e-6, rtol=0)
    both = torch.cat([t_c, t_f], 1)
    order = torch.sort(both, dim=-1, stable=True).indices
    # Column of each merged sample, in the interleaved layout (coarse j at 2j, fine p at 2p + 1).
    col = torch.where(order < n, 2 * order, 2 * (order - n) + 1)
    for i in range(t_c.shape[0]):
        assert sorted(rank[i].tolist()) == list(range(32)), rank[i]
        assert torch.equal(src[i][rank[i].long()], torch.arange(32, dtype=torch.int32)), (rank[i], src[i])
        # Equal depths are the same sample (the same point): only their depths must match.
        inter = torch.stack([torch.cat([t_c[i], torch.full((16 - n,), 9.0)]),
                             torch.cat([t_f[i], torch.full((16 - n_f,), 9.0)])], 1).reshape(-1)
        assert torch.equal(inter[src[i][:n + n_f].long()], both[i][order[i]]), i
        if i == 0:  # no ties: the very columns
            assert torch.equal(src[i][:n + n_f].long(), col[i]), (src[i], col[i])
        assert set(src[i][n + n_f:].tolist()) == set(range(32)) - set(src[i][:n + n_f].tolist())
        assert all(c % 2 == 0 and c // 2 >= n or c % 2 == 1 and c // 2 >= n_f for c in src[i][n + n_f:].tolist())


def test_merge_order_with_nan_stays_a_permutation():
    """NaN weights (NaN fine depths) and NaN coarse depths: the ranks stay a permutation (before the
    O(M) merge, NaN ranked every column 0 and src gathered out of the row)."""
    nan = float("nan")
    n, n_f = 11, 9
    t_c = torch.stack([torch.linspace(2.0, 3.0, n), torch.full((n,), nan)])
    w = torch.stack([torch.full((n - 1,), nan), torch.rand(n - 1)])
    u = torch.linspace(0, 1, n_f).expand(2, n_f)
    t_f, rank, src = _merge_case(t_c, w, u, n, n_f)
    assert bool(t_f.isnan().all())
    for i in range(2):
        assert sorted(rank[i].tolist()) == list(range(32)), rank[i]
        assert torch.equal(src[i][rank[i].long()], torch.arange(32, dtype=torch.int32)), (rank[i], src[i])


def test_every_launch_runs_on_the_planes_device(monkeypatch):
    """Each Triton op launches inside launch_device(<its tensors' device>) (Triton launches on the
    current CUDA device, not the arguments'). Checked at the argument level on the CPU: the guard
    is replaced by a recorder and every launch must happen inside it; launch_device itself must
    enter torch.cuda.device(d) for a CUDA device (mocked: no GPU here). A GPU with two devices is
    needed to see the real thing (tests/test_gpu_parity.py)."""
    import contextlib

    from rtgaze_fast.triton import _common, march, render, render_bwd, sample_decode

    entered = []
    inside = []

    @contextlib.contextmanager
    def recorder(device):
        entered.append(device)
        inside.append(True)
        try:
            yield
        finally:
            inside.pop()

    def checked_wrap(real):
        def wrap(kernel):
            launcher = real(kernel)

            class Checked:
                def __getitem__(self, grid):
                    def run(*args, **kw):
                        assert inside, f"{kernel} launched outside launch_device"
                        return launcher[grid](*args, **kw)
                    return run
            return Checked()
        return wrap

    for mod in (march, render, render_bwd, sample_decode):
        monkeypatch.setattr(mod, "launch_device", recorder)
        monkeypatch.setattr(mod, "wrap_triton", checked_wrap(mod.wrap_triton))
    s = make_scene(seed=3, rays=3, n=6, n_f=4, plane_res=8)
    args = _render_args(s)
    op("render")(*args)
    b, r = s.ray_origins.shape[:2]
    op("render_backward")(torch.randn(b, r, 32), torch.randn(b, r), torch.randn(b, r), *args, True)
    planes, (w1, b1, w2, b2), points = _decode_inputs(1, m=5)
    op("sample_decode")(cl(planes), w1, b1, w2, b2, points, 1.0, 0, "fp32")
    rgb, sigma, depths = _march_inputs(1, rays=3, s=6)
    op("march")(rgb, sigma, depths, False)
    op("importance")(depths, sigma.abs()[..., :-1].contiguous(), torch.rand(2, 3, 4))
    # render, render_backward (its two kernels, one guard), sample_decode, march, importance
    assert entered == [torch.device("cpu")] * 5, entered

    cuda_entered = []

    @contextlib.contextmanager
    def fake_cuda_device(device):
        cuda_entered.append(device)
        yield

    monkeypatch.setattr(torch.cuda, "device", fake_cuda_device)
    with _common.launch_device(torch.device("cuda", 1)):
        pass
    with _common.launch_device(torch.device("cpu")):
        pass
    assert cuda_entered == [torch.device("cuda", 1)]
