// A CPU emulation of the CUDA subset the kernels in csrc/cuda use, so CI (which has no GPU) runs
// them: the same sources, compiled by the host compiler (tests/cuda_emu/build.py).
//
// Each block runs on its own: its threads are fibers on one OS thread (started with ucontext,
// switched with _setjmp / _longjmp, which leave the signal mask alone), switched only at a
// synchronisation point (__syncthreads, __syncwarp, a shuffle, an MMA), so a thread runs ahead of
// its warp up to the next one: a kernel relying on lanes in lockstep without __syncwarp (undefined
// since Volta) reads stale data here. Barriers check their participants: a block barrier with an
// exited thread or a lane waiting at a warp barrier, a warp barrier of lanes at different
// operations, or one with an exited lane, throws instead of hanging. Dynamic shared memory starts
// filled with 0xff bytes (NaN floats, -1 ints: a read before any write shows) and is followed by a
// guard zone checked after each block. The fibers of a block can run in reverse order (Device::
// reverse): a missing barrier between lane 0 writing and other lanes reading shows in reverse
// order, one between other lanes writing and lane 0 reading in forward order.
//
// mma.sync: the PTX ISA's fragment layouts for m16n8k8 (tf32) and m16n8k16 (f16, bf16), written
// here from the ISA's tables independently of the kernels' own layout code (rtgaze/tile.h),
// inputs truncated to their type's bits (tf32: the low 13 bits ignored, as the hardware does),
// products summed in double and rounded to fp32 once.
#pragma once
#include <setjmp.h>
#include <ucontext.h>
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/common_interface_defs.h>
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime.h"

// The qualifiers nvcc reads; the host compiler makes them plain (inline) functions.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

// ---- built-in types and variables ----
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

