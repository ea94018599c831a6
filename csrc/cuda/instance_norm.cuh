// (Conditional) instance norm with optional ReLU, forward and backward (CUDA kernels; no torch headers).
//
// Per (b, c) plane of x (B, C, H, W), N = H * W:
//   mean = sum x / N,  var = sum (x - mean)^2 / N,  rstd = 1 / sqrt(var + eps),  xhat = (x - mean) * rstd
//   y = (x - mean) * scale + shift, scale = gamma_bc * rstd, shift = beta_bc       (then y < 0 ? 0 : y)
// Backward, g = grad_y masked to 0 where the recomputed y <= 0 (relu; a NaN y lets g through, like
// torch.relu's backward):
//   dbeta_bc = sum g,  dgamma_bc = sum g * xhat,  dx = scale * (g - dbeta_bc / N - xhat * dgamma_bc / N)
// gamma_bc / beta_bc: row index[b] (or 0 for a single row, else b) of fp32 (rows, C) tables, 1 / 0 when absent;
// a row outside the table (a bad style_index) gives NaN instead of an out-of-bounds read.
//
// Design (both directions):
// * Fused kernels (inorm_fwd_kernel, inorm_bwd_kernel): one block per plane (grid.x = B * C). Pass 1 reads
//   the plane and reduces it inside the block; pass 2 reads it again (from L2 for moderate planes) and writes
//   y / dx. Forward pass 1: per-thread Welford states (n, mean, M2), merged with Chan's formula
//   (warp shuffles, then the warp results in shared memory, always in the same order). Backward pass 1:
//   per-thread sums of g and g * xhat, reduced the same way. Thread 0 stores mean / rstd, dgamma / dbeta.
// * Split-plane kernels for few large planes (e.g. B = 1, C = 3, 512^2; see inorm_split_plan): `splits` blocks
//   per plane, block s owning plane indices [s * chunk, min((s + 1) * chunk, N)). The *_split_stats /
//   *_split_sums kernels store one partial state per block (Welford (n, mean, M2) / sums (g, g * xhat));
//   the *_split_apply kernels merge the `splits` partials of their plane in a fixed order (every warp of
//   every block of the plane computes the same result; block 0 stores the statistics / affine gradients)
//   and then write y / dx for their chunk. Two launches, no atomics: deterministic.
// * VEC: plane contiguous (stride 1) and every plane base 16-byte aligned with N a multiple of the vector
//   width (NCHW contiguous): 16-byte vector loads and stores; a Welford update then merges a whole vector
//   (its own mean and M2) into the thread state. Otherwise the plane is walked element by element through
//   int64 strides (one stride, or (m / W) * stride_h + (m % W) * stride_w for sliced planes): correct for
//   channels_last and sliced views, but not coalesced for channels_last (stride C between neighbours).
// * Block size: blockDim.x in {64, 128, 256} chosen by the launcher from the work per block.
// Math is fp32 for every T (float, __half, __nv_bfloat16); offsets are int64, plane indices int32 (the launcher
// limits N to 2^30).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "common.cuh"

