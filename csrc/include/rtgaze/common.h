// Shared by the CPU and CUDA kernels. For the CPU these headers include nothing themselves: the
// including translation unit brings <cstdint> first, which lets the CPU build include them inside
// a per-ISA namespace (see csrc/cpu/render_cpu_*.cpp). nvcc gets the 16-bit float types here.
#pragma once
#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

#ifdef __CUDACC__
#define RTG_HD __host__ __device__ __forceinline__
// Loops over channels: fully unrolled on the GPU (arrays stay in registers), SIMD on the CPU.
#define RTG_CHANNEL_LOOP _Pragma("unroll")
// Loops over a ray's intervals: SIMD on the CPU; on the GPU a plain loop (one lane runs them).
#define RTG_INTERVAL_LOOP
#define RTG_FLOOR floorf
#else
#define RTG_HD static inline __attribute__((always_inline))
#define RTG_CHANNEL_LOOP _Pragma("omp simd")
#define RTG_INTERVAL_LOOP _Pragma("omp simd")
#define RTG_FLOOR __builtin_floorf
#endif

// Texels as fp32 (the CPU kernels' planes are fp32; the CUDA kernels convert 16-bit texels in
// their own vector loads, csrc/cuda/tile.cuh).
RTG_HD float rtg_to_float(float x) { return x; }

// Index of a plane's (u, v) coordinates in the point, per plane set (options.PLANE_SETS):
// 0 = EG3D's XY, XZ, ZX (what released weights use); 1 = corrected XY, XZ, YZ.
RTG_HD void plane_axes(int plane_set, int plane, int* iu, int* iv) {
  // plane 0: (x, y); plane 1: (x, z); plane 2: (z, x) or (y, z)
  *iu = plane == 2 ? (plane_set == 0 ? 2 : 1) : 0;
  *iv = plane == 0 ? 1 : (plane == 1 ? 2 : (plane_set == 0 ? 0 : 2));
}
