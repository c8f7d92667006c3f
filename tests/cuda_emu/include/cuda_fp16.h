// Shim: __half of the CPU emulation (tests/cuda_emu/emu.h).
#pragma once
#include "../emu.h"
