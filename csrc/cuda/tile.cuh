// Device building blocks of the warp-tile kernels (render_fwd.cu, render_bwd.cu): the precision
// modes' tensor-core MMAs (mma.sync, fp32 accumulation), decoder weights in shared memory in
// fragment order, and the coalesced texel gather. The index math lives in rtgaze/tile.h (tested on
// the CPU); the per-sample math in rtgaze/{sample,march,math}.h (the CPU backend's).
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels.h"
#include "rtgaze/march.h"
#include "rtgaze/sample.h"
#include "rtgaze/tile.h"

namespace rtgaze {
namespace cuda {
namespace tile {
using namespace rtg_tile;
static_assert(rtgaze::cuda::kC == rtg_tile::kC && rtgaze::cuda::kHidden == rtg_tile::kHidden &&
                  rtgaze::cuda::kOut1 == rtg_tile::kOut1 && rtgaze::cuda::kMaxSamples == rtg_tile::kMaxSamples,
              "kernels.h (the glue's sizes) and rtgaze/tile.h (the kernels' layouts) disagree");

__device__ __forceinline__ int lane_id() { return threadIdx.x & 31; }

// ---- operands: A(r, c) = p[r * rs + c * cs] (a fp32 tile in shared memory, possibly transposed);
// a plain B(k, n) = p[k * ks + n * ns]; a swizzled B: the weights in fragment order (tile.h).
struct View {
  const float* p;
  int rs, cs;
  __device__ float at(int r, int c) const { return p[r * rs + c * cs]; }
};

// Under RTGAZE_CUDA_EMU (the CPU emulation CI runs these kernels in, tests/cuda_emu, which
// defines __CUDA_ARCH__ as the architecture it emulates) each instruction is emu.h's function,
// called with the asm statement's operands.
__device__ __forceinline__ uint32_t to_tf32(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#ifdef RTGAZE_CUDA_EMU
  return rtgaze_emu::cvt_rna_tf32(x);
#else
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
#endif
#else
  return __float_as_uint(x);
#endif
}

__device__ __forceinline__ void mma_tf32(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#ifdef RTGAZE_CUDA_EMU
  const uint32_t b[2] = {b0, b1};
  rtgaze_emu::mma(d, a, b, rtgaze_emu::MmaType::kTf32, 8);
#else
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
#endif
}

// 16-bit MMA, m16n8k16; sm_75 has no bf16 MMA (its bf16 mode packs fp16 operands, see Half16)
// and only m16n8k8, so it issues two.
template <class T>
__device__ __forceinline__ void mma_16(float* d, const uint32_t* a, uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma_16<__half>(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#ifdef RTGAZE_CUDA_EMU
  const uint32_t b[2] = {b0, b1};
  rtgaze_emu::mma(d, a, b, rtgaze_emu::MmaType::kF16, 16);
#else
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
#elif defined(__CUDA_ARCH__)
#ifdef RTGAZE_CUDA_EMU
  rtgaze_emu::mma(d, a, &b0, rtgaze_emu::MmaType::kF16, 8);
  rtgaze_emu::mma(d, a + 2, &b1, rtgaze_emu::MmaType::kF16, 8);
#else
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(b0));
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[2]), "r"(a[3]), "r"(b1));
#endif
#endif
}
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
template <>
__device__ __forceinline__ void mma_16<__nv_bfloat16>(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
#ifdef RTGAZE_CUDA_EMU
  const uint32_t b[2] = {b0, b1};
  rtgaze_emu::mma(d, a, b, rtgaze_emu::MmaType::kBf16, 16);
#else
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
#endif

template <class T> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}
#endif

// The MMA of each precision mode: kKind (its layouts), the weights' storage type W, the A
// fragment of one 16 x kK step (load_a, once per step, reused over the N tiles), and mma(acc, ...)
// for one 16 x 8 output tile with B swizzled (Bt: the tile's fragments) or plain (a View).
// fp32: 3xTF32 (hi/lo split of both operands, lo*lo dropped: ~fp32 accuracy on tensor cores).
// tf32: one tf32 MMA. sm_75 has no tf32 MMA: both run exact fp32 FFMAs over the same layouts.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define RTG_TILE_FFMA 1
#endif
template <bool kSplit>
struct Tf32 {
  static constexpr int kKind = kTf32Kind, kK = 8;
  using W = float;
  struct Frag {
    uint32_t hi[4], lo[4];
  };
  __device__ static Frag load_a(const View& A, int k0) {
    Frag f;
#ifndef RTG_TILE_FFMA
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      int r, c;
      a_elem(kKind, lane_id(), e, &r, &c);
      const float x = A.at(r, k0 + c);
      f.hi[e] = to_tf32(x);
      f.lo[e] = kSplit ? to_tf32(x - __uint_as_float(f.hi[e])) : 0u;
    }
#endif
    return f;
  }
  __device__ static void mma_b(float* acc, const Frag& f, float b0, float b1) {
    const uint32_t h0 = to_tf32(b0), h1 = to_tf32(b1);
    if (kSplit) {
      mma_tf32(acc, f.lo, h0, h1);
      mma_tf32(acc, f.hi, to_tf32(b0 - __uint_as_float(h0)), to_tf32(b1 - __uint_as_float(h1)));
    }
    mma_tf32(acc, f.hi, h0, h1);
  }
  __device__ static void mma(float* acc, const Frag& f, const View& A, int k0, const W* Bt) {
#ifdef RTG_TILE_FFMA
#pragma unroll
    for (int e = 0; e < 4; ++e) {  // exact FFMA fallback: B(k, n) from its swizzled slot
      int r, c;
      c_elem(lane_id(), e, &r, &c);
#pragma unroll
      for (int k = 0; k < kK; ++k) acc[e] = fmaf(A.at(r, k0 + k), Bt[swizzled_index(kKind, 1, k, c)], acc[e]);
    }
#else
    const float2 b = *reinterpret_cast<const float2*>(Bt + 2 * lane_id());
    mma_b(acc, f, b.x, b.y);
#endif
  }
  // B(k, n) = B.at(k0 + k, n0 + n) (a tile in shared memory).
  __device__ static void mma_plain(float* acc, const Frag& f, const View& A, int k0, const View& B, int n0) {
#ifdef RTG_TILE_FFMA
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      int r, c;
      c_elem(lane_id(), e, &r, &c);
#pragma unroll
      for (int k = 0; k < kK; ++k) acc[e] = fmaf(A.at(r, k0 + k), B.at(k0 + k, n0 + c), acc[e]);
    }
#else
    int k, n;
    b_elem(kKind, lane_id(), 0, &k, &n);
    const float b0 = B.at(k0 + k, n0 + n);
    b_elem(kKind, lane_id(), 1, &k, &n);
    mma_b(acc, f, b0, B.at(k0 + k, n0 + n));
#endif
  }
};

