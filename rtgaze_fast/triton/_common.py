"""Shared pieces of the Triton kernels: per-sample math as @triton.jit helpers (bilinear taps,
projection, mean of planes, the decoder MLP), launch configuration, op registration, and the
host-side checks every wrapper makes."""
from __future__ import annotations

import contextlib
import inspect
import os
from typing import List, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op

from .. import ops

# The interpreter (CPU tests) runs ~5 ms per program instance and cannot autotune over several
# configs: one large block there; on a GPU the kernels autotune.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# Autotuning compiles every config of every specialisation (the renderer: 10-25 s each), so a
# test suite with many shapes spends minutes compiling. RTGAZE_FAST_TRITON_AUTOTUNE=0 launches
# each kernel's first (default) config only.
AUTOTUNE = os.environ.get("RTGAZE_FAST_TRITON_AUTOTUNE", "1") != "0"

# Decoder sizes (C, hidden, out_dim) are zero-padded to powers of two >= 16 for tl.dot;
# above this the two layers no longer fit one program's registers.
MAX_DECODER_SIZE = 128

_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}
# torch 2.13 accepts (and ignores) triton_op's schema argument; older ones lack it. Either way
# the schema is inferred from the annotations, and register() checks it equals ops.SCHEMAS.
_TAKES_SCHEMA = "schema" in inspect.signature(triton_op).parameters


def register(family: str):
    """Decorator: register ``fn`` as ``rtgaze_fast::<family>_triton`` with the family's schema."""
    name = f"{ops.NAMESPACE}::{ops.op_name(family, 'triton')}"
    extra = {"schema": ops.SCHEMAS[family]} if _TAKES_SCHEMA else {}

    def dec(fn):
        op = triton_op(name, mutates_args=(), **extra)(fn)
        got = str(getattr(getattr(torch.ops, ops.NAMESPACE), ops.op_name(family, "triton")).default._schema)
        # triton_op infers int arguments as SymInt, which accepts the same values.
        if _squash(got.split("(", 1)[1].replace("SymInt", "int")) != _squash(ops.SCHEMAS[family].split("(", 1)[1]):
            raise RuntimeError(f"{name} registered with schema {got}, not ops.SCHEMAS[{family!r}]")
        return op
    return dec


def _squash(s: str) -> str:
    return s.replace(" ", "")


def launch_configs(block: str, gpu: Sequence[Tuple], interpreter_block: int) -> List[triton.Config]:
    """Autotune configs from (block size, num_warps[, maxnreg[, num_stages]]) tuples, the first
    being the default: all of them on a GPU, the first alone with autotuning off, one large block
    under the interpreter. ``python -m rtgaze_fast.triton.aot --all-configs`` compiles each for
    sm_90 (CI does). A maxnreg of 255 matters where ptxas, left to itself, squeezes a kernel to 32
    registers per thread and spills kilobytes (the fused renderer in fp32); num_stages 1 turns off
    the software pipelining of a kernel's loops (Triton's default is 3 stages)."""
    if INTERPRET:
        return [triton.Config({block: interpreter_block}, num_warps=4)]
    return [triton.Config({block: c[0]}, num_warps=c[1], maxnreg=c[2] if len(c) > 2 else None,
                          num_stages=c[3] if len(c) > 3 else 3)
            for c in (gpu if AUTOTUNE else gpu[:1])]


def launch_device(device: torch.device):
    """The context every kernel launch runs in: the tensors' own CUDA device. Triton launches on
    the current device (and its current stream), not on the arguments' device, so without this
    a render of tensors on cuda:1 while cuda:0 is current runs on the wrong GPU (an illegal
    address, or another device's memory). CPU tensors (the interpreter) need nothing; under
    torch.compile, Inductor guards the device of the kernels it emits."""
    if device.type != "cuda" or torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return torch.cuda.device(device)


def next_pow2(n: int, minimum: int = 1) -> int:
    return max(minimum, triton.next_power_of_2(int(n)))


