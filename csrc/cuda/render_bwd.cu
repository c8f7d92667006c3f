// The render op's backward on warp tiles, a recompute (as the CPU's, csrc/cpu/render_bwd_impl.h):
// each warp re-renders one ray at a time (depths, taps, decoder, importance sampling, merge order;
// instead of colours it keeps each sample's dot with 2 dL/drgb), runs the march backward on lane 0
// (rtg_march_backward_core, the CPU's function), then the decoder and the bilinear taps backwards
// 16 merged samples at a time on tensor cores. The products of the backward are tf32-family in
// every mode: 3xTF32 (fp32 accuracy) in the fp32 mode, tf32 in the others (upstream gradients of an
// image loss are ~1e-7, below fp16's normal range); 16-bit planes are read and converted to fp32.
// Gradients: the planes' and the decoder's are fp32 atomics (the decoder's summed per block in
// shared memory first), so their last bits vary from run to run; the glue refuses
// torch.use_deterministic_algorithms(True). The rays' are written per ray.
#include <algorithm>

#include "tile.cuh"

namespace rtgaze {
namespace cuda {
namespace {
using namespace tile;

constexpr int kMaxWarps = 4;

template <Precision P> struct BwdOp { using T = Tf32<false>; };
template <> struct BwdOp<Precision::kFp32> { using T = Tf32<true>; };

// The block's shared memory (bwd_block_bytes): W1, W2, W2^T (kOut1Pad x kHidden), W1^T (kHidden x
// kC) in tf32 fragment order, fp32 biases, and the decoder gradient sums.
struct BwdDec {
  float *w1, *w2, *w2t, *w1t, *b1, *b2, *g_w1t, *g_b1, *g_w2t, *g_b2;
  __device__ BwdDec(unsigned char* smem) {
    float* f = reinterpret_cast<float*>(smem);
    w1 = f, w2 = w1 + kC * kHidden, w2t = w2 + kHidden * kOut1Pad, w1t = w2t + kOut1Pad * kHidden;
    b1 = reinterpret_cast<float*>(smem + align16((2 * kC * kHidden + 2 * kHidden * kOut1Pad) * 4));
    b2 = b1 + kHidden;
    g_w1t = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(b1) + align16((kHidden + kOut1Pad) * 4));
    g_b1 = g_w1t + kC * kHidden, g_w2t = g_b1 + kHidden, g_b2 = g_w2t + kHidden * kOut1Pad;
  }
};

// A warp's per-ray memory (bwd_warp_bytes): by sample (coarse then fine) depths, raw densities,
// colour dots; the merge order; by merged position depths, densities, dL/dsigma, colour weights;
// the march's scratch (3 S), cdf, bins (N), scalars; the tiles.
struct BwdRay {
  float *t, *sig, *dot, *tm, *sm, *gs, *cw, *scratch, *cdf, *bins, *scal, *feat, *hid, *gz, *gout, *gfeat;
  int* ord;
  __device__ BwdRay(unsigned char* base, int S, int N) {
    float* f = reinterpret_cast<float*>(base);
    t = f, sig = t + S, dot = sig + S;
    ord = reinterpret_cast<int*>(dot + S);
    tm = reinterpret_cast<float*>(ord + S), sm = tm + S, gs = sm + S, cw = gs + S, scratch = cw + S;
    cdf = scratch + 3 * S, bins = cdf + N, scal = bins + N;
    feat = reinterpret_cast<float*>(base + align16(4 * (11 * S + 2 * N + 8)));
    gfeat = feat + kRows * kLdC, hid = gfeat + kRows * kLdC, gz = hid + kRows * kLdH, gout = gz + kRows * kLdH;
  }
};

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int s = 16; s > 0; s >>= 1) x += __shfl_xor_sync(0xffffffffu, x, s);
  return x;
}

