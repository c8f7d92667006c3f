// Triplane sampling on the CPU and its backward, through the planes' strides: the kernels read the
// planes in the layout the caller holds them (channels-last, EG3D's (B, 3, C, H, W) seen as
// (B, 3, H, W, C), a model's channels-last conv output), so no planes-sized layout copy is made,
// and the backward writes the planes' gradient through its own strides. A texel whose channels are
// contiguous (stride 1) is read and written as whole AVX registers; any other channel stride
// element by element. Included by kernels_impl.h (per-ISA namespace); same rules.

// The four taps of grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False) at
// normalised (u, v) of an H x W plane: (x0, y0), (x0+1, y0), (x0, y0+1), (x0+1, y0+1). A tap
// outside the plane adds 0. The same arithmetic as rtg_bilinear_taps_frac (rtgaze/sample.h).
struct Taps {
  long x0, y0;
  float w[4];
  bool in[4];
  float tx, ty;  // the fractional position between the taps (what the backward differentiates)
  long offset(int t, long sy, long sx) const { return (y0 + (t >> 1)) * sy + (x0 + (t & 1)) * sx; }
};

// False for NaN coordinates (grid_sample's result is then NaN).
RTG_HD bool bilinear_taps(int H, int W, float u, float v, Taps* T) {
  const float ix = ((u + 1.0f) * W - 1.0f) * 0.5f;
  const float iy = ((v + 1.0f) * H - 1.0f) * 0.5f;
  if (ix != ix || iy != iy) return false;
  const float fx = RTG_FLOOR(ix), fy = RTG_FLOOR(iy);
  const float tx = ix - fx, ty = iy - fy;
  T->tx = tx;
  T->ty = ty;
  T->x0 = static_cast<long>(fx);
  T->y0 = static_cast<long>(fy);
  T->w[0] = (1.0f - tx) * (1.0f - ty);
  T->w[1] = tx * (1.0f - ty);
  T->w[2] = (1.0f - tx) * ty;
  T->w[3] = tx * ty;
  for (int k = 0; k < 4; ++k) {
    const long x = T->x0 + (k & 1), y = T->y0 + (k >> 1);
    T->in[k] = x >= 0 && x < W && y >= 0 && y < H;
  }
  return true;
}

// The three planes' taps at point p (world units), plane k's in T[k]; T[k].ok false where a
// coordinate is NaN. Computed once per sample: the backward's recompute keeps them for its scatter.
struct PointTaps {
  Taps T[3];
  bool ok[3];
};
RTG_HD void point_taps(const PlanesArgs& P, const float* p, float box_warp, int plane_set, PointTaps* pt) {
  const float scale = 2.0f / box_warp;
  const float q[3] = {p[0] * scale, p[1] * scale, p[2] * scale};
  for (int k = 0; k < 3; ++k) {
    int iu, iv;
    plane_axes(plane_set, k, &iu, &iv);
    pt->ok[k] = bilinear_taps(P.H, P.W, q[iu], q[iv], &pt->T[k]);
  }
}

