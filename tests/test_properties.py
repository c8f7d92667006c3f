"""Property tests (issue #7): random shapes, sample counts, plane resolutions, batches, cameras and
options. The reference equals the naive float64 formulation, and every available fused backend
equals the reference within its fp32 bound, the CUDA backend's kernels too (run in the CPU
emulation of tests/cuda_emu).

CI runs a modest number of examples; run thousands locally with
``HYPOTHESIS_PROFILE=thorough scripts/test.sh tests/test_properties.py``.
"""
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cuda_emu
import naive_renderer as naive
from rtgaze_fast import ops
from rtgaze_fast.precision import parity_errors, within
from scenes import make_scene, render_scene
from test_reference import assert_close_to_naive

settings.register_profile("ci", max_examples=12, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

FUSED = [b for b in ops.available_backends("cpu") if b != "torch"]


@st.composite
def scenes(draw):
    n_f = draw(st.sampled_from([0, 1, 5, 8, 12]))
    options = dict(
        white_back=draw(st.booleans()),
        disparity_space_sampling=draw(st.booleans()),
        box_warp=draw(st.sampled_from([1.0, 0.8, 1.3])),
    )
    if draw(st.booleans()):
        options.update(ray_start="auto", ray_end="auto")
    return make_scene(
        seed=draw(st.integers(0, 2 ** 16)),
        batch=draw(st.integers(1, 3)),
        rays=draw(st.integers(1, 20)),
        channels=draw(st.sampled_from([16, 32])),
        plane_res=draw(st.integers(2, 24)),
        n=draw(st.integers(4 if n_f else 2, 20)),
        n_f=n_f,
        options=options,
    ), draw(st.sampled_from(["eg3d", "corrected"]))


@given(scenes())
def test_reference_equals_naive_float64(scene_and_planes):
    s, plane_set = scene_and_planes
    out = render_scene(s, plane_set=plane_set)
    ref = naive.render(s.planes, s.decoder, s.ray_origins, s.ray_directions, s.options, s.stratified_u,
                       s.importance_u, plane_set=plane_set)
    assert_close_to_naive(out, ref)


@pytest.mark.skipif(not FUSED, reason="no fused backend on this machine")
@given(scenes())
def test_fused_backends_equal_the_reference(scene_and_planes):
    s, plane_set = scene_and_planes
    ref = render_scene(s, plane_set=plane_set)
    for backend in FUSED:
        errors = parity_errors(render_scene(s, backend, plane_set=plane_set), ref)
        assert within(errors, "fp32"), f"{backend}: {errors}"


@given(scenes())
def test_emulated_cuda_equals_the_reference(scene_and_planes):
    s, plane_set = scene_and_planes
    ref = render_scene(s, plane_set=plane_set)
    with pytest.MonkeyPatch.context() as monkeypatch:
        cuda_emu.use(monkeypatch)
        errors = parity_errors(render_scene(s, "cuda", plane_set=plane_set), ref)
    assert within(errors, "fp32"), errors