// dst[0:4] += v[0:4], one 128-bit atomic where the architecture has it (sm_90).
__device__ __forceinline__ void atomic_add4(float* dst, float a, float b, float c, float d) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float4*>(dst), make_float4(a, b, c, d));
#else
  atomicAdd(dst, a), atomicAdd(dst + 1, b), atomicAdd(dst + 2, c), atomicAdd(dst + 3, d);
#endif
}

// The triplane sampling's backward for the V channels [ch0, ch0 + V) of one point (the CPU's
// triplane_backward, split over the lanes of a texel): scatter gf into the planes' gradient, and
// with ray_grads (warp-uniform) this lane's share of dL/dp (the caller sums it over the texel's
// lanes), which takes the taps' texels, read again: without it the scatter reads no planes.
template <class TP>
__device__ __forceinline__ bool triplane_backward(const TP* planes_b, float* gplanes_b, int H, int W, const float* p,
                                                  float box_warp, int plane_set, int ch0, const float* gf,
                                                  bool ray_grads, float* g_p) {
  constexpr int V = Vec<TP>::V;
  const float scale = 2.0f / box_warp;
  const float q[3] = {p[0] * scale, p[1] * scale, p[2] * scale};
  float gq[3] = {0.0f, 0.0f, 0.0f};
  bool nan = false;
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    int iu, iv;
    plane_axes(plane_set, k, &iu, &iv);
    long idx[4];
    float wts[4], tx, ty;
    if (!rtg_bilinear_taps_frac(H, W, pick3(q, iu), pick3(q, iv), idx, wts, &tx, &ty)) {
      nan = true;
      continue;
    }
    const long off = static_cast<long>(k) * H * W * kC + ch0;
    const float dwx[4] = {-(1.0f - ty), 1.0f - ty, -ty, ty};
    const float dwy[4] = {-(1.0f - tx), -tx, 1.0f - tx, tx};
    float gx = 0.0f, gy = 0.0f;
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      if (idx[t] < 0) continue;
      if (ray_grads) {
        float x[V];
        Vec<TP>::load(planes_b + off + idx[t] * kC, x);
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < V; ++j) dot += gf[j] * x[j];
        gx += dwx[t] * dot;
        gy += dwy[t] * dot;
      }
      const float wt = wts[t] * (1.0f / 3.0f);  // the mean over the three planes
      float* g = gplanes_b + off + idx[t] * kC;
#pragma unroll
      for (int j = 0; j < V; j += 4) atomic_add4(g + j, wt * gf[j], wt * gf[j + 1], wt * gf[j + 2], wt * gf[j + 3]);
    }
    // ix = ((u + 1) W - 1) / 2, so dix/du = W / 2; and the 1/3 of the mean.
    const float gu = gx * (W * 0.5f / 3.0f), gv = gy * (H * 0.5f / 3.0f);
    gq[0] += iu == 0 ? gu : 0.0f, gq[1] += iu == 1 ? gu : 0.0f, gq[2] += iu == 2 ? gu : 0.0f;
    gq[0] += iv == 0 ? gv : 0.0f, gq[1] += iv == 1 ? gv : 0.0f, gq[2] += iv == 2 ? gv : 0.0f;
  }
#pragma unroll
  for (int j = 0; j < 3; ++j) g_p[j] = gq[j] * scale;
  return nan;
}

