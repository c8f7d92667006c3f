// The fp32 CUDA kernels (fp16/bf16: render_half.cu): one thread per ray (or point), decoder
// weights in shared memory, the per-sample math from the shared headers (csrc/include/rtgaze).
// CUDA headers only, no torch.
#include <cuda_runtime.h>

#include "kernels.h"
#include "rtgaze/march.h"
#include "rtgaze/sample.h"

namespace rtgaze {
namespace cuda {
namespace {

constexpr int kThreads = 128;

struct SharedDecoder {
  float w1t[kC * kHidden], b1[kHidden], w2t[kHidden * kOut1], b2[kOut1];
};

// Every thread of the block helps copy the weights; call before any early return.
__device__ void load_decoder(const Decoder& d, SharedDecoder& s) {
  for (int i = threadIdx.x; i < kC * kHidden; i += blockDim.x) s.w1t[i] = d.w1t[i];
  for (int i = threadIdx.x; i < kHidden * kOut1; i += blockDim.x) s.w2t[i] = d.w2t[i];
  for (int i = threadIdx.x; i < kHidden; i += blockDim.x) s.b1[i] = d.b1[i];
  for (int i = threadIdx.x; i < kOut1; i += blockDim.x) s.b2[i] = d.b2[i];
  __syncthreads();
}

__device__ __forceinline__ void point_features(const float* planes_b, int H, int W, const float* o, const float* d,
                                               float t, float box_warp, int plane_set, float* feat) {
  const float p[3] = {o[0] + t * d[0], o[1] + t * d[1], o[2] + t * d[2]};
  rtg_triplane_features<kC>(planes_b, H, W, kC, p, box_warp, plane_set, feat);
}

__global__ void __launch_bounds__(kThreads) render_kernel(const RenderParams p) {
  __shared__ SharedDecoder dec;
  load_decoder(p.dec, dec);
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.rays) return;
  const int N = p.N, Nf = p.Nf, S = N + Nf;
  const float* planes_b = static_cast<const float*>(p.planes) + (i / p.R) * 3LL * p.H * p.W * kC;
  const float o[3] = {p.origins[3 * i], p.origins[3 * i + 1], p.origins[3 * i + 2]};
  const float d[3] = {p.dirs[3 * i], p.dirs[3 * i + 1], p.dirs[3 * i + 2]};
  const float lo = p.start[i], hi = p.end[i];
  const float* u = p.su + i * N;

  // Depths and raw densities: coarse at [0, N), fine at [N, S); merged copies in tm, sm.
  float t[kMaxSamples], sg[kMaxSamples], tm[kMaxSamples], sm[kMaxSamples], w[kMaxSamples], cdf[kMaxSamples];
  float feat[kC], hid[kHidden];
  for (int k = 0; k < N; ++k) {
    if (p.disparity) {
      const float s = static_cast<float>(k) / (N - 1) + u[k] * (1.0f / (N - 1));
      t[k] = 1.0f / (1.0f / lo * (1.0f - s) + 1.0f / hi * s);
    } else {
      t[k] = lo + static_cast<float>(k) / (N - 1) * (hi - lo) + u[k] * ((hi - lo) / (N - 1));
    }
    point_features(planes_b, p.H, p.W, o, d, t[k], p.box_warp, p.plane_set, feat);
    sg[k] = rtg_decode_sigma<kC, kHidden, kOut1>(feat, kC, kHidden, kOut1, dec.w1t, dec.b1, dec.w2t, dec.b2, hid);
  }
  const float* ts = t;
  const float* ss = sg;
  if (Nf > 0) {
    float T = 1.0f;
    for (int k = 0; k + 1 < N; ++k) w[k] = rtg_march_step(t[k], t[k + 1], sg[k], sg[k + 1], &T);
    rtg_importance_cdf(w, N, cdf);
    float bins[kMaxSamples];
    for (int k = 0; k + 1 < N; ++k) bins[k] = (t[k] + t[k + 1]) * 0.5f;
    const float* ui = p.iu + i * Nf;
    int search = 0;  // u is sorted per ray (the host sorts it): one merge over the cdf
    for (int j = 0; j < Nf; ++j) {
      t[N + j] = rtg_sample_pdf_from(bins, cdf, N, ui[j], &search);
      point_features(planes_b, p.H, p.W, o, d, t[N + j], p.box_warp, p.plane_set, feat);
      sg[N + j] = rtg_decode_sigma<kC, kHidden, kOut1>(feat, kC, kHidden, kOut1, dec.w1t, dec.b1, dec.w2t, dec.b2,
                                                       hid);
    }
    // Both runs are sorted (the host sorts u; the inverse CDF is monotone): merge them.
    int x = 0, y = N;
    for (int k = 0; k < S; ++k) {
      const bool coarse = y >= S || (x < N && t[x] <= t[y]);
      const int src = coarse ? x++ : y++;
      tm[k] = t[src];
      sm[k] = sg[src];
    }
    ts = tm;
    ss = sm;
  }

