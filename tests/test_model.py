"""RTGaze model (issue #3): shapes, gradients, the gaze prompt, determinism, checkpoints, gaze maths."""
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from rtgaze_fast import RTGaze
from rtgaze_fast.gaze import angular_error_deg, gaze_to_vector, vector_to_gaze
from rtgaze_fast.model import CONFIGS


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return RTGaze("tiny", deterministic=True, **kw)


def inputs(b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 128, 128, generator=g) * 2 - 1, (torch.rand(b, 2, generator=g) - 0.5)


def test_tiny_output_shapes():
    out = tiny()(*inputs())
    assert tuple(out["image"].shape) == (2, 3, 64, 64)
    assert tuple(out["image_raw"].shape) == (2, 3, 32, 32)
    assert tuple(out["depth"].shape) == (2, 1, 32, 32)
    assert tuple(out["triplane"].shape) == (2, 3, 32, 64, 64)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_planes_start_near_unit_scale():
    # Without PLANE_INIT_GAIN the untrained planes have std ~0.08 and training cannot shape depth.
    torch.manual_seed(0)
    std = float(RTGaze("tiny").encode(*inputs()).std())
    assert 0.3 < std < 3, std


def test_base_shapes_and_size_on_meta():
    with torch.device("meta"):
        m = RTGaze("base")
        x, g = torch.empty(1, 3, 512, 512), torch.empty(1, 2)
        triplane = m.encode(x, g)
        image = m.superres(torch.empty(1, 32, 128, 128))
    assert tuple(triplane.shape) == (1, 3, 32, 256, 256)
    assert tuple(image.shape) == (1, 3, 512, 512)
    n = sum(p.numel() for p in m.parameters())
    assert 80e6 < n < 120e6, n  # documented in docs/model.md
    cfg = CONFIGS["base"]
    assert (cfg.ray_res, cfg.n_samples, cfg.n_importance, cfg.output_size) == (128, 48, 48, 512)


def test_gradients_reach_every_parameter():
    m = tiny()
    out = m(*inputs())
    (out["image"].mean() + out["depth"].mean() + out["image_raw"].mean()).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_gaze_prompt_changes_output_and_same_prompt_repeats():
    m = tiny().eval()
    x, g = inputs()
    a = m.redirect(x, g)
    b = m.redirect(x, g)
    c = m.redirect(x, g + 0.3)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-4


def test_redirect_uses_the_fused_backend_and_matches_the_reference():
    x, g = inputs(1)
    fast, ref = tiny(backend="auto").eval(), tiny(backend="torch").eval()
    a, b = fast.redirect(x, g), ref.redirect(x, g)
    assert (a - b).abs().max() < 1e-4


def test_checkpoint_round_trips_exactly(tmp_path):
    m = tiny(seed=3)
    path = str(tmp_path / "w.safetensors")
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, path)
    m2 = tiny(seed=4)
    m2.load_state_dict(load_file(path))
    x, g = inputs(1)
    assert torch.equal(m.redirect(x, g), m2.redirect(x, g))


def test_stage_timing_covers_every_stage():
    m = tiny().eval()
    with m.time_stages() as t, torch.no_grad():
        m(*inputs(1))
    assert set(t) == {"encoders", "gaze", "triplane", "render", "superres"} and all(v > 0 for v in t.values())


@pytest.mark.parametrize("bad, exc", [
    (dict(image=torch.zeros(1, 3, 64, 64)), ValueError),
    (dict(image=torch.zeros(1, 3, 128, 128, dtype=torch.uint8)), TypeError),
    (dict(gaze=torch.zeros(1, 3)), ValueError),
    (dict(camera=torch.zeros(1, 16)), ValueError),
])
def test_bad_model_inputs(bad, exc):
    x, g = inputs(1)
    args = dict(image=x, gaze=g, camera=None)
    args.update(bad)
    with pytest.raises(exc, match=next(iter(bad))):
        tiny()(**args)


def test_gaze_vector_convention_and_errors():
    assert torch.allclose(gaze_to_vector(torch.zeros(2)), torch.tensor([0.0, 0.0, -1.0]))
    up = gaze_to_vector(torch.tensor([0.3, 0.0]))
    assert up[1] < 0  # positive pitch: -y in the camera frame (y points down): looking up
    g = torch.tensor([[0.2, -0.4], [-0.1, 0.7]])
    assert torch.allclose(vector_to_gaze(gaze_to_vector(g)), g, atol=1e-6)
    assert float(angular_error_deg(g, g).max()) < 1e-4
    err = angular_error_deg(torch.tensor([0.0, 0.0]), torch.tensor([0.0, math.radians(10)]))
    assert abs(float(err) - 10) < 1e-3