namespace rtgaze_emu {

constexpr int kGuardBytes = 1024;
constexpr size_t kStackBytes = 256 * 1024;
constexpr int kStaticSmemLimit = 48 * 1024;  // dynamic shared memory above this needs the attribute

enum class Wait { kNone, kWarp, kBlock, kDone };

struct Fiber {
  ucontext_t ctx;  // its start
  jmp_buf jb;      // where it parked
  void* fake_stack = nullptr;  // AddressSanitizer's, while it is switched out
  bool started = false;
  unsigned exchanges = 0;  // warp exchanges (shuffles, MMAs) done: their slot bank alternates
  std::vector<char> stack;
  Wait wait = Wait::kNone;
  const char* op = nullptr;  // the warp operation it waits in
};

// One block in flight: its fibers, the scheduler's context, the warps' exchange slots.
struct Block {
  std::vector<Fiber> fibers;
  ucontext_t sched;  // the scheduler, as the first switch into each fiber saw it
  jmp_buf sched_jb;  // the scheduler, where fibers return to
  void* sched_fake_stack = nullptr;
  const void* sched_stack = nullptr;  // its stack (AddressSanitizer learns it at the first switch)
  size_t sched_stack_size = 0;
  int current = 0;
  std::function<void()> body;
  std::vector<unsigned char> smem;
  std::vector<uint32_t> slots;  // 2 banks x lanes x kSlotWords: 32-bit words an exchange passes
  std::string error;
};
inline Block* block = nullptr;
constexpr int kSlotWords = 10;  // an MMA's a[4], b[2], c[4]

// AddressSanitizer's fiber annotations (build.py's asan build): every switch names the stack it
// goes to and reports the arrival, so ASan checks each fiber's frames on the right stack.
inline void leaving(void** fake_stack, const void* to_stack, size_t to_size) {
#ifdef __SANITIZE_ADDRESS__
  __sanitizer_start_switch_fiber(fake_stack, to_stack, to_size);
#else
  (void)fake_stack, (void)to_stack, (void)to_size;
#endif
}
inline void arrived(void* fake_stack, const void** from_stack = nullptr, size_t* from_size = nullptr) {
#ifdef __SANITIZE_ADDRESS__
  __sanitizer_finish_switch_fiber(fake_stack, from_stack, from_size);
#else
  (void)fake_stack, (void)from_stack, (void)from_size;
#endif
}

[[noreturn]] inline void fail(const std::string& what) {
  block->error = what;
  throw std::runtime_error(what);
}

inline void fiber_main() {
  arrived(nullptr, &block->sched_stack, &block->sched_stack_size);
  Fiber& f = block->fibers[block->current];
  try {
    block->body();
  } catch (const std::exception& e) {
    if (block->error.empty()) block->error = e.what();
  }
  f.wait = Wait::kDone;
  leaving(nullptr, block->sched_stack, block->sched_stack_size);  // nullptr: this stack is done
  _longjmp(block->sched_jb, 1);  // never resumed
}

inline void set_thread(int t) {
  block->current = t;
  threadIdx = {static_cast<unsigned>(t) % blockDim.x, 0, 0};
}

// Park the calling fiber until the scheduler releases its barrier.
inline void park(Wait w, const char* op) {
  Fiber& f = block->fibers[block->current];
  f.wait = w, f.op = op;
  ++device.barriers;
  const int me = block->current;
  if (_setjmp(f.jb) == 0) {
    leaving(&f.fake_stack, block->sched_stack, block->sched_stack_size);
    _longjmp(block->sched_jb, 1);
  }
  arrived(block->fibers[me].fake_stack);
  set_thread(me);
  if (!block->error.empty()) throw std::runtime_error(block->error);  // unwind a failed block
}

// The scheduler runs fiber t until it parks or exits.
inline void resume(int t) {
  set_thread(t);
  Fiber& f = block->fibers[t];
  if (_setjmp(block->sched_jb) != 0) {
    arrived(block->sched_fake_stack);
    return;
  }
  leaving(&block->sched_fake_stack, f.stack.data(), f.stack.size());
  if (f.started) _longjmp(f.jb, 1);
  f.started = true;
  swapcontext(&block->sched, &f.ctx);
}

// Release whatever barrier is complete; false when none is (a deadlock if fibers still wait).
inline bool release() {
  const int n = static_cast<int>(block->fibers.size());
  bool any = false;
  for (int w0 = 0; w0 < n; w0 += 32) {
    int warp = 0, done = 0, other = 0;
    const char* op = nullptr;
    bool mixed = false;
    for (int t = w0; t < w0 + 32; ++t) {
      const Fiber& f = block->fibers[t];
      if (f.wait == Wait::kWarp) {
        ++warp;
        if (op != nullptr && std::strcmp(op, f.op) != 0) mixed = true;
        op = f.op;
      } else if (f.wait == Wait::kDone) {
        ++done;
      } else {
        ++other;
      }
    }
    if (warp == 0) continue;
    if (mixed) fail(std::string("warp ") + std::to_string(w0 / 32) + ": lanes wait in different warp operations");
    if (done > 0) fail(std::string("warp ") + std::to_string(w0 / 32) + ": " + op + " with exited lanes");
    if (other > 0) continue;  // the rest of the warp has not arrived yet
    for (int t = w0; t < w0 + 32; ++t) block->fibers[t].wait = Wait::kNone;
    any = true;
  }
  if (any) return true;
  int waiting = 0, done = 0;
  for (const Fiber& f : block->fibers) {
    if (f.wait == Wait::kDone) ++done;
    if (f.wait == Wait::kBlock) ++waiting;
  }
  if (waiting == 0) return false;  // every fiber exited, or a deadlock (the caller tells which)
  if (done > 0) fail("__syncthreads with exited threads (the barrier is in code not every thread reaches)");
  if (waiting < static_cast<int>(block->fibers.size())) {
    fail("__syncthreads while other lanes of a warp wait in a warp operation");
  }
  for (Fiber& f : block->fibers) f.wait = Wait::kNone;
  return true;
}

inline void run_block(std::vector<unsigned char>& smem, const std::function<void()>& body) {
  Block b;
  b.body = body;
  b.fibers.resize(blockDim.x);
  b.slots.assign(2 * static_cast<size_t>(blockDim.x) * kSlotWords, 0u);
  block = &b;
  for (unsigned t = 0; t < blockDim.x; ++t) {
    Fiber& f = b.fibers[t];
    f.stack.resize(kStackBytes);
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc_stack.ss_size = f.stack.size();
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_main, 0);
  }
  b.smem.swap(smem);
  bool running = true;
  while (running) {
    const int n = static_cast<int>(b.fibers.size());
    for (int k = 0; k < n; ++k) {
      const int t = device.reverse ? n - 1 - k : k;
      if (b.fibers[t].wait != Wait::kNone) continue;
      resume(t);
    }
    if (!b.error.empty()) {
      // Unwind every parked fiber (each rethrows the error from park) so its stack is released.
      for (int t = 0; t < n; ++t) {
        if (b.fibers[t].wait == Wait::kDone) continue;
        resume(t);
      }
      break;
    }
    try {
      running = release();
    } catch (const std::exception&) {
      continue;  // b.error is set: the next pass unwinds
    }
    if (!running) {
      for (const Fiber& f : b.fibers) {
        if (f.wait != Wait::kDone) {
          b.error = "deadlock: threads wait at a barrier the others never reach";
          running = true;
          break;
        }
      }
    }
  }
  b.smem.swap(smem);
  block = nullptr;
  if (!b.error.empty()) throw std::runtime_error(b.error);
}

