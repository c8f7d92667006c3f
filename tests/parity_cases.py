"""Render-parity cases the random-scene tables do not reach, shared by the CPU suite
(tests/test_ops.py: cpu, triton in its interpreter) and the GPU one (tests/test_gpu_parity.py):
the renderer's own noise (deterministic mode, a seeded generator, the global seed), a
non-contiguous ``importance_u``, automatic ray limits with rays that miss the box (checked to
be in the scene), fixed limits with ``box_warp`` != 1.

``render_pair(name, backend, device)`` renders one case with the reference and ``backend``
exactly the same way and returns ``(out, ref)``; compare with ``rtgaze_fast.precision``.
"""
from __future__ import annotations

import torch

import rtgaze_fast as rf
from scenes import make_scene

# name: (make_scene kwargs, how the renderer gets its noise)
CASES = {
    "deterministic": (dict(seed=21, batch=2, rays=23, n=10, n_f=8), "deterministic"),
    "seeded-generator": (dict(seed=22, batch=2, rays=19, n=8, n_f=6), "generator"),
    "global-seed": (dict(seed=23, rays=21, n=9, n_f=7, options=dict(ray_start="auto", ray_end="auto")),
                    "manual_seed"),
    "non-contiguous-importance-u": (dict(seed=24, batch=2, rays=17, n=8, n_f=9), "non_contiguous"),
    "auto-limits-misses": (dict(seed=25, batch=2, res=6, n=8, n_f=6,
                                options=dict(ray_start="auto", ray_end="auto", box_warp=0.5)), "injected"),
    "auto-limits-misses-disparity-white": (dict(seed=26, res=6, n=8, n_f=6,
                                                options=dict(ray_start="auto", ray_end="auto", box_warp=0.45,
                                                             disparity_space_sampling=True, white_back=True)),
                                           "injected"),
    "fixed-limits-box-warp-1.3": (dict(seed=27, batch=2, rays=19, n=8, n_f=6,
                                       options=dict(box_warp=1.3, ray_start=1.9, ray_end=3.6)), "injected"),
    "fixed-limits-box-warp-0.8": (dict(seed=28, rays=23, n=10, n_f=0,
                                       options=dict(box_warp=0.8, ray_start=2.2, ray_end=3.2)), "injected"),
}
SEED = 1234


def box_hits(origins: torch.Tensor, directions: torch.Tensor, box_warp: float) -> torch.Tensor:
    """(B, R) whether each ray meets the cube of side ``box_warp`` at all (slab test, before EG3D's
    fix-up of the rays that miss)."""
    half = box_warp / 2
    t0 = (-half - origins) / directions
    t1 = (half - origins) / directions
    near = torch.minimum(t0, t1).amax(-1)
    far = torch.maximum(t0, t1).amin(-1)
    return far > near


def to_device(scene, device):
    for name in ("planes", "ray_origins", "ray_directions", "stratified_u", "importance_u"):
        t = getattr(scene, name)
        if t is not None:
            setattr(scene, name, t.to(device))
    scene.decoder = scene.decoder.to(device)
    return scene


def render_pair(name: str, backend: str, device="cpu", precision: str = "fp32", plane_set: str = "eg3d"):
    kw, noise = CASES[name]
    s = to_device(make_scene(**kw), device)
    if name.startswith("auto-limits-misses"):
        hits = box_hits(s.ray_origins, s.ray_directions, s.options["box_warp"])
        assert bool(hits.any()) and not bool(hits.all()), "the case must have rays that miss the box and rays that hit"
    inject = {}
    if noise in ("injected", "non_contiguous"):
        iu = s.importance_u
        if noise == "non_contiguous":   # every other element of a wider buffer: strided along the samples
            wide = torch.zeros(*iu.shape[:-1], 2 * iu.shape[-1], device=device)
            wide[..., ::2] = iu
            iu = wide[..., ::2]
            assert not iu.is_contiguous() and torch.equal(iu, s.importance_u)
        inject = dict(stratified_u=s.stratified_u, importance_u=iu)

    def render(b, prec):
        r = rf.ImportanceRenderer(backend=b, precision=prec, plane_set=plane_set,
                                  deterministic=noise == "deterministic")
        call = dict(inject)
        if noise == "generator":
            call["generator"] = torch.Generator(device=device).manual_seed(SEED)
        if noise == "manual_seed":
            torch.manual_seed(SEED)
        with torch.no_grad():
            return r(s.planes, s.decoder, s.ray_origins, s.ray_directions, s.options, **call)
    return render(backend, precision), render("torch", "fp32")


# ---- zero rays at the op level: every family's wrapper and kernel launch with nothing to do ----

ZERO_SHAPES = [(1, 0), (0, 3), (0, 0)]   # (B, R): no rays, an empty batch, both


def zero_ray_call(family: str, b: int, r: int, device="cpu"):
    """(args, expected output shapes) of an op call of ``family`` with B*R = 0 (EG3D-sized decoder,
    N=6, N_f=4 samples, 8x8 planes)."""
    from rtgaze_fast.reference.decoder import folded_decoder_weights
    from scenes import random_decoder
    gen = torch.Generator().manual_seed(0)
    w = [t.to(device) for t in folded_decoder_weights(random_decoder(gen))]
    planes = torch.randn(b, 3, 8, 8, 32, generator=gen).to(device)
    z = lambda *shape: torch.zeros(*shape, device=device)  # noqa: E731
    n, n_f, o = 6, 4, 32
    if family == "sample_decode":
        return (planes, *w, z(b, r, 3), 1.0, 0, "fp32"), [(b, r), (b, r, o)]
    if family == "march":
        return (z(b, r, n, o), z(b, r, n), z(b, r, n), False), [(b, r, o), (b, r), (b, r, n - 1)]
    if family == "importance":
        return (z(b, r, n), z(b, r, n - 1), z(b, r, n_f)), [(b, r, n_f)]
    if family == "render":
        return ((planes, *w, z(b, r, 3), z(b, r, 3) + 1, z(b, r), z(b, r) + 1, z(b, r, n), z(b, r, n_f), 1.0, False,
                 False, 0, "fp32"), [(b, r, o), (b, r), (b, r), (b, r, 2)])
    raise ValueError(family)


# ---- a fault: the render kernel leaves the tail of its outputs unwritten ----

def skip_tail(backend: str, monkeypatch, rays: int = 8) -> None:
    """Make ``backend``'s render kernel leave its last rays unwritten: the compiled backends skip
    ``rays`` (RTGAZE_FAST_TEST_SKIP_TAIL, csrc/torch/checks.h); Triton is launched with one program
    fewer than its grid needs (its last block of rays)."""
    if backend != "triton":
        monkeypatch.setenv("RTGAZE_FAST_TEST_SKIP_TAIL", str(rays))
        return
    from rtgaze_fast.triton import render as triton_render
    real = triton_render.wrap_triton

    class Short:
        def __init__(self, kernel):
            self.launch = real(kernel)

        def __getitem__(self, grid):
            return self.launch[lambda meta: (grid(meta)[0] - 1,)]
    monkeypatch.setattr(triton_render, "wrap_triton", Short)


def unwritten_tail(rgb: torch.Tensor) -> int:
    """How many trailing rays of a (B, R, O) output are all NaN; asserts every ray before them is finite."""
    flat = rgb.reshape(-1, rgb.shape[-1])
    nan = flat.isnan().all(-1)
    k = int(nan.flip(0).cumprod(0).sum())
    assert bool(flat[:flat.shape[0] - k].isfinite().all()), "NaN before the tail"
    return k
