// Host helpers shared by the CUDA launchers (*.cu): dtype checks and dispatch, device attributes.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace perceptual_kernels::cuda {

// The element types the CUDA kernels take.
inline bool is_kernel_dtype(at::ScalarType st) { return st == at::kFloat || st == at::kHalf || st == at::kBFloat16; }

// Calls f with a typed null pointer of the CUDA element type of st (float, __half, __nv_bfloat16).
template <typename F>
void with_dtype(at::ScalarType st, F&& f) {
  if (st == at::kFloat) {
    f(static_cast<float*>(nullptr));
  } else if (st == at::kHalf) {
    f(static_cast<__half*>(nullptr));
  } else {
    f(static_cast<__nv_bfloat16*>(nullptr));
  }
}

inline int device_attribute(cudaDeviceAttr attr, int device) {
  int value = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, attr, device));
  return value;
}

}  // namespace perceptual_kernels::cuda
