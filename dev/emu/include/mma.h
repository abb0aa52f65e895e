// Stub: a CUDA header seen by the host compiler; everything the emulator offers (here nvcuda::wmma) is in cuda_emu.h.
#pragma once
#include "cuda_emu.h"
