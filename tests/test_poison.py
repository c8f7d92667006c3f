"""The parity checks can fail: ``parity_errors`` flags NaN/Inf itself (depth everywhere), and output
poisoning is on, so a kernel that leaves the tail of its outputs unwritten fails parity.

The fault is injected into the real kernels (tests/parity_cases.py ``skip_tail``): the compiled
backends honour ``RTGAZE_FAST_TEST_SKIP_TAIL=k`` (csrc/torch/checks.h: the render op leaves its
last k rays unwritten), the emulated CUDA backend (tests/cuda_emu) too; the Triton render kernel
is launched with one program fewer than it needs. tests/test_gpu_parity.py does the same for
cuda and triton on a GPU.
"""
import os

import pytest
import torch

from rtgaze_fast import ops
from rtgaze_fast.precision import parity_errors, within
import cuda_emu
import parity_cases
from scenes import make_scene, render_scene

FUSED = [b for b in ("cpu", "triton") if ops.why_unavailable(b, "cpu") is None]


def _outputs(seed=0, b=2, r=5, o=3):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(b, r, o, generator=g)
    wsum = torch.rand(b, r, 1, generator=g)
    wsum[0, 0] = 0.0                        # an empty ray: its depth error is not measured
    depth = 2 + torch.rand(b, r, 1, generator=g)
    return rgb, depth, wsum


def test_parity_errors_flag_nan_and_inf_themselves():
    ref = _outputs()
    assert within(parity_errors(ref, ref), "fp32") and parity_errors(ref, ref)["finite"]
    for i, where in ((1, (0, 0, 0)), (0, (1, 2, 1)), (2, (0, 3, 0))):   # depth of the empty ray; rgb; wsum
        for bad in (float("nan"), float("inf")):
            out = [t.clone() for t in ref]
            out[i][where] = bad
            errors = parity_errors(out, ref)
            assert not errors["finite"] and not within(errors, "fp32"), (i, bad, errors)
    # NaN where the reference has NaN too (NaN in, NaN out) is not the output's fault
    ref_nan = [t.clone() for t in ref]
    ref_nan[1][0, 0, 0] = float("nan")
    assert parity_errors(ref_nan, ref_nan)["finite"]
    with pytest.raises(ValueError, match="rgb"):
        parity_errors((ref[0][:, :-1],) + ref[1:], ref)


def test_poisoning_is_on_in_this_suite():
    assert os.environ.get("RTGAZE_FAST_POISON") == "1" and ops.poison_enabled()
    assert bool(ops.new_output((3, 4), torch.zeros(1)).isnan().all())


@pytest.mark.parametrize("backend", FUSED + [cuda_emu.EMULATED])
def test_a_kernel_leaving_its_tail_unwritten_fails_parity(backend, monkeypatch):
    backend = cuda_emu.backend(backend, monkeypatch)
    # 2 x 20 rays: two programs of the interpreter's 32-ray blocks, so the short grid skips 8 rays.
    s = make_scene(seed=3, batch=2, rays=20, n=6, n_f=4, plane_res=8)
    ref = render_scene(s)
    assert within(parity_errors(render_scene(s, backend), ref), "fp32")
    parity_cases.skip_tail(backend, monkeypatch, rays=8)
    out = render_scene(s, backend)
    errors = parity_errors(out, ref)
    assert not errors["finite"] and not within(errors, "fp32"), errors
    # The fault is the tail alone: the rays before it were written, the last 8 were not.
    assert parity_cases.unwritten_tail(out[0]) == 8
