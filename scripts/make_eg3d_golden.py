"""Record golden outputs of EG3D's own renderer, for tests/test_reference.py (issue #2).

Usage::

    git -C /path/to/eg3d-mirror archive HEAD eg3d | tar -x -C "$EG3D_SRC"
    python scripts/make_eg3d_golden.py --eg3d "$EG3D_SRC"/eg3d [--out tests/golden]

``--eg3d`` is the ``eg3d/`` folder of an EG3D checkout (the one holding ``training/`` and
``camera_utils.py``). Nothing of EG3D is copied into this repository: this script imports
EG3D's modules from that folder at run time and writes ONLY numbers (safetensors tensors and a
JSON string of the case's options / camera parameters in the file's metadata).

How EG3D is run:

* ``training.triplane.OSGDecoder``, ``training.volumetric_rendering.renderer.ImportanceRenderer``,
  ``training.volumetric_rendering.ray_sampler.RaySampler`` and
  ``camera_utils.LookAtPoseSampler`` / ``FOV_to_intrinsics`` are imported unchanged. Importing
  ``triplane.py`` pulls in ``dnnlib``, whose ``util.py`` imports ``requests`` (only used to
  download files). When ``requests`` is not installed an empty stand-in module is put in
  ``sys.modules['requests']``; nothing else is stubbed, EG3D's custom CUDA ops are never built
  (the decoder's FullyConnectedLayers are 'linear' and use ``torch.addmm``).
* Random numbers: every case seeds torch (``torch.manual_seed(case.seed)``) right before the
  render, and ``torch.rand``, ``torch.rand_like`` and ``torch.randn_like`` are wrapped for the
  duration of the render so that each tensor EG3D draws is recorded (in draw order). The test
  injects the recorded u's, and separately re-seeds and lets the package draw on its own.
* Planes are C=32, 32x32; their base values are stored once (fp16-representable, so the file
  stays small) in ``planes.safetensors`` and each case builds its planes as
  ``base[idx].float() * scale + bias`` in fp32 (exact IEEE ops, redone identically by the test).

Each case file ``case_<name>.safetensors`` holds: ``planes_idx``; decoder weights under EG3D's
state_dict keys prefixed ``decoder.``; ``cam_h``, ``cam_v`` (B,), ``cam_lookat`` (3,),
``cam2world`` (B,4,4), ``intrinsics`` (B,3,3), ``ray_origins``/``ray_directions`` (B,R,3) from
EG3D's RaySampler; the recorded draws ``stratified_u`` (B,R,N), ``importance_u`` (B,R,N_f),
``coarse_noise`` (B,R*N,1) / ``fine_noise`` (B,R*N_f,1) (unscaled randn, density-noise case
only); and EG3D's outputs ``rgb``, ``depth``, ``weights_sum``. The metadata key ``case`` is a
JSON dict: rendering options, seed, plane scale/bias, camera radius, fov, ray resolution.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import types

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))

BASE = dict(ray_start=2.25, ray_end=3.3, box_warp=1, depth_resolution=48, depth_resolution_importance=48,
            disparity_space_sampling=False, clamp_mode="softplus", white_back=False,
            # keys EG3D's rendering_kwargs carry that the renderer ignores
            decoder_lr_mul=1, decoder_output_dim=32, superresolution_module="x", c_gen_conditioning_zero=False)

# name, batch, plane indices into the base set, ray res, options override, extras
CASES = [
    dict(name="ffhq48", planes=[0], res=8, opts=dict(), fov=18.837, sigma_bias=2.0),
    dict(name="b2_12_8_disp_white", planes=[1, 2], res=10, fov=18.837, sigma_bias=4.0,
         opts=dict(depth_resolution=12, depth_resolution_importance=8, disparity_space_sampling=True,
                   white_back=True)),
    dict(name="coarse16_white", planes=[3], res=12, fov=18.837, sigma_bias=1.0, scale=2.0,
         opts=dict(depth_resolution=16, depth_resolution_importance=0, white_back=True)),
    dict(name="auto_b2", planes=[0, 3], res=16, fov=45.0, sigma_bias=3.0, radius=2.4,
         opts=dict(ray_start="auto", ray_end="auto", box_warp=0.8, depth_resolution=24,
                   depth_resolution_importance=16)),
    dict(name="noise_b1", planes=[2], res=8, fov=18.837, sigma_bias=2.0,
         opts=dict(depth_resolution=12, depth_resolution_importance=12, density_noise=0.5)),
    dict(name="b2_48_48_white_warp", planes=[1, 0], res=8, fov=18.837, sigma_bias=6.0, scale=0.5, bias=0.25,
         opts=dict(white_back=True, box_warp=1.2, ray_start=2.0, ray_end=3.4)),
    dict(name="auto_b1_disp_off_48", planes=[1], res=9, fov=40.0, sigma_bias=0.0,
         opts=dict(ray_start="auto", ray_end="auto", box_warp=0.9, depth_resolution=48,
                   depth_resolution_importance=48)),
]


def import_eg3d(eg3d_dir: str):
    sys.path.insert(0, os.path.abspath(eg3d_dir))
    try:
        import requests  # noqa: F401
    except ImportError:  # dnnlib.util imports it for downloads only
        sys.modules["requests"] = types.ModuleType("requests")
    from camera_utils import FOV_to_intrinsics, LookAtPoseSampler
    from training.triplane import OSGDecoder
    from training.volumetric_rendering.ray_sampler import RaySampler
    from training.volumetric_rendering.renderer import ImportanceRenderer
    return dict(FOV_to_intrinsics=FOV_to_intrinsics, LookAtPoseSampler=LookAtPoseSampler,
                OSGDecoder=OSGDecoder, RaySampler=RaySampler, ImportanceRenderer=ImportanceRenderer)


class Recorder:
    """Wrap torch.rand / rand_like / randn_like while EG3D renders; keep what they return."""

    def __init__(self):
        self.draws = []

    def __enter__(self):
        self.saved = {k: getattr(torch, k) for k in ("rand", "rand_like", "randn_like", "randn")}
        for k, fn in self.saved.items():
            setattr(torch, k, self._wrap(k, fn))
        return self

    def _wrap(self, kind, fn):
        def wrapped(*a, **kw):
            out = fn(*a, **kw)
            self.draws.append((kind, out.detach().clone()))
            return out
        return wrapped

    def __exit__(self, *exc):
        for k, fn in self.saved.items():
            setattr(torch, k, fn)


def run_case(eg, case, base_planes, seed):
    opts = dict(BASE, **case["opts"])
    b = len(case["planes"])
    gen = torch.Generator().manual_seed(1000 + seed)
    planes = base_planes[case["planes"]].float() * case.get("scale", 1.0) + case.get("bias", 0.0)

    # Decoder: EG3D's own class, random weights and non-zero biases (EG3D initialises biases to 0).
    dec = eg["OSGDecoder"](32, dict(decoder_lr_mul=1, decoder_output_dim=32))
    with torch.no_grad():
        for name, p in dec.named_parameters():
            scale = 1.0 if p.dim() == 2 else 0.5
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
        dec.net[2].bias[0] += case["sigma_bias"]

    # Cameras: one LookAtPoseSampler call per batch element (its h/v are scalars).
    h = (math.pi / 2 + (torch.rand(b, generator=gen) * 2 - 1) * 0.4).float()
    v = (math.pi / 2 + (torch.rand(b, generator=gen) * 2 - 1) * 0.3).float()
    lookat = torch.tensor([0.0, 0.0, 0.2])
    radius = case.get("radius", 2.7)
    cam2world = torch.cat([eg["LookAtPoseSampler"].sample(float(h[i]), float(v[i]), lookat, radius=radius)
                           for i in range(b)])
    intr = eg["FOV_to_intrinsics"](case["fov"]).unsqueeze(0).repeat(b, 1, 1)
    ro, rd = eg["RaySampler"]()(cam2world, intr, case["res"])

    renderer = eg["ImportanceRenderer"]()
    torch.manual_seed(seed)
    with torch.no_grad(), Recorder() as rec:
        rgb, depth, wsum = renderer(planes, dec, ro.clone(), rd.clone(), dict(opts))
    kinds = [k for k, _ in rec.draws]
    r = ro.shape[1]
    n, n_f = opts["depth_resolution"], opts["depth_resolution_importance"]
    noisy = opts.get("density_noise", 0) > 0
    expect = ["rand_like"] + (["randn_like"] if noisy else []) + (
        ["rand"] + (["randn_like"] if noisy else []) if n_f > 0 else [])
    assert kinds == expect, (case["name"], kinds)
    draws = [t for _, t in rec.draws]
    out = {"planes_idx": torch.tensor(case["planes"], dtype=torch.int64),
           "cam_h": h, "cam_v": v, "cam_lookat": lookat, "cam2world": cam2world, "intrinsics": intr,
           "ray_origins": ro, "ray_directions": rd,
           "stratified_u": draws.pop(0).reshape(b, r, n)}
    if noisy:
        out["coarse_noise"] = draws.pop(0)
    if n_f > 0:
        out["importance_u"] = draws.pop(0).reshape(b, r, n_f)
        if noisy:
            out["fine_noise"] = draws.pop(0)
    for k, t in dec.state_dict().items():
        out["decoder." + k] = t
    out.update(rgb=rgb, depth=depth, weights_sum=wsum)
    if opts["ray_start"] == "auto":
        from training.volumetric_rendering import math_utils
        s, e = math_utils.get_ray_limits_box(ro, rd, opts["box_warp"])
        missed = int((e <= s).sum())
        assert 0 < missed < s.numel(), (case["name"], missed)
        print(f"  {case['name']}: {missed} of {s.numel()} rays miss the box")
    meta = {k: v for k, v in opts.items() if k in ("ray_start", "ray_end", "box_warp", "depth_resolution",
            "depth_resolution_importance", "disparity_space_sampling", "clamp_mode", "white_back",
            "density_noise")}
    info = dict(options=opts, seed=seed, scale=case.get("scale", 1.0), bias=case.get("bias", 0.0),
                radius=radius, fov=case["fov"], res=case["res"], name=case["name"], renderer_options=meta)
    return {k: v.contiguous() for k, v in out.items()}, info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eg3d", required=True, help="EG3D's eg3d/ folder (holds training/ and camera_utils.py)")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "golden"))
    args = ap.parse_args(argv)
    eg = import_eg3d(args.eg3d)
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)

    gen = torch.Generator().manual_seed(20240601)
    base = torch.randn(4, 3, 32, 32, 32, generator=gen).half()
    save_file({"planes": base}, os.path.join(args.out, "planes.safetensors"),
              metadata={"about": "base planes (fp16 values); case planes = base[idx].float()*scale+bias"})
    names = []
    for i, case in enumerate(CASES):
        tensors, info = run_case(eg, case, base, seed=7 + i)
        path = os.path.join(args.out, f"case_{case['name']}.safetensors")
        save_file(tensors, path, metadata={"case": json.dumps(info)})
        names.append(case["name"])
        print(f"{case['name']}: B={tensors['ray_origins'].shape[0]} R={tensors['ray_origins'].shape[1]} "
              f"wsum mean {float(tensors['weights_sum'].mean()):.3f} -> {path}")
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump({"cases": names, "torch": torch.__version__,
                   "eg3d": "NVlabs/eg3d eg3d/ (see scripts/make_eg3d_golden.py)"}, f, indent=1)


if __name__ == "__main__":
    main()