// sm_75 (64 KiB of shared memory per block, no tf32 MMA) has no backward: the body is compiled out
// there and the launcher refuses before launching.
template <Precision P>
__global__ void __launch_bounds__(kMaxWarps * 32, 1) render_backward_kernel(const RenderGradParams g) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  using Op = typename BwdOp<P>::T;
  using TP = typename Mode<P>::Plane;
  constexpr int V = Vec<TP>::V, kLanesPerTexel = kC / V;
  const RenderParams& p = g.fwd;
  extern __shared__ __align__(16) unsigned char smem[];
  BwdDec dec(smem);
  swizzle_weights(p.dec.w1t, kC, kHidden, kHidden, 1, kC, kHidden, kTf32Kind, dec.w1);
  swizzle_weights(p.dec.w2t, kHidden, kOut1, kOut1, 1, kHidden, kOut1Pad, kTf32Kind, dec.w2);
  swizzle_weights(p.dec.w2t, kOut1, kHidden, 1, kOut1, kOut1Pad, kHidden, kTf32Kind, dec.w2t);
  swizzle_weights(p.dec.w1t, kHidden, kC, 1, kHidden, kHidden, kC, kTf32Kind, dec.w1t);
  for (int i = threadIdx.x; i < kHidden; i += blockDim.x) dec.b1[i] = p.dec.b1[i];
  for (int i = threadIdx.x; i < kOut1Pad; i += blockDim.x) dec.b2[i] = i < kOut1 ? p.dec.b2[i] : 0.0f;
  for (int i = threadIdx.x; i < kC * kHidden + kHidden + kHidden * kOut1Pad + kOut1Pad; i += blockDim.x) {
    dec.g_w1t[i] = 0.0f;
  }
  __syncthreads();
  const Dec<Op> fdec{dec.w1, dec.w2, dec.b1, dec.b2};
  const int N = p.N, Nf = p.Nf, S = N + Nf, lane = lane_id(), warp = threadIdx.x / 32, warps = blockDim.x / 32;
  BwdRay m(smem + bwd_block_bytes() + warp * bwd_warp_bytes(S, N), S, N);
  for (long long i = static_cast<long long>(blockIdx.x) * warps + warp; i < p.rays;
       i += static_cast<long long>(gridDim.x) * warps) {
    const long long b = i / p.R;
    const TP* planes_b = static_cast<const TP*>(p.planes) + b * 3LL * p.H * p.W * kC;
    float* gplanes_b = g.g_planes + b * 3LL * p.H * p.W * kC;
    const float o[3] = {p.origins[3 * i], p.origins[3 * i + 1], p.origins[3 * i + 2]};
    const float d[3] = {p.dirs[3 * i], p.dirs[3 * i + 1], p.dirs[3 * i + 2]};
    // 2 dL/drgb of each output column this lane's C fragments hold (0 beyond the O colours).
    float gc[kOut1Pad / 8][2];
#pragma unroll
    for (int nt = 0; nt < kOut1Pad / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        int r, c;
        c_elem(lane, e, &r, &c);
        c += nt * 8;
        gc[nt][e] = c >= 1 && c - 1 < p.O ? 2.0f * g.g_rgb[i * p.O + c - 1] : 0.0f;
      }
    }
    for (int k = lane; k < N; k += 32) {
      m.t[k] = rtg_coarse_depth(k, N, p.su[i * N + k], p.start[i], p.end[i], p.disparity);
    }
    __syncwarp();
    // The forward's decode of samples [j0, j0 + 16): raw density, and the colour's dot with 2 dL/drgb.
    auto decode = [&](int j0, int n) {
      const float* t = m.t + j0;
      gather_tile<TP>(n, [&](int r, float* x) {
        x[0] = o[0] + t[r] * d[0], x[1] = o[1] + t[r] * d[1], x[2] = o[2] + t[r] * d[2];
        return planes_b;
      }, p.H, p.W, p.box_warp, p.plane_set, m.hid, kLdH);  // the decoder's tile: 64 columns
      float dot_lo = 0.0f, dot_hi = 0.0f;  // rows g and g + 8 of this lane's fragments
      decode_tile<Op, false>(m.hid, kLdH, fdec, n, [&](int r, int c, int nt, int e, float z) {
        if (c == 0) {
          m.sig[j0 + r] = z;
        } else {
          const float x = gc[nt][e & 1] * rtg_widened_sigmoid(z);
          if (r < 8) dot_lo += x;
          else dot_hi += x;
        }
      });
      // The row's 32 colours are spread over the 4 lanes of its group.
      dot_lo += __shfl_xor_sync(0xffffffffu, dot_lo, 1);
      dot_lo += __shfl_xor_sync(0xffffffffu, dot_lo, 2);
      dot_hi += __shfl_xor_sync(0xffffffffu, dot_hi, 1);
      dot_hi += __shfl_xor_sync(0xffffffffu, dot_hi, 2);
      const int r = lane >> 2;
      if ((lane & 3) == 0 && r < n) m.dot[j0 + r] = dot_lo;
      if ((lane & 3) == 0 && r + 8 < n) m.dot[j0 + r + 8] = dot_hi;
    };
    for (int j0 = 0; j0 < N; j0 += kRows) decode(j0, min(kRows, N - j0));
    __syncwarp();
    if (Nf > 0) {
      for (int k = lane; k + 1 < N; k += 32) m.bins[k] = (m.t[k] + m.t[k + 1]) * 0.5f;
      if (lane == 0) {
        float T = 1.0f;
        for (int k = 0; k + 1 < N; ++k) m.scratch[k] = rtg_march_step(m.t[k], m.t[k + 1], m.sig[k], m.sig[k + 1], &T);
        rtg_importance_cdf(m.scratch, N, m.cdf);
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
    for (int k = lane; k < S; k += 32) {
      m.tm[k] = m.t[m.ord[k]];
      m.sm[k] = m.sig[m.ord[k]];
      m.cw[k] = 0.0f;
    }
    __syncwarp();
    if (lane == 0) {  // the march backward, as the CPU's
      float g_white = 0.0f;
      for (int c = 0; c < p.O; ++c) g_white += 2.0f * g.g_rgb[i * p.O + c];
      auto dot = [&](int k) { return (m.dot[m.ord[k]] + m.dot[m.ord[k + 1]]) * 0.5f; };
      auto col_grad = [&](int k, float h) { m.cw[k] += h, m.cw[k + 1] += h; };
      rtg_march_backward_core(m.tm, m.sm, S, p.white_back, g_white, g.g_depth[i], g.g_wsum[i], dot, col_grad, m.gs,
                              m.scratch);
    }
    __syncwarp();
    float g_o[3] = {0.0f, 0.0f, 0.0f}, g_d[3] = {0.0f, 0.0f, 0.0f};
    for (int k0 = 0; k0 < S; k0 += kRows) {
      const int n = min(kRows, S - k0);
      const float* t = m.tm + k0;
      gather_tile<TP>(n, [&](int r, float* x) {
        x[0] = o[0] + t[r] * d[0], x[1] = o[1] + t[r] * d[1], x[2] = o[2] + t[r] * d[2];
        return planes_b;
      }, p.H, p.W, p.box_warp, p.plane_set, m.feat, kLdC);
      __syncwarp();
      // FC1 again: activations to hid, softplus' to gz.
      float z[kHidden / 8][4];
      zero(z);
      warp_gemm<Op, kC, kHidden / 8>(z, View{m.feat, kLdC, 1}, dec.w1);
#pragma unroll
      for (int nt = 0; nt < kHidden / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          int r, c;
          c_elem(lane, e, &r, &c);
          c += nt * 8;
          const float x = z[nt][e] + dec.b1[c], ex = rtg_softplus_exp(x);
          m.hid[r * kLdH + c] = rtg_softplus_from(x, ex);
          m.gz[r * kLdH + c] = rtg_softplus_grad_from(x, ex);  // softplus', until dL/dh replaces it
        }
      }
      __syncwarp();
      float out[kOut1Pad / 8][4];
      zero(out);
      warp_gemm<Op, kHidden, kOut1Pad / 8>(out, View{m.hid, kLdH, 1}, dec.w2);
      // dL/d(outputs): sigma_raw's from the march; colour = sigmoid(z) * 1.002 - 0.001.
#pragma unroll
      for (int nt = 0; nt < kOut1Pad / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          int r, c;
          c_elem(lane, e, &r, &c);
          c += nt * 8;
          float go = 0.0f;
          if (r < n && c == 0) {
            go = m.gs[k0 + r];
          } else if (r < n && c < kOut1) {
            const float col = rtg_widened_sigmoid(out[nt][e] + dec.b2[c]);
            const float sg = (col + 0.001f) * (1.0f / 1.002f);
            go = m.cw[k0 + r] * gc[nt][e & 1] * (1.002f * sg * (1.0f - sg));
          }
          m.gout[r * kLdO + c] = go;
        }
      }
      __syncwarp();
      // dL/dh = gout W2^T, times softplus': dL/dpre-activation.
      float gh[kHidden / 8][4];
      zero(gh);
      warp_gemm<Op, kOut1Pad, kHidden / 8>(gh, View{m.gout, kLdO, 1}, dec.w2t);
#pragma unroll
      for (int nt = 0; nt < kHidden / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          int r, c;
          c_elem(lane, e, &r, &c);
          m.gz[r * kLdH + nt * 8 + c] *= gh[nt][e];  // each element read and written by its own lane
        }
      }
      __syncwarp();
      // dL/dfeatures = gz W1^T.
      float gf[kC / 8][4];
      zero(gf);
      warp_gemm<Op, kHidden, kC / 8>(gf, View{m.gz, kLdH, 1}, dec.w1t);