inline unsigned char* dynamic_smem() { return block->smem.data(); }

// A kernel launch: every block in turn, its threads as fibers; errors become the launch's error.
inline void run_grid(dim3 grid, dim3 threads, size_t smem_bytes, const void* kernel,
                     const std::function<void()>& body) {
  const auto attr = device.max_dynamic_smem.find(kernel);
  const int limit = attr == device.max_dynamic_smem.end() ? kStaticSmemLimit : attr->second;
  if (grid.x == 0 || grid.y != 1 || grid.z != 1 || threads.x == 0 || threads.x > 1024 || threads.x % 32 != 0 ||
      threads.y != 1 || threads.z != 1 || static_cast<long long>(smem_bytes) > limit) {
    device.last_error = cudaErrorInvalidConfiguration;  // (block sizes not a multiple of 32: unused, refused)
    device.last_message = "launch configuration refused: grid " + std::to_string(grid.x) + ", block " +
                          std::to_string(threads.x) + ", " + std::to_string(smem_bytes) + " bytes of shared memory";
    return;
  }
  gridDim = grid, blockDim = threads;
  std::vector<unsigned char> smem;
  for (unsigned bx = 0; bx < grid.x; ++bx) {
    blockIdx = {bx, 0, 0};
    smem.assign(smem_bytes + kGuardBytes, 0xff);
    try {
      run_block(smem, body);
    } catch (const std::exception& e) {
      device.last_error = cudaErrorLaunchFailure;
      device.last_message = std::string("block ") + std::to_string(bx) + ": " + e.what();
      return;
    }
    ++device.blocks;
    for (size_t i = smem_bytes; i < smem.size(); ++i) {
      if (smem[i] != 0xff) {
        device.last_error = cudaErrorLaunchFailure;
        device.last_message = "block " + std::to_string(bx) + " wrote past its " + std::to_string(smem_bytes) +
                              " bytes of dynamic shared memory (at byte " + std::to_string(i) + ")";
        return;
      }
    }
  }
}

template <class... P>
struct Launch {
  void (*kernel)(P...);
  dim3 grid, threads;
  size_t smem;
  template <class... A>
  void operator()(A&&... args) const {
    auto k = kernel;
    run_grid(grid, threads, smem, reinterpret_cast<const void*>(kernel), [&] { k(args...); });
  }
};
// kernel<<<grid, threads, smem, stream>>>(args) becomes launch(kernel, grid, threads, smem, stream)(args).
template <class... P>
Launch<P...> launch(void (*kernel)(P...), dim3 grid, dim3 threads, size_t smem = 0, cudaStream_t = nullptr) {
  return {kernel, grid, threads, smem};
}

// ---- warp exchanges: each lane writes its slots, a warp barrier, each reads the others'. The
// bank alternates per exchange, so one barrier suffices: a lane writes a bank again two
// exchanges later, past a barrier every lane reaches only after reading it.
inline uint32_t* slots(int lane, unsigned bank) {
  const size_t warp = static_cast<size_t>(block->current / 32);
  return &block->slots[((bank & 1u) * blockDim.x + warp * 32 + lane) * kSlotWords];
}
inline unsigned next_bank() { return block->fibers[block->current].exchanges++; }

