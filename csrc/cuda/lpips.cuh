// LPIPS layer distance and its gradients (CUDA kernels; no torch headers), Zhang et al. 2018.
//
// At each pixel, with r = ||f|| = sqrt(sum_c f_c^2) over the channels and n = f / (r + eps):
//   forward   d_b = mean_hw sum_c w_c (n0_c - n1_c)^2
//   backward  g = 2 w (n0 - n1),  df0 = coef_b (g - f0 (g . f0) / (r0 (r0 + eps))) / (r0 + eps),
//             df1 = coef_b (-g + f1 (g . f1) / (r1 (r1 + eps))) / (r1 + eps)   (second terms 0 where r = 0)
// (coef_b: the upstream gradient over H*W, read from device memory; applied in fp32, cast once at the store).
//
// Design:
// * lpips_kernel: one thread per pixel, kThreads consecutive pixels m of the H*W plane of one sample per block
//   (grid.x = B * n_pblocks, sample-major). Each thread walks the channels of its pixel: forward two sweeps (the
//   norms, then the weighted squared difference), backward three (norms, the two dot products, the stores).
//   For NCHW inputs neighbouring threads read neighbouring addresses at every channel (coalesced); channels_last
//   is read in place with a stride of C (correct, not coalesced). The forward reduces the block's distances in a
//   fixed order (block_sum) into partials[pid].
// * lpips_row_mean_kernel: one block per sample sums its n_pblocks partials in a fixed order and divides by H*W:
//   the distance is deterministic (no float atomics).
// Pixel addresses are int64: (m / W) * stride_h + (m % W) * stride_w, so any strides are read in place.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"

