"""A deliberately naive float64 renderer written from the spec text (docs: renderer.md), ray by ray.

Independent of rtgaze_fast's reference: numpy float64 throughout, plain loops, no torch ops
except reading the inputs. Used by tests/test_reference.py to check the fp32 reference within
1e-5. Speed is irrelevant: keep the scenes small.
"""
from __future__ import annotations

import math

import numpy as np

# Spec section 1: plane k gets (u, v) from these coordinates of the scaled point.
AXES = {"eg3d": ((0, 1), (0, 2), (2, 0)), "corrected": ((0, 1), (0, 2), (1, 2))}


def _np(t):
    return t.detach().cpu().double().numpy() if hasattr(t, "detach") else np.asarray(t, dtype=np.float64)


def box_limits(o, d, box):
    """Slab intersection of one ray with the cube of side ``box`` centred at 0: (t_in, t_out, hit)."""
    lo, hi = -box / 2, box / 2
    t_in, t_out = -math.inf, math.inf
    for a in range(3):
        inv = 1.0 / d[a] if d[a] != 0 else math.copysign(math.inf, d[a])
        near = hi if inv < 0 else lo
        far = lo if inv < 0 else hi
        t0, t1 = (near - o[a]) * inv, (far - o[a]) * inv
        if t_in > t1 or t0 > t_out:
            return -1.0, -2.0, False
        t_in, t_out = max(t_in, t0), min(t_out, t1)
    return t_in, t_out, t_out > t_in


def bilinear(plane, u, v):
    """plane (C, H, W); grid_sample bilinear, zeros padding, align_corners=False."""
    c, h, w = plane.shape
    ix, iy = ((u + 1) * w - 1) / 2, ((v + 1) * h - 1) / 2
    x0, y0 = math.floor(ix), math.floor(iy)
    fx, fy = ix - x0, iy - y0
    out = np.zeros(c)
    for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
        for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
            if 0 <= xx < w and 0 <= yy < h:
                out += wx * wy * plane[:, yy, xx]
    return out


def softplus(x):
    return x if x > 20 else math.log1p(math.exp(x))


class Decoder:
    """The OSG decoder's two layers read from any module with EG3D's structure, in float64."""

    def __init__(self, decoder):
        fc1, fc2 = decoder.net[0], decoder.net[2]
        self.w1 = _np(fc1.weight) * float(fc1.weight_gain)
        self.b1 = _np(fc1.bias) * float(fc1.bias_gain)
        self.w2 = _np(fc2.weight) * float(fc2.weight_gain)
        self.b2 = _np(fc2.bias) * float(fc2.bias_gain)

    def __call__(self, f):
        hdn = np.array([softplus(x) for x in self.w1 @ f + self.b1])
        o = self.w2 @ hdn + self.b2
        rgb = 1 / (1 + np.exp(-o[1:])) * 1.002 - 0.001
        return o[0], rgb


def point_features(planes_b, p, box, plane_set):
    q = (2.0 / box) * p
    feats = [bilinear(planes_b[k], q[a], q[bb]) for k, (a, bb) in enumerate(AXES[plane_set])]
    return sum(feats) / 3.0


def march(ts, sig, cols, white_back):
    """Spec section 5 for one ray: (C, D unclamped, interval weights)."""
    s = len(ts)
    w = np.zeros(s - 1)
    trans = 1.0
    c = np.zeros(cols.shape[1])
    num = 0.0
    for k in range(s - 1):
        delta = ts[k + 1] - ts[k]
        sigma = softplus((sig[k] + sig[k + 1]) / 2 - 1)
        alpha = 1 - math.exp(-sigma * delta)
        w[k] = alpha * trans
        trans *= 1 - alpha + 1e-10
        c += w[k] * (cols[k] + cols[k + 1]) / 2
        num += w[k] * (ts[k] + ts[k + 1]) / 2
    total = w.sum()
    depth = num / total if total > 0 else math.inf
    if white_back:
        c = c + 1 - total
    return 2 * c - 1, depth, w


