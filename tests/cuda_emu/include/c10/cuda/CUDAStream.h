// Shim for the emulated glue (tests/cuda_emu/build.py): launches run at once, on no stream.
#pragma once
#include "../../cuda_runtime.h"

namespace c10 {
namespace cuda {
inline cudaStream_t getCurrentCUDAStream() { return nullptr; }
}  // namespace cuda
}  // namespace c10
