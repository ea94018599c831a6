// Total variation loss and its gradient, each in one pass (CUDA kernels; no torch headers).
//
// With dh(i,j) = x[i+1,j] - x[i,j] and dw(i,j) = x[i,j+1] - x[i,j] over every (b, c) plane:
//   kind 0 squared:   L = sum dh^2 + dw^2           dL/dx_ij = 2 (dh(i-1,j) - dh(i,j) + dw(i,j-1) - dw(i,j))
//   kind 1 l1:        L = sum |dh| + |dw|           dL/dx_ij = s(dh(i-1,j)) - s(dh(i,j)) + s(dw(i,j-1)) - s(dw(i,j))
//                     with s = sign, s(0) = 0, s(NaN) = NaN
//   kind 2 isotropic: L = sum_{i<H-1, j<W-1} t(i,j), t = sqrt(dh^2 + dw^2 + eps)
//                     dL/dx_ij = -(dh + dw)(i,j) / t(i,j) + dh(i-1,j) / t(i-1,j) + dw(i,j-1) / t(i,j-1)
// (a term is dropped where one of its pixels falls outside the plane).
//
// Design:
// * tv_fused_kernel: one block of kThreads threads per (plane, kTileH x kTileW tile), flattened plane-major
//   into grid.x (pid = plane * n_tiles + tile). The block stages the tile plus a one-pixel halo in shared
//   memory (float), converting from T once; every thread then owns one column of the tile and
//   kTileH / (kThreads / kTileW) of its rows. Each gradient element is computed from its neighbourhood
//   (gather formulation) and written exactly once, coef[b] * dL/dx in fp32 cast once to T (coef: the upstream
//   gradient times the loss's scale, read from device memory; backward only), through the gradient's own
//   strides. Masks are selects, never multiplications by 0, so NaN propagates only where it belongs.
//   The block's loss is reduced in a fixed order (warp shuffles, then the warp sums in shared memory) and
//   stored to partials[pid].
// * tv_row_sum_kernel: one block per sample sums its C * n_tiles consecutive partials in a fixed order,
//   so the per-sample loss is deterministic (no float atomics).
// Reads use the input's int64 strides, so channels_last and sliced views need no copy; for channels_last
// the tile rows are strided by C in memory (correct, not coalesced).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"

