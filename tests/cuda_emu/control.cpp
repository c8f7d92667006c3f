// The emulated device's controls and emu.h's 16-bit conversions, as ops beside the emulated CUDA
// backend's (tests/cuda_emu/build.py).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "emu.h"

namespace {
using at::Tensor;

// sms: the persistent grids' cap (blocks per launch <= sms); reverse: fibers resumed last to first;
// smem_optin: the device's shared memory per block (bytes); cc: its compute capability (75, 90).
void configure(int64_t sms, bool reverse, int64_t smem_optin, int64_t cc) {
  TORCH_CHECK_VALUE(sms >= 1 && smem_optin >= 0 && cc >= 70, "sms >= 1, smem_optin >= 0, cc >= 70");
  rtgaze_emu::device.sms = static_cast<int>(sms);
  rtgaze_emu::device.reverse = reverse;
  rtgaze_emu::device.smem_optin = static_cast<int>(smem_optin);
  rtgaze_emu::device.major = static_cast<int>(cc / 10);
  rtgaze_emu::device.minor = static_cast<int>(cc % 10);
}

// ---- kernels that misuse the device, each of which the emulator must refuse (and one that
// does not): its own checks can fail (tests/test_cuda_emulated.py) ----
__global__ void warp_sum_kernel(float* out) {  // correct: every lane gets the warp's sum
  float x = static_cast<float>(threadIdx.x);
  for (int s = 16; s > 0; s >>= 1) x += __shfl_xor_sync(0xffffffffu, x, s);
  out[threadIdx.x] = x;
}
__global__ void exited_lane_kernel(float* out) {  // lane 31 returns before its warp's shuffle
  if (threadIdx.x % 32 == 31) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}
__global__ void divergent_barrier_kernel(float*) {  // warp 0 at a block barrier, warp 1 never
  if (threadIdx.x < 32) __syncthreads();
}
__global__ void mixed_warp_ops_kernel(float*) {  // half a warp shuffles, half syncs
  if (threadIdx.x % 32 < 16) __syncwarp();
  else __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}
__global__ void smem_overflow_kernel(float*) {  // one float past the launch's dynamic shared memory
  float* smem = reinterpret_cast<float*>(rtgaze_emu::dynamic_smem());
  if (threadIdx.x == 0) smem[64] = 0.0f;
}

// Launch one of the kernels above on 2 warps (256 bytes of dynamic shared memory); returns what
// warp_sum wrote, or raises the launch's error.
Tensor selftest(c10::string_view name) {
  const std::string k(name);
  void (*kernel)(float*) = k == "warp_sum"         ? warp_sum_kernel
                           : k == "exited_lane"    ? exited_lane_kernel
                           : k == "divergent_barrier" ? divergent_barrier_kernel
                           : k == "mixed_warp_ops" ? mixed_warp_ops_kernel
                           : k == "smem_overflow"  ? smem_overflow_kernel
                                                   : nullptr;
  TORCH_CHECK_VALUE(kernel != nullptr, "no self-test kernel '", k, "'");
  Tensor out = at::zeros({64});
  rtgaze_emu::launch(kernel, dim3(1), dim3(64), 256)(out.data_ptr<float>());
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "emulated launch failed: ", cudaGetErrorString(err));
  return out;
}

// Blocks and barriers run since the last call (then reset).
std::vector<int64_t> counters() {
  std::vector<int64_t> c{rtgaze_emu::device.blocks, rtgaze_emu::device.barriers};
  rtgaze_emu::device.blocks = rtgaze_emu::device.barriers = 0;
  return c;
}

// fp32 -> 16-bit -> fp32 through emu.h (the kernels' __float2half_rn and __half2float).
Tensor round16(const Tensor& x, bool bf16) {
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat && x.is_cpu(), "x must be a CPU fp32 tensor");
  Tensor in = x.contiguous(), out = at::empty_like(in);
  const float* s = in.data_ptr<float>();
  float* d = out.data_ptr<float>();
  for (int64_t i = 0; i < in.numel(); ++i) {
    d[i] = bf16 ? rtgaze_emu::bf16_value(rtgaze_emu::bf16_bits(s[i]))
                : rtgaze_emu::half_value(rtgaze_emu::half_bits(s[i]));
  }
  return out;
}

}  // namespace

// RTGAZE_EMU_NAMESPACE: the build's (one per emulated architecture, tests/cuda_emu/build.py).
TORCH_LIBRARY_FRAGMENT(RTGAZE_EMU_NAMESPACE, m) {
  m.def("configure(int sms, bool reverse, int smem_optin, int cc) -> ()", &configure);
  m.def("selftest(str name) -> Tensor", &selftest);
  m.def("counters() -> int[]", &counters);
  m.def("round_half(Tensor x) -> Tensor", [](const Tensor& x) { return round16(x, false); });
  m.def("round_bf16(Tensor x) -> Tensor", [](const Tensor& x) { return round16(x, true); });
}
