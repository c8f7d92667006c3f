// The same kernels compiled for AVX2 + FMA (8-wide channel loops), chosen at run time only on
// CPUs that have them, so the default build still runs everywhere (no -march=native).
#include <cstdint>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define RTGAZE_ISA_NAME "avx2+fma"
namespace rtgaze {
namespace cpu_avx2 {
#include "kernels_impl.h"
const CpuKernels* get() { return &kernels; }
}  // namespace cpu_avx2
}  // namespace rtgaze
#pragma GCC pop_options
#else
namespace rtgaze {
namespace cpu_avx2 {
const CpuKernels* get() { return nullptr; }
}  // namespace cpu_avx2
}  // namespace rtgaze
#endif
