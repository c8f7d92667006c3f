// The CPU kernels' bodies. Included by render_cpu_base.cpp and render_cpu_avx2.cpp inside a
// per-ISA namespace (so the two builds never share a symbol); include nothing here that is not
// already included by them, and use no templates from the standard library.
#include "rtgaze/march.h"
#include "rtgaze/sample.h"
#include "planes_impl.h"

// Decode n points of one ray (batch b) at depths t along o + t d. CF/HF/OF: compile-time decoder
// sizes (0 = runtime), see rtgaze/sample.h.
template <int CF, int HF, int OF>
static void eval_ray_points(const RenderArgs& a, long b, const float* o, const float* d, const float* t, int n,
                            float* sig, float* col, float* scratch) {
  const PlanesArgs& P = a.planes;
  const DecoderArgs& D = a.dec;
  const int O = D.O1 - 1;
  const float* planes_b = P.data + b * P.s.b;
  float* feat = scratch;
  float* hid = feat + P.C;
  float* out = hid + D.Hd;
  for (int k = 0; k < n; ++k) {
    const float p[3] = {o[0] + t[k] * d[0], o[1] + t[k] * d[1], o[2] + t[k] * d[2]};
    triplane_features<CF>(P, planes_b, p, a.box_warp, a.plane_set, feat);
    rtg_decode<CF, HF, OF>(feat, P.C, D.Hd, D.O1, D.w1t, D.b1, D.w2t, D.b2, hid, out, &sig[k],
                           col + static_cast<long>(k) * O);
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
  float T = 1.0f;  // the coarse weights alone (no colours)
  for (int k = 0; k + 1 < N; ++k) w[k] = rtg_march_step(tc[k], tc[k + 1], sc[k], sc[k + 1], &T);
  rtg_importance_cdf(w, N, cdf);
  for (int k = 0; k + 1 < N; ++k) bins[k] = (tc[k] + tc[k + 1]) * 0.5f;
  const float* ui = a.iu + i * Nf;
  int search = 0;  // u is sorted per ray (the host sorts it): one merge over the cdf
  for (int j = 0; j < Nf; ++j) tf[j] = rtg_sample_pdf_from(bins, cdf, N, ui[j], &search);
}

template <int CF, int HF, int OF>
static void render_sized(const RenderArgs& a, long begin, long end) {
  const int N = a.N, Nf = a.Nf, S = N + Nf, O = a.dec.O1 - 1;
  // Samples 0..N-1 coarse, N..S-1 fine; then the merged copies.
  float* buf = new float[2L * S + static_cast<long>(S) * O + 2L * S + static_cast<long>(S) * O + 3L * N + a.planes.C +
                         a.dec.Hd + a.dec.O1];
  float *t = buf, *sig = t + S, *col = sig + S, *tm = col + static_cast<long>(S) * O, *sm = tm + S;
  float *cm = sm + S, *w = cm + static_cast<long>(S) * O, *cdf = w + N, *bins = cdf + N;
  float* scratch = bins + N;
  int* ord = new int[S];
  for (long i = begin; i < end; ++i) {
    const long b = i / a.R;
    const float *o = a.origins + 3 * i, *d = a.dirs + 3 * i;
    coarse_depths(a, i, t);
    eval_ray_points<CF, HF, OF>(a, b, o, d, t, N, sig, col, scratch);
    const float *tr = t, *sr = sig, *cr = col;
    if (Nf > 0) {
      fine_depths(a, i, t, sig, w, cdf, bins, t + N);
      eval_ray_points<CF, HF, OF>(a, b, o, d, t + N, Nf, sig + N, col + static_cast<long>(N) * O, scratch);
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
    rtg_march(tr, sr, cr, S, O, a.white_back, a.rgb + i * O, a.depth + i, a.wsum + i, nullptr);
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

template <int CF, int HF, int OF>
static void sample_decode_sized(const SampleDecodeArgs& a, long begin, long end) {
  const PlanesArgs& P = a.planes;
  const DecoderArgs& D = a.dec;
  const int O = D.O1 - 1;
  float* buf = new float[P.C + D.Hd + D.O1];
  for (long i = begin; i < end; ++i) {
    const long b = i / a.M;
    triplane_features<CF>(P, P.data + b * P.s.b, a.points + 3 * i, a.box_warp, a.plane_set, buf);
    rtg_decode<CF, HF, OF>(buf, P.C, D.Hd, D.O1, D.w1t, D.b1, D.w2t, D.b2, buf + P.C, buf + P.C + D.Hd, a.sigma + i,
               a.rgb + i * O);
  }
  delete[] buf;
}

// EG3D's decoder (32 -> 64 -> 1+32) gets a build with fixed sizes; any other a generic one.
static bool is_eg3d_decoder(const PlanesArgs& P, const DecoderArgs& D) { return P.C == 32 && D.Hd == 64 && D.O1 == 33; }

static void render(const RenderArgs& a, long begin, long end) {
  if (is_eg3d_decoder(a.planes, a.dec)) render_sized<32, 64, 33>(a, begin, end);
  else render_sized<0, 0, 0>(a, begin, end);
}

static void sample_decode(const SampleDecodeArgs& a, long begin, long end) {
  if (is_eg3d_decoder(a.planes, a.dec)) sample_decode_sized<32, 64, 33>(a, begin, end);
  else sample_decode_sized<0, 0, 0>(a, begin, end);
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