def check(name: str, t: Tensor, dim: int, dtypes=(torch.float32,), device=None) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if t.dim() != dim:
        raise ValueError(f"{name} must be {dim}-D, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype {' or '.join(map(str, dtypes))}, got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, the planes on {device}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    if t.numel() > 2 ** 31 - 1:
        raise ValueError(f"{name} has {t.numel()} elements, more than the kernels index (2**31-1)")


def check_planes(planes: Tensor, precision: str) -> None:
    dot_mode(precision)
    check("planes", planes, 5, (torch.float32, _HALF.get(precision, torch.float32)))
    if planes.shape[1] != 3:
        raise ValueError(f"planes must be (B, 3, H, W, C) channels-last, got {tuple(planes.shape)}")
    if planes.device.type != "cuda" and not INTERPRET:
        raise ValueError(f"the triton backend needs CUDA tensors (planes are on {planes.device}); CPU tensors "
                         "run only under TRITON_INTERPRET=1, for tests")


# (DOT_DTYPE, PREC) per mode: the decoder dots' operand type and tl.dot's input_precision (which
# applies to fp32 operands: "ieee" is FMA on CUDA cores, "tf32" one tensor-core pass with 10-bit
# mantissas, "tf32x3" three passes, hi*hi + hi*lo + lo*hi, near fp32). The interpreter ignores
# input_precision: every fp32 dot is IEEE there.
_DOT_MODES = {"fp32": (tl.float32, "ieee"), "tf32": (tl.float32, "tf32"), "fp16": (tl.float16, "tf32"),
              "bf16": (tl.bfloat16, "tf32"), "tf32x3": (tl.float32, "tf32x3")}


def dot_mode(precision: str):
    """(DOT_DTYPE, PREC) constexprs of a precision mode."""
    if precision not in ops.BACKEND_PRECISIONS["triton"]:
        raise ValueError(f"precision must be one of {ops.BACKEND_PRECISIONS['triton']}, got {precision!r}")
    return _DOT_MODES[precision]


def prepare_decoder(w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, channels: int, device):
    """Checked, transposed weights zero-padded to powers of two >= 16 (zero weights add nothing),
    the density row of the second layer apart: (w1t (CP, HDP), b1 (HDP,), w2t (HDP, OP) colour
    columns, w2s (HDP,) density weights, b2 (1 + OP,) density then colour biases, O). The
    density as a dot product of its own keeps the colour matmul a power of two wide (32, not
    1 + 32 padded to 64, for EG3D's decoder): 32% fewer decoder FLOPs, half the per-sample
    output registers."""
    for name, t, dim in (("w1", w1, 2), ("b1", b1, 1), ("w2", w2, 2), ("b2", b2, 1)):
        check(name, t, dim, device=device)
    hd, o1 = w1.shape[0], w2.shape[0]  # o1 = 1 + out_dim
    if w1.shape[1] != channels or b1.shape != (hd,) or w2.shape[1] != hd or b2.shape != (o1,):
        raise ValueError(f"decoder weights do not chain: w1 {tuple(w1.shape)}, b1 {tuple(b1.shape)}, "
                         f"w2 {tuple(w2.shape)}, b2 {tuple(b2.shape)} for C={channels}")
    if max(channels, hd, o1 - 1) > MAX_DECODER_SIZE or o1 < 2:
        raise ValueError(f"the triton backend supports decoders with C, hidden and out_dim each at most "
                         f"{MAX_DECODER_SIZE} (any size; padded to powers of two >= 16) and out_dim >= 1; got "
                         f"C={channels}, hidden={hd}, out_dim={o1 - 1}")
    cp, hdp, op = next_pow2(channels, 16), next_pow2(hd, 16), next_pow2(o1 - 1, 16)
    return (_pad(w1.t(), (cp, hdp)), _pad(b1, (hdp,)), _pad(w2[1:].t(), (hdp, op)), _pad(w2[0], (hdp,)),
            _pad(b2, (1 + op,)), o1 - 1)


def _pad(t: Tensor, shape) -> Tensor:
    out = torch.zeros(shape, device=t.device, dtype=torch.float32)
    out[tuple(slice(0, n) for n in t.shape)] = t
    return out


@triton.jit
def softplus(x):
    # torch's softplus(beta=1, threshold=20), overflow-free.
    return tl.where(x > 20.0, x, tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x))))


@triton.jit
def widened_sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x)) * (1.0 + 2.0 * 0.001) - 0.001