def inverse_cdf(coarse_t, w, u):
    """Spec section 4 for one ray: smoothed weights, half-bin shift, inverse CDF."""
    n = len(coarse_t)
    padded = [-math.inf] + list(w) + [-math.inf]
    mx = [max(padded[i], padded[i + 1]) for i in range(n)]           # N values
    sm = [(mx[i] + mx[i + 1]) / 2 + 0.01 for i in range(n - 1)]      # N-1 values
    bins = [(coarse_t[i] + coarse_t[i + 1]) / 2 for i in range(n - 1)]
    pw = np.array(sm[1:-1]) + 1e-5
    pdf = pw / pw.sum()
    cdf = np.concatenate([[0.0], np.cumsum(pdf)])
    out = []
    for x in u:
        idx = int(np.searchsorted(cdf, x, side="right"))
        lo, hi = max(idx - 1, 0), min(idx, len(cdf) - 1)
        denom = cdf[hi] - cdf[lo]
        if denom < 1e-5:
            denom = 1.0
        out.append(bins[lo] + (x - cdf[lo]) / denom * (bins[hi] - bins[lo]))
    return out


def render(planes, decoder, ray_origins, ray_directions, options, stratified_u, importance_u=None,
           plane_set="eg3d", coarse_noise=None, fine_noise=None):
    """Returns float64 numpy (rgb (B,R,O), depth (B,R,1), weights_sum (B,R,1)).

    ``coarse_noise``/``fine_noise``: (B, R, N)/(B, R, N_f) already-scaled density noise, or None.
    """
    P, O, D = _np(planes), _np(ray_origins), _np(ray_directions)
    SU = _np(stratified_u)
    IU = None if importance_u is None else _np(importance_u)
    CN = None if coarse_noise is None else _np(coarse_noise)
    FN = None if fine_noise is None else _np(fine_noise)
    dec = Decoder(decoder)
    box = float(options["box_warp"])
    n, n_f = int(options["depth_resolution"]), int(options["depth_resolution_importance"])
    disp, white = bool(options["disparity_space_sampling"]), bool(options.get("white_back", False))
    b_, r_ = O.shape[:2]
    out_dim = dec.w2.shape[0] - 1

    # limits
    if options["ray_start"] == "auto":
        lim = [[box_limits(O[b, r], D[b, r], box) for r in range(r_)] for b in range(b_)]
        valid_starts = [t0 for row in lim for (t0, t1, hit) in row if hit]
        starts = np.array([[t0 if hit else -1.0 for (t0, t1, hit) in row] for row in lim])
        ends = np.array([[t1 if hit else -2.0 for (t0, t1, hit) in row] for row in lim])
        if valid_starts:
            miss = ends <= starts
            starts = np.where(miss, min(valid_starts), starts)
            ends = np.where(miss, max(valid_starts), ends)
    else:
        starts = np.full((b_, r_), float(options["ray_start"]))
        ends = np.full((b_, r_), float(options["ray_end"]))

    rgb = np.zeros((b_, r_, out_dim))
    depth = np.zeros((b_, r_, 1))
    wsum = np.zeros((b_, r_, 1))
    t_min, t_max = math.inf, -math.inf

    def evaluate(b, r, ts, noise):
        sig, cols = [], []
        for k, t in enumerate(ts):
            s_raw, c = dec(point_features(P[b], O[b, r] + t * D[b, r], box, plane_set))
            if noise is not None:
                s_raw += noise[k]
            sig.append(s_raw)
            cols.append(c)
        return sig, cols

    for b in range(b_):
        for r in range(r_):
            near, far = starts[b, r], ends[b, r]
            ts = []
            for k in range(n):
                u = SU[b, r, k]
                if disp:
                    s = k / (n - 1) + u / (n - 1)
                    ts.append(1 / ((1 - s) / near + s / far))
                else:
                    ts.append(near + k * (far - near) / (n - 1) + u * (far - near) / (n - 1))
            sig, cols = evaluate(b, r, ts, None if CN is None else CN[b, r])
            if n_f > 0:
                _, _, w = march(ts, sig, np.array(cols), white)
                fine = inverse_cdf(ts, w, IU[b, r])
                sig_f, cols_f = evaluate(b, r, fine, None if FN is None else FN[b, r])
                order = sorted(range(n + n_f), key=lambda i: (ts + fine)[i])
                ts = [(ts + fine)[i] for i in order]
                sig = [(sig + sig_f)[i] for i in order]
                cols = [(cols + cols_f)[i] for i in order]
            c, d, w = march(ts, sig, np.array(cols), white)
            rgb[b, r], depth[b, r, 0], wsum[b, r, 0] = c, d, w.sum()
            t_min, t_max = min(t_min, min(ts)), max(t_max, max(ts))
    return rgb, np.clip(depth, t_min, t_max), wsum
