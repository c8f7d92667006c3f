// One ray's compositing (MipRayMarcher2) and importance sampling (EG3D's sample_pdf), shared by
// the CPU and CUDA kernels. Arrays are per ray; S sorted samples, O colour channels.
#pragma once
#include "math.h"

// One interval's weight from its two samples; T, the transmittance before it, is updated.
RTG_HD float rtg_interval_alpha(float t0, float t1, float sigma0, float sigma1) {
  const float s = rtg_softplus((sigma0 + sigma1) * 0.5f - 1.0f);  // raw density averaged first
  return 1.0f - rtg_exp(-s * (t1 - t0));
}

// rtg_interval_alpha (the same bits) and d alpha / d x, x = (sigma0 + sigma1) / 2 - 1: alpha =
// 1 - exp(-softplus(x) delta), so d alpha / d x = delta exp(-softplus(x) delta) softplus'(x).
RTG_HD float rtg_interval_alpha_grad(float t0, float t1, float sigma0, float sigma1, float* dalpha_dx) {
  const float x = (sigma0 + sigma1) * 0.5f - 1.0f;
  const float e = rtg_softplus_exp(x);
  const float delta = t1 - t0;
  const float keep = rtg_exp(-rtg_softplus_from(x, e) * delta);
  *dalpha_dx = delta * keep * rtg_softplus_grad_from(x, e);
  return 1.0f - keep;
}

// An interval's weight from its alpha; T, the transmittance before it, is updated. Apart from
// rtg_interval_alpha so that a warp computes every alpha in parallel and one lane runs this scan.
RTG_HD float rtg_march_weight(float alpha, float* T) {
  const float wk = alpha * *T;
  *T *= 1.0f - alpha + 1e-10f;
  return wk;
}

RTG_HD float rtg_march_step(float t0, float t1, float sigma0, float sigma1, float* T) {
  return rtg_march_weight(rtg_interval_alpha(t0, t1, sigma0, sigma1), T);
}

// The S-1 interval weights of S samples into w: every alpha first (no interval depends on
// another: the CPU computes 8 at once), then the transmittance scan. The same bits as
// rtg_march_step interval by interval.
RTG_HD void rtg_march_weights(const float* t, const float* sigma, int S, float* w) {
  RTG_INTERVAL_LOOP
  for (int k = 0; k < S - 1; ++k) w[k] = rtg_interval_alpha(t[k], t[k + 1], sigma[k], sigma[k + 1]);
  float T = 1.0f;
  for (int k = 0; k < S - 1; ++k) w[k] = rtg_march_weight(w[k], &T);
}

// Coarse depth k of N on [lo, hi] from its stratified noise u (linear, or linear in disparity).
RTG_HD float rtg_coarse_depth(int k, int N, float u, float lo, float hi, bool disparity) {
  if (disparity) {
    const float s = static_cast<float>(k) / (N - 1) + u * (1.0f / (N - 1));
    return 1.0f / (1.0f / lo * (1.0f - s) + 1.0f / hi * s);
  }
  const float step = (hi - lo) / (N - 1);
  return lo + static_cast<float>(k) / (N - 1) * (hi - lo) + u * step;
}

// Both depth lists are sorted (u is sorted by the host, the inverse CDF is monotone): their merge
// order, ord[k] = x for coarse sample x, N + y for fine sample y (coarse first on ties).
RTG_HD void rtg_merge_order(const float* tc, int N, const float* tf, int Nf, int* ord) {
  int x = 0, y = 0;
  for (int k = 0; k < N + Nf; ++k) {
    const bool take_coarse = y >= Nf || (x < N && tc[x] <= tf[y]);
    ord[k] = take_coarse ? x++ : N + y++;
  }
}

