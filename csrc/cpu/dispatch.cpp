// Picks the CPU kernels' instruction set once, at first use. RTGAZE_FAST_CPU_ISA=baseline forces
// the baseline build (tests compare the two; a workaround should the AVX2 build misbehave).
#include <cstdlib>
#include <cstring>

#include "kernels.h"

namespace rtgaze {
namespace cpu_base { const CpuKernels& get(); }
namespace cpu_avx2 { const CpuKernels* get(); }

const CpuKernels& cpu_kernels() {
  static const CpuKernels* chosen = [] {
    const char* forced = std::getenv("RTGAZE_FAST_CPU_ISA");
    if (forced != nullptr && std::strcmp(forced, "baseline") == 0) return &cpu_base::get();
#if defined(__x86_64__) && defined(__GNUC__)
    if (cpu_avx2::get() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return cpu_avx2::get();
#endif
    return &cpu_base::get();
  }();
  return *chosen;
}
}  // namespace rtgaze
