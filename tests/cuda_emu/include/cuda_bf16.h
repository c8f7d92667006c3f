// Shim: __nv_bfloat16 of the CPU emulation (tests/cuda_emu/emu.h).
#pragma once
#include "../emu.h"
