// One ray's compositing (MipRayMarcher2) and importance sampling (EG3D's sample_pdf), shared by
// the CPU and CUDA kernels. Arrays are per ray; S sorted samples, O colour channels.
#pragma once
#include "math.h"

// One interval's weight from its two samples; T, the transmittance before it, is updated.
RTG_HD float rtg_march_step(float t0, float t1, float sigma0, float sigma1, float* T) {
  const float s = rtg_softplus((sigma0 + sigma1) * 0.5f - 1.0f);  // raw density averaged first
  const float alpha = 1.0f - rtg_exp(-s * (t1 - t0));
  const float wk = alpha * *T;
  *T *= 1.0f - alpha + 1e-10f;
  return wk;
}

// Composite S samples: interval weights into w[S-1] (may be null), colour into rgb[O] (white
// background and the 2C-1 scaling applied), the unclamped depth (NaN -> +inf) and sum of weights
// (may be null).
RTG_HD void rtg_march(const float* t, const float* sigma, const float* col, int S, int O, bool white_back,
                      float* rgb, float* depth, float* wsum, float* w) {
  for (int o = 0; o < O; ++o) rgb[o] = 0.0f;
  float T = 1.0f, W = 0.0f, D = 0.0f;
  for (int k = 0; k + 1 < S; ++k) {
    const float wk = rtg_march_step(t[k], t[k + 1], sigma[k], sigma[k + 1], &T);
    if (w) w[k] = wk;
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
