// Shim: the CUDA runtime of the CPU emulation (tests/cuda_emu); the kernels' sources also get the
// device side (emu.h), which the build defines __CUDACC__ for.
#pragma once
#include "../runtime.h"
#ifdef __CUDACC__
#include "../emu.h"
#endif
