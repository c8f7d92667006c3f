// Triplane sampling and the OSG decoder MLP of one point. The CPU kernels use all of it; the CUDA
// kernels (warp tiles, csrc/cuda/tile.cuh) the taps, plane axes and activations, with their own
// vector texel loads and tensor-core decoder. Planes are channels-last: plane k of batch b is (H, W, C) at planes + ((b*3 + k)*H*W)*C.
#pragma once
#include "math.h"

// Sizes: functions templated on <CF, ...> use CF when it is positive (a compile-time size the
// compiler unrolls and keeps in registers: the FFHQ decoder's 32/64/33) and the runtime value
// otherwise.
#define RTG_SIZE(fixed, runtime) ((fixed) > 0 ? (fixed) : (runtime))

#ifndef __CUDACC__
// 8 floats, one AVX2 register (GCC vector extension; an SSE pair in the baseline build). GCC keeps
// float arrays that a loop accumulates into in memory even when their size is fixed; named
// vectors of this type stay in registers (about 1.2x on the whole CPU renderer).
typedef float rtg_v8 __attribute__((vector_size(32)));
#endif

// The four taps of grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False) at
// normalised (u, v) of an H x W plane: texel indices y * W + x and weights, index -1 for a tap
// outside the plane (it adds 0). False for NaN coordinates (grid_sample's result is then NaN).
// *tx, *ty: the fractional position between the taps (what the backward differentiates).
RTG_HD bool rtg_bilinear_taps_frac(int H, int W, float u, float v, long* idx, float* wts, float* tx_out,
                                   float* ty_out) {
  const float ix = ((u + 1.0f) * W - 1.0f) * 0.5f;
  const float iy = ((v + 1.0f) * H - 1.0f) * 0.5f;
  if (ix != ix || iy != iy) return false;
  const float fx = RTG_FLOOR(ix), fy = RTG_FLOOR(iy);
  const float tx = ix - fx, ty = iy - fy;
  *tx_out = tx;
  *ty_out = ty;
  const long x0 = static_cast<long>(fx), y0 = static_cast<long>(fy);
  wts[0] = (1.0f - tx) * (1.0f - ty);
  wts[1] = tx * (1.0f - ty);
  wts[2] = (1.0f - tx) * ty;
  wts[3] = tx * ty;
  for (int k = 0; k < 4; ++k) {
    const long x = x0 + (k & 1), y = y0 + (k >> 1);
    idx[k] = (x < 0 || x >= W || y < 0 || y >= H) ? -1 : y * W + x;
  }
  return true;
}

RTG_HD bool rtg_bilinear_taps(int H, int W, float u, float v, long* idx, float* wts) {
  float tx, ty;
  return rtg_bilinear_taps_frac(H, W, u, v, idx, wts, &tx, &ty);
}

// Add the bilinear tap of one channels-last plane at normalised (u, v) into acc[C].
// T: the texel type, summed in fp32.
template <int CF, class T>
RTG_HD void rtg_bilinear_add(const T* plane, int H, int W, int C_, float u, float v, float* acc) {
  const int C = RTG_SIZE(CF, C_);
  long idx[4];
  float wts[4];
  if (!rtg_bilinear_taps(H, W, u, v, idx, wts)) {
    for (int c = 0; c < C; ++c) acc[c] = __builtin_nanf("");
    return;
  }
  for (int k = 0; k < 4; ++k) {
    if (idx[k] < 0) continue;
    const T* texel = plane + idx[k] * C;
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
  const float scale = 2.0f / box_warp;
  const float q[3] = {p[0] * scale, p[1] * scale, p[2] * scale};
#ifndef __CUDACC__
  if (CF > 0 && CF % 8 == 0 && sizeof(T) == 4) {  // the same sums in registers (see rtg_v8)
    constexpr int NV = CF > 0 ? CF / 8 : 1;
    rtg_v8 va[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) va[v] = rtg_v8{};
    bool nan = false;
    for (int k = 0; k < 3; ++k) {
      int iu, iv;
      plane_axes(plane_set, k, &iu, &iv);
      long idx[4];
      float wts[4];
      if (!rtg_bilinear_taps(H, W, q[iu], q[iv], idx, wts)) {
        nan = true;
        continue;
      }
      const T* plane = planes_b + static_cast<long>(k) * H * W * C;
      for (int t = 0; t < 4; ++t) {
        if (idx[t] < 0) continue;
        const T* texel = plane + idx[t] * C;
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) {
          rtg_v8 r;
          __builtin_memcpy(&r, texel + 8 * v, sizeof(r));
          va[v] += wts[t] * r;
        }
      }
    }
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) va[v] = va[v] / 3.0f;
    __builtin_memcpy(feat, va, sizeof(va));
    if (nan) {
      for (int c = 0; c < C; ++c) feat[c] = __builtin_nanf("");
    }
    return;
  }
