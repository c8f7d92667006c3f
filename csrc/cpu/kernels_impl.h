// The CPU kernels' bodies. Included by render_cpu_base.cpp and render_cpu_avx2.cpp inside a
// per-ISA namespace (so the two builds never share a symbol); include nothing here that is not
// already included by them, and use no templates from the standard library.
#include "rtgaze/march.h"
#include "rtgaze/sample.h"
#include "planes_impl.h"
#include "decode_impl.h"

// The features (n, C) of n points of one ray (batch b) at depths t along o + t d; their taps into
// taps[n] when given (what the backward's scatter reuses). CF: a compile-time channel count
// (0 = runtime), see rtgaze/sample.h.
template <int CF>
static void ray_features(const RenderArgs& a, long b, const float* o, const float* d, const float* t, int n,
                         float* feat, PointTaps* taps = nullptr) {
  const PlanesArgs& P = a.planes;
  const float* planes_b = P.data + b * P.s.b;
  for (int k = 0; k < n; ++k) {
    const float p[3] = {o[0] + t[k] * d[0], o[1] + t[k] * d[1], o[2] + t[k] * d[2]};
    PointTaps local;
    PointTaps& pt = taps ? taps[k] : local;
    point_taps(P, p, a.box_warp, a.plane_set, &pt);
    taps_features<CF>(P, planes_b, pt, feat + static_cast<long>(k) * P.C);
  }
}

// The N coarse depths of ray i (stratified, linear or in disparity).
static void coarse_depths(const RenderArgs& a, long i, float* tc) {
  const float* u = a.su + i * a.N;
  for (int k = 0; k < a.N; ++k) tc[k] = rtg_coarse_depth(k, a.N, u[k], a.start[i], a.end[i], a.disparity);
}

// The Nf fine depths of ray i (EG3D's importance sampling) from its coarse depths and raw
// densities; w, cdf, bins: N floats of scratch each.
static void fine_depths(const RenderArgs& a, long i, const float* tc, const float* sc, float* w, float* cdf,
                        float* bins, float* tf) {
  const int N = a.N, Nf = a.Nf;
  rtg_march_weights(tc, sc, N, w);  // the coarse weights alone (no colours)
  rtg_importance_cdf(w, N, cdf);
  for (int k = 0; k + 1 < N; ++k) bins[k] = (tc[k] + tc[k + 1]) * 0.5f;
  const float* ui = a.iu + i * Nf;
  int search = 0;  // u is sorted per ray (the host sorts it): one merge over the cdf
  for (int j = 0; j < Nf; ++j) tf[j] = rtg_sample_pdf_from(bins, cdf, N, ui[j], &search);
}

template <int CF>
static void render_sized(const RenderArgs& a, long begin, long end) {
  const int N = a.N, Nf = a.Nf, S = N + Nf, O = a.dec.O1 - 1, C = a.planes.C;
  // Samples 0..N-1 coarse, N..S-1 fine; then the merged copies; importance sampling's scratch; the
  // march's interval weights; the features of one decode.
  float* buf = new float[2L * S + static_cast<long>(S) * O + 2L * S + static_cast<long>(S) * O + 3L * N + S +
                         static_cast<long>(S) * C + DecodeScratch::floats(a.dec, S)];
  float *t = buf, *sig = t + S, *col = sig + S, *tm = col + static_cast<long>(S) * O, *sm = tm + S;
  float *cm = sm + S, *w = cm + static_cast<long>(S) * O, *cdf = w + N, *bins = cdf + N, *wm = bins + N;
  float* feat = wm + S;
  const DecodeScratch sc(a.dec, S, feat + static_cast<long>(S) * C);
  int* ord = new int[S];
  for (long i = begin; i < end; ++i) {
    const long b = i / a.R;
    const float *o = a.origins + 3 * i, *d = a.dirs + 3 * i;
    coarse_depths(a, i, t);
    ray_features<CF>(a, b, o, d, t, N, feat);
    decode_block(a.dec, C, N, feat, sc, sig, col);
    const float *tr = t, *sr = sig, *cr = col;
    if (Nf > 0) {
      fine_depths(a, i, t, sig, w, cdf, bins, t + N);
      ray_features<CF>(a, b, o, d, t + N, Nf, feat);
      decode_block(a.dec, C, Nf, feat, sc, sig + N, col + static_cast<long>(N) * O);
      rtg_merge_order(t, N, t + N, Nf, ord);
      for (int k = 0; k < S; ++k) {
        const int j = ord[k];
        tm[k] = t[j];
        sm[k] = sig[j];
        const float* src = col + static_cast<long>(j) * O;
        for (int c = 0; c < O; ++c) cm[static_cast<long>(k) * O + c] = src[c];
      }
      tr = tm, sr = sm, cr = cm;
    }
    rtg_march(tr, sr, cr, S, O, a.white_back, a.rgb + i * O, a.depth + i, a.wsum + i, wm);
    float mn = tr[0], mx = tr[0];
    for (int k = 1; k < S; ++k) {
      const bool nan = tr[k] != tr[k];  // a NaN sticks, as in torch.amin/amax (the batch clamp)
      mn = (tr[k] < mn || nan) ? tr[k] : mn;
      mx = (tr[k] > mx || nan) ? tr[k] : mx;
    }
    a.range[2 * i] = mn;
    a.range[2 * i + 1] = mx;
  }
  delete[] ord;
  delete[] buf;
}