inline void check_full_mask(unsigned mask, const char* op) {
  if (mask != 0xffffffffu) fail(std::string(op) + ": only full-warp masks are emulated");
}

inline uint32_t f2u(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}
inline float u2f(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// ---- 16-bit floats: round to nearest even, NaN kept (a quiet NaN) ----
inline uint16_t half_bits(float f) {
  uint32_t x = f2u(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u);
  if (x >= 0x477ff000u) return sign | 0x7c00u;  // at or past halfway from 65504 to 65536: inf
  if (x < 0x38800000u) {                        // below 2^-14: a subnormal, in units of 2^-24
    return sign | static_cast<uint16_t>(std::nearbyint(u2f(x) * 16777216.0f));
  }
  x += 0xc8000fffu + ((x >> 13) & 1u);  // exponent rebias (-112 << 23) and the rounding increment
  return sign | static_cast<uint16_t>(x >> 13);
}
inline float half_value(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) return u2f(sign | f2u(static_cast<float>(m) * (1.0f / 16777216.0f)));
  if (e == 31) return u2f(sign | 0x7f800000u | (m << 13));
  return u2f(sign | ((e + 112u) << 23) | (m << 13));
}
inline uint16_t bf16_bits(float f) {
  const uint32_t x = f2u(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
inline float bf16_value(uint16_t b) { return u2f(static_cast<uint32_t>(b) << 16); }

// ---- mma.sync.aligned.m16n8k{8,16}.row.col.f32.<type>.<type>.f32, D = A B + C in place ----
// Element (row, col) of A, B and the accumulators per the ISA's tables, with g = lane / 4 and
// t = lane % 4. tf32 m16n8k8: A ai row g (+8 for a1, a3), col t (+4 for a2, a3); B bi row t (+4
// for b1), col g. 16-bit m16n8k16: A ai (8 halves, 2 per register, low half first) row g (+8 for
// i in {2, 3, 6, 7}), col 2t + (i & 1) (+8 for i >= 4); B bi row 2t + (i & 1) (+8 for i >= 2),
// col g. f16 m16n8k8 (sm_75's): A ai (4 halves) row g (+8 for i >= 2), col 2t + (i & 1); B bi
// (2 halves) row 2t + i, col g. Accumulators ci: row g (+8 for i >= 2), col 2t + (i & 1).
enum class MmaType { kTf32, kF16, kBf16 };

inline float mma_input(uint32_t reg, int half, MmaType type) {
  if (type == MmaType::kTf32) return u2f(reg & 0xffffe000u);
  const uint16_t h = static_cast<uint16_t>(half == 0 ? reg & 0xffffu : reg >> 16);
  return type == MmaType::kF16 ? half_value(h) : bf16_value(h);
}

// K: 8 (tf32; f16 on sm_75: a[0:2], b[0:1]) or 16 (f16, bf16).
inline void mma(float* d, const uint32_t* a, const uint32_t* b, MmaType type, int K) {
  // The shapes the ISA has: m16n8k8 tf32 and f16, m16n8k16 f16 and bf16.
  if (K == 8 ? type == MmaType::kBf16 : (K != 16 || type == MmaType::kTf32)) fail("mma.sync: no such shape");
  const bool k8_16bit = type == MmaType::kF16 && K == 8;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const unsigned bank = next_bank();
  uint32_t* mine = slots(lane, bank);
  const int a_regs = k8_16bit ? 2 : 4, b_regs = k8_16bit ? 1 : 2;
  for (int i = 0; i < a_regs; ++i) mine[i] = a[i];
  for (int i = 0; i < b_regs; ++i) mine[4 + i] = b[i];
  park(Wait::kWarp, k8_16bit ? "mma.sync.m16n8k8.f16" : "mma.sync");
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const uint32_t* s = slots(l, bank);
    const int g = l / 4, t = l % 4;
    if (type == MmaType::kTf32) {
      for (int i = 0; i < 4; ++i) A[g + (i & 1) * 8][t + (i >> 1) * 4] = mma_input(s[i], 0, type);
      for (int i = 0; i < 2; ++i) B[t + i * 4][g] = mma_input(s[4 + i], 0, type);
    } else if (k8_16bit) {
      for (int i = 0; i < 4; ++i) A[g + (i >= 2 ? 8 : 0)][2 * t + (i & 1)] = mma_input(s[i / 2], i & 1, type);
      for (int i = 0; i < 2; ++i) B[2 * t + i][g] = mma_input(s[4], i, type);
    } else {
      for (int i = 0; i < 8; ++i) {
        const int row = g + (i == 2 || i == 3 || i == 6 || i == 7 ? 8 : 0), col = 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
        A[row][col] = mma_input(s[i / 2], i & 1, type);
      }
      for (int i = 0; i < 4; ++i) B[2 * t + (i & 1) + (i >= 2 ? 8 : 0)][g] = mma_input(s[4 + i / 2], i & 1, type);
    }
  }
  const int g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    double acc = d[i];
    for (int k = 0; k < K; ++k) acc += static_cast<double>(A[row][k]) * B[k][col];
    d[i] = static_cast<float>(acc);
  }
}