@pytest.mark.parametrize("precision, atol", [
    ("fp32", 1e-5),   # fused CPU renderer + channels-last: summation order only
    ("bf16", 2e-2),   # bf16 autocast of the CNN/transformer parts (8-bit mantissa); measured ~1e-3
])
def test_optimized_path_stays_close(precision, atol):
    ref = tiny(backend="torch").eval()
    fast = tiny(seed=5)
    fast.load_state_dict(ref.state_dict())
    fast.optimize(precision=precision)
    x, g = inputs()
    with torch.no_grad():
        a, b = ref(x, g), fast(x, g)
    for k in ("image", "image_raw", "depth"):
        assert torch.isfinite(b[k]).all()
        assert (a[k] - b[k]).abs().max() <= atol, (k, float((a[k] - b[k]).abs().max()))


def test_optimize_refuses_bad_options():
    with pytest.raises(ValueError, match="precision"):
        tiny().optimize(precision="fp8")
    with pytest.raises(ValueError, match="cuda_graphs"):
        tiny().optimize(cuda_graphs=True)


# ---------------------------------------------------------------- the shipped weights redirect the gaze

# Requested head-frame gazes (pitch, yaw), radians: up / down / to each side by 0.3 from straight ahead.
REQUESTS = {"ahead": (0.0, 0.0), "up": (0.3, 0.0), "down": (-0.3, 0.0), "yaw+": (0.0, 0.3), "yaw-": (0.0, -0.3)}


@pytest.fixture(scope="module")
def shipped_redirects():
    """One held-out synthetic face redirected by the embedded tiny weights to each of REQUESTS."""
    from rtgaze_fast.cli import default_weights, load_weights
    from rtgaze_fast.train.recipe import dataset_for
    model = RTGaze("tiny", deterministic=True)
    load_weights(model, default_weights("tiny"))
    model = model.float().eval()
    ds = dataset_for(model.config, 1, 0, split="test", samples_per_identity=1, variety=1)  # their data's generator
    item = ds[0]
    with torch.no_grad():
        out = {k: model.redirect(item["image"][None], torch.tensor([g]), item["camera"][None])[0]
               for k, g in REQUESTS.items()}
    return item, ds.identity(0), out


def test_shipped_weights_move_the_gaze_the_requested_way(shipped_redirects):
    """The gaze read off each redirected image (the analytic estimator of the synthetic data) moves
    from the straight-ahead request's toward each requested direction by at least a third of the
    0.3 rad asked. Measured at commit time: 0.22-0.39 rad. (The estimator compares at the blurs of
    the model's 64x64 output, 1 and 2 px: its default also tries 0 and 3, which read the same
    gazes here at 2.5x the cost.)"""
    from rtgaze_fast.data.synthetic import estimate_gaze
    item, identity, out = shipped_redirects
    est = {k: torch.tensor(estimate_gaze(img, identity, item["camera"], blur_sigmas=(1.0, 2.0)))
           for k, img in out.items()}
    for k in ("up", "down", "yaw+", "yaw-"):
        asked = torch.tensor(REQUESTS[k])
        moved = float((est[k] - est["ahead"]) @ (asked / asked.norm()))
        assert moved > 0.1, (k, {n: tuple(round(float(x), 3) for x in v) for n, v in est.items()})


def test_shipped_weights_change_the_eyes_more_than_the_rest(shipped_redirects):
    """Between opposite requests the mean pixel change inside the (dilated) eye-region mask is over
    twice that outside it. Measured at commit time: 4.1x (up/down), 4.4x (sideways)."""
    from torch.nn import functional as F
    item, _, out = shipped_redirects
    eyes = F.max_pool2d(item["eye_mask"][None], 9, stride=1, padding=4)[0, 0] > 0.5   # 4 pixels of margin
    assert 0.05 < float(eyes.float().mean()) < 0.4
    for a, b in (("up", "down"), ("yaw+", "yaw-")):
        change = (out[a] - out[b]).abs().mean(0)
        inside, outside = float(change[eyes].mean()), float(change[~eyes].mean())
        assert inside > 2 * outside, (a, b, inside, outside)


def test_tiny_hr_renders_at_the_output_size_and_warm_starts_with_tinys_planes():
    """Issue #19: tiny_hr = tiny + the planes' full-resolution skip (zero at initialisation) + rays at
    the output size (the super-resolution refines without upsampling). Loaded with tiny's weights
    it must produce tiny's triplane exactly; a trained skip must change it."""
    src = tiny()
    hr = RTGaze("tiny_hr", deterministic=True)
    missing = hr.load_state_dict(src.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["triplane.skip.bias", "triplane.skip.weight"]
    image, gaze = inputs(1)
    out = hr(image, gaze)
    assert tuple(out["image"].shape) == tuple(out["image_raw"].shape) == (1, 3, 64, 64)
    assert tuple(out["depth"].shape) == (1, 1, 64, 64) and all(torch.isfinite(v).all() for v in out.values())
    with torch.no_grad():
        assert torch.equal(hr.encode(image, gaze), src.encode(image, gaze))
        hr.triplane.skip.bias.fill_(0.5)
        assert not torch.equal(hr.encode(image, gaze), src.encode(image, gaze))
    from dataclasses import replace
    from rtgaze_fast.model.superres import SuperResolution
    with pytest.raises(ValueError, match="power of 2"):
        SuperResolution(replace(CONFIGS["tiny"], ray_res=128))