// The mean of the three planes' taps pt into feat[C]; planes_b: batch item b's planes
// (P.data + b * P.s.b).
template <int CF>
RTG_HD void taps_features(const PlanesArgs& P, const float* planes_b, const PointTaps& pt, float* feat) {
  const int C = RTG_SIZE(CF, P.C);
  // Whole texels (channels contiguous, a compile-time count) are summed in registers (see rtg_v8),
  // any other layout channel by channel into feat.
  const bool whole = CF > 0 && CF % 8 == 0 && P.s.c == 1;
  constexpr int NV = CF > 0 ? CF / 8 : 1;
  rtg_v8 va[NV];
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) va[v] = rtg_v8{};
  if (!whole) {
    for (int c = 0; c < C; ++c) feat[c] = 0.0f;
  }
  const long sc = P.s.c;
  bool nan = false;
  for (int k = 0; k < 3; ++k) {
    if (!pt.ok[k]) {
      nan = true;
      continue;
    }
    const Taps& T = pt.T[k];
    const float* plane = planes_b + k * P.s.k;
    if (whole) {
      for (int t = 0; t < 4; ++t) {
        if (!T.in[t]) continue;
        const float* texel = plane + T.offset(t, P.s.y, P.s.x);
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) {
          rtg_v8 r;
          __builtin_memcpy(&r, texel + 8 * v, sizeof(r));
          va[v] += T.w[t] * r;
        }
      }
    } else if (T.in[0] && T.in[3]) {  // all four taps inside: one pass over the channels
      const float* t0 = plane + T.offset(0, P.s.y, P.s.x);
      const long dx = P.s.x, dy = P.s.y;
      const float w0 = T.w[0], w1 = T.w[1], w2 = T.w[2], w3 = T.w[3];
      for (int c = 0; c < C; ++c) {
        const float* r = t0 + c * sc;
        feat[c] += ((w0 * r[0] + w1 * r[dx]) + w2 * r[dy]) + w3 * r[dy + dx];
      }
    } else {
      for (int t = 0; t < 4; ++t) {
        if (!T.in[t]) continue;
        const float* texel = plane + T.offset(t, P.s.y, P.s.x);
        const float wt = T.w[t];
        RTG_CHANNEL_LOOP
        for (int c = 0; c < C; ++c) feat[c] += wt * texel[c * sc];
      }
    }
  }
  if (whole) {  // one store per register: a copy of the whole array made GCC keep va in memory
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const rtg_v8 mean = va[v] / 3.0f;
      __builtin_memcpy(feat + 8 * v, &mean, sizeof(mean));
    }
  } else {
    for (int c = 0; c < C; ++c) feat[c] = feat[c] / 3.0f;
  }
  if (nan) {
    for (int c = 0; c < C; ++c) feat[c] = __builtin_nanf("");
  }
}

// The mean of the three planes' taps at point p (world units) into feat[C].
template <int CF>
RTG_HD void triplane_features(const PlanesArgs& P, const float* planes_b, const float* p, float box_warp,
                              int plane_set, float* feat) {
  PointTaps pt;
  point_taps(P, p, box_warp, plane_set, &pt);
  taps_features<CF>(P, planes_b, pt, feat);
}

// A spin lock per texel row of a shared planes gradient (GradBuffers::row_locks); rows are short
// critical sections and two tasks rarely want the same one.
static inline void lock_row(unsigned char* lock) {
  while (__atomic_test_and_set(lock, __ATOMIC_ACQUIRE)) {
    while (__atomic_load_n(lock, __ATOMIC_RELAXED)) {
    }
  }
}
static inline void unlock_row(unsigned char* lock) { __atomic_clear(lock, __ATOMIC_RELEASE); }

// gtexel[c] += w * gf[c] / 3 for taps t0 and t0 + 1 (one texel row of the footprint) of a
// gradient plane at strides gs, under that row's lock when the planes gradient is shared
// (locks non-null: the plane's row locks).
template <int CF>
static inline __attribute__((always_inline)) void scatter_row(float* gplane, const PlaneStrides& gs, int C_,
                                                              const Taps& T, int t0, const float* gf,
                                                              unsigned char* locks) {
  const int C = RTG_SIZE(CF, C_);
  if (!T.in[t0] && !T.in[t0 + 1]) return;
  unsigned char* lock = locks ? locks + T.y0 + (t0 >> 1) : nullptr;
  if (lock) lock_row(lock);
  for (int t = t0; t < t0 + 2; ++t) {
    if (!T.in[t]) continue;
    float* gtexel = gplane + T.offset(t, gs.y, gs.x);
    const float wt = T.w[t] * (1.0f / 3.0f);  // the mean over the three planes
    if (gs.c == 1) {
      RTG_CHANNEL_LOOP
      for (int c = 0; c < C; ++c) gtexel[c] += wt * gf[c];
    } else {
      for (int c = 0; c < C; ++c) gtexel[c * gs.c] += wt * gf[c];
    }
  }
  if (lock) unlock_row(lock);
}

