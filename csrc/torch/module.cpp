// The small pybind11 module: what was built. The only file that includes torch/extension.h
// (the slowest header to compile); the ops register themselves in ops.cpp.
#include <torch/extension.h>

#include <string>
#include <vector>

#include "../cpu/kernels.h"

#define RTG_STRINGIFY2(x) #x
#define RTG_STRINGIFY(x) RTG_STRINGIFY2(x)

namespace {
std::vector<std::string> backends() {
  std::vector<std::string> out{"cpu"};
#ifdef RTGAZE_WITH_CUDA
  out.push_back("cuda");
#endif
  return out;
}
// What this binary was built with (for bug reports and "no kernel image" questions).
pybind11::dict build_info() {
  pybind11::dict info;
  info["backends"] = backends();
  info["cpu_isa"] = std::string(rtgaze::cpu_kernels().isa);
  info["compiler"] = std::string(__VERSION__);
#ifdef RTGAZE_CUDA_ARCHS
  std::string archs = RTG_STRINGIFY(RTGAZE_CUDA_ARCHS);  // '_'-separated, see build_config._macros
  for (char& c : archs) c = c == '_' ? ';' : c;
  info["cuda_arch_list"] = archs;
#endif
  return info;
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rtgaze-fast compiled kernels (ops register under torch.ops.rtgaze_fast)";
  m.def("backends", &backends, "Backends compiled into this extension");
  m.def("build_info", &build_info, "Backends, CPU instruction set, compiler and CUDA architectures of this build");
  m.def("cpu_isa", [] { return std::string(rtgaze::cpu_kernels().isa); }, "Instruction set the CPU kernels use");
}
