// The fp16 / bf16 CUDA kernels: planes stored in 16 bits, the decoder MLP on tensor cores (WMMA,
// fp32 accumulation); sampling, activations and compositing stay fp32 (the shared headers).
// One thread per ray as in render_fwd.cu, but the 32 lanes of a warp decode their 32 points
// together: each lane writes its point's features as one row of a 32 x kC tile in shared memory,
// the warp multiplies the tile by the weights, each lane reads its row back. So every loop that
// reaches a decode runs the same trip count on all lanes, and lanes past the last ray shadow it.
// bf16 tensor-core MMA needs sm_80: on sm_75 the bf16 mode runs its MLP in fp16 (more precise).
#include <cuda_runtime.h>
#include <mma.h>

#include "kernels.h"
#include "rtgaze/march.h"
#include "rtgaze/sample.h"

namespace rtgaze {
namespace cuda {
namespace {
using namespace nvcuda;

constexpr int kWarps = 2;  // per block: keeps the static shared memory under 48 KiB (~35 KiB)
constexpr int kHalfThreads = 32 * kWarps;
constexpr int kOutPad = 48;  // 1 + 32 outputs padded to whole 16-column MMA tiles
constexpr int kTile = 16;    // WMMA m16n16k16

// The MLP operand type of a plane type (see the top comment for bf16 on sm_75).
template <class TP> struct Mma { using T = __half; };
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
template <> struct Mma<__nv_bfloat16> { using T = __nv_bfloat16; };
#endif

template <class T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
#endif

// Row-major weights in the MMA type (w1 (kC, kHidden), w2 (kHidden, kOutPad) zero-padded), fp32
// biases. WMMA loads need 32-byte aligned tile addresses.
template <class T> struct SharedDecoder {
  __align__(32) T w1[kC * kHidden];
  __align__(32) T w2[kHidden * kOutPad];
  float b1[kHidden], b2[kOutPad];
};

// One warp's tiles, column-major with ld 32 (element (lane, k) at k * 32 + lane): a lane's row is
// spread over 32 banks, so the per-lane writes and reads are conflict-free.
template <class T> struct WarpTiles {
  __align__(32) T a[kHidden * 32];       // MMA operand A: features (first kC columns), then hidden
  __align__(32) float acc[kHidden * 32];  // MMA results: hidden pre-activations, then outputs
};

template <class T>
__device__ void load_decoder(const Decoder& d, SharedDecoder<T>& s) {
  for (int i = threadIdx.x; i < kC * kHidden; i += blockDim.x) s.w1[i] = from_float<T>(d.w1t[i]);
  for (int i = threadIdx.x; i < kHidden * kOutPad; i += blockDim.x) {
    const int h = i / kOutPad, o = i % kOutPad;
    s.w2[i] = from_float<T>(o < kOut1 ? d.w2t[h * kOut1 + o] : 0.0f);
  }
  for (int i = threadIdx.x; i < kHidden; i += blockDim.x) s.b1[i] = d.b1[i];
  for (int i = threadIdx.x; i < kOutPad; i += blockDim.x) s.b2[i] = i < kOut1 ? d.b2[i] : 0.0f;
  __syncthreads();
}

// tiles.acc[:, n-tiles] = tiles.a[:, :K] @ w[:K, n-tiles] for the first `n_tiles` column tiles.
template <class T, int K, int LDW>
__device__ __forceinline__ void warp_matmul(WarpTiles<T>& tiles, const T* w, int n_tiles) {
  wmma::fragment<wmma::matrix_a, kTile, kTile, kTile, T, wmma::col_major> fa;
  wmma::fragment<wmma::matrix_b, kTile, kTile, kTile, T, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, kTile, kTile, kTile, float> fc;
#pragma unroll
  for (int m = 0; m < 32 / kTile; ++m) {
    for (int n = 0; n < n_tiles; ++n) {
      wmma::fill_fragment(fc, 0.0f);
#pragma unroll
      for (int k = 0; k < K / kTile; ++k) {
        wmma::load_matrix_sync(fa, tiles.a + k * kTile * 32 + m * kTile, 32);
        wmma::load_matrix_sync(fb, w + k * kTile * LDW + n * kTile, LDW);
        wmma::mma_sync(fc, fa, fb, fc);
      }
      wmma::store_matrix_sync(tiles.acc + n * kTile * 32 + m * kTile, fc, 32, wmma::mem_col_major);
    }
  }
}

// The OSG decoder of the 32 lanes' points (warp-collective: every lane calls it together).
// feat[kC]: this lane's features. Returns sigma_raw; with kColour, the widened colours in col.
template <class T, bool kColour>
__device__ float warp_decode(const float* feat, const SharedDecoder<T>& dec, WarpTiles<T>& tiles, float* col) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int c = 0; c < kC; ++c) tiles.a[c * 32 + lane] = from_float<T>(feat[c]);
  __syncwarp();
  warp_matmul<T, kC, kHidden>(tiles, dec.w1, kHidden / kTile);
  __syncwarp();  // every lane's A reads are done before the hidden layer overwrites it
#pragma unroll
  for (int h = 0; h < kHidden; ++h) {
    tiles.a[h * 32 + lane] = from_float<T>(rtg_softplus(tiles.acc[h * 32 + lane] + dec.b1[h]));
  }
  __syncwarp();
  // sigma_raw is output 0: the first column tile alone when colours are not needed.
  warp_matmul<T, kHidden, kOutPad>(tiles, dec.w2, kColour ? kOutPad / kTile : 1);
  __syncwarp();
  const float sigma = tiles.acc[lane] + dec.b2[0];
  if (kColour) {
#pragma unroll
    for (int c = 0; c < kOut1 - 1; ++c) col[c] = rtg_widened_sigmoid(tiles.acc[(c + 1) * 32 + lane] + dec.b2[c + 1]);
  }
  __syncwarp();  // the next call may overwrite the tiles
  return sigma;
}

template <class TP>
__device__ __forceinline__ void point_features(const TP* planes_b, int H, int W, const float* o, const float* d,
                                               float t, float box_warp, int plane_set, float* feat) {
  const float p[3] = {o[0] + t * d[0], o[1] + t * d[1], o[2] + t * d[2]};
  rtg_triplane_features<kC>(planes_b, H, W, kC, p, box_warp, plane_set, feat);
}

// Same pipeline as render_fwd.cu's render_kernel, with warp_decode for every decoder call.
template <class TP>
__global__ void __launch_bounds__(kHalfThreads) render_half_kernel(const RenderParams p) {
  using T = typename Mma<TP>::T;
  __shared__ SharedDecoder<T> dec;
  __shared__ WarpTiles<T> warp_tiles[kWarps];
  load_decoder(p.dec, dec);
  const long long first = static_cast<long long>(blockIdx.x) * blockDim.x;
  if (first + (threadIdx.x & ~31) >= p.rays) return;  // whole warps only: the decode is collective
  const long long i_lane = first + threadIdx.x;
  const bool valid = i_lane < p.rays;
  const long long i = valid ? i_lane : p.rays - 1;  // a lane past the end shadows the last ray
  WarpTiles<T>& tiles = warp_tiles[threadIdx.x / 32];

  const int N = p.N, Nf = p.Nf, S = N + Nf;
  const TP* planes_b = static_cast<const TP*>(p.planes) + (i / p.R) * 3LL * p.H * p.W * kC;
  const float o[3] = {p.origins[3 * i], p.origins[3 * i + 1], p.origins[3 * i + 2]};
  const float d[3] = {p.dirs[3 * i], p.dirs[3 * i + 1], p.dirs[3 * i + 2]};
  const float lo = p.start[i], hi = p.end[i];
  const float* u = p.su + i * N;

  float t[kMaxSamples], sg[kMaxSamples], tm[kMaxSamples], sm[kMaxSamples], w[kMaxSamples], cdf[kMaxSamples];
  float feat[kC];
  for (int k = 0; k < N; ++k) {
    if (p.disparity) {
      const float s = static_cast<float>(k) / (N - 1) + u[k] * (1.0f / (N - 1));
      t[k] = 1.0f / (1.0f / lo * (1.0f - s) + 1.0f / hi * s);
    } else {
      t[k] = lo + static_cast<float>(k) / (N - 1) * (hi - lo) + u[k] * ((hi - lo) / (N - 1));
    }
    point_features(planes_b, p.H, p.W, o, d, t[k], p.box_warp, p.plane_set, feat);
    sg[k] = warp_decode<T, false>(feat, dec, tiles, nullptr);
  }
  const float* ts = t;
  const float* ss = sg;
  if (Nf > 0) {
    float T_ = 1.0f;
    for (int k = 0; k + 1 < N; ++k) w[k] = rtg_march_step(t[k], t[k + 1], sg[k], sg[k + 1], &T_);
    rtg_importance_cdf(w, N, cdf);
    float bins[kMaxSamples];
    for (int k = 0; k + 1 < N; ++k) bins[k] = (t[k] + t[k + 1]) * 0.5f;
    const float* ui = p.iu + i * Nf;
    int search = 0;  // u is sorted per ray (the host sorts it): one merge over the cdf
    for (int j = 0; j < Nf; ++j) {
      t[N + j] = rtg_sample_pdf_from(bins, cdf, N, ui[j], &search);
      point_features(planes_b, p.H, p.W, o, d, t[N + j], p.box_warp, p.plane_set, feat);
      sg[N + j] = warp_decode<T, false>(feat, dec, tiles, nullptr);
    }
    int x = 0, y = N;  // merge the two sorted runs
    for (int k = 0; k < S; ++k) {
      const bool coarse = y >= S || (x < N && t[x] <= t[y]);
      const int src = coarse ? x++ : y++;
      tm[k] = t[src];
      sm[k] = sg[src];
    }
    ts = tm;
    ss = sm;
  }

  // All weights first, then one colour decode per sample weighted by its two intervals' mean.
  float T_ = 1.0f, W = 0.0f, D = 0.0f, mn = ts[0], mx = ts[0];
  for (int k = 0; k + 1 < S; ++k) {
    w[k] = rtg_march_step(ts[k], ts[k + 1], ss[k], ss[k + 1], &T_);
    W += w[k];
    D += w[k] * ((ts[k] + ts[k + 1]) * 0.5f);
    mn = fminf(mn, ts[k + 1]);
    mx = fmaxf(mx, ts[k + 1]);
  }
  float acc[kOut1 - 1], col[kOut1 - 1];
#pragma unroll
  for (int c = 0; c < kOut1 - 1; ++c) acc[c] = 0.0f;
  for (int k = 0; k < S; ++k) {
    const float cw = 0.5f * ((k > 0 ? w[k - 1] : 0.0f) + (k + 1 < S ? w[k] : 0.0f));
    point_features(planes_b, p.H, p.W, o, d, ts[k], p.box_warp, p.plane_set, feat);
    warp_decode<T, true>(feat, dec, tiles, col);
#pragma unroll
    for (int c = 0; c < kOut1 - 1; ++c) acc[c] += cw * col[c];
  }
  if (!valid) return;
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

template <class TP>
__global__ void __launch_bounds__(kHalfThreads) sample_decode_half_kernel(const SampleDecodeParams p) {
  using T = typename Mma<TP>::T;
  __shared__ SharedDecoder<T> dec;
  __shared__ WarpTiles<T> warp_tiles[kWarps];
  load_decoder(p.dec, dec);
  const long long first = static_cast<long long>(blockIdx.x) * blockDim.x;
  if (first + (threadIdx.x & ~31) >= p.count) return;
  const long long i_lane = first + threadIdx.x;
  const bool valid = i_lane < p.count;
  const long long i = valid ? i_lane : p.count - 1;
  const TP* planes_b = static_cast<const TP*>(p.planes) + (i / p.M) * 3LL * p.H * p.W * kC;
  float feat[kC], col[kOut1 - 1];
  rtg_triplane_features<kC>(planes_b, p.H, p.W, kC, p.points + 3 * i, p.box_warp, p.plane_set, feat);
  const float sigma = warp_decode<T, true>(feat, dec, warp_tiles[threadIdx.x / 32], col);
  if (!valid) return;
  p.sigma[i] = sigma;
#pragma unroll
  for (int c = 0; c < kOut1 - 1; ++c) {
    if (c < p.O) p.rgb[i * p.O + c] = col[c];
  }
}

unsigned half_blocks(long long n) { return static_cast<unsigned>((n + kHalfThreads - 1) / kHalfThreads); }

}  // namespace

cudaError_t render_half_fwd(const RenderParams& p, cudaStream_t stream) {
  if (p.rays == 0) return cudaSuccess;
  if (p.precision == Precision::kFp16) {
    render_half_kernel<__half><<<half_blocks(p.rays), kHalfThreads, 0, stream>>>(p);
  } else {
    render_half_kernel<__nv_bfloat16><<<half_blocks(p.rays), kHalfThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

cudaError_t sample_decode_half_fwd(const SampleDecodeParams& p, cudaStream_t stream) {
  if (p.count == 0) return cudaSuccess;
  if (p.precision == Precision::kFp16) {
    sample_decode_half_kernel<__half><<<half_blocks(p.count), kHalfThreads, 0, stream>>>(p);
  } else {
    sample_decode_half_kernel<__nv_bfloat16><<<half_blocks(p.count), kHalfThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace rtgaze