#pragma unroll
      for (int nt = 0; nt < kC / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          int r, c;
          c_elem(lane, e, &r, &c);
          m.gfeat[r * kLdC + nt * 8 + c] = gf[nt][e];
        }
      }
      // The decoder's gradients of the tile into the block's sums: dW2t = hid^T gout, dW1t = feat^T gz
      // (rows >= n are zero in gout and gz), the biases' column sums.
#pragma unroll
      for (int mt = 0; mt < kHidden / 16; ++mt) {
        float acc[kOut1Pad / 8][4];
        zero(acc);
        warp_gemm_plain<Op, kRows, kOut1Pad / 8>(acc, View{m.hid + mt * 16, 1, kLdH}, View{m.gout, kLdO, 1});
#pragma unroll
        for (int nt = 0; nt < kOut1Pad / 8; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            int r, c;
            c_elem(lane, e, &r, &c);
            atomicAdd(&dec.g_w2t[(mt * 16 + r) * kOut1Pad + nt * 8 + c], acc[nt][e]);
          }
        }
      }
#pragma unroll
      for (int mt = 0; mt < kC / 16; ++mt) {
        float acc[kHidden / 8][4];
        zero(acc);
        warp_gemm_plain<Op, kRows, kHidden / 8>(acc, View{m.feat + mt * 16, 1, kLdC}, View{m.gz, kLdH, 1});
#pragma unroll
        for (int nt = 0; nt < kHidden / 8; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            int r, c;
            c_elem(lane, e, &r, &c);
            atomicAdd(&dec.g_w1t[(mt * 16 + r) * kHidden + nt * 8 + c], acc[nt][e]);
          }
        }
      }
      for (int c = lane; c < kHidden; c += 32) {
        float s = 0.0f;
        for (int r = 0; r < n; ++r) s += m.gz[r * kLdH + c];
        atomicAdd(&dec.g_b1[c], s);
      }
      for (int c = lane; c < kOut1; c += 32) {
        float s = 0.0f;
        for (int r = 0; r < n; ++r) s += m.gout[r * kLdO + c];
        atomicAdd(&dec.g_b2[c], s);
      }
      __syncwarp();
      // The bilinear taps backwards: each texel's lanes scatter their channels and share dL/dp.
