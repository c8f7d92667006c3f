// Plain-pointer interface between the torch glue (csrc/torch/cuda_glue.cpp) and the CUDA kernels
// (csrc/cuda/render_fwd.cu), so the .cu files include no torch header.
#pragma once
#include <cuda_runtime.h>

namespace rtgaze {
namespace cuda {

// The kernels are compiled for EG3D's decoder sizes; the glue zero-pads smaller decoders and
// planes up to them (a zero plane channel, hidden unit or output changes no result).
constexpr int kC = 32, kHidden = 64, kOut1 = 33;
// Samples per ray (N + N_f) the fused kernel keeps in per-thread arrays.
constexpr int kMaxSamples = 192;

// The planes' storage and the MLP's operand type: fp32 (fp32 CUDA-core math, also what the tf32
// mode runs: exact fp32 is inside tf32's bound), or fp16 / bf16 planes with the MLP on tensor
// cores (render_half.cu). Sampling, activations and compositing are fp32 in every mode.
enum class Precision { kFp32, kFp16, kBf16 };

struct Decoder {
  const float *w1t, *b1, *w2t, *b2;  // folded, padded; w1t (kC, kHidden), w2t (kHidden, kOut1)
};

struct RenderParams {
  const void* planes;  // (B, 3, H, W, kC) channels-last: float, __half or __nv_bfloat16 (precision)
  Precision precision;
  int H, W;
  Decoder dec;
  const float *origins, *dirs, *start, *end, *su, *iu;  // (B,R,3) x2, (B,R) x2, (B,R,N), (B,R,Nf)
  long long rays, R;                                     // rays = B * R
  int N, Nf, O, plane_set;
  float box_warp;
  bool disparity, white_back;
  float *rgb, *depth, *wsum, *range;  // (B,R,O), (B,R), (B,R), (B,R,2)
};

struct SampleDecodeParams {
  const void* planes;  // as RenderParams
  Precision precision;
  int H, W;
  Decoder dec;
  const float* points;  // (B, M, 3)
  long long count, M;   // count = B * M
  int O, plane_set;
  float box_warp;
  float *sigma, *rgb;  // (B, M), (B, M, O)
};

// Launch on `stream`; the result is the launch's cudaGetLastError().
cudaError_t render_fwd(const RenderParams& p, cudaStream_t stream);
cudaError_t sample_decode_fwd(const SampleDecodeParams& p, cudaStream_t stream);
// The fp16 / bf16 kernels (render_half.cu); render_fwd and sample_decode_fwd call them.
cudaError_t render_half_fwd(const RenderParams& p, cudaStream_t stream);
cudaError_t sample_decode_half_fwd(const SampleDecodeParams& p, cudaStream_t stream);
// march and importance over P flattened rays; the arrays are as in ops.py (rays flattened).
cudaError_t march_fwd(const float* rgb, const float* sigma, const float* depths, long long P, int S, int O,
                      bool white_back, float* out_rgb, float* depth, float* weights, cudaStream_t stream);
cudaError_t importance_fwd(const float* depths, const float* weights, const float* u, long long P, int N, int Nf,
                           float* out, cudaStream_t stream);

}  // namespace cuda
}  // namespace rtgaze
