// The CUDA runtime API the kernels' launchers (csrc/cuda/*.cu) and the torch glue
// (csrc/torch/cuda_glue.cpp) call, answered by the emulated device (tests/cuda_emu/emu.h runs the
// kernels). Included through the shim <cuda_runtime.h>.
#pragma once
#include <map>
#include <string>

// ---- the runtime API the launchers and the glue call ----
typedef struct CUstream_st* cudaStream_t;
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorNoKernelImageForDevice = 209,
  cudaErrorNotSupported = 801,
  cudaErrorLaunchFailure = 719,
};
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount,
  cudaDevAttrComputeCapabilityMajor,
  cudaDevAttrComputeCapabilityMinor,
  cudaDevAttrMaxSharedMemoryPerBlockOptin,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
struct cudaFuncAttributes {
  int ptxVersion, maxDynamicSharedSizeBytes;
};

namespace rtgaze_emu {

// The emulated device: an H100/H200 (sm_90, 227 KiB of shared memory per block) with few SMs, so
// small launches already loop over rays (the kernels' grids are persistent: at most per_sm x SMs).
struct Device {
  int sms = 2, major = 9, minor = 0, smem_optin = 227 * 1024;
  bool reverse = false;  // fibers resumed last to first
  cudaError_t last_error = cudaSuccess;
  std::string last_message;
  long long blocks = 0, barriers = 0;  // what the launches ran (tests/test_cuda_emulated.py)
  std::map<const void*, int> max_dynamic_smem;
};
inline Device device;

}  // namespace rtgaze_emu

// ---- the runtime API ----
inline cudaError_t cudaGetDevice(int* dev) {
  *dev = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  const rtgaze_emu::Device& d = rtgaze_emu::device;
  *value = attr == cudaDevAttrMultiProcessorCount        ? d.sms
           : attr == cudaDevAttrComputeCapabilityMajor   ? d.major
           : attr == cudaDevAttrComputeCapabilityMinor   ? d.minor
                                                         : d.smem_optin;
  return cudaSuccess;
}
template <class F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute, int value) {
  if (value > rtgaze_emu::device.smem_optin) return cudaErrorInvalidValue;
  rtgaze_emu::device.max_dynamic_smem[reinterpret_cast<const void*>(kernel)] = value;
  return cudaSuccess;
}
template <class F>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, F* kernel) {
  const auto it = rtgaze_emu::device.max_dynamic_smem.find(reinterpret_cast<const void*>(kernel));
  attr->ptxVersion = rtgaze_emu::device.major * 10 + rtgaze_emu::device.minor;
  attr->maxDynamicSharedSizeBytes = it == rtgaze_emu::device.max_dynamic_smem.end() ? 0 : it->second;
  return cudaSuccess;
}
template <class F>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, F*, int threads, size_t smem) {
  *blocks = threads <= 1024 && static_cast<long long>(smem) <= rtgaze_emu::device.smem_optin ? 1 : 0;
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = rtgaze_emu::device.last_error;
  rtgaze_emu::device.last_error = cudaSuccess;
  return e;
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorLaunchFailure: return rtgaze_emu::device.last_message.c_str();  // what the emulator caught
    default: return "emulated CUDA error";
  }
}
