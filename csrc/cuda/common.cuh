// Device helpers shared by the CUDA kernels (no torch include): fp32 <-> element conversions, the fixed-order
// warp / block reductions and the kernel launch macro.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstring>

// PK_LAUNCH(kernel, grid, block, smem, stream)(args...) is kernel<<<grid, block, smem, stream>>>(args...); the CPU
// emulator of the CUDA execution model (tests/cuda_emulator/cuda_on_cpu.h) defines its own, so the host-side
// launch plans in the .cuh files run there unchanged. `kernel` must not contain a comma (use a local variable).
#ifndef PK_LAUNCH
#define PK_LAUNCH(kernel, grid, block, smem, stream) kernel<<<grid, block, smem, stream>>>
#endif

namespace perceptual_kernels::cuda {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// v shifted down by o lanes (__shfl_down_sync on every 32-bit word of a trivially copyable T).
template <typename T>
__device__ __forceinline__ T shfl_down_words(T v, int o) {
  static_assert(sizeof(T) % 4 == 0, "shuffled values are made of 32-bit words");
  unsigned w[sizeof(T) / 4];
  memcpy(w, &v, sizeof(T));
#pragma unroll
  for (int i = 0; i < int(sizeof(T) / 4); ++i) w[i] = __shfl_down_sync(0xffffffffu, w[i], o);
  memcpy(&v, w, sizeof(T));
  return v;
}

// Combination of v over the 32 lanes of a warp in a fixed tree: v = op(v, v of lane + o), o = 16, 8, 4, 2, 1;
// valid in lane 0.
template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, shfl_down_words(v, o));
  return v;
}

// How block_reduce combines the warp results: kTree, warp_reduce of them in warp 0 (identity for the lanes past
// the last warp); kSerial, thread 0 folds them in warp order starting from the identity (the gram kernels' order).
enum class BlockFinal { kTree, kSerial };

// Combination of v over the block (blockDim.x a multiple of 32, at most 32 * MAX_WARPS threads) in a fixed order:
// warp_reduce in every warp, the warp results through shared memory, then FINAL. The result is valid in thread 0,
// or in every thread with BROADCAST (one more barrier). Every thread of the block must call it; results are
// bitwise reproducible (no atomics).
template <bool BROADCAST, BlockFinal FINAL = BlockFinal::kTree, int MAX_WARPS = 32, typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, Op op, T identity) {
  __shared__ T warp_results[MAX_WARPS];
  __shared__ T result;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = static_cast<int>(blockDim.x / 32);
  v = warp_reduce(v, op);
  if (lane == 0) warp_results[warp] = v;
  __syncthreads();
  if (FINAL == BlockFinal::kTree && warp == 0) v = warp_reduce(lane < n_warps ? warp_results[lane] : identity, op);
  if (FINAL == BlockFinal::kSerial && threadIdx.x == 0) {
    v = identity;
    for (int w = 0; w < n_warps; ++w) v = op(v, warp_results[w]);
  }
  if (!BROADCAST) return v;
  if (threadIdx.x == 0) result = v;
  __syncthreads();
  return result;
}

struct Add {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return a + b;
  }
};

// Sum of v over the block (block_reduce); valid in thread 0.
__device__ __forceinline__ float block_sum(float v) { return block_reduce<false>(v, Add(), 0.f); }

}  // namespace perceptual_kernels::cuda
