"""A tiny render with every GPU backend and mode, and a backward through every GPU backend that has
one, run under compute-sanitizer by gpu_suite.sh."""
import sys

import torch

import rtgaze_fast as rf
from rtgaze_fast.ops import BACKEND_PRECISIONS, has_backward

sys.path.insert(0, "tests")
from scenes import make_scene, render_scene  # noqa: E402

s = make_scene(seed=1, batch=2, rays=77, n=12, n_f=8, plane_res=16)
for name in ("planes", "ray_origins", "ray_directions", "stratified_u", "importance_u"):
    setattr(s, name, getattr(s, name).cuda())
s.decoder = s.decoder.cuda()
for backend in rf.available_backends("cuda"):
    for precision in BACKEND_PRECISIONS.get(backend, ("fp32",)):
        render_scene(s, backend, precision=precision)
planes = s.planes.clone().requires_grad_(True)
for backend in [b for b in rf.available_backends("cuda") if b != "torch" and has_backward(b)]:
    for precision in BACKEND_PRECISIONS.get(backend, ("fp32",)):
        out = rf.ImportanceRenderer(backend=backend, precision=precision)(
            planes, s.decoder, s.ray_origins, s.ray_directions, s.options, stratified_u=s.stratified_u,
            importance_u=s.importance_u)
        sum(o.float().sum() for o in out[:3]).backward()
torch.cuda.synchronize()
print("sanitizer case done")