namespace perceptual_kernels::cuda::inorm_kernels {

constexpr int kMaxThreads = 256;
constexpr int kSplitAlign = 1024;  // split chunks are multiples of this (and so of every vector width)

// Elements of T per 16-byte vector.
template <typename T>
__host__ __device__ constexpr int vec_width() {
  return 16 / static_cast<int>(sizeof(T));
}

template <typename T>
struct alignas(16) Vec {
  T v[vec_width<T>()];
};

// Addressing of one tensor: plane (b, c) starts at b * sb + c * sc; plane index m in [0, N) lies at
// (m / W) * sh + (m % W) * sw when split, else at m * sw.
struct PlaneLayout {
  int64_t sb, sc, sh, sw;
  int32_t W;
  bool split;
};

__device__ __forceinline__ int64_t plane_offset(const PlaneLayout& l, int32_t m) {
  return l.split ? static_cast<int64_t>(m / l.W) * l.sh + static_cast<int64_t>(m % l.W) * l.sw
                 : static_cast<int64_t>(m) * l.sw;
}

// Per-sample affine parameters: fp32 (rows, C) row-major tables (null when absent), optional style index (B,).
struct Affine {
  const float* gamma;
  const float* beta;
  const int64_t* index;
  int64_t gamma_rows, beta_rows;
};

__device__ __forceinline__ float affine_value(const float* table, int64_t rows, const int64_t* index, int64_t b,
                                              int64_t C, int64_t c, float absent) {
  if (table == nullptr) return absent;
  const int64_t row = index != nullptr ? index[b] : (rows == 1 ? 0 : b);
  if (row < 0 || row >= rows) return __int_as_float(0x7fc00000);  // NaN, never an out-of-bounds read
  return table[row * C + c];
}

// ---------------------------------------------------------------------------------------------------------
// Fixed-order block reductions (blockDim.x a multiple of 32, at most kMaxThreads); results in every thread.

struct Welford {
  float n, mean, m2;
};

// Chan's merge of two Welford states; an empty state (n = 0) is the identity (returned as is, so no 0 * inf
// can turn a huge but finite state into NaN), NaN propagates.
__device__ __forceinline__ Welford welford_merge(const Welford& a, const Welford& b) {
  if (b.n == 0.f) return a;
  if (a.n == 0.f) return b;
  const float n = a.n + b.n;
  const float fb = b.n / n;
  const float delta = b.mean - a.mean;
  return {n, a.mean + delta * fb, a.m2 + b.m2 + delta * delta * a.n * fb};
}

struct WelfordMerge {
  __device__ __forceinline__ Welford operator()(const Welford& a, const Welford& b) const {
    return welford_merge(a, b);
  }
};

struct Add2 {
  __device__ __forceinline__ float2 operator()(float2 a, float2 b) const { return make_float2(a.x + b.x, a.y + b.y); }
};

__device__ __forceinline__ Welford block_welford(Welford s) {
  return block_reduce<true, BlockFinal::kTree, kMaxThreads / 32>(s, WelfordMerge(), Welford{0.f, 0.f, 0.f});
}

__device__ __forceinline__ float2 block_sum2(float2 s) {
  return block_reduce<true, BlockFinal::kTree, kMaxThreads / 32>(s, Add2(), make_float2(0.f, 0.f));
}

// Merges of the `splits` partial states of one plane (split kernels). Every warp computes the same result in
// the same order: lane l takes partials l, l + 32, ..., then a shuffle tree; lane 0's result is broadcast.
__device__ __forceinline__ Welford merge_split_welford(const float* p, int32_t splits) {
  Welford s{0.f, 0.f, 0.f};
  for (int32_t i = threadIdx.x % 32; i < splits; i += 32) {
    s = welford_merge(s, Welford{p[3 * i], p[3 * i + 1], p[3 * i + 2]});
  }
  s = warp_reduce(s, WelfordMerge());
  return {__shfl_sync(0xffffffffu, s.n, 0), __shfl_sync(0xffffffffu, s.mean, 0), __shfl_sync(0xffffffffu, s.m2, 0)};
}

__device__ __forceinline__ float2 merge_split_sums(const float* p, int32_t splits) {
  float2 s = make_float2(0.f, 0.f);
  for (int32_t i = threadIdx.x % 32; i < splits; i += 32) {
    s.x += p[2 * i];
    s.y += p[2 * i + 1];
  }
  s = warp_reduce(s, Add2());
  return make_float2(__shfl_sync(0xffffffffu, s.x, 0), __shfl_sync(0xffffffffu, s.y, 0));
}

// ---------------------------------------------------------------------------------------------------------
// Chunk passes over plane indices [begin, end) of one plane (begin, end multiples of the vector width in VEC).

// Welford state of x over the chunk, reduced over the block.
template <typename T, bool VEC>
__device__ __forceinline__ Welford chunk_welford(const T* xp, const PlaneLayout& xl, int32_t begin, int32_t end) {
  Welford s{0.f, 0.f, 0.f};
  if constexpr (VEC) {
    constexpr int V = vec_width<T>();
    const Vec<T>* xv = reinterpret_cast<const Vec<T>*>(xp);
    for (int32_t k = begin / V + threadIdx.x; k < end / V; k += blockDim.x) {
      const Vec<T> v = xv[k];
      float vals[V], sum = 0.f;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        vals[e] = to_float(v.v[e]);
        sum += vals[e];
      }
      const float vmean = sum * (1.f / V);
      float vm2 = 0.f;
#pragma unroll
      for (int e = 0; e < V; ++e) vm2 += (vals[e] - vmean) * (vals[e] - vmean);
      s = welford_merge(s, Welford{static_cast<float>(V), vmean, vm2});
    }
  } else {
    for (int32_t m = begin + threadIdx.x; m < end; m += blockDim.x) {
      s = welford_merge(s, Welford{1.f, to_float(xp[plane_offset(xl, m)]), 0.f});
    }
  }
  return block_welford(s);
}