// Points in blocks of this many per decode.
constexpr int kPointBlock = 16;

template <int CF>
static void sample_decode_sized(const SampleDecodeArgs& a, long begin, long end) {
  const PlanesArgs& P = a.planes;
  const int C = P.C, O = a.dec.O1 - 1;
  float* feat = new float[static_cast<long>(kPointBlock) * C + DecodeScratch::floats(a.dec, kPointBlock)];
  const DecodeScratch sc(a.dec, kPointBlock, feat + static_cast<long>(kPointBlock) * C);
  for (long i0 = begin; i0 < end; i0 += kPointBlock) {
    const int n = static_cast<int>(end - i0 < kPointBlock ? end - i0 : kPointBlock);
    for (int k = 0; k < n; ++k) {
      const long i = i0 + k, b = i / a.M;
      triplane_features<CF>(P, P.data + b * P.s.b, a.points + 3 * i, a.box_warp, a.plane_set,
                            feat + static_cast<long>(k) * C);
    }
    decode_block(a.dec, C, n, feat, sc, a.sigma + i0, a.rgb + i0 * O);
  }
  delete[] feat;
}

// EG3D's 32 channels get a build with a fixed channel count (whole texels in registers); any
// other a generic one.
static bool has_eg3d_channels(const PlanesArgs& P) { return P.C == 32; }

static void render(const RenderArgs& a, long begin, long end) {
  if (has_eg3d_channels(a.planes)) render_sized<32>(a, begin, end);
  else render_sized<0>(a, begin, end);
}

static void sample_decode(const SampleDecodeArgs& a, long begin, long end) {
  if (has_eg3d_channels(a.planes)) sample_decode_sized<32>(a, begin, end);
  else sample_decode_sized<0>(a, begin, end);
}

static void march(const MarchArgs& a, long begin, long end) {
  for (long i = begin; i < end; ++i) {
    rtg_march(a.depths + i * a.S, a.sigma + i * a.S, a.rgb + i * a.S * a.O, a.S, a.O, a.white_back,
              a.out_rgb + i * a.O, a.depth + i, nullptr, a.weights + i * (a.S - 1));
  }
}

static void importance(const ImportanceArgs& a, long begin, long end) {
  const int N = a.N;
  float* buf = new float[2L * N];
  float *cdf = buf, *bins = buf + N;
  for (long i = begin; i < end; ++i) {
    const float* t = a.depths + i * N;
    rtg_importance_cdf(a.weights + i * (N - 1), N, cdf);
    for (int k = 0; k + 1 < N; ++k) bins[k] = (t[k] + t[k + 1]) * 0.5f;
    for (int j = 0; j < a.Nf; ++j) a.out[i * a.Nf + j] = rtg_sample_pdf(bins, cdf, N, a.u[i * a.Nf + j]);
  }
  delete[] buf;
}

#include "render_bwd_impl.h"

static const CpuKernels kernels = {render, sample_decode, march, importance, render_backward, RTGAZE_ISA_NAME};