// gtexel[c] += w * gf[c] / 3 for all four taps of a plane when they are inside and the
// gradient's channels are contiguous (gs.c == 1, C a multiple of 8), under both rows' locks (in
// row order) when the gradient is shared. Channel vector by channel vector, each vector's four
// loads before its four stores: the texel below is a multiple of 4 KiB away at the usual plane
// sizes (a 64-texel row of 32 fp32 channels is 8 KiB), and a load issued after a store to an
// address with the same low 12 bits can be held until that store completes (4K aliasing); tap by
// tap, every load of row y0 + 1 came right after such a store to row y0.
template <int CF>
static inline __attribute__((always_inline)) void scatter_quad(float* gplane, const PlaneStrides& gs, int C_,
                                                               const Taps& T, const float* gf,
                                                               unsigned char* locks) {
  const int C = RTG_SIZE(CF, C_);
  float* g[4];
  for (int t = 0; t < 4; ++t) g[t] = gplane + T.offset(t, gs.y, gs.x);
  const float w0 = T.w[0] * (1.0f / 3.0f), w1 = T.w[1] * (1.0f / 3.0f);
  const float w2 = T.w[2] * (1.0f / 3.0f), w3 = T.w[3] * (1.0f / 3.0f);
  if (locks) {
    lock_row(locks + T.y0);
    lock_row(locks + T.y0 + 1);
  }
#pragma GCC unroll 16
  for (int c = 0; c < C; c += 8) {
    rtg_v8 f, a, b, d, e;
    __builtin_memcpy(&f, gf + c, sizeof(f));
    __builtin_memcpy(&a, g[0] + c, sizeof(a));
    __builtin_memcpy(&b, g[1] + c, sizeof(b));
    __builtin_memcpy(&d, g[2] + c, sizeof(d));
    __builtin_memcpy(&e, g[3] + c, sizeof(e));
    a += w0 * f;
    b += w1 * f;
    d += w2 * f;
    e += w3 * f;
    __builtin_memcpy(g[0] + c, &a, sizeof(a));
    __builtin_memcpy(g[1] + c, &b, sizeof(b));
    __builtin_memcpy(g[2] + c, &d, sizeof(d));
    __builtin_memcpy(g[3] + c, &e, sizeof(e));
  }
  if (locks) {
    unlock_row(locks + T.y0 + 1);
    unlock_row(locks + T.y0);
  }
}

