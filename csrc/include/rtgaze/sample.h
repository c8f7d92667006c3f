// What the CPU and CUDA kernels share of one point's triplane sampling and decoding: the bilinear
// taps and the softplus' of the decoder's hidden units. The CPU's planes sampling is in
// csrc/cpu/planes_impl.h, its decoder in csrc/cpu/decode_impl.h; the CUDA kernels (warp tiles,
// csrc/cuda/tile.cuh) have their own vector texel loads and tensor-core decoder.
#pragma once
#include "math.h"

// Sizes: functions templated on <CF> use CF when it is positive (a compile-time size the compiler
// unrolls and keeps in registers: EG3D's 32 channels) and the runtime value otherwise.
#define RTG_SIZE(fixed, runtime) ((fixed) > 0 ? (fixed) : (runtime))

#ifndef __CUDACC__
// 8 floats, one AVX2 register (GCC vector extension; an SSE pair in the baseline build). GCC keeps
// float arrays that a loop accumulates into in memory even when their size is fixed; named
// vectors of this type stay in registers (about 1.2x on the whole CPU renderer).
typedef float rtg_v8 __attribute__((vector_size(32)));

// The sum of v's 8 lanes: halves added, then the 4 lanes as two independent pairs.
RTG_HD float rtg_hsum8(rtg_v8 v) {
  typedef float v4 __attribute__((vector_size(16)));
  v4 lo, hi;
  __builtin_memcpy(&lo, &v, sizeof(v4));
  __builtin_memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(v4), sizeof(v4));
  const v4 q = lo + hi;
  return (q[0] + q[1]) + (q[2] + q[3]);
}
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