// y = (x - mean) * scale + shift (then ReLU, NaN-preserving) over the chunk.
template <typename T, bool VEC, bool RELU>
__device__ __forceinline__ void chunk_normalize(const T* xp, const PlaneLayout& xl, T* yp, const PlaneLayout& yl,
                                                int32_t begin, int32_t end, float mean, float scale, float shift) {
  auto norm = [&](float v) {
    const float y = (v - mean) * scale + shift;
    return RELU && y < 0.f ? 0.f : y;
  };
  if constexpr (VEC) {
    constexpr int V = vec_width<T>();
    const Vec<T>* xv = reinterpret_cast<const Vec<T>*>(xp);
    Vec<T>* yv = reinterpret_cast<Vec<T>*>(yp);
    for (int32_t k = begin / V + threadIdx.x; k < end / V; k += blockDim.x) {
      const Vec<T> v = xv[k];
      Vec<T> out;
#pragma unroll
      for (int e = 0; e < V; ++e) out.v[e] = from_float<T>(norm(to_float(v.v[e])));
      yv[k] = out;
    }
  } else {
    for (int32_t m = begin + threadIdx.x; m < end; m += blockDim.x) {
      yp[plane_offset(yl, m)] = from_float<T>(norm(to_float(xp[plane_offset(xl, m)])));
    }
  }
}

// g: grad_y, zeroed with RELU where the recomputed y = xc * scale + shift is <= 0 (NaN y passes).
template <bool RELU>
__device__ __forceinline__ float masked_grad(float dy, float xc, float scale, float shift) {
  return RELU && xc * scale + shift <= 0.f ? 0.f : dy;
}

// (sum g, sum g * xhat) over the chunk, reduced over the block.
template <typename T, bool VEC, bool RELU>
__device__ __forceinline__ float2 chunk_grad_sums(const T* dyp, const PlaneLayout& dyl, const T* xp,
                                                  const PlaneLayout& xl, int32_t begin, int32_t end, float mean,
                                                  float rstd, float scale, float shift) {
  float2 s = make_float2(0.f, 0.f);
  auto add = [&](float dy, float x) {
    const float xc = x - mean;
    const float g = masked_grad<RELU>(dy, xc, scale, shift);
    s.x += g;
    s.y += g * (xc * rstd);
  };
  if constexpr (VEC) {
    constexpr int V = vec_width<T>();
    const Vec<T>* dyv = reinterpret_cast<const Vec<T>*>(dyp);
    const Vec<T>* xv = reinterpret_cast<const Vec<T>*>(xp);
    for (int32_t k = begin / V + threadIdx.x; k < end / V; k += blockDim.x) {
      const Vec<T> d = dyv[k], v = xv[k];
#pragma unroll
      for (int e = 0; e < V; ++e) add(to_float(d.v[e]), to_float(v.v[e]));
    }
  } else {
    for (int32_t m = begin + threadIdx.x; m < end; m += blockDim.x) {
      add(to_float(dyp[plane_offset(dyl, m)]), to_float(xp[plane_offset(xl, m)]));
    }
  }
  return block_sum2(s);
}

