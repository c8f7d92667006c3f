"""ImportanceRenderer: EG3D's call signature, validated once, then the reference or one fused op."""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import nn

from . import autotune, ops
from .options import RenderOptions, parse_options, plane_set_index
from .reference.decoder import decoder_layers, folded_decoder_weights
from .reference.marcher import clamp_depth
from .reference.renderer import Noise, deterministic_noise, draw_noise, ray_limits, render_reference
from .validation import check_finite, check_index_range, check_tensor

_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}
# Training with channel-strided planes on the cpu backend: planes up to this size are copied to
# channels-last for the call (a transient at the tiny model's training shapes, 12.6 MiB at batch
# 8), larger ones read in place (EG3D's 256x256 planes are 25 MiB per item: the fused backward's
# memory stays at the gradient alone, issue #14's bar).
STRIDED_COPY_MAX_BYTES = 16 * 2 ** 20


class ImportanceRenderer(nn.Module):
    """EG3D's ImportanceRenderer with selectable backends.

    ``forward(planes, decoder, ray_origins, ray_directions, rendering_options)`` returns EG3D's
    ``(rgb (B, R, O), depth (B, R, 1), weights_sum (B, R, 1))``.

    Args:
        backend: 'torch' (reference), 'triton', 'cuda', 'cpu' or 'auto' (fastest for the device;
            when an input requires grad, the fastest with a fused backward, else 'torch').
        precision: fused backends' mode, 'fp32' (parity), 'tf32', 'fp16' or 'bf16'.
        plane_set: 'eg3d' (XY, XZ, ZX: what released weights were trained with) or 'corrected'.
        chunk_size: reference only, rays per chunk to bound memory (None: all at once).
        deterministic: mid-stratum jitter and EG3D's det=True inverse CDF (repeatable output).
        validate: also check values (NaN/Inf, u in [0, 1)); off on the hot path, where NaN in
            gives NaN out.
    """

    def __init__(self, backend: str = "auto", precision: str = "fp32", plane_set: str = "eg3d",
                 chunk_size: Optional[int] = None, deterministic: bool = False, validate: bool = False):
        super().__init__()
        if backend not in ops.BACKENDS:
            raise ValueError(f"backend must be one of {ops.BACKENDS}, got {backend!r}")
        if precision not in ops.PRECISIONS:
            raise ValueError(f"precision must be one of {ops.PRECISIONS}, got {precision!r}")
        plane_set_index(plane_set)
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        self.backend, self.precision, self.plane_set = backend, precision, plane_set
        self.chunk_size, self.deterministic, self.validate = chunk_size, deterministic, validate

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}, precision={self.precision!r}, plane_set={self.plane_set!r}"

    def forward(self, planes: torch.Tensor, decoder: nn.Module, ray_origins: torch.Tensor,
                ray_directions: torch.Tensor, rendering_options: Mapping, *,
                stratified_u: Optional[torch.Tensor] = None, importance_u: Optional[torch.Tensor] = None,
                generator: Optional[torch.Generator] = None):
        opts = parse_options(rendering_options)
        b, r = self._check_inputs(planes, decoder, ray_origins, ray_directions, opts)
        requires_grad = _requires_grad(planes, decoder, ray_origins, ray_directions)
        backend = ops.resolve_backend(self.backend, planes.device, requires_grad)
        noise = self._noise(b, r, opts, planes.device, stratified_u, importance_u, generator)
        if b == 0 or r == 0:
            new = ray_origins.new_zeros
            return new(b, r, _out_dim(decoder)), new(b, r, 1), new(b, r, 1)
        if self.backend == "auto" and autotune.enabled(planes.device):
            backend = self._measured_backend(planes, decoder, ray_origins, ray_directions, opts, noise,
                                             requires_grad)
        if backend == "torch":
            if self.precision != "fp32":
                raise ValueError(f"precision={self.precision!r} applies to fused backends; the 'torch' "
                                 "reference is fp32 only")
            return render_reference(planes, decoder, ray_origins, ray_directions, opts, noise,
                                    self.plane_set, self.chunk_size)
        return self._render_fused(backend, planes, decoder, ray_origins, ray_directions, opts, noise)

    # -- 'auto' on a GPU: measured once per shape class (rtgaze_fast.autotune) --

    def _measured_backend(self, planes, decoder, ray_origins, ray_directions, opts: RenderOptions, noise: Noise,
                          requires_grad: bool) -> str:
        rejected, candidates = {}, []
        for b in ops.FUSED_BACKENDS:
            why = ops.why_unavailable(b, planes.device)
            if why is None and self.precision not in ops.BACKEND_PRECISIONS[b]:
                why = f"does not implement precision {self.precision!r}"
            if why is None and requires_grad and not ops.has_backward(b):
                why = "inference-only and an input requires grad"
            if why is None and opts.density_noise > 0:
                why = "density_noise > 0 is reference-only"
            (rejected.__setitem__(b, why) if why else candidates.append(b))
        cls = autotune.shape_class(planes.shape, _HALF.get(self.precision, torch.float32), ray_origins.shape[1],
                                   opts.depth_resolution, opts.depth_resolution_importance)
        key = autotune.make_key(planes.device, cls, self.precision, requires_grad)
        choice = autotune.select(
            key, candidates,
            run=lambda b: self._render_fused(b, planes, decoder, ray_origins, ray_directions, opts, noise),
            reference=lambda: render_reference(planes, decoder, ray_origins, ray_directions, opts, noise,
                                               self.plane_set, self.chunk_size),
            precision=self.precision, device=planes.device, rejected=rejected)
        return choice.backend

    # -- the fused path: one op call plus the batch-wide clamp --

    def _render_fused(self, backend, planes, decoder, ray_origins, ray_directions, opts: RenderOptions,
                      noise: Noise):
        if self.precision not in ops.BACKEND_PRECISIONS[backend]:
            raise ValueError(f"precision={self.precision!r} is not implemented by the {backend!r} backend; "
                             f"it offers {ops.BACKEND_PRECISIONS[backend]}")
        if opts.density_noise > 0:
            raise ValueError(f"rendering_options['density_noise'] > 0 is not supported by the {backend!r} "
                             "backend (its noise cannot reproduce EG3D's draws); use backend='torch'")
        w1, b1, w2, b2 = folded_decoder_weights(decoder, differentiable=torch.is_grad_enabled())
        b, r = ray_origins.shape[:2]
        start, end = ray_limits(ray_origins, ray_directions, opts)
        if not isinstance(start, torch.Tensor):
            start = ray_origins.new_full((b, r, 1), start)
            end = ray_origins.new_full((b, r, 1), end)
        # The inverse CDF is monotone in u: sorted u gives sorted fine depths (same set), so the
        # kernel can merge two sorted lists instead of sorting.
        imp = noise.importance_u
        imp = ray_origins.new_empty(b, r, 0) if imp is None else torch.sort(imp, dim=-1).values
        # The ops take (B, 3, H, W, C); triton and cuda need it contiguous. The cpu kernels read
        # any strides, but planes whose channels are strided (EG3D's (B, 3, C, H, W)) render much
        # faster from a channels-last copy (whole texels in vector registers, not a cache line per
        # channel of every tap): for inference always (a transient buffer), for training up to
        # STRIDED_COPY_MAX_BYTES of planes (the copy lives until the backward, which returns the
        # planes' gradient in the copy's layout). Larger planes that need gradients are read in
        # place, so the memory the backward keeps is the gradient alone.
        plane_dtype = _HALF.get(self.precision, torch.float32)
        planes_cl = planes.permute(0, 1, 3, 4, 2).to(plane_dtype)
        small = planes_cl.numel() * planes_cl.element_size() <= STRIDED_COPY_MAX_BYTES
        if backend not in ops.STRIDED_PLANES or (planes_cl.stride(-1) != 1 and (
                small or not _requires_grad(planes, decoder, ray_origins, ray_directions))):
            planes_cl = planes_cl.contiguous()
        op = ops.get_op("render", backend)
        rgb, depth, wsum, rng = op(planes_cl, w1.to(planes.device), b1.to(planes.device), w2.to(planes.device),
                                   b2.to(planes.device), ray_origins.contiguous(), ray_directions.contiguous(),
                                   start.reshape(b, r).contiguous(), end.reshape(b, r).contiguous(),
                                   noise.stratified_u.contiguous(), imp.contiguous(), float(opts.box_warp),
                                   bool(opts.disparity_space_sampling), bool(opts.white_back),
                                   plane_set_index(self.plane_set), self.precision)
        depth = clamp_depth(depth, rng[..., 0].amin(), rng[..., 1].amax())
        return rgb, depth.unsqueeze(-1), wsum.unsqueeze(-1)

    # -- inputs --

    def _noise(self, b, r, opts, device, stratified_u, importance_u, generator) -> Noise:
        n, n_f = opts.depth_resolution, opts.depth_resolution_importance
        if stratified_u is None:
            if importance_u is not None:
                raise ValueError("importance_u was given without stratified_u; pass both or neither")
            if self.deterministic:
                return deterministic_noise(b, r, opts, device)
            return draw_noise(b, r, opts, device, generator)
        if self.deterministic:
            raise ValueError("stratified_u/importance_u cannot be injected in deterministic mode")
        check_tensor("stratified_u", stratified_u, shape=(b, r, n), device=device)
        if n_f > 0:
            if importance_u is None:
                raise ValueError(f"importance_u (B, R, {n_f}) must be given with stratified_u")
            check_tensor("importance_u", importance_u, shape=(b, r, n_f), device=device)
        elif importance_u is not None and importance_u.numel() > 0:
            raise ValueError("importance_u was given but rendering_options['depth_resolution_importance'] is 0")
        if self.validate:
            for name, u in (("stratified_u", stratified_u), ("importance_u", importance_u)):
                if u is not None and u.numel() and not bool(((u >= 0) & (u <= 1)).all()):
                    raise ValueError(f"{name} must lie in [0, 1] (validate=True)")
        sigma = lambda k: (torch.randn(b, r, k, device=device, generator=generator) * opts.density_noise  # noqa: E731
                           if opts.density_noise > 0 and k > 0 else None)
        return Noise(stratified_u, importance_u if n_f > 0 else None, sigma(n), sigma(n_f))

    def _check_inputs(self, planes, decoder, ray_origins, ray_directions, opts):
        floats = (torch.float32,) if self.precision == "fp32" else (torch.float32, _HALF.get(self.precision, torch.float32))
        check_tensor("planes", planes, ndim=5, dtypes=floats)
        if planes.shape[1] != 3:
            raise ValueError(f"planes must be (B, 3, C, H, W) (three planes), got {tuple(planes.shape)}")
        if not isinstance(decoder, nn.Module):
            raise TypeError(f"decoder must be an nn.Module, got {type(decoder).__name__}")
        b, _, c, h, w = planes.shape
        dev = planes.device
        check_tensor("ray_origins", ray_origins, ndim=3, dtypes=(torch.float32,), device=dev)
        check_tensor("ray_directions", ray_directions, ndim=3, dtypes=(torch.float32,), device=dev)
        if ray_origins.shape[0] != b or ray_origins.shape[2] != 3:
            raise ValueError(f"ray_origins must be (B={b}, R, 3), got {tuple(ray_origins.shape)}")
        if ray_directions.shape != ray_origins.shape:
            raise ValueError(f"ray_directions must have ray_origins' shape {tuple(ray_origins.shape)}, "
                             f"got {tuple(ray_directions.shape)}")
        fc1 = getattr(getattr(decoder, "net", [None]), "__getitem__", lambda i: None)(0)
        n_features = getattr(getattr(fc1, "weight", None), "shape", (None, None))[1]
        if n_features is not None and n_features != c:
            raise ValueError(f"planes have C={c} channels but the decoder expects {n_features} features")
        if min(h, w) < 1:
            raise ValueError(f"planes must have H, W >= 1, got {tuple(planes.shape)}")
        r = ray_origins.shape[1]
        if self.backend != "torch":
            check_index_range("planes", planes.numel())
            check_index_range("samples (B * R * (N + N_f) * C)", b * r * opts.n_samples * max(c, 1))
        if self.validate:
            check_finite("planes", planes)
            check_finite("ray_origins", ray_origins)
            check_finite("ray_directions", ray_directions)
            if r and bool((ray_directions.norm(dim=-1) < 1e-6).any()):
                raise ValueError("ray_directions contains zero-length directions (validate=True)")
        return b, r


def _requires_grad(planes, decoder: nn.Module, ray_origins, ray_directions) -> bool:
    """Whether this render is part of a graph that will be differentiated."""
    return torch.is_grad_enabled() and (
        planes.requires_grad or ray_origins.requires_grad or ray_directions.requires_grad
        or any(p.requires_grad for p in decoder.parameters()))


def _out_dim(decoder: nn.Module) -> int:
    out_dim = getattr(decoder, "out_dim", None)
    if out_dim is None:
        out_dim = decoder_layers(decoder)[1].weight.shape[0] - 1
    return int(out_dim)
