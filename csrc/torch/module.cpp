// The small pybind11 module: what was built. The only file that includes torch/extension.h
// (the slowest header to compile); the ops register themselves in ops.cpp.
#include <torch/extension.h>

#include <string>
#include <vector>

#include "../cpu/kernels.h"

namespace {
std::vector<std::string> backends() {
  std::vector<std::string> out{"cpu"};
#ifdef RTGAZE_WITH_CUDA
  out.push_back("cuda");
#endif
  return out;
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rtgaze-fast compiled kernels (ops register under torch.ops.rtgaze_fast)";
  m.def("backends", &backends, "Backends compiled into this extension");
  m.def("cpu_isa", [] { return std::string(rtgaze::cpu_kernels().isa); }, "Instruction set the CPU kernels use");
}