// Composite S samples: interval weights into w[S-1] (rtg_march_weights), colour into rgb[O] (white
// background and the 2C-1 scaling applied), the unclamped depth (NaN -> +inf) and sum of weights
// (may be null).
RTG_HD void rtg_march(const float* t, const float* sigma, const float* col, int S, int O, bool white_back,
                      float* rgb, float* depth, float* wsum, float* w) {
  for (int o = 0; o < O; ++o) rgb[o] = 0.0f;
  rtg_march_weights(t, sigma, S, w);
  float W = 0.0f, D = 0.0f;
  for (int k = 0; k + 1 < S; ++k) {
    const float wk = w[k];
    W += wk;
    D += wk * ((t[k] + t[k + 1]) * 0.5f);
    const float* c0 = col + k * O;
    const float* c1 = c0 + O;
    RTG_CHANNEL_LOOP
    for (int o = 0; o < O; ++o) rgb[o] += wk * ((c0[o] + c1[o]) * 0.5f);
  }
  float d = D / W;
  *depth = d != d ? __builtin_inff() : d;
  if (wsum) *wsum = W;
  for (int o = 0; o < O; ++o) rgb[o] = (white_back ? rgb[o] + 1.0f - W : rgb[o]) * 2.0f - 1.0f;
}

// EG3D's pdf of one ray from its N-1 coarse interval weights into cdf[N-2]: max-pool (2, stride 1,
// pad 1) -> avg-pool (2) -> +0.01 -> the N-3 interior values -> +1e-5 -> normalise -> [0, cumsum].
RTG_HD void rtg_importance_cdf(const float* w, int N, float* cdf) {
  const int K = N - 3;
  float total = 0.0f;
  for (int j = 0; j < K; ++j) {
    // avg-pool value j+1 averages max-pool values j+1 and j+2 = max(w[j], w[j+1]), max(w[j+1], w[j+2]).
    const float m0 = w[j] > w[j + 1] ? w[j] : w[j + 1];
    const float m1 = w[j + 1] > w[j + 2] ? w[j + 1] : w[j + 2];
    const float v = (m0 + m1) * 0.5f + 0.01f + 1e-5f;
    cdf[j + 1] = v;
    total += v;
  }
  cdf[0] = 0.0f;
  float acc = 0.0f;
  for (int j = 0; j < K; ++j) {
    acc += cdf[j + 1] / total;
    cdf[j + 1] = acc;
  }
}

// Inverse CDF of one u: bins are the N-1 coarse midpoints, cdf has N-2 entries (K = N-3 bins of
// weight; EG3D's half-bin shift: interval k+1's weight sits on bin k). *idx: where the search
// starts, left at its result; a u no smaller than the previous one may start from that one's
// result (cdf is non-decreasing), which makes a sorted run of u one merge instead of N scans.
RTG_HD float rtg_sample_pdf_from(const float* bins, const float* cdf, int N, float u, int* start) {
  const int K = N - 3;
  int idx = *start;  // searchsorted(cdf, u, right=True): the number of cdf entries <= u
  while (idx <= K && cdf[idx] <= u) ++idx;
  *start = idx;
  const int lo = idx - 1 > 0 ? idx - 1 : 0;
  const int hi = idx < K ? idx : K;
  float denom = cdf[hi] - cdf[lo];
  denom = denom < 1e-5f ? 1.0f : denom;
  return bins[lo] + (u - cdf[lo]) / denom * (bins[hi] - bins[lo]);
}

RTG_HD float rtg_sample_pdf(const float* bins, const float* cdf, int N, float u) {
  int start = 0;
  return rtg_sample_pdf_from(bins, cdf, N, u, &start);
}

