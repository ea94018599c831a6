// Emulator stand-in for the CUDA header <mma.h> (tests/cuda_emulator/cuda_on_cpu.h).
#pragma once
#include "../cuda_on_cpu.h"
