// The forward CUDA kernels on warp tiles (tile.cuh): each warp renders one ray at a time (a
// persistent loop over rays), its samples decoded 16 at a time as the rows of tensor-core MMAs,
// each sample once (its colour kept in shared memory until the ray's weights are known). A
// texel's 32 channels are one coalesced request: 16-byte loads, 8 (fp32) or 4 (16-bit) lanes per
// texel. The ray's serial steps (the transmittance scan, the pdf, the merge) run on lane 0 with
// the CPU backend's functions; alphas, depths, fine samples and the composite run across lanes.
// march / importance: one thread per ray. CUDA headers only, no torch.
#include <algorithm>
#include <type_traits>

#include "tile.cuh"

namespace rtgaze {
namespace cuda {
namespace {
using namespace tile;

constexpr int kMaxWarps = 4;

// A warp's per-ray shared memory (fwd_warp_bytes in tile.h): S depths (coarse [0, N), fine
// [N, S)), raw densities, alphas then weights, merge order; cdf, bins (N); 4 scalars; colours
// (S x kColLd of CT); the 16-row activation tile.
template <class CT>
struct RayMem {
  float *t, *sig, *w, *cdf, *bins, *scal, *tile;
  int* ord;
  CT* col;
  __device__ RayMem(unsigned char* base, int S, int N) {
    float* f = reinterpret_cast<float*>(base);
    t = f, sig = t + S, w = sig + S;
    ord = reinterpret_cast<int*>(w + S);
    cdf = reinterpret_cast<float*>(ord + S), bins = cdf + N, scal = bins + N;
    unsigned char* c = base + align16(4 * (4 * S + 2 * N + 4));
    col = reinterpret_cast<CT*>(c);
    tile = reinterpret_cast<float*>(c + align16(S * kColLd * static_cast<int>(sizeof(CT))));
  }
};

template <class CT> __device__ __forceinline__ CT col_from(float x);
template <> __device__ __forceinline__ float col_from<float>(float x) { return x; }
template <> __device__ __forceinline__ __half col_from<__half>(float x) { return __float2half_rn(x); }

// Colours in the mode's precision: fp32 in the fp32 / tf32 modes, fp16 in the 16-bit ones.
template <Precision P>
using ColT = typename std::conditional<sizeof(typename Mode<P>::Plane) == 4, float, __half>::type;

template <Precision P>
__global__ void __launch_bounds__(kMaxWarps * 32, 1) render_kernel(const RenderParams p) {
  using M = Mode<P>;
  using Op = typename M::Op;
  using TP = typename M::Plane;
  using CT = ColT<P>;
  extern __shared__ __align__(16) unsigned char smem[];
  const Dec<Op> dec = load_decoder<Op>(p.dec, smem);
  __syncthreads();
  const int N = p.N, Nf = p.Nf, S = N + Nf, lane = lane_id(), warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const int ld = tile_ld(Op::kKind);
  RayMem<CT> m(smem + fwd_block_bytes(Op::kKind) + warp * fwd_warp_bytes(Op::kKind, S, N, sizeof(CT)), S, N);
  for (long long i = static_cast<long long>(blockIdx.x) * warps + warp; i < p.rays;
       i += static_cast<long long>(gridDim.x) * warps) {
    const TP* planes_b = static_cast<const TP*>(p.planes) + (i / p.R) * 3LL * p.H * p.W * kC;
    const float o[3] = {p.origins[3 * i], p.origins[3 * i + 1], p.origins[3 * i + 2]};
    const float d[3] = {p.dirs[3 * i], p.dirs[3 * i + 1], p.dirs[3 * i + 2]};
    const float lo = p.start[i], hi = p.end[i];
    for (int k = lane; k < N; k += 32) m.t[k] = rtg_coarse_depth(k, N, p.su[i * N + k], lo, hi, p.disparity);
    __syncwarp();
    // Decode samples [j0, j0 + 16) of the ray: raw density and colour.
    auto decode = [&](int j0, int n) {
      const float* t = m.t + j0;
      gather_tile<TP>(n, [&](int r, float* x) {
        x[0] = o[0] + t[r] * d[0], x[1] = o[1] + t[r] * d[1], x[2] = o[2] + t[r] * d[2];
        return planes_b;
      }, p.H, p.W, p.box_warp, p.plane_set, m.tile, ld);
      decode_tile<Op, M::kFast>(m.tile, ld, dec, n, [&](int r, int c, int, int, float z) {
        if (c == 0) m.sig[j0 + r] = z;
        else m.col[(j0 + r) * kColLd + c - 1] = col_from<CT>(widened_sigmoid<M::kFast>(z));
      });
    };
    for (int j0 = 0; j0 < N; j0 += kRows) decode(j0, min(kRows, N - j0));
    __syncwarp();
    if (Nf > 0) {
      // EG3D's importance sampling from the coarse weights (as the CPU's fine_depths).
      for (int k = lane; k + 1 < N; k += 32) {
        m.w[k] = rtg_interval_alpha(m.t[k], m.t[k + 1], m.sig[k], m.sig[k + 1]);
        m.bins[k] = (m.t[k] + m.t[k + 1]) * 0.5f;
      }
      __syncwarp();
      if (lane == 0) {
        float T = 1.0f;
        for (int k = 0; k + 1 < N; ++k) m.w[k] = rtg_march_weight(m.w[k], &T);
        rtg_importance_cdf(m.w, N, m.cdf);
      }
      __syncwarp();
      for (int j = lane; j < Nf; j += 32) m.t[N + j] = rtg_sample_pdf(m.bins, m.cdf, N, p.iu[i * Nf + j]);
      __syncwarp();
      for (int j0 = N; j0 < S; j0 += kRows) decode(j0, min(kRows, S - j0));
      __syncwarp();
      if (lane == 0) rtg_merge_order(m.t, N, m.t + N, Nf, m.ord);
    } else {
      for (int k = lane; k < S; k += 32) m.ord[k] = k;
    }
    __syncwarp();
    // The merged march: every alpha across lanes, then lane 0's transmittance scan.
    for (int k = lane; k + 1 < S; k += 32) {
      const int a = m.ord[k], b = m.ord[k + 1];
      m.w[k] = rtg_interval_alpha(m.t[a], m.t[b], m.sig[a], m.sig[b]);
    }
    __syncwarp();
    if (lane == 0) {
      float T = 1.0f, W = 0.0f, D = 0.0f, mn = m.t[m.ord[0]], mx = mn;
      for (int k = 0; k + 1 < S; ++k) {
        const float t0 = m.t[m.ord[k]], t1 = m.t[m.ord[k + 1]];
        const float wk = rtg_march_weight(m.w[k], &T);
        m.w[k] = wk;
        W += wk;
        D += wk * ((t0 + t1) * 0.5f);
        // torch.min / max: a NaN depth (NaN planes give NaN fine depths) makes the range NaN, as the
        // reference's batch clamp; fminf / fmaxf would drop it and clamp a NaN ray's +inf depth.
        mn = t1 < mn || t1 != t1 ? t1 : mn;
        mx = t1 > mx || t1 != t1 ? t1 : mx;
      }
      const float depth = D / W;
      p.depth[i] = depth != depth ? __int_as_float(0x7f800000) : depth;
      p.wsum[i] = W;
      p.range[2 * i] = mn;
      p.range[2 * i + 1] = mx;
      m.scal[0] = W;
    }
    __syncwarp();
    // Each sample's colour enters with the mean weight of its two intervals (MipRayMarcher2's
    // midpoint colours); lane c composites channel c.
    if (lane < p.O) {
      float acc = 0.0f;
      for (int k = 0; k < S; ++k) {
        const float cw = 0.5f * ((k > 0 ? m.w[k - 1] : 0.0f) + (k + 1 < S ? m.w[k] : 0.0f));
        acc += cw * static_cast<float>(m.col[m.ord[k] * kColLd + lane]);
      }
      const float W = m.scal[0];
      p.rgb[i * p.O + lane] = (p.white_back ? acc + 1.0f - W : acc) * 2.0f - 1.0f;
    }
    __syncwarp();  // the next ray reuses the warp's memory
  }
}

// Points in 16-row tiles, one per warp at a time.
template <Precision P>
__global__ void __launch_bounds__(kMaxWarps * 32, 1) sample_decode_kernel(const SampleDecodeParams p) {
  using M = Mode<P>;
  using Op = typename M::Op;
  using TP = typename M::Plane;
  extern __shared__ __align__(16) unsigned char smem[];
  const Dec<Op> dec = load_decoder<Op>(p.dec, smem);
  __syncthreads();
  const int warp = threadIdx.x / 32, warps = blockDim.x / 32, ld = tile_ld(Op::kKind);
  float* tile = reinterpret_cast<float*>(smem + fwd_block_bytes(Op::kKind)) + warp * kRows * ld;
  const long long tiles = (p.count + kRows - 1) / kRows;
  for (long long ti = static_cast<long long>(blockIdx.x) * warps + warp; ti < tiles;
       ti += static_cast<long long>(gridDim.x) * warps) {
    const long long i0 = ti * kRows;
    const int n = static_cast<int>(min(static_cast<long long>(kRows), p.count - i0));
    gather_tile<TP>(n, [&](int r, float* x) {
      const long long i = i0 + r;
      x[0] = p.points[3 * i], x[1] = p.points[3 * i + 1], x[2] = p.points[3 * i + 2];
      return static_cast<const TP*>(p.planes) + (i / p.M) * 3LL * p.H * p.W * kC;
    }, p.H, p.W, p.box_warp, p.plane_set, tile, ld);
    decode_tile<Op, M::kFast>(tile, ld, dec, n, [&](int r, int c, int, int, float z) {
      const long long i = i0 + r;
      if (c == 0) p.sigma[i] = z;
      else if (c - 1 < p.O) p.rgb[i * p.O + c - 1] = widened_sigmoid<M::kFast>(z);
    });
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

constexpr int kThreads = 128;
unsigned blocks(long long n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

int kind_of(Precision p) { return p == Precision::kFp16 || p == Precision::kBf16 ? kF16Kind : kTf32Kind; }

// Launch a warp-tile kernel: as many warps per block as the device's shared memory admits (at most
// kMaxWarps), a persistent grid of what fits on the device at once (at most one warp per item).
template <class Kernel, class Params>
cudaError_t launch_tiles(Kernel kernel, const Params& p, long long items, int block_bytes, int warp_bytes,
                         cudaStream_t stream) {
  int dev = 0, optin = 0, sms = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  const int warps = warps_for(block_bytes, warp_bytes, optin, kMaxWarps);
  if (warps == 0) return cudaErrorInvalidConfiguration;  // the glue's message names the limit
  const int smem = block_bytes + warps * warp_bytes;
  // The opt-in cap is the device's limit, not this launch's size: the attribute is per function, so
  // a host thread launching a smaller S could otherwise lower it under a larger launch in flight.
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
  if (err != cudaSuccess) return err;
  int per_sm = 0;
  err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, warps * 32, smem);
  if (err != cudaSuccess) return err;
  const long long want = (items + warps - 1) / warps;
  const unsigned grid = static_cast<unsigned>(std::max(1LL, std::min(want, static_cast<long long>(per_sm) * sms)));
  kernel<<<grid, warps * 32, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t render_fwd(const RenderParams& p, cudaStream_t stream) {
  if (p.rays == 0) return cudaSuccess;
  const int kind = kind_of(p.precision), S = p.N + p.Nf;
  const int col_bytes = kind == kF16Kind ? 2 : 4;
  const int block = fwd_block_bytes(kind), warp = fwd_warp_bytes(kind, S, p.N, col_bytes);
  switch (p.precision) {
    case Precision::kFp32: return launch_tiles(render_kernel<Precision::kFp32>, p, p.rays, block, warp, stream);
    case Precision::kTf32: return launch_tiles(render_kernel<Precision::kTf32>, p, p.rays, block, warp, stream);
    case Precision::kFp16: return launch_tiles(render_kernel<Precision::kFp16>, p, p.rays, block, warp, stream);
    default: return launch_tiles(render_kernel<Precision::kBf16>, p, p.rays, block, warp, stream);
  }
}

cudaError_t sample_decode_fwd(const SampleDecodeParams& p, cudaStream_t stream) {
  if (p.count == 0) return cudaSuccess;
  const int kind = kind_of(p.precision);
  const int block = fwd_block_bytes(kind), warp = kRows * tile_ld(kind) * 4;
  const long long tiles = (p.count + kRows - 1) / kRows;
  switch (p.precision) {
    case Precision::kFp32: return launch_tiles(sample_decode_kernel<Precision::kFp32>, p, tiles, block, warp, stream);
    case Precision::kTf32: return launch_tiles(sample_decode_kernel<Precision::kTf32>, p, tiles, block, warp, stream);
    case Precision::kFp16: return launch_tiles(sample_decode_kernel<Precision::kFp16>, p, tiles, block, warp, stream);
    default: return launch_tiles(sample_decode_kernel<Precision::kBf16>, p, tiles, block, warp, stream);
  }
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
