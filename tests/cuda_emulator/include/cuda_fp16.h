// Emulator stand-in for the CUDA header <cuda_fp16.h> (tests/cuda_emulator/cuda_on_cpu.h).
#pragma once
#include "../cuda_on_cpu.h"
