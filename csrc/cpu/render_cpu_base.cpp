// The CPU kernels for any x86-64 / other CPU (the compiler's default instruction set).
#include <cstdint>

#include "kernels.h"

#define RTGAZE_ISA_NAME "baseline"
namespace rtgaze {
namespace cpu_base {
#include "kernels_impl.h"
const CpuKernels& get() { return kernels; }
}  // namespace cpu_base
}  // namespace rtgaze