#endif
  for (int c = 0; c < C; ++c) feat[c] = 0.0f;
  for (int k = 0; k < 3; ++k) {
    int iu, iv;
    plane_axes(plane_set, k, &iu, &iv);
    rtg_bilinear_add<CF, T>(planes_b + static_cast<long>(k) * H * W * C, H, W, C, q[iu], q[iv], feat);
  }
  for (int c = 0; c < C; ++c) feat[c] = feat[c] / 3.0f;
}

// softplus'(x) = sigmoid(x) from e = exp(-|x|) (1 above the threshold, as torch's backward).
RTG_HD float rtg_softplus_grad_from(float x, float e) {
  const float s = x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
  return x > 20.0f ? 1.0f : s;
}

// OSG decoder on one feature vector with folded, transposed weights: w1t (C, Hd), w2t (Hd, O1)
// with O1 = 1 + O. hid[Hd] and out[O1] are scratch; hid is left holding the activations. Writes
// sigma_raw and the O widened colours; with dact, also each hidden unit's softplus' (a backward
// that recomputes the forward needs both).
template <int CF, int HF, int OF>
RTG_HD void rtg_decode(const float* feat, int C_, int Hd_, int O1_, const float* w1t, const float* b1,
                       const float* w2t, const float* b2, float* hid, float* out, float* sigma, float* rgb,
                       float* dact = nullptr) {
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
    if (dact) {
      RTG_CHANNEL_LOOP
      for (int h = 0; h < Hd; ++h) dact[h] = rtg_softplus_grad_from(hid[h], e[h]);
    }
    RTG_CHANNEL_LOOP
    for (int h = 0; h < Hd; ++h) hid[h] = rtg_softplus_from(hid[h], e[h]);
  } else
#endif
  {
    RTG_CHANNEL_LOOP
    for (int h = 0; h < Hd; ++h) {
      const float e = rtg_softplus_exp(hid[h]);
      if (dact) dact[h] = rtg_softplus_grad_from(hid[h], e);
      hid[h] = rtg_softplus_from(hid[h], e);
    }
  }
  // sigma_raw apart from the O colour outputs (32 = 4 whole AVX2 registers on the CPU).
  const int O = O1 - 1;
  float local_acc[OF > 1 ? OF - 1 : 1];
  float* acc = OF > 1 ? local_acc : out + 1;
  float sig = b2[0];
#ifndef __CUDACC__
  if (OF > 1 && (OF - 1) % 8 == 0) {
    typedef rtg_v8 v8;  // accumulators in registers (see rtg_v8)
    constexpr int NV = OF > 1 ? (OF - 1) / 8 : 1;
    v8 va[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) __builtin_memcpy(&va[v], b2 + 1 + 8 * v, sizeof(v8));
    for (int h = 0; h < Hd; ++h) {
      const float x = hid[h];
      const float* row = w2t + h * O1;
      sig += x * row[0];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        v8 r;
        __builtin_memcpy(&r, row + 1 + 8 * v, sizeof(v8));
        va[v] += x * r;
      }
    }
    __builtin_memcpy(acc, va, sizeof(va));
  } else
#endif
  {
    RTG_CHANNEL_LOOP
    for (int o = 0; o < O; ++o) acc[o] = b2[o + 1];
    for (int h = 0; h < Hd; ++h) {
      const float x = hid[h];
      const float* row = w2t + h * O1;
      sig += x * row[0];
      RTG_CHANNEL_LOOP
      for (int o = 0; o < O; ++o) acc[o] += x * row[o + 1];
    }
  }
  *sigma = sig;
  RTG_CHANNEL_LOOP
  for (int o = 0; o < O; ++o) rgb[o] = rtg_widened_sigmoid(acc[o]);
}