// fp16 / bf16 operands (T); fp32 activations in shared memory are rounded to T as they are loaded.
template <class T>
struct Half16 {
  static constexpr int kKind = kF16Kind, kK = 16;
  using W = T;
  struct Frag {
    uint32_t a[4];
  };
  __device__ static Frag load_a(const View& A, int k0) {
    Frag f;
#pragma unroll
    for (int reg = 0; reg < 4; ++reg) {
      int r, c;
      a_elem(kKind, lane_id(), 2 * reg, &r, &c);
      f.a[reg] = pack2<T>(A.at(r, k0 + c), A.at(r, k0 + c + 1));
    }
    return f;
  }
  __device__ static void mma(float* acc, const Frag& f, const View&, int, const W* Bt) {
    const uint2 b = *reinterpret_cast<const uint2*>(Bt + 4 * lane_id());
    mma_16<T>(acc, f.a, b.x, b.y);
  }
};

// The operand type of a 16-bit plane type on this architecture (bf16 MMA needs sm_80).
template <class TP> struct Op16 { using T = __half; };
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
template <> struct Op16<__nv_bfloat16> { using T = __nv_bfloat16; };
#endif

template <class W> __device__ __forceinline__ W weight_from(float x);
template <> __device__ __forceinline__ float weight_from<float>(float x) { return x; }
template <> __device__ __forceinline__ __half weight_from<__half>(float x) { return __float2half_rn(x); }
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
template <> __device__ __forceinline__ __nv_bfloat16 weight_from<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
#endif

// Per mode: the plane type, the forward MMA and whether its bound admits MUFU transcendentals.
template <Precision P> struct Mode;
template <> struct Mode<Precision::kFp32> {
  using Plane = float;
  using Op = Tf32<true>;
  static constexpr bool kFast = false;
};
template <> struct Mode<Precision::kTf32> {
  using Plane = float;
  using Op = Tf32<false>;
  static constexpr bool kFast = true;
};
template <> struct Mode<Precision::kFp16> {
  using Plane = __half;
  using Op = Half16<__half>;
  static constexpr bool kFast = true;
};
template <> struct Mode<Precision::kBf16> {
  using Plane = __nv_bfloat16;
  using Op = Half16<typename Op16<__nv_bfloat16>::T>;
  static constexpr bool kFast = true;
};

template <bool kFast> __device__ __forceinline__ float softplus(float x) {
  return kFast ? rtg_softplus_fast(x) : rtg_softplus(x);
}
template <bool kFast> __device__ __forceinline__ float widened_sigmoid(float x) {
  return kFast ? rtg_widened_sigmoid_fast(x) : rtg_widened_sigmoid(x);
}

