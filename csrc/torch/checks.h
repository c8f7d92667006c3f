// Argument checks and output allocation shared by the CPU ops (ops.cpp) and the CUDA glue.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

namespace rtgaze {
namespace glue {
using at::Tensor;

inline bool poison_outputs() {
  const char* v = std::getenv("RTGAZE_FAST_POISON");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

// Outputs are NaN-filled when RTGAZE_FAST_POISON=1, so an element a kernel skips cannot pass a test.
inline Tensor new_output(at::IntArrayRef shape, const Tensor& like) {
  Tensor t = at::empty(shape, like.options().dtype(at::kFloat));
  if (poison_outputs()) t.fill_(std::numeric_limits<float>::quiet_NaN());
  return t;
}

// Fault injection, for tests/test_poison.py only: RTGAZE_FAST_TEST_SKIP_TAIL=k makes the render ops leave their
// last k rays unwritten, so the test can show that a kernel which skips its tail fails (poisoning is on).
inline int64_t rays_to_render(int64_t rays) {
  const char* v = std::getenv("RTGAZE_FAST_TEST_SKIP_TAIL");
  const int64_t skip = v == nullptr ? 0 : std::max<int64_t>(0, std::atoll(v));
  return std::max<int64_t>(0, rays - skip);
}

inline void check_input(const Tensor& t, const char* name, int64_t dim, c10::DeviceType device = c10::kCPU,
                        at::ScalarType dtype = at::kFloat) {
  TORCH_CHECK_VALUE(t.dim() == dim, name, " must be ", dim, "-D, got shape ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device().type() == device, name, " must be a ", c10::DeviceTypeName(device, true),
                    " tensor for this backend, got ", t.device());
  TORCH_CHECK_VALUE(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK_VALUE(t.numel() <= std::numeric_limits<int32_t>::max(), name, " has ", t.numel(),
                    " elements, more than the kernels index (2**31-1)");
}

// Every tensor of an op on the device of its first tensor (the planes, or rgb / depths), index
// included: a kernel launched under cuda:0's guard with a pointer into cuda:1's memory would read
// another GPU's address space (an illegal access, or silently wrong data with peer access on).
// Takes devices, not tensors, so CI can unit-test it without a GPU (tests/test_device_checks.py).
inline void check_same_device(const c10::Device& actual, const char* name, const c10::Device& expected,
                              const char* expected_name) {
  TORCH_CHECK_VALUE(actual == expected, name, " is on ", actual, " but ", expected_name, " is on ", expected,
                    ": every input of this op must be on the same device (index included)");
}

inline void check_precision(const char* backend, const std::string& precision) {
  TORCH_CHECK_VALUE(precision == "fp32", "precision: the ", backend, " backend implements 'fp32' only, got '", precision, "'");
}

inline void check_plane_set(int64_t plane_set) {
  TORCH_CHECK_VALUE(plane_set == 0 || plane_set == 1, "plane_set must be 0 (eg3d) or 1 (corrected), got ", plane_set);
}

}  // namespace glue
}  // namespace rtgaze
