// Content (feature) loss and its gradient, each in one pass (CUDA kernels; no torch headers).
//
//   d = x - t (fp32),   l2: loss = sum d^2,    grad = coef[0] * d        (fp32, cast once to x's dtype)
//                       l1: loss = sum |d|,    grad = coef[0] * sign(d)  (sign(0) = 0, sign(NaN) = NaN)
//
// The forward launches NEED_GRAD = false; the backward NEED_GRAD = true with coef the upstream gradient times
// the loss's scale, read from device memory (no host sync), so fp16 / bf16 gradients never overflow early.
//
// Design: every block owns a fixed chunk of the elements, reads x and t once, writes its part of grad once
// and stores one fp32 partial sum of d^2 (fixed order: per-thread sequential sums, then warp shuffles, then
// the warp sums); content_sum_kernel adds the partials in a fixed order into the 0-d loss. No float atomics,
// so the loss is bitwise reproducible for a given shape, layout and dtype.
// * content_flat_kernel: x, t and grad are dense with identical strides (contiguous, channels_last, ...) and
//   16-byte aligned, so memory offset k is the same element in all three: the block walks its chunk of
//   [0, n) with 16-byte vector loads of x (16 / sizeof(TX) elements; t's matching vector may be 8, 16 or 32
//   bytes when its dtype differs), kFlatUnroll vectors per thread, all loads issued before the math.
//   The n % vector-width tail elements are handled by the last block.
// * content_strided_kernel: any strides; the logical row-major index over (B, C, H, W) is split into
//   (b, c, h, w) (32-bit arithmetic when n < 2^32, int64 otherwise) and each tensor is addressed with its
//   own int64 strides; stride 0 is a broadcast dimension (a shared target or an expanded x, read in place). The
//   gradient is dense (the launcher allocates it like at::empty_like(x)).
// t may have another dtype than x (TT vs TX); all math is fp32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"

