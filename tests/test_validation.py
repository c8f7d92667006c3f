"""Issue #2 (d): every validation error of parse_options, ImportanceRenderer and RaySampler.

Each case asserts the exception type and that the message names the argument at fault.
Tensor arguments are covered, for every backend, by the bad-input matrix in
tests/test_bad_inputs.py; this file covers the options, the renderer's constructor, the
registry and the camera helpers, which do not depend on a backend.
"""
import math

import pytest
import torch

import rtgaze_fast as rf
from rtgaze_fast import ops
from rtgaze_fast.camera import RaySampler, split_camera_label
from rtgaze_fast.options import parse_options, plane_set_index

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
