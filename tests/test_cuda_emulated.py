"""The CUDA backend on this GPU-less machine: its own kernels (csrc/cuda) and torch glue
(csrc/torch/cuda_glue.cpp), compiled for the CPU emulation in tests/cuda_emu, against the reference.
tests/test_ops.py, test_render_grad.py, test_bad_inputs.py, test_poison.py and test_properties.py
run their fp32 suites with it (the ``cuda-emulated`` backend, sm_90); this file adds every precision
mode, forward and backward, the forward also as a T4 runs it (sm_75: FFMA in place of tf32 MMAs, two
m16n8k8 per fp16 MMA, bf16 as fp16), the launch configurations (persistent grids of one block to one
per warp's worth of rays, fibers in either order), the launch errors the glue words, and the
emulator's own checks, each shown to fail, and a run of both builds under AddressSanitizer (an
out-of-bounds access to any tensor or to shared memory past its guard zone is an error).

What a pass here shows: the kernels' indexing and persistent loops, their MMA fragment layouts
(emu.h executes mma.sync per the PTX ISA's tables, written there independently of the kernels'
rtgaze/tile.h), their shared-memory carving (nothing past the launch's size, nothing read before
it is written: it starts as NaN), the warp barriers around every exchange, the glue's padding,
checks and unpadding, and each mode's rounding (tf32 inputs as cvt.rna makes them; fp16 / bf16
round to nearest even). What it cannot show: speed; races between warps or blocks (one fiber
runs at a time, atomics are plain adds); the hardware's accumulation order inside an MMA and its
MUFU approximations (libm here); the inline PTX text (each asm statement is replaced by an
emu.h call with its operands); what nvcc and ptxas do (tests/test_cuda_build.py and
tests/test_cuda_sass.py compile the same sources for the GPU). benchmarks/gpu_suite.sh on a GPU
remains the final word.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cuda_emu
import rtgaze_fast as rf
from rtgaze_fast.precision import BOUNDS, parity_errors, within
from rtgaze_fast.reference.decoder import folded_decoder_weights
from rtgaze_fast.reference.triplane import sample_decode_folded
from require import skip_or_fail, why_missing
from scenes import make_scene, render_scene
from test_render_grad import grad_errors, render_grads

MODES = ("fp32", "tf32", "fp16", "bf16")
PLANE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

# tests/test_gpu_parity.py's scenes at fewer rays (the emulator runs ~1e5 samples a second).
SCENES = [
    dict(seed=1, res=4, n=48, n_f=48, plane_res=64),
    dict(seed=2, batch=3, rays=11, n=24, n_f=12, plane_res=32),
    dict(seed=3, res=4, n=17, n_f=0, plane_res=32, options=dict(white_back=True)),
    dict(seed=4, res=4, n=32, n_f=32, plane_res=32, options=dict(disparity_space_sampling=True)),
    dict(seed=6, batch=2, res=4, n=24, n_f=24, plane_res=32, options=dict(box_warp=1.3, ray_start=1.9, ray_end=3.6)),
    dict(seed=8, res=4, n=16, n_f=16, plane_res=32, options=dict(ray_start="auto", ray_end="auto", box_warp=0.8)),
    dict(seed=9, batch=2, res=4, n=20, n_f=12, plane_res=32, channels=16, hidden=24, out_dim=3),
]

# Reduced-precision gradients against the fp32 reference's at the same (rounded) planes, relative
# to each gradient's largest magnitude. Measured worst over seeds 20-23 (10+8 samples, EG3D's
# decoder), the backward's products in tf32 in these modes: tf32 5.5e-4, fp16 8.1e-4 (the rays'
# gradients); bf16 2.6e-3 (the planes' gradient, which autograd rounds to the bf16 planes' dtype).
REDUCED_GRAD_RTOL = {"tf32": 2e-3, "fp16": 2e-3, "bf16": 1e-2}


@pytest.fixture
def emu(monkeypatch):
    return cuda_emu.use(monkeypatch)


@pytest.fixture(params=[90, 75], ids=lambda a: f"sm{a}")
def emu_arch(request, monkeypatch):
    return cuda_emu.use(monkeypatch, arch=request.param)


# Measured worst over these scenes and both plane sets, sm_90 (bounds: rtgaze_fast.precision): fp32
# rgb 6.0e-7, depth 1.4e-6; tf32 rgb 1.9e-4; fp16 rgb 2.4e-4; bf16 rgb 2.3e-3, PSNR >= 66.6 dB.
@pytest.mark.parametrize("precision", MODES)
@pytest.mark.parametrize("kw", SCENES, ids=lambda kw: f"seed{kw['seed']}")
def test_render_parity_every_mode(kw, precision, emu_arch):
    scene = make_scene(**kw)
    plane_set = ("eg3d", "corrected")[kw["seed"] % 2]
    ref = render_scene(scene, "torch", plane_set=plane_set)
    errors = parity_errors(render_scene(scene, "cuda", precision=precision, plane_set=plane_set), ref)
    assert within(errors, precision), f"{precision}: {errors} exceeds {BOUNDS[precision]}"


@pytest.mark.parametrize("precision", MODES)
def test_sample_decode_every_mode(precision, emu_arch):
    scene = make_scene(seed=7, batch=2, plane_res=32)
    w = folded_decoder_weights(scene.decoder)
    pts = (torch.rand(2, 100, 3, generator=torch.Generator().manual_seed(7)) - 0.5) * 1.1  # some outside the box
    sigma_r, rgb_r = sample_decode_folded(scene.planes, *w, pts, 1.0)
    planes = scene.planes.permute(0, 1, 3, 4, 2).to(PLANE_DTYPES.get(precision, torch.float32)).contiguous()
    sigma, rgb = emu_arch.sample_decode_cuda(planes, *w, pts, 1.0, 0, precision)
    bound = BOUNDS[precision].rgb_atol
    assert bool(rgb.isfinite().all()) and bool(sigma.isfinite().all())
    assert float((rgb - rgb_r).abs().max()) <= bound
    assert float((sigma - sigma_r).abs().max()) <= bound * max(1.0, float(sigma_r.abs().max()))


@pytest.mark.parametrize("precision", MODES[1:])
@pytest.mark.parametrize("seed", [20, 21])
def test_gradients_in_reduced_precision(seed, precision, emu):
    s = make_scene(seed=seed, rays=24, n=10, n_f=8, plane_res=12)
    s.planes = s.planes.to(PLANE_DTYPES.get(precision, torch.float32)).float()  # the reference's planes rounded too
    _, ref, upstream = render_grads(s, "torch")
    _, grads, _ = render_grads(s, "cuda", upstream, dict(precision=precision))
    errors = grad_errors(grads, ref)
    assert max(errors.values()) <= REDUCED_GRAD_RTOL[precision], errors


@pytest.mark.parametrize("sms, reverse", [(1, False), (1, True), (64, True)])
def test_every_launch_configuration_gives_the_same_result(sms, reverse, emu):
    """The persistent grid (one block looping over every ray, or a block per 4 rays) and the order
    fibers reach each barrier change no forward bit, and the backward only in the atomics' order."""
    s = make_scene(seed=31, batch=2, rays=9, n=10, n_f=6, plane_res=12)
    emu.counters()  # reset
    out, grads, upstream = render_grads(s, "cuda")
    blocks = emu.counters()[0]
    cuda_emu.configure(emu, sms=sms, reverse=reverse)
    out2, grads2, _ = render_grads(s, "cuda", upstream)
    assert emu.counters()[0] != blocks  # the grid did change (2 SMs by default, 18 rays of 4 warps a block)
    for a, b in zip(out, out2):
        assert torch.equal(a, b)
    assert max(grad_errors(grads2, grads).values()) <= 1e-6