// Every thread of the block writes part of W (K0 x N0, W(k, n) = src[k * sk + n * sn], zero
// beyond) into dst in fragment order for kind, K x N (multiples of the K step and 8).
template <class Wt>
__device__ void swizzle_weights(const float* src, int K0, int N0, int sk, int sn, int K, int N, int kind, Wt* dst) {
  const int n_tiles = N / 8, elems = b_elems(kind), per_tile = 32 * elems;
  for (int i = threadIdx.x; i < K * N; i += blockDim.x) {
    const int tile_i = i / per_tile, within = i % per_tile, lane = within / elems, e = within % elems;
    int k, n;
    b_elem(kind, lane, e, &k, &n);
    k += (tile_i / n_tiles) * k_step(kind);
    n += (tile_i % n_tiles) * 8;
    dst[i] = weight_from<Wt>(k < K0 && n < N0 ? src[k * sk + n * sn] : 0.0f);
  }
}

// acc[NT][4] (+)= A (16 x K) @ B (K x 8 NT), B swizzled (K / Op::kK steps of NT tiles).
template <class Op, int K, int NT>
__device__ __forceinline__ void warp_gemm(float (&acc)[NT][4], const View& A, const typename Op::W* B) {
#pragma unroll
  for (int ks = 0; ks < K / Op::kK; ++ks) {
    const typename Op::Frag f = Op::load_a(A, ks * Op::kK);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) Op::mma(acc[nt], f, A, ks * Op::kK, B + (ks * NT + nt) * 32 * b_elems(Op::kKind));
  }
}

// The same with a plain B (a shared-memory tile; tf32 kinds): columns [n0, n0 + 8 NT).
template <class Op, int K, int NT>
__device__ __forceinline__ void warp_gemm_plain(float (&acc)[NT][4], const View& A, const View& B) {
#pragma unroll
  for (int ks = 0; ks < K / Op::kK; ++ks) {
    const typename Op::Frag f = Op::load_a(A, ks * Op::kK);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) Op::mma_plain(acc[nt], f, A, ks * Op::kK, B, nt * 8);
  }
}

template <int NT> __device__ __forceinline__ void zero(float (&acc)[NT][4]) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
}

// ---- the texel gather: 16 bytes (V channels) of one texel per lane (tile.h's gather_lane).
template <class TP> struct Vec {
  static constexpr int V = 16 / sizeof(TP);
  // acc[0:V] += w * texel channels (fp32).
  __device__ static void add(const TP* texel, float w, float* acc);
  __device__ static void load(const TP* texel, float* x);
};
template <> __device__ __forceinline__ void Vec<float>::load(const float* texel, float* x) {
  const float4 v = __ldg(reinterpret_cast<const float4*>(texel));
  x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
}
template <> __device__ __forceinline__ void Vec<__half>::load(const __half* texel, float* x) {
  const uint4 v = __ldg(reinterpret_cast<const uint4*>(texel));
  const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 f = __half22float2(h[j]);
    x[2 * j] = f.x, x[2 * j + 1] = f.y;
  }
}
template <> __device__ __forceinline__ void Vec<__nv_bfloat16>::load(const __nv_bfloat16* texel, float* x) {
  const uint4 v = __ldg(reinterpret_cast<const uint4*>(texel));
  const uint32_t* u = reinterpret_cast<const uint32_t*>(&v);
#pragma unroll
  for (int j = 0; j < 4; ++j) {  // bf16 -> fp32 is a shift (exact)
    x[2 * j] = __uint_as_float(u[j] << 16);
    x[2 * j + 1] = __uint_as_float(u[j] & 0xffff0000u);
  }
}
template <class TP> __device__ __forceinline__ void Vec<TP>::add(const TP* texel, float w, float* acc) {
  float x[V];
  load(texel, x);
#pragma unroll
  for (int j = 0; j < V; ++j) acc[j] += w * x[j];
}

// q[i] by selects (a run-time index into a local array would put it in local memory).
__device__ __forceinline__ float pick3(const float* q, int i) { return i == 0 ? q[0] : (i == 1 ? q[1] : q[2]); }

// Channels [ch0, ch0 + V) of the CPU's triplane_features (csrc/cpu/planes_impl.h) at point p (same
// taps, same order of sums).
template <class TP>
__device__ __forceinline__ void point_features(const TP* planes_b, int H, int W, const float* p, float box_warp,
                                               int plane_set, int ch0, float* acc) {
  constexpr int V = Vec<TP>::V;
  const float scale = 2.0f / box_warp;
  const float q[3] = {p[0] * scale, p[1] * scale, p[2] * scale};
#pragma unroll
  for (int j = 0; j < V; ++j) acc[j] = 0.0f;
  bool nan = false;
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    int iu, iv;
    plane_axes(plane_set, k, &iu, &iv);
    long idx[4];
    float wts[4];
    if (!rtg_bilinear_taps(H, W, pick3(q, iu), pick3(q, iv), idx, wts)) {
      nan = true;
      continue;
    }
    const TP* plane = planes_b + static_cast<long>(k) * H * W * kC + ch0;
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      if (idx[t] >= 0) Vec<TP>::add(plane + idx[t] * kC, wts[t], acc);
    }
  }
