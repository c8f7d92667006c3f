"""A tiny render with every GPU backend and mode, run under compute-sanitizer by gpu_suite.sh."""
import sys

import torch

import rtgaze_fast as rf
from rtgaze_fast.ops import BACKEND_PRECISIONS

sys.path.insert(0, "tests")
from scenes import make_scene, render_scene  # noqa: E402

s = make_scene(seed=1, batch=2, rays=77, n=12, n_f=8, plane_res=16)
for name in ("planes", "ray_origins", "ray_directions", "stratified_u", "importance_u"):
    setattr(s, name, getattr(s, name).cuda())
s.decoder = s.decoder.cuda()
for backend in rf.available_backends("cuda"):
    for precision in BACKEND_PRECISIONS.get(backend, ("fp32",)):
        render_scene(s, backend, precision=precision)
torch.cuda.synchronize()
print("sanitizer case done")