#pragma unroll
      for (int pass = 0; pass < gather_passes(sizeof(TP)); ++pass) {
        int r, ch0;
        gather_lane(sizeof(TP), lane, pass, &r, &ch0);
        float g_p[3] = {0.0f, 0.0f, 0.0f};
        bool nan = false;
        if (r < n) {
          const float pt[3] = {o[0] + t[r] * d[0], o[1] + t[r] * d[1], o[2] + t[r] * d[2]};
          nan = triplane_backward<TP>(planes_b, gplanes_b, p.H, p.W, pt, p.box_warp, p.plane_set, ch0,
                                      m.gfeat + r * kLdC + ch0, g.ray_grads, g_p);
        }
        if (!g.ray_grads) continue;
#pragma unroll
        for (int j = 0; j < 3; ++j) {
#pragma unroll
          for (int s = 1; s < kLanesPerTexel; s <<= 1) g_p[j] += __shfl_xor_sync(0xffffffffu, g_p[j], s);
          if (r < n && lane % kLanesPerTexel == 0) {  // p = o + t d
            const float gj = nan ? __int_as_float(0x7fffffff) : g_p[j];
            g_o[j] += gj;
            g_d[j] += t[r] * gj;
          }
        }
      }
      __syncwarp();  // the tiles are reused by the next chunk
    }
    if (g.ray_grads) {
#pragma unroll
      for (int j = 0; j < 3; ++j) {
        const float so = warp_sum(g_o[j]), sd = warp_sum(g_d[j]);
        if (lane == 0) {
          g.g_origins[3 * i + j] = so;
          g.g_dirs[3 * i + j] = sd;
        }
      }
    }
    __syncwarp();
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kC * kHidden; i += blockDim.x) atomicAdd(&g.g_w1t[i], dec.g_w1t[i]);
  for (int i = threadIdx.x; i < kHidden; i += blockDim.x) atomicAdd(&g.g_b1[i], dec.g_b1[i]);
  for (int i = threadIdx.x; i < kHidden * kOut1; i += blockDim.x) {
    atomicAdd(&g.g_w2t[i], dec.g_w2t[(i / kOut1) * kOut1Pad + i % kOut1]);
  }
  for (int i = threadIdx.x; i < kOut1; i += blockDim.x) atomicAdd(&g.g_b2[i], dec.g_b2[i]);