@triton.jit
def bilinear_tap(planes_ptr, base, u, v, H, W, C, CP: tl.constexpr, mask):
    """Bilinear tap (zeros outside, align_corners=False) of one channels-last plane: (BLOCK, CP),
    channels past C zero. Half planes are converted to fp32 right after loading."""
    ix = ((u + 1.0) * W - 1.0) * 0.5
    iy = ((v + 1.0) * H - 1.0) * 0.5
    fx = tl.floor(ix)
    fy = tl.floor(iy)
    tx = ix - fx
    ty = iy - fy
    x0 = fx.to(tl.int32)
    y0 = fy.to(tl.int32)
    c = tl.arange(0, CP)
    acc = tl.zeros((u.shape[0], CP), dtype=tl.float32)
    for k in tl.static_range(4):
        x = x0 + (k % 2)
        y = y0 + (k // 2)
        wx = tx if k % 2 == 1 else 1.0 - tx
        wy = ty if k // 2 == 1 else 1.0 - ty
        ok = mask & (x >= 0) & (x < W) & (y >= 0) & (y < H)
        off = base + (y * W + x).to(tl.int64) * C
        val = tl.load(planes_ptr + off[:, None] + c[None, :], mask=ok[:, None] & (c < C)[None, :],
                      other=0.0).to(tl.float32)
        acc += (wx * wy)[:, None] * val
    # NaN coordinates propagate like grid_sample (every weight is NaN).
    return tl.where((ix != ix)[:, None] | (iy != iy)[:, None], float("nan"), acc)


@triton.jit
def triplane_features(planes_ptr, b_idx, qx, qy, qz, mask, H, W, C, CP: tl.constexpr, PLANE_SET: tl.constexpr):
    """The mean of the three planes' bilinear taps (BLOCK, CP) at the scaled points q = (2 / box_warp) p."""
    plane = H * W * C
    base = b_idx.to(tl.int64) * 3 * plane
    feat = bilinear_tap(planes_ptr, base, qx, qy, H, W, C, CP, mask)
    feat += bilinear_tap(planes_ptr, base + plane, qx, qz, H, W, C, CP, mask)
    if PLANE_SET == 0:
        feat += bilinear_tap(planes_ptr, base + 2 * plane, qz, qx, H, W, C, CP, mask)  # EG3D's ZX plane
    else:
        feat += bilinear_tap(planes_ptr, base + 2 * plane, qy, qz, H, W, C, CP, mask)
    return feat / 3.0


@triton.jit
def decoder_mlp(feat, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, CP: tl.constexpr, HD: tl.constexpr,
                OP: tl.constexpr, DOT_DTYPE: tl.constexpr, PREC: tl.constexpr):
    """The decoder's two layers on (BLOCK, CP) features: the hidden layer before the softplus
    (BLOCK, HD), after it, sigma_raw (BLOCK,) and the colour logits (BLOCK, OP) before the
    widened sigmoid."""
    c = tl.arange(0, CP)
    h = tl.arange(0, HD)
    o = tl.arange(0, OP)
    w1 = tl.load(w1t_ptr + c[:, None] * HD + h[None, :])
    w2 = tl.load(w2t_ptr + h[:, None] * OP + o[None, :])
    pre = tl.dot(feat.to(DOT_DTYPE), w1.to(DOT_DTYPE), input_precision=PREC)
    pre = pre + tl.load(b1_ptr + h)[None, :]
    hid = softplus(pre)
    out = tl.dot(hid.to(DOT_DTYPE), w2.to(DOT_DTYPE), input_precision=PREC)
    out = out + tl.load(b2_ptr + 1 + o)[None, :]
    # The density in fp32 in every mode, from the fp32 hidden layer.
    sigma = tl.sum(hid * tl.load(w2s_ptr + h)[None, :], axis=1) + tl.load(b2_ptr)
    return pre, hid, sigma, out


@triton.jit
def decode_points(planes_ptr, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, b_idx, px, py, pz, mask, H, W, box_warp,
                  C, CP: tl.constexpr, HD: tl.constexpr, OP: tl.constexpr, PLANE_SET: tl.constexpr,
                  DOT_DTYPE: tl.constexpr, PREC: tl.constexpr):
    """sigma_raw (BLOCK,) and the colour features (BLOCK, OP) through the widened sigmoid (columns
    past O are padding) of a block of points."""
    scale = 2.0 / box_warp
    feat = triplane_features(planes_ptr, b_idx, px * scale, py * scale, pz * scale, mask, H, W, C, CP, PLANE_SET)
    _, _, sigma, out = decoder_mlp(feat, w1t_ptr, b1_ptr, w2t_ptr, w2s_ptr, b2_ptr, CP, HD, OP, DOT_DTYPE, PREC)
    return sigma, widened_sigmoid(out)