namespace perceptual_kernels::cuda::content_kernels {

constexpr int kThreads = 256;
constexpr int kFlatUnroll = 4;    // vectors per thread in the flat kernel
constexpr int kStridedItems = 8;  // elements per thread in the strided kernel
constexpr int kSumThreads = 512;

// N elements of T loaded / stored as one aligned vector access.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

// Elements per 16-byte vector of x.
template <typename TX>
__host__ __device__ constexpr int vec_width() {
  return 16 / static_cast<int>(sizeof(TX));
}

struct Strides4 {
  int64_t b, c, h, w;
};

// The loss term of d (d^2, or |d| for L1) and what the gradient scales (d, or sign(d) with NaN kept).
template <bool L1>
__device__ __forceinline__ float loss_term(float d) {
  return L1 ? fabsf(d) : d * d;
}
template <bool L1>
__device__ __forceinline__ float grad_term(float d) {
  return L1 ? (d > 0.f ? 1.f : (d < 0.f ? -1.f : d)) : d;
}

template <typename TX, typename TT, bool NEED_GRAD, bool L1>
__global__ void __launch_bounds__(kThreads)
    content_flat_kernel(const TX* __restrict__ x, const TT* __restrict__ t, TX* __restrict__ grad,
                        float* __restrict__ partials, int64_t n, const float* __restrict__ coef) {
  constexpr int V = vec_width<TX>();
  using XVec = Vec<TX, V>;
  using TVec = Vec<TT, V>;
  const int64_t n_vec = n / V;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * (kThreads * kFlatUnroll) + threadIdx.x;

  XVec xv[kFlatUnroll];
  TVec tv[kFlatUnroll];
#pragma unroll
  for (int u = 0; u < kFlatUnroll; ++u) {
    const int64_t k = first + u * kThreads;
    if (k < n_vec) {
      xv[u] = reinterpret_cast<const XVec*>(x)[k];
      tv[u] = reinterpret_cast<const TVec*>(t)[k];
    }
  }
  const float grad_scale = NEED_GRAD ? __ldg(coef) : 0.f;  // after the vector loads are issued
  float acc = 0.f;
#pragma unroll
  for (int u = 0; u < kFlatUnroll; ++u) {
    const int64_t k = first + u * kThreads;
    if (k < n_vec) {
      XVec gv;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float d = to_float(xv[u].v[e]) - to_float(tv[u].v[e]);
        acc += loss_term<L1>(d);
        gv.v[e] = from_float<TX>(grad_term<L1>(d) * grad_scale);
      }
      if constexpr (NEED_GRAD) reinterpret_cast<XVec*>(grad)[k] = gv;
    }
  }
  if (blockIdx.x == gridDim.x - 1) {  // the n % V tail (fewer than V <= kThreads elements) lies in the last chunk
    const int64_t k = n_vec * V + threadIdx.x;
    if (k < n) {
      const float d = to_float(x[k]) - to_float(t[k]);
      acc += loss_term<L1>(d);
      if constexpr (NEED_GRAD) grad[k] = from_float<TX>(grad_term<L1>(d) * grad_scale);
    }
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

template <typename TX, typename TT, bool NEED_GRAD, bool L1>
__global__ void __launch_bounds__(kThreads)
    content_strided_kernel(const TX* __restrict__ x, const TT* __restrict__ t, TX* __restrict__ grad,
                           float* __restrict__ partials, int64_t n, int64_t C, int64_t H, int64_t W, Strides4 sx,
                           Strides4 st, Strides4 sg, const float* __restrict__ coef) {
  const bool small = n <= static_cast<int64_t>(UINT32_MAX);  // every size then fits 32 bits as well
  const int64_t first = static_cast<int64_t>(blockIdx.x) * (kThreads * kStridedItems) + threadIdx.x;
  const float grad_scale = NEED_GRAD ? __ldg(coef) : 0.f;
  float acc = 0.f;
#pragma unroll
  for (int u = 0; u < kStridedItems; ++u) {
    const int64_t k = first + u * kThreads;  // logical row-major index over (B, C, H, W)
    if (k < n) {
      int64_t b, c, h, w;
      if (small) {
        uint32_t r = static_cast<uint32_t>(k);
        w = r % static_cast<uint32_t>(W);
        r /= static_cast<uint32_t>(W);
        h = r % static_cast<uint32_t>(H);
        r /= static_cast<uint32_t>(H);
        c = r % static_cast<uint32_t>(C);
        b = r / static_cast<uint32_t>(C);
      } else {
        w = k % W;
        h = (k / W) % H;
        c = (k / (W * H)) % C;
        b = k / (W * H * C);
      }
      const float d = to_float(x[b * sx.b + c * sx.c + h * sx.h + w * sx.w]) -
                      to_float(t[b * st.b + c * st.c + h * st.h + w * st.w]);
      acc += loss_term<L1>(d);
      if constexpr (NEED_GRAD) {
        grad[b * sg.b + c * sg.c + h * sg.h + w * sg.w] = from_float<TX>(grad_term<L1>(d) * grad_scale);
      }
    }
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// out[0] = sum of the n partials, by one block in a fixed order.
__global__ void __launch_bounds__(kSumThreads)
    content_sum_kernel(const float* __restrict__ partials, int64_t n, float* __restrict__ out) {
  float s = 0.f;
#pragma unroll 4
  for (int64_t k = threadIdx.x; k < n; k += kSumThreads) s += partials[k];
  s = block_sum(s);
  if (threadIdx.x == 0) out[0] = s;
}

// Blocks (= partial sums) of the flat or strided kernel for n elements of x.
template <typename TX>
int64_t content_num_blocks(int64_t n, bool flat) {
  const int64_t chunk = flat ? int64_t{kThreads} * kFlatUnroll * vec_width<TX>() : int64_t{kThreads} * kStridedItems;
  return (n + chunk - 1) / chunk;
}

// Equal strides on every dimension of size > 1 of a 4-D shape (the stride of a size-1 dimension never matters).
inline bool same_strides(const int64_t* sizes, const int64_t* a, const int64_t* b) {
  for (int d = 0; d < 4; ++d) {
    if (sizes[d] > 1 && a[d] != b[d]) return false;
  }
  return true;
}

// Whether the flat kernel applies: x (dense: non-overlapping and dense, as torch decides), t and grad have x's
// strides on `sizes`, x and grad are 16-byte aligned and t is aligned to its vector (16 / x_bytes elements of
// t_bytes). g is grad's data and strides (x's without a gradient).
inline bool content_flat(bool dense, const int64_t* sizes, const int64_t* sx, const int64_t* st, const int64_t* sg,
                         const void* x, const void* t, const void* g, int x_bytes, int t_bytes) {
  const auto aligned = [](const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; };
  return dense && same_strides(sizes, sx, st) && same_strides(sizes, sx, sg) && aligned(x, 16) && aligned(g, 16) &&
         aligned(t, 16 / x_bytes * t_bytes);
}

// partials (content_num_blocks<TX>(n, flat),) <- the per-block sums of (x - t)^2 (l1: |x - t|); grad <- coef[0] *
// (x - t) (l1: coef[0] * sign(x - t)) when need_grad (grad and coef, a device pointer, may be null otherwise). flat: x, t, grad dense with identical strides, x and grad
// 16-byte aligned, t aligned to its vector (16 / sizeof(TX) elements); the strides are then unused.
template <typename TX, typename TT>
void launch_content(const TX* x, const TT* t, TX* grad, float* partials, int64_t n, int64_t C, int64_t H, int64_t W,
                    Strides4 sx, Strides4 st, Strides4 sg, bool flat, bool need_grad, bool l1, const float* coef,
                    cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(content_num_blocks<TX>(n, flat)));
  if (flat) {
    auto kernel = need_grad
                      ? (l1 ? content_flat_kernel<TX, TT, true, true> : content_flat_kernel<TX, TT, true, false>)
                      : (l1 ? content_flat_kernel<TX, TT, false, true> : content_flat_kernel<TX, TT, false, false>);
    PK_LAUNCH(kernel, grid, kThreads, 0, stream)(x, t, grad, partials, n, coef);
  } else {
    auto kernel =
        need_grad ? (l1 ? content_strided_kernel<TX, TT, true, true> : content_strided_kernel<TX, TT, true, false>)
                  : (l1 ? content_strided_kernel<TX, TT, false, true> : content_strided_kernel<TX, TT, false, false>);
    PK_LAUNCH(kernel, grid, kThreads, 0, stream)(x, t, grad, partials, n, C, H, W, sx, st, sg, coef);
  }
}

// out (0-d fp32) <- the sum of n partials.
inline void launch_content_sum(const float* partials, int64_t n, float* out, cudaStream_t stream) {
  PK_LAUNCH(content_sum_kernel, 1, kSumThreads, 0, stream)(partials, n, out);
}

#ifdef PK_STANDALONE_INSTANTIATE
// Every kernel variant, through the launcher that selects them.
#define PK_CONTENT_INSTANTIATE(TX, TT)                                                                        \
  template void launch_content<TX, TT>(const TX*, const TT*, TX*, float*, int64_t, int64_t, int64_t, int64_t, \
                                       Strides4, Strides4, Strides4, bool, bool, bool, const float*, cudaStream_t);
#define PK_CONTENT_INSTANTIATE_X(TX) \
  PK_CONTENT_INSTANTIATE(TX, float)  \
  PK_CONTENT_INSTANTIATE(TX, __half) \
  PK_CONTENT_INSTANTIATE(TX, __nv_bfloat16)
PK_CONTENT_INSTANTIATE_X(float)
PK_CONTENT_INSTANTIATE_X(__half)
PK_CONTENT_INSTANTIATE_X(__nv_bfloat16)
#undef PK_CONTENT_INSTANTIATE_X
#undef PK_CONTENT_INSTANTIATE
#endif

}  // namespace perceptual_kernels::cuda::content_kernels