#endif
}

template <Precision P>
cudaError_t launch(const RenderGradParams& g, cudaStream_t stream) {
  const int S = g.fwd.N + g.fwd.Nf, block = bwd_block_bytes(), warp = bwd_warp_bytes(S, g.fwd.N);
  int dev = 0, optin = 0, sms = 0, major = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  if (major < 8) return cudaErrorNotSupported;
  // The kernel's body exists only in code built for sm_80+: an 8.x+ device that JIT-compiles older
  // PTX (TORCH_CUDA_ARCH_LIST="7.5+PTX") would run an empty kernel and return zero gradients.
  cudaFuncAttributes attr;
  cudaError_t err = cudaFuncGetAttributes(&attr, render_backward_kernel<P>);
  if (err != cudaSuccess) return err;
  if (attr.ptxVersion < 80) return cudaErrorNotSupported;
  cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  const int warps = warps_for(block, warp, optin, kMaxWarps);
  if (warps == 0) return cudaErrorInvalidConfiguration;
  const int smem = block + warps * warp;
  // The device's limit, not smem (see render_fwd.cu's launch_tiles).
  err = cudaFuncSetAttribute(render_backward_kernel<P>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
  if (err != cudaSuccess) return err;
  int per_sm = 0;
  err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, render_backward_kernel<P>, warps * 32, smem);
  if (err != cudaSuccess) return err;
  const long long want = (g.fwd.rays + warps - 1) / warps;
  const unsigned grid = static_cast<unsigned>(std::max(1LL, std::min(want, static_cast<long long>(per_sm) * sms)));
  render_backward_kernel<P><<<grid, warps * 32, smem, stream>>>(g);
  return cudaGetLastError();
}

}  // namespace

cudaError_t render_bwd(const RenderGradParams& g, cudaStream_t stream) {
  if (g.fwd.rays == 0) return cudaSuccess;
  switch (g.fwd.precision) {
    case Precision::kFp32: return launch<Precision::kFp32>(g, stream);
    case Precision::kTf32: return launch<Precision::kTf32>(g, stream);
    case Precision::kFp16: return launch<Precision::kFp16>(g, stream);
    default: return launch<Precision::kBf16>(g, stream);
  }
}

}  // namespace cuda
}  // namespace rtgaze