// dx = scale * (g - mean_g - xhat * mean_gx) over the chunk.
template <typename T, bool VEC, bool RELU>
__device__ __forceinline__ void chunk_grad_input(const T* dyp, const PlaneLayout& dyl, const T* xp,
                                                 const PlaneLayout& xl, T* dxp, const PlaneLayout& dxl, int32_t begin,
                                                 int32_t end, float mean, float rstd, float scale, float shift,
                                                 float mean_g, float mean_gx) {
  auto grad = [&](float dy, float x) {
    const float xc = x - mean;
    const float g = masked_grad<RELU>(dy, xc, scale, shift);
    return from_float<T>(scale * (g - mean_g - (xc * rstd) * mean_gx));
  };
  if constexpr (VEC) {
    constexpr int V = vec_width<T>();
    const Vec<T>* dyv = reinterpret_cast<const Vec<T>*>(dyp);
    const Vec<T>* xv = reinterpret_cast<const Vec<T>*>(xp);
    Vec<T>* dxv = reinterpret_cast<Vec<T>*>(dxp);
    for (int32_t k = begin / V + threadIdx.x; k < end / V; k += blockDim.x) {
      const Vec<T> d = dyv[k], v = xv[k];
      Vec<T> out;
#pragma unroll
      for (int e = 0; e < V; ++e) out.v[e] = grad(to_float(d.v[e]), to_float(v.v[e]));
      dxv[k] = out;
    }
  } else {
    for (int32_t m = begin + threadIdx.x; m < end; m += blockDim.x) {
      dxp[plane_offset(dxl, m)] = grad(to_float(dyp[plane_offset(dyl, m)]), to_float(xp[plane_offset(xl, m)]));
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Kernels. splits == 1 and chunk == N for the fused ones; block = plane * splits + s.

template <typename T>
struct FwdArgs {
  const T* x;
  T* y;
  float* mean;      // (B * C,)
  float* rstd;      // (B * C,)
  float* partials;  // (B * C * splits, 3) Welford states of the split kernels
  Affine affine;
  PlaneLayout xl, yl;
  int64_t C;
  int32_t N, splits, chunk;
  float eps;
};

template <typename T>
struct BwdArgs {
  const T* dy;
  const T* x;
  T* dx;
  const float* mean;  // (B * C,)
  const float* rstd;  // (B * C,)
  float* dgamma;      // (B * C,) or null
  float* dbeta;       // (B * C,) or null
  float* partials;    // (B * C * splits, 2) sums of the split kernels
  Affine affine;
  PlaneLayout dyl, xl, dxl;
  int64_t C;
  int32_t N, splits, chunk;
};

// mean, rstd of a plane's Welford state over N values; scale, shift of its affine transform.
struct PlaneCoef {
  float mean, rstd, scale, shift;
};

__device__ __forceinline__ PlaneCoef plane_coef(float mean, float rstd, const Affine& af, int64_t b, int64_t C,
                                                int64_t c) {
  const float gamma = affine_value(af.gamma, af.gamma_rows, af.index, b, C, c, 1.f);
  const float beta = affine_value(af.beta, af.beta_rows, af.index, b, C, c, 0.f);
  return {mean, rstd, gamma * rstd, beta};
}

__device__ __forceinline__ float rstd_of(const Welford& s, int32_t N, float eps) {
  return 1.f / sqrtf(s.m2 / static_cast<float>(N) + eps);
}

template <typename T, bool VEC, bool RELU>
__global__ void __launch_bounds__(kMaxThreads) inorm_fwd_kernel(FwdArgs<T> a) {
  const int64_t plane = blockIdx.x, b = plane / a.C, c = plane % a.C;
  const T* xp = a.x + b * a.xl.sb + c * a.xl.sc;
  const Welford s = chunk_welford<T, VEC>(xp, a.xl, 0, a.N);
  const PlaneCoef k = plane_coef(s.mean, rstd_of(s, a.N, a.eps), a.affine, b, a.C, c);
  if (threadIdx.x == 0) {
    a.mean[plane] = k.mean;
    a.rstd[plane] = k.rstd;
  }
  chunk_normalize<T, VEC, RELU>(xp, a.xl, a.y + b * a.yl.sb + c * a.yl.sc, a.yl, 0, a.N, k.mean, k.scale, k.shift);
}

template <typename T, bool VEC>
__global__ void __launch_bounds__(kMaxThreads) inorm_fwd_split_stats_kernel(FwdArgs<T> a) {
  const int64_t plane = blockIdx.x / a.splits, b = plane / a.C, c = plane % a.C;
  const int32_t begin = static_cast<int32_t>(blockIdx.x % a.splits) * a.chunk;
  const int32_t end = min(begin + a.chunk, a.N);
  const Welford s = chunk_welford<T, VEC>(a.x + b * a.xl.sb + c * a.xl.sc, a.xl, begin, end);
  if (threadIdx.x == 0) {
    float* p = a.partials + static_cast<int64_t>(blockIdx.x) * 3;
    p[0] = s.n;
    p[1] = s.mean;
    p[2] = s.m2;
  }
}

template <typename T, bool VEC, bool RELU>
__global__ void __launch_bounds__(kMaxThreads) inorm_fwd_split_apply_kernel(FwdArgs<T> a) {
  const int64_t plane = blockIdx.x / a.splits, b = plane / a.C, c = plane % a.C;
  const int32_t split = static_cast<int32_t>(blockIdx.x % a.splits);
  const Welford s = merge_split_welford(a.partials + plane * a.splits * 3, a.splits);
  const PlaneCoef k = plane_coef(s.mean, rstd_of(s, a.N, a.eps), a.affine, b, a.C, c);
  if (split == 0 && threadIdx.x == 0) {
    a.mean[plane] = k.mean;
    a.rstd[plane] = k.rstd;
  }
  const int32_t begin = split * a.chunk, end = min(begin + a.chunk, a.N);
  chunk_normalize<T, VEC, RELU>(a.x + b * a.xl.sb + c * a.xl.sc, a.xl, a.y + b * a.yl.sb + c * a.yl.sc, a.yl, begin,
                                end, k.mean, k.scale, k.shift);
}

template <typename T, bool VEC, bool RELU>
__global__ void __launch_bounds__(kMaxThreads) inorm_bwd_kernel(BwdArgs<T> a) {
  const int64_t plane = blockIdx.x, b = plane / a.C, c = plane % a.C;
  const T* dyp = a.dy + b * a.dyl.sb + c * a.dyl.sc;
  const T* xp = a.x + b * a.xl.sb + c * a.xl.sc;
  const PlaneCoef k = plane_coef(a.mean[plane], a.rstd[plane], a.affine, b, a.C, c);
  const float2 s = chunk_grad_sums<T, VEC, RELU>(dyp, a.dyl, xp, a.xl, 0, a.N, k.mean, k.rstd, k.scale, k.shift);
  if (threadIdx.x == 0 && a.dgamma != nullptr) {
    a.dbeta[plane] = s.x;
    a.dgamma[plane] = s.y;
  }
  const float inv_n = 1.f / static_cast<float>(a.N);
  chunk_grad_input<T, VEC, RELU>(dyp, a.dyl, xp, a.xl, a.dx + b * a.dxl.sb + c * a.dxl.sc, a.dxl, 0, a.N, k.mean,
                                 k.rstd, k.scale, k.shift, s.x * inv_n, s.y * inv_n);
}

template <typename T, bool VEC, bool RELU>
__global__ void __launch_bounds__(kMaxThreads) inorm_bwd_split_sums_kernel(BwdArgs<T> a) {
  const int64_t plane = blockIdx.x / a.splits, b = plane / a.C, c = plane % a.C;
  const int32_t begin = static_cast<int32_t>(blockIdx.x % a.splits) * a.chunk;
  const int32_t end = min(begin + a.chunk, a.N);
  const PlaneCoef k = plane_coef(a.mean[plane], a.rstd[plane], a.affine, b, a.C, c);
  const float2 s =
      chunk_grad_sums<T, VEC, RELU>(a.dy + b * a.dyl.sb + c * a.dyl.sc, a.dyl, a.x + b * a.xl.sb + c * a.xl.sc, a.xl,
                                    begin, end, k.mean, k.rstd, k.scale, k.shift);
  if (threadIdx.x == 0) {
    a.partials[static_cast<int64_t>(blockIdx.x) * 2] = s.x;
    a.partials[static_cast<int64_t>(blockIdx.x) * 2 + 1] = s.y;
  }
}

template <typename T, bool VEC, bool RELU>
__global__ void __launch_bounds__(kMaxThreads) inorm_bwd_split_apply_kernel(BwdArgs<T> a) {
  const int64_t plane = blockIdx.x / a.splits, b = plane / a.C, c = plane % a.C;
  const int32_t split = static_cast<int32_t>(blockIdx.x % a.splits);
  const float2 s = merge_split_sums(a.partials + plane * a.splits * 2, a.splits);
  if (split == 0 && threadIdx.x == 0 && a.dgamma != nullptr) {
    a.dbeta[plane] = s.x;
    a.dgamma[plane] = s.y;
  }
  const PlaneCoef k = plane_coef(a.mean[plane], a.rstd[plane], a.affine, b, a.C, c);
  const float inv_n = 1.f / static_cast<float>(a.N);
  const int32_t begin = split * a.chunk, end = min(begin + a.chunk, a.N);
  chunk_grad_input<T, VEC, RELU>(a.dy + b * a.dyl.sb + c * a.dyl.sc, a.dyl, a.x + b * a.xl.sb + c * a.xl.sc, a.xl,
                                 a.dx + b * a.dxl.sb + c * a.dxl.sc, a.dxl, begin, end, k.mean, k.rstd, k.scale,
                                 k.shift, s.x * inv_n, s.y * inv_n);
}

// ---------------------------------------------------------------------------------------------------------
// Launchers, one kernel launch each. planes = B * C. The caller checks planes * splits fits grid.x, sets
// chunk = N when splits == 1 (then only the first launcher runs: the fused kernel), else allocates partials
// (planes * splits * 3 floats forward, * 2 backward) and runs both launchers in order.

// Threads per block for `units` vectors (or elements) per block.
inline int inorm_threads(int64_t units) {
  int threads = kMaxThreads;
  while (threads > 64 && threads * 4 > units) threads /= 2;
  return threads;
}

// Blocks per plane and plane indices per block: 1 and N (the fused kernels) unless there are fewer planes than
// 2 blocks per SM; then up to 4 blocks per SM in all, at most kMaxSplits per plane and at least kMinSplitChunk
// plane indices per block.
struct SplitPlan {
  int32_t splits, chunk;
};

inline SplitPlan inorm_split_plan(int32_t N, int64_t planes, int num_sms) {
  constexpr int64_t kMinSplitChunk = 4096, kMaxSplits = 64;
  const int64_t wanted = planes < 2 * int64_t{num_sms} ? 4 * int64_t{num_sms} / planes : 1;
  const int64_t splits = std::min({wanted, int64_t{N} / kMinSplitChunk, kMaxSplits});
  if (splits <= 1) return {1, N};
  const int64_t chunk = ((N + splits - 1) / splits + kSplitAlign - 1) / kSplitAlign * kSplitAlign;
  return {static_cast<int32_t>((N + chunk - 1) / chunk), static_cast<int32_t>(chunk)};
}

// Plane addressing of a 4-D tensor (sizes, strides): one stride when the plane allows it (contiguous,
// channels_last, H or W 1), else (m / W) * stride_h + (m % W) * stride_w.
inline PlaneLayout plane_layout(const int64_t* sizes, const int64_t* strides) {
  const int64_t H = sizes[2], W = sizes[3], sh = strides[2], sw = strides[3];
  if (W == 1) return {strides[0], strides[1], 0, sh, 1, false};
  if (H == 1 || sh == W * sw) return {strides[0], strides[1], 0, sw, static_cast<int32_t>(W), false};
  return {strides[0], strides[1], sh, sw, static_cast<int32_t>(W), true};
}

// 16-byte vectors of `vec` elements fit every plane of the tensor at `data` (layout l): stride-1 planes of a
// multiple of `vec` elements, all plane bases 16-byte aligned.
inline bool vectorizable(const int64_t* sizes, const PlaneLayout& l, const void* data, int vec) {
  const int64_t N = sizes[2] * sizes[3];
  return !l.split && l.sw == 1 && N % vec == 0 && reinterpret_cast<uintptr_t>(data) % 16 == 0 &&
         (sizes[0] == 1 || l.sb % vec == 0) && (sizes[1] == 1 || l.sc % vec == 0);
}

template <bool VEC, typename T, template <typename> class Args, typename Kernel>
void launch_one(Kernel kernel, const Args<T>& a, int64_t planes, cudaStream_t stream) {
  const int threads = inorm_threads(a.chunk / (VEC ? vec_width<T>() : 1));
  PK_LAUNCH(kernel, static_cast<unsigned>(planes * a.splits), threads, 0, stream)(a);
}

// Picks kernel<VEC, RELU> from the runtime flags (a generic lambda taking the two as integral constants).
template <typename F>
void with_flags(bool vec, bool relu, F&& f) {
  using T0 = std::integral_constant<bool, false>;
  using T1 = std::integral_constant<bool, true>;
  if (vec) {
    relu ? f(T1{}, T1{}) : f(T1{}, T0{});
  } else {
    relu ? f(T0{}, T1{}) : f(T0{}, T0{});
  }
}

// Fused kernel (splits == 1) or the split statistics kernel.
template <typename T>
void launch_inorm_forward(const FwdArgs<T>& a, int64_t planes, bool vec, bool relu, cudaStream_t stream) {
  with_flags(vec, relu, [&](auto v, auto r) {
    if (a.splits == 1) {
      launch_one<v>(inorm_fwd_kernel<T, v, r>, a, planes, stream);
    } else {
      launch_one<v>(inorm_fwd_split_stats_kernel<T, v>, a, planes, stream);
    }
  });
}

// Split normalisation kernel (splits > 1, after launch_inorm_forward).
template <typename T>
void launch_inorm_forward_split_apply(const FwdArgs<T>& a, int64_t planes, bool vec, bool relu, cudaStream_t stream) {
  with_flags(vec, relu,
             [&](auto v, auto r) { launch_one<v>(inorm_fwd_split_apply_kernel<T, v, r>, a, planes, stream); });
}

// Fused kernel (splits == 1) or the split sums kernel.
template <typename T>
void launch_inorm_backward(const BwdArgs<T>& a, int64_t planes, bool vec, bool relu, cudaStream_t stream) {
  with_flags(vec, relu, [&](auto v, auto r) {
    if (a.splits == 1) {
      launch_one<v>(inorm_bwd_kernel<T, v, r>, a, planes, stream);
    } else {
      launch_one<v>(inorm_bwd_split_sums_kernel<T, v, r>, a, planes, stream);
    }
  });
}

// Split input-gradient kernel (splits > 1, after launch_inorm_backward).
template <typename T>
void launch_inorm_backward_split_apply(const BwdArgs<T>& a, int64_t planes, bool vec, bool relu, cudaStream_t stream) {
  with_flags(vec, relu,
             [&](auto v, auto r) { launch_one<v>(inorm_bwd_split_apply_kernel<T, v, r>, a, planes, stream); });
}

#ifdef PK_STANDALONE_INSTANTIATE
// Every kernel variant, through the launchers that select them.
#define PK_INORM_INSTANTIATE(T)                                                                            \
  template void launch_inorm_forward<T>(const FwdArgs<T>&, int64_t, bool, bool, cudaStream_t);             \
  template void launch_inorm_forward_split_apply<T>(const FwdArgs<T>&, int64_t, bool, bool, cudaStream_t); \
  template void launch_inorm_backward<T>(const BwdArgs<T>&, int64_t, bool, bool, cudaStream_t);            \
  template void launch_inorm_backward_split_apply<T>(const BwdArgs<T>&, int64_t, bool, bool, cudaStream_t);
PK_INORM_INSTANTIATE(float)
PK_INORM_INSTANTIATE(__half)
PK_INORM_INSTANTIATE(__nv_bfloat16)
#undef PK_INORM_INSTANTIATE
#endif

}  // namespace perceptual_kernels::cuda::inorm_kernels