// cvt.rna.tf32.f32: round to nearest, ties away from zero, to 10 mantissa bits (NaN, inf kept).
inline uint32_t cvt_rna_tf32(float x) {
  const uint32_t u = f2u(x);
  if ((u & 0x7f800000u) == 0x7f800000u) return u;
  return (u + 0x1000u) & 0xffffe000u;
}

}  // namespace rtgaze_emu

// ---- the device intrinsics the kernels call ----
inline void __syncthreads() { rtgaze_emu::park(rtgaze_emu::Wait::kBlock, "__syncthreads"); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  rtgaze_emu::check_full_mask(mask, "__syncwarp");
  rtgaze_emu::park(rtgaze_emu::Wait::kWarp, "__syncwarp");
}
inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
  using namespace rtgaze_emu;
  check_full_mask(mask, "__shfl_xor_sync");
  const int lane = static_cast<int>(threadIdx.x % 32);
  const unsigned bank = next_bank();
  slots(lane, bank)[0] = f2u(v);
  park(Wait::kWarp, "__shfl_xor_sync");
  return u2f(slots(lane ^ (lane_mask & 31), bank)[0]);
}
// One fiber runs at a time and switches only at the barriers above: a read-modify-write is atomic.
inline float atomicAdd(float* p, float v) {
  const float old = *p;
  *p = old + v;
  return old;
}
inline float4 atomicAdd(float4* p, float4 v) {
  const float4 old = *p;
  p->x += v.x, p->y += v.y, p->z += v.z, p->w += v.w;
  return old;
}
template <class T> inline T __ldg(const T* p) { return *p; }
inline float __uint_as_float(uint32_t u) { return rtgaze_emu::u2f(u); }
inline uint32_t __float_as_uint(float x) { return rtgaze_emu::f2u(x); }
inline float __int_as_float(int i) { return rtgaze_emu::u2f(static_cast<uint32_t>(i)); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
template <class T> inline T min(T a, T b) { return b < a ? b : a; }
template <class T> inline T max(T a, T b) { return a < b ? b : a; }

// ---- cuda_fp16.h / cuda_bf16.h ----
struct __half {
  uint16_t bits;
  __half() = default;
  explicit operator float() const { return rtgaze_emu::half_value(bits); }
};
struct __nv_bfloat16 {
  uint16_t bits;
  __nv_bfloat16() = default;
  explicit operator float() const { return rtgaze_emu::bf16_value(bits); }
};
struct alignas(4) __half2 {
  __half x, y;
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
inline __half __float2half_rn(float x) {
  __half h;
  h.bits = rtgaze_emu::half_bits(x);
  return h;
}
inline __nv_bfloat16 __float2bfloat16_rn(float x) {
  __nv_bfloat16 h;
  h.bits = rtgaze_emu::bf16_bits(x);
  return h;
}
inline __half2 __floats2half2_rn(float lo, float hi) { return {__float2half_rn(lo), __float2half_rn(hi)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
  return {__float2bfloat16_rn(lo), __float2bfloat16_rn(hi)};
}
inline float2 __half22float2(__half2 h) { return {static_cast<float>(h.x), static_cast<float>(h.y)}; }