// The backward of rtg_march for one ray (the same S sorted samples) from the upstream gradients of
// its unclamped depth g_depth and weight sum g_wsum, and its colour's through two callbacks:
// dot(k), the colour gradient's dot with interval k's midpoint colour, 2 g_rgb . (c_k + c_k+1) / 2;
// col_grad(k, h), called once per interval: samples k and k+1 each get h * 2 g_rgb of colour
// gradient. g_white: the sum of 2 g_rgb (the white background's term). Writes every sample's raw
// density gradient g_sigma[S]. Nothing flows to the depths (constants of the backward, as in EG3D).
// Depth's gradient enters only where the weights sum to more than 0 (the reference divides by 1
// elsewhere). scratch: 3 * (S - 1) floats. The CUDA backward calls this with per-sample dots.
// Every interval's alpha and its derivative are computed first, with no dependence between
// intervals (the CPU computes 8 at once); the scans forwards and backwards are then products and
// sums.
template <class Dot, class ColGrad>
RTG_HD void rtg_march_backward_core(const float* t, const float* sigma, int S, bool white_back, float g_white,
                                    float g_depth, float g_wsum, Dot dot, ColGrad col_grad, float* g_sigma,
                                    float* scratch) {
  float* alpha = scratch;           // alpha_k
  float* trans = scratch + S - 1;   // T_k, the transmittance before interval k
  float* g_w = trans + S - 1;       // dL/dw_k
  // d alpha_k / d x_k waits in g_sigma[k] until the backward scan reaches interval k.
  RTG_INTERVAL_LOOP
  for (int k = 0; k < S - 1; ++k) {
    alpha[k] = rtg_interval_alpha_grad(t[k], t[k + 1], sigma[k], sigma[k + 1], g_sigma + k);
  }
  // Recompute the forward exactly as rtg_march does (same steps, same order).
  float T = 1.0f, W = 0.0f, D = 0.0f;
  for (int k = 0; k + 1 < S; ++k) {
    trans[k] = T;
    const float wk = alpha[k] * T;
    T *= 1.0f - alpha[k] + 1e-10f;
    W += wk;
    D += wk * ((t[k] + t[k + 1]) * 0.5f);
  }
  // rgb = 2 (sum_k w_k c_mid_k [+ 1 - W]) - 1; depth = sum_k w_k t_mid_k / W where W > 0.
  const float g_common = g_wsum - (white_back ? g_white : 0.0f);
  const bool hit = W > 0.0f;
  const float depth = hit ? D / W : 0.0f;
  const float g_d = hit ? g_depth / W : 0.0f;
  for (int k = 0; k + 1 < S; ++k) {
    col_grad(k, 0.5f * alpha[k] * trans[k]);
    g_w[k] = dot(k) + g_common + g_d * ((t[k] + t[k + 1]) * 0.5f - depth);
  }
  // w_k = alpha_k T_k with T_k = prod_{l<k} (1 - alpha_l + 1e-10): from the back,
  // Q_k = sum_{j>k} g_w_j alpha_j prod_{k<l<j} (1 - alpha_l + 1e-10) and dL/dalpha_k = T_k (g_w_k - Q_k)
  // (no division by 1 - alpha, which may be 1e-10).
  // x_k = (sigma_k + sigma_k+1) / 2 - 1: half of dL/dx_k to each sample.
  g_sigma[S - 1] = 0.0f;
  float Q = 0.0f;
  for (int k = S - 2; k >= 0; --k) {
    const float g_alpha = trans[k] * (g_w[k] - Q);
    Q = g_w[k] * alpha[k] + (1.0f - alpha[k] + 1e-10f) * Q;
    const float g_x = g_alpha * g_sigma[k];  // d alpha_k / d x_k, read before it is overwritten
    g_sigma[k] = 0.5f * g_x;
    g_sigma[k + 1] += 0.5f * g_x;
  }
}

// rtg_march_backward_core with the colours at hand: col[S*O] in, every sample's colour gradient
// g_col[S*O] out (overwritten). scratch: 4 * S floats.
RTG_HD void rtg_march_backward(const float* t, const float* sigma, const float* col, int S, int O, bool white_back,
                               const float* g_rgb, float g_depth, float g_wsum, float* g_sigma, float* g_col,
                               float* scratch) {
  float g_white = 0.0f;
  for (int o = 0; o < O; ++o) g_white += 2.0f * g_rgb[o];
  for (int i = 0; i < S * O; ++i) g_col[i] = 0.0f;
  float* dots = scratch + 3 * S;  // g_rgb . c_k per sample (one dot each, not two per interval)
  for (int k = 0; k < S; ++k) {
    const float* ck = col + k * O;
    float acc = 0.0f;
    RTG_CHANNEL_LOOP
    for (int o = 0; o < O; ++o) acc += g_rgb[o] * ck[o];
    dots[k] = acc;
  }
  auto dot = [&](int k) { return dots[k] + dots[k + 1]; };
  auto col_grad = [&](int k, float half_w) {
    float* g0 = g_col + k * O;
    float* g1 = g0 + O;
    RTG_CHANNEL_LOOP
    for (int o = 0; o < O; ++o) {
      const float gc = 2.0f * g_rgb[o];
      g0[o] += half_w * gc;
      g1[o] += half_w * gc;
    }
  };
  rtg_march_backward_core(t, sigma, S, white_back, g_white, g_depth, g_wsum, dot, col_grad, g_sigma, scratch);
}