  // All interval weights first; then each sample's colour is decoded once and enters with the
  // weight of its two intervals, (w[k-1] + w[k]) / 2 (the midpoint colours of MipRayMarcher2).
  float T = 1.0f, W = 0.0f, D = 0.0f, mn = ts[0], mx = ts[0];
  for (int k = 0; k + 1 < S; ++k) {
    w[k] = rtg_march_step(ts[k], ts[k + 1], ss[k], ss[k + 1], &T);
    W += w[k];
    D += w[k] * ((ts[k] + ts[k + 1]) * 0.5f);
    mn = fminf(mn, ts[k + 1]);
    mx = fmaxf(mx, ts[k + 1]);
  }
  float acc[kC], out[kOut1], col[kOut1 - 1], sigma_unused;
#pragma unroll
  for (int c = 0; c < kOut1 - 1; ++c) acc[c] = 0.0f;
  for (int k = 0; k < S; ++k) {
    const float cw = 0.5f * ((k > 0 ? w[k - 1] : 0.0f) + (k + 1 < S ? w[k] : 0.0f));
    point_features(planes_b, p.H, p.W, o, d, ts[k], p.box_warp, p.plane_set, feat);
    rtg_decode<kC, kHidden, kOut1>(feat, kC, kHidden, kOut1, dec.w1t, dec.b1, dec.w2t, dec.b2, hid, out, &sigma_unused,
                                   col);
#pragma unroll
    for (int c = 0; c < kOut1 - 1; ++c) acc[c] += cw * col[c];
  }
  const float depth = D / W;
  p.depth[i] = depth != depth ? __int_as_float(0x7f800000) : depth;
  p.wsum[i] = W;
  p.range[2 * i] = mn;
  p.range[2 * i + 1] = mx;
#pragma unroll
  for (int c = 0; c < kOut1 - 1; ++c) {
    if (c < p.O) p.rgb[i * p.O + c] = (p.white_back ? acc[c] + 1.0f - W : acc[c]) * 2.0f - 1.0f;
  }
}

__global__ void __launch_bounds__(kThreads) sample_decode_kernel(const SampleDecodeParams p) {
  __shared__ SharedDecoder dec;
  load_decoder(p.dec, dec);
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.count) return;
  const float* planes_b = static_cast<const float*>(p.planes) + (i / p.M) * 3LL * p.H * p.W * kC;
  float feat[kC], hid[kHidden], out[kOut1], col[kOut1 - 1];
  rtg_triplane_features<kC>(planes_b, p.H, p.W, kC, p.points + 3 * i, p.box_warp, p.plane_set, feat);
  rtg_decode<kC, kHidden, kOut1>(feat, kC, kHidden, kOut1, dec.w1t, dec.b1, dec.w2t, dec.b2, hid, out,
                                 &p.sigma[i], col);
#pragma unroll
  for (int c = 0; c < kOut1 - 1; ++c) {
    if (c < p.O) p.rgb[i * p.O + c] = col[c];
  }
}

__global__ void march_kernel(const float* rgb, const float* sigma, const float* depths, long long P, int S, int O,
                             bool white_back, float* out_rgb, float* depth, float* weights) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= P) return;
  rtg_march(depths + i * S, sigma + i * S, rgb + i * S * O, S, O, white_back, out_rgb + i * O, depth + i, nullptr,
            weights + i * (S - 1));
}

__global__ void importance_kernel(const float* depths, const float* weights, const float* u, long long P, int N,
                                  int Nf, float* out) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= P) return;
  float cdf[kMaxSamples], bins[kMaxSamples];
  const float* t = depths + i * N;
  rtg_importance_cdf(weights + i * (N - 1), N, cdf);
  for (int k = 0; k + 1 < N; ++k) bins[k] = (t[k] + t[k + 1]) * 0.5f;
  for (int j = 0; j < Nf; ++j) out[i * Nf + j] = rtg_sample_pdf(bins, cdf, N, u[i * Nf + j]);
}

unsigned blocks(long long n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

cudaError_t render_fwd(const RenderParams& p, cudaStream_t stream) {
  if (p.rays == 0) return cudaSuccess;
  if (p.precision != Precision::kFp32) return render_half_fwd(p, stream);
  render_kernel<<<blocks(p.rays), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t sample_decode_fwd(const SampleDecodeParams& p, cudaStream_t stream) {
  if (p.count == 0) return cudaSuccess;
  if (p.precision != Precision::kFp32) return sample_decode_half_fwd(p, stream);
  sample_decode_kernel<<<blocks(p.count), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t march_fwd(const float* rgb, const float* sigma, const float* depths, long long P, int S, int O,
                      bool white_back, float* out_rgb, float* depth, float* weights, cudaStream_t stream) {
  if (P == 0) return cudaSuccess;
  march_kernel<<<blocks(P), kThreads, 0, stream>>>(rgb, sigma, depths, P, S, O, white_back, out_rgb, depth, weights);
  return cudaGetLastError();
}

cudaError_t importance_fwd(const float* depths, const float* weights, const float* u, long long P, int N, int Nf,
                           float* out, cudaStream_t stream) {
  if (P == 0 || Nf == 0) return cudaSuccess;
  importance_kernel<<<blocks(P), kThreads, 0, stream>>>(depths, weights, u, P, N, Nf, out);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace rtgaze