def test_too_many_samples_for_shared_memory_is_a_clear_error(emu):
    s = make_scene(seed=32, rays=4, n=24, n_f=24, plane_res=8)
    cuda_emu.configure(emu, smem=4096)  # a device with 4 KiB per block
    with pytest.raises(RuntimeError, match="shared memory for one warp"):
        render_scene(s, "cuda")
    planes = s.planes.clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="shared memory for one warp"):
        rf.ImportanceRenderer(backend="cuda")(planes, s.decoder, s.ray_origins, s.ray_directions, s.options,
                                              stratified_u=s.stratified_u, importance_u=s.importance_u)


def test_backward_before_compute_capability_8_is_a_clear_error(monkeypatch):
    cuda_emu.use(monkeypatch, arch=75)  # a T4, the build for it (the backward's body compiled out)
    s = make_scene(seed=33, rays=4, n=8, n_f=4, plane_res=8)
    render_scene(s, "cuda")  # the forward runs there
    with pytest.raises(RuntimeError, match="compute capability 8.0"):
        render_grads(s, "cuda")


def test_16bit_conversions_match_torch(emu):
    """emu.h's fp32 -> fp16 / bf16 rounding (the kernels' weights and packed operands) is torch's,
    bit for bit: random values over every binade both types have, their limits, halfway cases."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, generator=g) * torch.exp2(torch.randint(-30, 20, (200_000,), generator=g).float())
    special = [0.0, -0.0, float("inf"), -float("inf"), float("nan"), 65504.0, 65519.99, 65520.0, -65520.0,
               2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26, 2.0 ** -14 - 2.0 ** -25, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11,
               3.0e38, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 1e-40]
    x = torch.cat([x, torch.tensor(special)])
    for got, want in ((emu.round_half(x), x.half().float()), (emu.round_bf16(x), x.bfloat16().float())):
        nan = want.isnan()
        assert torch.equal(got.isnan(), nan)
        assert torch.equal(got[~nan].view(torch.int32), want[~nan].view(torch.int32))


def test_the_emulator_runs_a_correct_kernel(emu):
    """Two warps, each lane shuffling its index into the warp's sum."""
    want = torch.tensor([float(sum(range(32)))] * 32 + [float(sum(range(32, 64)))] * 32)
    assert torch.equal(emu.selftest("warp_sum"), want)