#pragma unroll
  for (int j = 0; j < V; ++j) acc[j] = nan ? __int_as_float(0x7fffffff) : acc[j] / 3.0f;
}

// The features of the tile's rows [0, n) into tile (16 x kC, stride ld; rows >= n get zeros).
// pos(r, p) writes row r's point into p and returns its batch item's planes.
template <class TP, class Pos>
__device__ __forceinline__ void gather_tile(int n, Pos pos, int H, int W, float box_warp, int plane_set, float* tile,
                                            int ld) {
  constexpr int V = Vec<TP>::V;
#pragma unroll
  for (int pass = 0; pass < gather_passes(sizeof(TP)); ++pass) {
    int r, ch0;
    gather_lane(sizeof(TP), lane_id(), pass, &r, &ch0);
    float acc[V];
    if (r < n) {
      float p[3];
      const TP* planes_b = pos(r, p);
      point_features(planes_b, H, W, p, box_warp, plane_set, ch0, acc);
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) acc[j] = 0.0f;
    }
#pragma unroll
    for (int j = 0; j < V; j += 4) {
      *reinterpret_cast<float4*>(tile + r * ld + ch0 + j) = make_float4(acc[j], acc[j + 1], acc[j + 2], acc[j + 3]);
    }
  }
}

// The forward decoder's shared memory: W1 (kC x kHidden) and W2 (kHidden x kOut1Pad) swizzled for
// the mode's MMA, fp32 biases.
template <class Op>
struct Dec {
  typename Op::W* w1;
  typename Op::W* w2;
  float *b1, *b2;
};

template <class Op>
__device__ Dec<Op> load_decoder(const Decoder& d, unsigned char* smem) {
  Dec<Op> s;
  s.w1 = reinterpret_cast<typename Op::W*>(smem);
  s.w2 = s.w1 + kC * kHidden;
  s.b1 = reinterpret_cast<float*>(smem + align16((kC * kHidden + kHidden * kOut1Pad) * sizeof(typename Op::W)));
  s.b2 = s.b1 + kHidden;
  swizzle_weights(d.w1t, kC, kHidden, kHidden, 1, kC, kHidden, Op::kKind, s.w1);
  swizzle_weights(d.w2t, kHidden, kOut1, kOut1, 1, kHidden, kOut1Pad, Op::kKind, s.w2);
  for (int i = threadIdx.x; i < kHidden; i += blockDim.x) s.b1[i] = d.b1[i];
  for (int i = threadIdx.x; i < kOut1Pad; i += blockDim.x) s.b2[i] = i < kOut1 ? d.b2[i] : 0.0f;
  return s;
}

// The OSG decoder of a tile whose features the gather left in tile (stride ld): FC1 on tensor
// cores, softplus into the same tile (hidden, 16 x kHidden), FC2; emit(r, c, nt, e, z) for every
// output c < kOut1 of rows r < n (z: the pre-activation, bias added; nt, e: its fragment slot, so
// per-slot register arrays are indexed at compile time). Warp-collective.
template <class Op, bool kFast, class Emit>
__device__ __forceinline__ void decode_tile(float* tile, int ld, const Dec<Op>& dec, int n, Emit emit) {
  const int lane = lane_id();
  __syncwarp();  // the gather's writes
  float h[kHidden / 8][4];
  zero(h);
  warp_gemm<Op, kC, kHidden / 8>(h, View{tile, ld, 1}, dec.w1);
  __syncwarp();  // every lane's A reads are done before the hidden layer overwrites the tile
#pragma unroll
  for (int nt = 0; nt < kHidden / 8; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      int r, c;
      c_elem(lane, e, &r, &c);
      c += nt * 8;
      tile[r * ld + c] = softplus<kFast>(h[nt][e] + dec.b1[c]);
    }
  }
  __syncwarp();
  float o[kOut1Pad / 8][4];
  zero(o);
  warp_gemm<Op, kHidden, kOut1Pad / 8>(o, View{tile, ld, 1}, dec.w2);
  __syncwarp();  // the tile is free for the next gather
#pragma unroll
  for (int nt = 0; nt < kOut1Pad / 8; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      int r, c;
      c_elem(lane, e, &r, &c);
      c += nt * 8;
      if (r < n && c < kOut1) emit(r, c, nt, e, o[nt][e] + dec.b2[c]);
    }
  }
}

}  // namespace tile
}  // namespace cuda
}  // namespace rtgaze
