// Shim for the emulated glue (tests/cuda_emu/build.py): one emulated device, nothing to guard.
#pragma once
#include <c10/core/Device.h>

namespace c10 {
namespace cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};
}  // namespace cuda
}  // namespace c10
