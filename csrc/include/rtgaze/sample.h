// Triplane sampling and the OSG decoder MLP of one point, shared by the CPU and CUDA kernels.
// Planes are channels-last: plane k of batch b is (H, W, C) at planes + ((b*3 + k)*H*W)*C.
#pragma once
#include "math.h"

// Sizes: functions templated on <CF, ...> use CF when it is positive (a compile-time size the
// compiler unrolls and keeps in registers: the FFHQ decoder's 32/64/33) and the runtime value
// otherwise.
#define RTG_SIZE(fixed, runtime) ((fixed) > 0 ? (fixed) : (runtime))

// Add the bilinear tap of one channels-last plane at normalised (u, v) into acc[C], as
// grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False): taps outside add 0.
// T: the texel type (float; __half or __nv_bfloat16 in CUDA's 16-bit modes), summed in fp32.
template <int CF, class T>
RTG_HD void rtg_bilinear_add(const T* plane, int H, int W, int C_, float u, float v, float* acc) {
  const int C = RTG_SIZE(CF, C_);
  const float ix = ((u + 1.0f) * W - 1.0f) * 0.5f;
  const float iy = ((v + 1.0f) * H - 1.0f) * 0.5f;
  const float fx = RTG_FLOOR(ix), fy = RTG_FLOOR(iy);
  const float tx = ix - fx, ty = iy - fy;
  // NaN coordinates: every weight is NaN and no tap is in range; propagate NaN like grid_sample.
  if (ix != ix || iy != iy) {
    for (int c = 0; c < C; ++c) acc[c] = __builtin_nanf("");
    return;
  }
  const long x0 = static_cast<long>(fx), y0 = static_cast<long>(fy);
  const float wts[4] = {(1.0f - tx) * (1.0f - ty), tx * (1.0f - ty), (1.0f - tx) * ty, tx * ty};
  for (int k = 0; k < 4; ++k) {
    const long x = x0 + (k & 1), y = y0 + (k >> 1);
    if (x < 0 || x >= W || y < 0 || y >= H) continue;
    const T* texel = plane + (static_cast<long>(y) * W + x) * C;
    const float wk = wts[k];
    RTG_CHANNEL_LOOP
    for (int c = 0; c < C; ++c) acc[c] += wk * rtg_to_float(texel[c]);
  }
}

// The mean of the three planes' taps at point p (world units) into feat[C].
template <int CF, class T>
RTG_HD void rtg_triplane_features(const T* planes_b, int H, int W, int C_, const float* p, float box_warp,
                                  int plane_set, float* feat) {
  const int C = RTG_SIZE(CF, C_);
  for (int c = 0; c < C; ++c) feat[c] = 0.0f;
  const float scale = 2.0f / box_warp;
  const float q[3] = {p[0] * scale, p[1] * scale, p[2] * scale};
  for (int k = 0; k < 3; ++k) {
    int iu, iv;
    plane_axes(plane_set, k, &iu, &iv);
    rtg_bilinear_add<CF, T>(planes_b + static_cast<long>(k) * H * W * C, H, W, C, q[iu], q[iv], feat);
  }
  for (int c = 0; c < C; ++c) feat[c] = feat[c] / 3.0f;
}

// OSG decoder on one feature vector with folded, transposed weights: w1t (C, Hd), w2t (Hd, O1)
// with O1 = 1 + O. hid[Hd] and out[O1] are scratch. Writes sigma_raw and the O widened colours.
template <int CF, int HF, int OF>
RTG_HD void rtg_decode(const float* feat, int C_, int Hd_, int O1_, const float* w1t, const float* b1,
                       const float* w2t, const float* b2, float* hid, float* out, float* sigma, float* rgb) {
  const int C = RTG_SIZE(CF, C_), Hd = RTG_SIZE(HF, Hd_), O1 = RTG_SIZE(OF, O1_);
  for (int h = 0; h < Hd; ++h) hid[h] = b1[h];
  for (int c = 0; c < C; ++c) {
    const float f = feat[c];
    const float* row = w1t + c * Hd;
    RTG_CHANNEL_LOOP
    for (int h = 0; h < Hd; ++h) hid[h] += f * row[h];
  }
#ifndef __CUDACC__
  if (HF > 0) {  // compile-time width: every exp, then every log (see rtg_softplus_exp)
    float e[HF > 0 ? HF : 1];
    RTG_CHANNEL_LOOP
    for (int h = 0; h < Hd; ++h) e[h] = rtg_softplus_exp(hid[h]);
    RTG_CHANNEL_LOOP
    for (int h = 0; h < Hd; ++h) hid[h] = rtg_softplus_from(hid[h], e[h]);
  } else
#endif
  {
    RTG_CHANNEL_LOOP
    for (int h = 0; h < Hd; ++h) hid[h] = rtg_softplus(hid[h]);
  }
  for (int o = 0; o < O1; ++o) out[o] = b2[o];
  for (int h = 0; h < Hd; ++h) {
    const float x = hid[h];
    const float* row = w2t + h * O1;
    RTG_CHANNEL_LOOP
    for (int o = 0; o < O1; ++o) out[o] += x * row[o];
  }
  *sigma = out[0];
  RTG_CHANNEL_LOOP
  for (int o = 1; o < O1; ++o) rgb[o - 1] = rtg_widened_sigmoid(out[o]);
}

// sigma_raw alone (the hidden layer and output 0), all a march's weights need: the CUDA kernel
// finds every weight of a ray first, then decodes colours once with those weights known.
template <int CF, int HF, int OF>
RTG_HD float rtg_decode_sigma(const float* feat, int C_, int Hd_, int O1_, const float* w1t, const float* b1,
                              const float* w2t, const float* b2, float* hid) {
  const int C = RTG_SIZE(CF, C_), Hd = RTG_SIZE(HF, Hd_), O1 = RTG_SIZE(OF, O1_);
  for (int h = 0; h < Hd; ++h) hid[h] = b1[h];
  for (int c = 0; c < C; ++c) {
    const float f = feat[c];
    const float* row = w1t + c * Hd;
    RTG_CHANNEL_LOOP
    for (int h = 0; h < Hd; ++h) hid[h] += f * row[h];
  }
  float sigma = b2[0];
  RTG_CHANNEL_LOOP
  for (int h = 0; h < Hd; ++h) sigma += rtg_softplus(hid[h]) * w2t[h * O1];
  return sigma;
}