namespace perceptual_kernels::cuda::tv_kernels {

constexpr int kThreads = 256;
constexpr int kTileW = 64;  // one tile column per thread: kThreads / kTileW threads share a column
constexpr int kTileH = 32;
constexpr int kRowSumThreads = 512;

// sign(d) with sign(0) = 0 and sign(NaN) = NaN.
__device__ __forceinline__ float sign_nan(float d) { return d > 0.f ? 1.f : (d < 0.f ? -1.f : d * 0.f); }

template <typename T, int KIND, bool NEED_GRAD>
__global__ void __launch_bounds__(kThreads)
    tv_fused_kernel(const T* __restrict__ x, T* __restrict__ grad, float* __restrict__ partials, int64_t C, int64_t H,
                    int64_t W, int64_t n_tiles_w, int64_t n_tiles, int64_t sxb, int64_t sxc, int64_t sxh, int64_t sxw,
                    int64_t sgb, int64_t sgc, int64_t sgh, int64_t sgw, float eps, const float* __restrict__ coef) {
  __shared__ float tile[kTileH + 2][kTileW + 2];  // tile[r][q] = x[h0 - 1 + r, w0 - 1 + q] (0 outside)
  const int64_t pid = blockIdx.x;
  const int64_t plane = pid / n_tiles, t = pid % n_tiles;
  const int64_t b = plane / C, c = plane % C;
  const int64_t h0 = (t / n_tiles_w) * kTileH, w0 = (t % n_tiles_w) * kTileW;
  const T* xp = x + b * sxb + c * sxc;
  const float grad_scale = NEED_GRAD ? __ldg(coef + b) : 0.f;

  for (int k = threadIdx.x; k < (kTileH + 2) * (kTileW + 2); k += kThreads) {
    const int r = k / (kTileW + 2), q = k % (kTileW + 2);
    const int64_t i = h0 - 1 + r, j = w0 - 1 + q;
    tile[r][q] = (i >= 0 && i < H && j >= 0 && j < W) ? to_float(xp[i * sxh + j * sxw]) : 0.f;
  }
  __syncthreads();

  constexpr int kRowStep = kThreads / kTileW;
  const int q = threadIdx.x % kTileW + 1;  // tile column of this thread (halo offset 1)
  const int64_t j = w0 + q - 1;
  const bool has_rt = j + 1 < W, has_lf = j >= 1;
  float loss = 0.f;
#pragma unroll
  for (int k = 0; k < kTileH / kRowStep; ++k) {
    const int r = threadIdx.x / kTileW + 1 + k * kRowStep;  // tile row (halo offset 1)
    const int64_t i = h0 + r - 1;
    if (i >= H || j >= W) break;
    const bool has_dn = i + 1 < H, has_up = i >= 1;
    const float xc = tile[r][q];
    const float dh = tile[r + 1][q] - xc;     // dh(i, j)
    const float dw = tile[r][q + 1] - xc;     // dw(i, j)
    const float dh_up = xc - tile[r - 1][q];  // dh(i-1, j)
    const float dw_lf = xc - tile[r][q - 1];  // dw(i, j-1)
    float g = 0.f;
    if constexpr (KIND == 0) {
      loss += (has_dn ? dh * dh : 0.f) + (has_rt ? dw * dw : 0.f);
      g = 2.f * ((has_up ? dh_up : 0.f) - (has_dn ? dh : 0.f) + (has_lf ? dw_lf : 0.f) - (has_rt ? dw : 0.f));
    } else if constexpr (KIND == 1) {
      loss += (has_dn ? fabsf(dh) : 0.f) + (has_rt ? fabsf(dw) : 0.f);
      g = (has_up ? sign_nan(dh_up) : 0.f) - (has_dn ? sign_nan(dh) : 0.f) + (has_lf ? sign_nan(dw_lf) : 0.f) -
          (has_rt ? sign_nan(dw) : 0.f);
    } else {
      const bool has_t = has_dn && has_rt;  // term (i, j)
      const float tn = sqrtf(dh * dh + dw * dw + eps);
      loss += has_t ? tn : 0.f;
      if constexpr (NEED_GRAD) {
        const bool has_t_up = has_up && has_rt;                   // term (i-1, j)
        const bool has_t_lf = has_lf && has_dn;                   // term (i, j-1)
        const float dw_up = tile[r - 1][q + 1] - tile[r - 1][q];  // dw(i-1, j)
        const float dh_lf = tile[r + 1][q - 1] - tile[r][q - 1];  // dh(i, j-1)
        const float t_up = sqrtf(dh_up * dh_up + dw_up * dw_up + eps);
        const float t_lf = sqrtf(dh_lf * dh_lf + dw_lf * dw_lf + eps);
        g = (has_t ? -(dh + dw) / tn : 0.f) + (has_t_up ? dh_up / t_up : 0.f) + (has_t_lf ? dw_lf / t_lf : 0.f);
      }
    }
    if constexpr (NEED_GRAD) grad[b * sgb + c * sgc + i * sgh + j * sgw] = from_float<T>(g * grad_scale);
  }

  loss = block_sum(loss);
  if (threadIdx.x == 0) partials[pid] = loss;
}

// out[row] = sum_k partials[row * n + k], one block per row, in a fixed order.
__global__ void __launch_bounds__(kRowSumThreads)
    tv_row_sum_kernel(const float* __restrict__ partials, int64_t n, float* __restrict__ out) {
  const float* p = partials + static_cast<int64_t>(blockIdx.x) * n;
  float s = 0.f;
#pragma unroll 4
  for (int64_t k = threadIdx.x; k < n; k += kRowSumThreads) s += p[k];
  s = block_sum(s);
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}

inline int64_t tv_num_tiles(int64_t H, int64_t W) { return ((H + kTileH - 1) / kTileH) * ((W + kTileW - 1) / kTileW); }

// partials (B, C * tv_num_tiles(H, W)) fp32 <- the per-block TV sums of x (strides sx); grad (strides sg) <-
// coef[b] * dTV/dx when need_grad (grad and coef, a (B,) device array, may be null otherwise). The caller checks the block count fits grid.x.
template <typename T>
void launch_tv(const T* x, T* grad, float* partials, int64_t B, int64_t C, int64_t H, int64_t W, const int64_t* sx,
               const int64_t* sg, int kind, bool need_grad, float eps, const float* coef, cudaStream_t stream) {
  const int64_t n_tiles_w = (W + kTileW - 1) / kTileW;
  const int64_t n_tiles = tv_num_tiles(H, W);
  const dim3 grid(static_cast<unsigned>(B * C * n_tiles));
  auto launch = [&](auto kernel) {
    PK_LAUNCH(kernel, grid, kThreads, 0, stream)(x, grad, partials, C, H, W, n_tiles_w, n_tiles, sx[0], sx[1], sx[2],
                                                 sx[3], sg[0], sg[1], sg[2], sg[3], eps, coef);
  };
  if (kind == 0) {
    need_grad ? launch(tv_fused_kernel<T, 0, true>) : launch(tv_fused_kernel<T, 0, false>);
  } else if (kind == 1) {
    need_grad ? launch(tv_fused_kernel<T, 1, true>) : launch(tv_fused_kernel<T, 1, false>);
  } else {
    need_grad ? launch(tv_fused_kernel<T, 2, true>) : launch(tv_fused_kernel<T, 2, false>);
  }
}

// out (B,) <- the row sums of partials viewed as (B, n).
inline void launch_tv_row_sum(const float* partials, int64_t n, int64_t B, float* out, cudaStream_t stream) {
  PK_LAUNCH(tv_row_sum_kernel, static_cast<unsigned>(B), kRowSumThreads, 0, stream)(partials, n, out);
}

#ifdef PK_STANDALONE_INSTANTIATE
// Every kernel variant, through the launchers that select them.
template void launch_tv<float>(const float*, float*, float*, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                               const int64_t*, int, bool, float, const float*, cudaStream_t);
template void launch_tv<__half>(const __half*, __half*, float*, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                                const int64_t*, int, bool, float, const float*, cudaStream_t);
template void launch_tv<__nv_bfloat16>(const __nv_bfloat16*, __nv_bfloat16*, float*, int64_t, int64_t, int64_t, int64_t,
                                       const int64_t*, const int64_t*, int, bool, float, const float*, cudaStream_t);
#endif

}  // namespace perceptual_kernels::cuda::tv_kernels