namespace perceptual_kernels::cuda::lpips_kernels {

constexpr int kThreads = 256;
constexpr int kRowThreads = 256;

struct Strides4 {
  int64_t b, c, h, w;
};

__device__ __forceinline__ int64_t pixel_offset(int64_t b, int64_t m, int64_t W, const Strides4& s) {
  return b * s.b + (m / W) * s.h + (m % W) * s.w;
}

template <typename T, bool NEED_GRAD>
__global__ void __launch_bounds__(kThreads)
    lpips_kernel(const T* __restrict__ f0, const T* __restrict__ f1, const float* __restrict__ weight,
                 float* __restrict__ partials, T* __restrict__ g0, T* __restrict__ g1, const float* __restrict__ coef,
                 int64_t C, int64_t HW, int64_t W, int64_t n_pblocks, Strides4 s0, Strides4 s1, Strides4 t0,
                 Strides4 t1, float eps) {
  const int64_t pid = blockIdx.x;
  const int64_t b = pid / n_pblocks;
  const int64_t m = (pid % n_pblocks) * kThreads + threadIdx.x;
  const bool inside = m < HW;
  float d = 0.f;
  if (inside) {
    const T* a = f0 + pixel_offset(b, m, W, s0);
    const T* c1 = f1 + pixel_offset(b, m, W, s1);
    float ss0 = 0.f, ss1 = 0.f;
    for (int64_t c = 0; c < C; ++c) {
      const float x0 = to_float(a[c * s0.c]), x1 = to_float(c1[c * s1.c]);
      ss0 += x0 * x0;
      ss1 += x1 * x1;
    }
    const float r0 = sqrtf(ss0), r1 = sqrtf(ss1);
    const float inv0 = 1.f / (r0 + eps), inv1 = 1.f / (r1 + eps);
    if constexpr (!NEED_GRAD) {
      for (int64_t c = 0; c < C; ++c) {
        const float u = to_float(a[c * s0.c]) * inv0 - to_float(c1[c * s1.c]) * inv1;
        d += __ldg(weight + c) * u * u;
      }
    } else {
      float dot0 = 0.f, dot1 = 0.f;
      for (int64_t c = 0; c < C; ++c) {
        const float x0 = to_float(a[c * s0.c]), x1 = to_float(c1[c * s1.c]);
        const float g = 2.f * __ldg(weight + c) * (x0 * inv0 - x1 * inv1);
        dot0 += g * x0;
        dot1 += g * x1;
      }
      const float k = __ldg(coef + b);
      const float k0 = r0 > 0.f ? dot0 * inv0 / r0 : 0.f;  // (g . f) / (r (r + eps)); f = 0 where r = 0
      const float k1 = r1 > 0.f ? dot1 * inv1 / r1 : 0.f;
      const float sc0 = k * inv0, sc1 = k * inv1;
      T* o0 = g0 != nullptr ? g0 + pixel_offset(b, m, W, t0) : nullptr;
      T* o1 = g1 != nullptr ? g1 + pixel_offset(b, m, W, t1) : nullptr;
      for (int64_t c = 0; c < C; ++c) {
        const float x0 = to_float(a[c * s0.c]), x1 = to_float(c1[c * s1.c]);
        const float g = 2.f * __ldg(weight + c) * (x0 * inv0 - x1 * inv1);
        if (o0 != nullptr) o0[c * t0.c] = from_float<T>(sc0 * (g - x0 * k0));
        if (o1 != nullptr) o1[c * t1.c] = from_float<T>(sc1 * (x1 * k1 - g));
      }
    }
  }
  if constexpr (!NEED_GRAD) {
    d = block_sum(d);
    if (threadIdx.x == 0) partials[pid] = d;
  }
}

// out[row] = (sum_k partials[row * n + k]) / hw, one block per row, in a fixed order.
__global__ void __launch_bounds__(kRowThreads)
    lpips_row_mean_kernel(const float* __restrict__ partials, int64_t n, float hw, float* __restrict__ out) {
  const float* p = partials + static_cast<int64_t>(blockIdx.x) * n;
  float s = 0.f;
  for (int64_t k = threadIdx.x; k < n; k += kRowThreads) s += p[k];
  s = block_sum(s);
  if (threadIdx.x == 0) out[blockIdx.x] = s / hw;
}

inline int64_t lpips_num_pblocks(int64_t H, int64_t W) { return (H * W + kThreads - 1) / kThreads; }

// Forward (need_grad false): partials (B, lpips_num_pblocks(H, W)) fp32 <- per-block distance sums. Backward:
// g0 / g1 (either may be null: not computed) <- the gradients, coef a (B,) fp32 device array. weight: (C,) fp32.
// The caller checks that B * n_pblocks fits grid.x.
template <typename T>
void launch_lpips(const T* f0, const T* f1, const float* weight, float* partials, T* g0, T* g1, const float* coef,
                  int64_t B, int64_t C, int64_t H, int64_t W, Strides4 s0, Strides4 s1, Strides4 t0, Strides4 t1,
                  bool need_grad, float eps, cudaStream_t stream) {
  const int64_t n_pblocks = lpips_num_pblocks(H, W);
  const dim3 grid(static_cast<unsigned>(B * n_pblocks));
  auto launch = [&](auto kernel) {
    PK_LAUNCH(kernel, grid, kThreads, 0, stream)(f0, f1, weight, partials, g0, g1, coef, C, H * W, W, n_pblocks, s0, s1,
                                                 t0, t1, eps);
  };
  need_grad ? launch(lpips_kernel<T, true>) : launch(lpips_kernel<T, false>);
}

// out (B,) <- the row sums of partials viewed as (B, n), divided by hw.
inline void launch_lpips_row_mean(const float* partials, int64_t n, int64_t B, float hw, float* out,
                                  cudaStream_t stream) {
  PK_LAUNCH(lpips_row_mean_kernel, static_cast<unsigned>(B), kRowThreads, 0, stream)(partials, n, hw, out);
}

#ifdef PK_STANDALONE_INSTANTIATE
// Every kernel variant, through the launchers that select them.
template void launch_lpips<float>(const float*, const float*, const float*, float*, float*, float*, const float*,
                                  int64_t, int64_t, int64_t, int64_t, Strides4, Strides4, Strides4, Strides4, bool,
                                  float, cudaStream_t);
template void launch_lpips<__half>(const __half*, const __half*, const float*, float*, __half*, __half*, const float*,
                                   int64_t, int64_t, int64_t, int64_t, Strides4, Strides4, Strides4, Strides4, bool,
                                   float, cudaStream_t);
template void launch_lpips<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, const float*, float*,
                                          __nv_bfloat16*, __nv_bfloat16*, const float*, int64_t, int64_t, int64_t,
                                          int64_t, Strides4, Strides4, Strides4, Strides4, bool, float, cudaStream_t);
#endif

}  // namespace perceptual_kernels::cuda::lpips_kernels
