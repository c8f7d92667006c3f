"""The compiled CPU backend beyond the shared op tests (tests/test_ops.py): its two builds, the
AVX2+FMA kernels and the baseline ones (chosen at run time, forced with RTGAZE_FAST_CPU_ISA),
render the same image."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rtgaze_fast import ops

ROOT = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(ops.why_unavailable("cpu", "cpu") is not None, reason="cpu backend not built")

# Renders one scene (both code paths of the kernels: the fixed EG3D sizes and a generic decoder)
# with the cpu backend and the reference; prints the ISA and the largest parity errors.
_SCRIPT = """
import torch
from rtgaze_fast import _ext
from rtgaze_fast.precision import parity_errors
from scenes import make_scene, render_scene
worst = {}
for kw in (dict(seed=11, batch=2, rays=77, n=24, n_f=20, plane_res=32),
           dict(seed=12, rays=50, n=16, n_f=8, plane_res=16, channels=16, hidden=24, out_dim=3)):
    scene = make_scene(**kw)
    errors = parity_errors(render_scene(scene, "cpu"), render_scene(scene, "torch"))
    assert errors["finite"], errors
    for k in ("rgb", "wsum", "depth"):
        worst[k] = max(worst.get(k, 0.0), errors[k])
print(_ext.load().cpu_isa(), worst["rgb"], worst["wsum"], worst["depth"])
"""


@pytest.mark.parametrize("isa", ["baseline", "auto"])
def test_each_cpu_build_matches_the_reference(isa):
    from tolerances import FP32_DEPTH_ATOL, FP32_RGB_ATOL, FP32_WSUM_ATOL
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("RTGAZE_FAST_CPU_ISA", None)
    if isa == "baseline":
        env["RTGAZE_FAST_CPU_ISA"] = "baseline"
    res = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    name, rgb, wsum, depth = res.stdout.split()
    if isa == "baseline":
        assert name == "baseline"
    assert float(rgb) <= FP32_RGB_ATOL and float(wsum) <= FP32_WSUM_ATOL and float(depth) <= FP32_DEPTH_ATOL