@pytest.mark.parametrize("name, message", [
    ("exited_lane", "with exited lanes"),
    ("divergent_barrier", "__syncthreads with exited threads"),
    ("mixed_warp_ops", "different warp operations"),
    ("smem_overflow", "wrote past its 256 bytes"),
])
def test_the_emulator_refuses_a_misbehaving_kernel(name, message, emu):
    with pytest.raises(RuntimeError, match=message):
        emu.selftest(name)


# The ASan run: every mode and both builds, forward and backward, on two scenes (a batch of 3 with
# odd ray counts; batch 2 with a small decoder), sample_decode, and the launch configurations.
ASAN_SELECTION = "not asan and (seed2 or seed9 or sample_decode or reduced or launch_configuration)"


def test_no_out_of_bounds_access_under_asan(tmp_path):
    """The emulation built with -fsanitize=address (RTGAZE_EMU_ASAN=1) runs ASAN_SELECTION of this
    file in a fresh Python with ASan's runtime preloaded: no report, every test passed. Writing
    each ray's depth a batch further on was reported (a heap-buffer-overflow at that line)."""
    why = why_missing("asan")
    if why is not None:
        skip_or_fail("asan", why)
    # Reports to files: pytest captures the inner tests' stderr, and ASan ends the process.
    env = dict(os.environ, RTGAZE_EMU_ASAN="1", LD_PRELOAD=cuda_emu.asan_preload(), RTGAZE_FAST_REQUIRE="",
               ASAN_OPTIONS=f"detect_leaks=0:log_path={tmp_path / 'asan'}")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
                          "-n", "0", str(Path(__file__)), "-k", ASAN_SELECTION],
                         cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=1200)
    reports = [p.read_text(errors="replace") for p in tmp_path.glob("asan*")]
    errors = [r for r in reports if "ERROR: AddressSanitizer" in r]
    assert not errors, errors[0][:6000]
    out = res.stdout + res.stderr
    assert res.returncode == 0 and " passed" in out and "failed" not in out, out[-6000:]