// The backward of one plane's four inside taps when the planes' channels are strided (EG3D's
// (B, 3, C, H, W)): each channel's four texels lie in two cache lines, so one pass over the
// channels reads them for dL/d(tx), dL/d(ty) (*gx, *gy; gx null: not wanted) and adds w * gf / 3
// into the gradient's texels (under both rows' locks, taken in row order, when shared).
static void gather_scatter_strided(const PlanesArgs& P, const float* plane, const PlaneStrides& gs, float* gplane,
                                   int C, const Taps& T, const float* dwx, const float* dwy, const float* gf,
                                   unsigned char* locks, float* gx, float* gy) {
  const float* r0 = plane + T.offset(0, P.s.y, P.s.x);
  float* g0 = gplane + T.offset(0, gs.y, gs.x);
  const long sc = P.s.c, dx = P.s.x, dy = P.s.y, gc = gs.c, gdx = gs.x, gdy = gs.y;
  const float w0 = T.w[0] * (1.0f / 3.0f), w1 = T.w[1] * (1.0f / 3.0f);
  const float w2 = T.w[2] * (1.0f / 3.0f), w3 = T.w[3] * (1.0f / 3.0f);
  float dots[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (locks) {
    lock_row(locks + T.y0);
    lock_row(locks + T.y0 + 1);
  }
  for (int c = 0; c < C; ++c) {
    const float* r = r0 + c * sc;
    float* g = g0 + c * gc;
    const float f = gf[c];
    if (gx) {
      dots[0] += f * r[0];
      dots[1] += f * r[dx];
      dots[2] += f * r[dy];
      dots[3] += f * r[dy + dx];
    }
    g[0] += w0 * f;
    g[gdx] += w1 * f;
    g[gdy] += w2 * f;
    g[gdy + gdx] += w3 * f;
  }
  if (locks) {
    unlock_row(locks + T.y0 + 1);
    unlock_row(locks + T.y0);
  }
  for (int t = 0; gx && t < 4; ++t) {
    *gx += dwx[t] * dots[t];
    *gy += dwy[t] * dots[t];
  }
}

// The triplane sampling's backward at a point whose taps are pt (point_taps): scatter
// dL/dfeature (gf[C]) into the planes' gradient through the bilinear weights (taps outside a plane
// get nothing, as they gave 0), and return dL/dp in g_p[3] through the weights' dependence on the
// position (grid_sample's grid gradient; g_p null: not wanted, and the taps' dot products with gf
// are skipped). NaN coordinates scatter nothing and give a NaN dL/dp. planes_b, gplanes_b: batch
// item b's planes and gradient; locks_b: its row locks (null: this task's own gradient buffer).
template <int CF>
static void triplane_backward(const PlanesArgs& P, const float* planes_b, const PlaneStrides& gs, float* gplanes_b,
                              unsigned char* locks_b, const PointTaps& pt, float box_warp, int plane_set,
                              const float* gf, float* g_p) {
  const int C = RTG_SIZE(CF, P.C), H = P.H, W = P.W;
  const float scale = 2.0f / box_warp;
  float gq[3] = {0.0f, 0.0f, 0.0f};
  bool nan = false;
  for (int k = 0; k < 3; ++k) {
    int iu, iv;
    plane_axes(plane_set, k, &iu, &iv);
    if (!pt.ok[k]) {
      nan = true;
      continue;
    }
    const Taps& T = pt.T[k];
    const float* plane = planes_b + k * P.s.k;
    float* gplane = gplanes_b + k * gs.k;
    unsigned char* locks = locks_b ? locks_b + static_cast<long>(k) * H : nullptr;
    bool scattered = false;
    const float tx = T.tx, ty = T.ty;
    // d(tap weight)/d(tx) and /d(ty) of the taps (x0,y0), (x1,y0), (x0,y1), (x1,y1).
    const float dwx[4] = {-(1.0f - ty), 1.0f - ty, -ty, ty};
    const float dwy[4] = {-(1.0f - tx), -tx, 1.0f - tx, tx};
    float gx = 0.0f, gy = 0.0f;
    const bool whole = CF > 0 && CF % 8 == 0 && P.s.c == 1;
    if (!whole && T.in[0] && T.in[3]) {  // strided channels, all four taps inside: one pass over the channels
      gather_scatter_strided(P, plane, gs, gplane, C, T, dwx, dwy, gf, locks, g_p ? &gx : nullptr, &gy);
      scattered = true;
    } else if (!g_p) {  // the scatter alone (below)
    } else if (whole) {  // whole texels: each tap's dot with gf in registers (see rtg_v8)
      constexpr int NV = CF > 0 ? CF / 8 : 1;
      rtg_v8 g[NV];
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) __builtin_memcpy(&g[v], gf + 8 * v, sizeof(rtg_v8));
      float dots[4];
      for (int t = 0; t < 4; ++t) {
        rtg_v8 acc = rtg_v8{};
        if (T.in[t]) {
          const float* texel = plane + T.offset(t, P.s.y, P.s.x);
#pragma GCC unroll 16
          for (int v = 0; v < NV; ++v) {
            rtg_v8 r;
            __builtin_memcpy(&r, texel + 8 * v, sizeof(r));
            acc += g[v] * r;
          }
        }
        dots[t] = rtg_hsum8(acc);
      }
      for (int t = 0; t < 4; ++t) {
        gx += dwx[t] * dots[t];
        gy += dwy[t] * dots[t];
      }
    } else {
      const long sc = P.s.c;
      for (int t = 0; t < 4; ++t) {
        if (!T.in[t]) continue;
        const float* texel = plane + T.offset(t, P.s.y, P.s.x);
        float dot = 0.0f;
        for (int c = 0; c < C; ++c) dot += gf[c] * texel[c * sc];
        gx += dwx[t] * dot;
        gy += dwy[t] * dot;
      }
    }
    // Into the planes' gradient: taps 0, 1 share texel row y0, taps 2, 3 row y1.
    if (!scattered && whole && gs.c == 1 && T.in[0] && T.in[3]) {
      scatter_quad<CF>(gplane, gs, C, T, gf, locks);
    } else if (!scattered) {
      scatter_row<CF>(gplane, gs, C, T, 0, gf, locks);
      scatter_row<CF>(gplane, gs, C, T, 2, gf, locks);
    }
    // ix = ((u + 1) W - 1) / 2, so dix/du = W / 2; and the 1/3 of the mean.
    gq[iu] += gx * (W * 0.5f / 3.0f);
    gq[iv] += gy * (H * 0.5f / 3.0f);
  }
  for (int j = 0; g_p && j < 3; ++j) g_p[j] = nan ? __builtin_nanf("") : gq[j] * scale;
}
