// Scalar math of one sample. On the CPU, exp/log are written out (Cephes-style polynomials,
// ~1-2 ulp) so that loops over channels vectorise without -ffast-math; on the GPU they are the
// accurate CUDA intrinsics.
#pragma once
#include "common.h"

#ifdef __CUDACC__
RTG_HD float rtg_exp(float x) { return expf(x); }
RTG_HD float rtg_exp_nonpositive(float x) { return expf(x); }
RTG_HD float rtg_log1p(float x) { return log1pf(x); }
#else
RTG_HD float rtg_bits_to_float(int32_t i) { float f; __builtin_memcpy(&f, &i, 4); return f; }

// exp(xc) for xc in [-87.34, 88.38] (or NaN): xc = n ln2 + r, |r| <= ln2/2, a degree-7 polynomial
// for e^r, 2^n from the exponent bits.
RTG_HD float rtg_exp_in_range(float xc) {
  const float n = __builtin_floorf(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * rtg_bits_to_float((static_cast<int32_t>(n) + 127) << 23);
}
RTG_HD float rtg_exp(float x) {
  float xc = x > 88.3762626647949f ? 88.3762626647949f : x;
  xc = xc < -87.3365447504f ? -87.3365447504f : xc;  // comparisons keep NaN
  return rtg_exp_in_range(xc);
}
// exp(x) for x <= 0 (or NaN): one clamp (softplus' exp(-|x|)).
RTG_HD float rtg_exp_nonpositive(float x) { return rtg_exp_in_range(x < -87.3365447504f ? -87.3365447504f : x); }

// log(1 + y) for y in [0, 1] (softplus' log1p(exp(-|x|))): y + y^2 q(y), q a degree-9 polynomial
// fitted to (log1p(y) - y) / y^2 on [0, 1] (Chebyshev least squares, float32 coefficients): at
// most 1.2e-7 relative and 7.8e-8 absolute error over [0, 1], as Cephes' range-split logf it
// replaces (11 operations per lane instead of ~19, no branch). A NaN y gives NaN.
RTG_HD float rtg_log1p(float y) {
  float q = 2.873900812e-03f;
  q = q * y - 1.751232333e-02f;
  q = q * y + 4.993134364e-02f;
  q = q * y - 9.202980995e-02f;
  q = q * y + 1.307134032e-01f;
  q = q * y - 1.637851298e-01f;
  q = q * y + 1.995935738e-01f;
  q = q * y - 2.499702424e-01f;
  q = q * y + 3.333324790e-01f;
  q = q * y - 5.000000000e-01f;
  return (y * y) * q + y;
}
#endif

// torch.nn.functional.softplus(beta=1, threshold=20): x above the threshold, else log1p(exp(x)),
// written as max(x, 0) + log1p(exp(-|x|)) so exp never overflows.
// Split in two so a CPU loop can compute every exp first, then every log (shorter dependency
// chains per iteration: ~1.5x faster than one fused loop).
RTG_HD float rtg_softplus_exp(float x) { return rtg_exp_nonpositive(-__builtin_fabsf(x)); }  // exp(-|x|)
RTG_HD float rtg_softplus_from(float x, float e) {
  const float sp = (x > 0.0f ? x : 0.0f) + rtg_log1p(e);
  return x > 20.0f ? x : sp;  // branch-free, so loops over channels vectorise
}
RTG_HD float rtg_softplus(float x) { return rtg_softplus_from(x, rtg_softplus_exp(x)); }
// softplus'(x) = sigmoid(x) from e = exp(-|x|) (1 above the threshold, as torch's backward): one
// reciprocal, whichever the sign (a vector computes both sides).
RTG_HD float rtg_softplus_grad_from(float x, float e) {
  const float r = 1.0f / (1.0f + e);
  const float s = x >= 0.0f ? r : e * r;
  return x > 20.0f ? 1.0f : s;
}

// MipNeRF's widened sigmoid of the decoder's colour outputs.
RTG_HD float rtg_widened_sigmoid(float x) {
  return 1.0f / (1.0f + rtg_exp(-x)) * (1.0f + 2.0f * 0.001f) - 0.001f;
}

#ifdef __CUDACC__
// The same two on the GPU's special-function unit (MUFU.EX2 / LG2 / RCP, ~2 ulp on the range used):
// the CUDA kernels' tf32, fp16 and bf16 modes, whose bounds are >= 5e-3 (rtgaze_fast/precision.py);
// the fp32 mode keeps the accurate functions above.
__device__ __forceinline__ float rtg_softplus_fast(float x) {
  const float sp = fmaxf(x, 0.0f) + __logf(1.0f + __expf(-fabsf(x)));
  return x > 20.0f ? x : sp;
}
__device__ __forceinline__ float rtg_widened_sigmoid_fast(float x) {
  return __fdividef(1.0f, 1.0f + __expf(-x)) * (1.0f + 2.0f * 0.001f) - 0.001f;
}
#endif
