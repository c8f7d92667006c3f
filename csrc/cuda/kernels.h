// Plain-pointer interface between the torch glue (csrc/torch/cuda_glue.cpp) and the CUDA kernels
// (csrc/cuda/render_fwd.cu, render_bwd.cu), so the .cu files include no torch header.
#pragma once
#include <cuda_runtime.h>

namespace rtgaze {
namespace cuda {

// The kernels are compiled for EG3D's decoder sizes; the glue zero-pads smaller decoders and
// planes up to them (a zero plane channel, hidden unit or output changes no result).
constexpr int kC = 32, kHidden = 64, kOut1 = 33;
// Samples per ray (N + N_f) the kernels take (the warp's shared memory is sized for them at launch).
constexpr int kMaxSamples = 192;

// The precision modes (rtgaze_fast/precision.py). Planes: fp32 (fp32, tf32) or fp16 / bf16. The
// decoder's MMAs on tensor cores with fp32 accumulation: 3xTF32 (fp32), tf32, fp16, bf16 (sm_75:
// fp32 FFMA for the first two, fp16 for bf16). Sampling and compositing are fp32 in every mode.
enum class Precision { kFp32, kTf32, kFp16, kBf16 };

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

// The render op's backward (render_bwd.cu): the forward's inputs (its output pointers unused), the
// upstream gradients, and where the gradients go. The planes' (B, 3, H, W, kC) fp32 and the
// decoder's (padded and transposed as Decoder: w1t (kC, kHidden), b1, w2t (kHidden, kOut1), b2) are
// sums of fp32 atomics into buffers the caller zeroed; the rays' are written per ray, only when
// ray_grads (else left as they are: the caller zeroes them).
struct RenderGradParams {
  RenderParams fwd;
  const float *g_rgb, *g_depth, *g_wsum;  // (B,R,O), (B,R), (B,R)
  float *g_planes, *g_w1t, *g_b1, *g_w2t, *g_b2, *g_origins, *g_dirs;
  bool ray_grads;
};

// Launch on `stream`; the result is the launch's cudaGetLastError().
cudaError_t render_fwd(const RenderParams& p, cudaStream_t stream);
cudaError_t sample_decode_fwd(const SampleDecodeParams& p, cudaStream_t stream);
// cudaErrorInvalidConfiguration: not even one warp's shared memory fits the device (S too large);
// cudaErrorNotSupported: render_bwd on compute capability < 8.0, or from code built for one (older PTX).
cudaError_t render_bwd(const RenderGradParams& p, cudaStream_t stream);
// march and importance over P flattened rays; the arrays are as in ops.py (rays flattened).
cudaError_t march_fwd(const float* rgb, const float* sigma, const float* depths, long long P, int S, int O,
                      bool white_back, float* out_rgb, float* depth, float* weights, cudaStream_t stream);
cudaError_t importance_fwd(const float* depths, const float* weights, const float* u, long long P, int N, int Nf,
                           float* out, cudaStream_t stream);

}  // namespace cuda
}  // namespace rtgaze
