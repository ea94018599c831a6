// Gram matrix and fused style loss: CUDA kernels (no torch headers; launched from gram.cu).
//
// Per sample b, F_b = x[b] as a C x M matrix (M = H * W, read through x's strides), s = scale:
//   forward   G_b = s * F_b F_b^T                                        (gram, written as float/half/bf16/double)
//             D_b = G_b - A_b, loss_b = sum_ij D_b[i, j]^2               (style; D fp32, A any float dtype/strides)
//             l1: loss_b = sum_ij |D_b[i, j]|, sign(D_b) written for D_b (sign(0) = 0, sign(NaN) = NaN)
//   backward  dF_b = coef_b * (D_b + D_b^T) F_b                          (coef_b = s for the gram, D = dG)
//
// Design (the algorithm of perceptual_kernels/backends/triton/gram.py):
// * One block of 256 threads (8 warps) computes a 64 x 64 fp32 tile over K in steps of 32. Operands are staged
//   global -> registers -> shared memory as rows of 32 K values ([row][k], padded to 16 bytes), the next step's
//   global loads are issued before the current step's product (register prefetch). Three products (TileMma):
//   kSimt   exact fp32 FMA, 4 x 4 outputs per thread (float4 shared-memory reads);
//   kTf32   WMMA m16n16k8 tf32 tensor cores (float input, used only when the fp32 precision policy allows it);
//   kWmma16 WMMA m16n16k16 fp16 / bf16 tensor cores. Tensor-core paths need sm_80 (the launcher checks).
//   Every accumulator ends in an fp32 shared tile sC [64][68] that the epilogues read.
// * Forward: grid (B * n_up, splits), n_up = n_row (n_row + 1) / 2 tiles (ti <= tj) of the upper triangle.
//   Diagonal tiles load one operand only. Loads follow x's fastest dimension (plane or channel) so that both
//   NCHW and channels_last read coalesced; a sliced plane splits m into (m / W, m % W). splits == 1: the block
//   runs the epilogue: scale, write the tile (columns fastest) and, off the diagonal, its mirror (rows fastest,
//   D[j, i] = G[i, j] - A[j, i]); style mode adds one fixed-order block sum of D^2 to loss_parts[b, tile].
//   splits > 1 (split-K over M for tall-skinny shapes such as C = 64, M = 262144): every block writes its
//   unscaled partial tile to the fp32 workspace ws (splits, B, C, C); gram_reduce_kernel (one block per tile row)
//   sums the splits in a fixed order (4 interleaved groups, then group 0..3) and runs the same epilogue per
//   element; its loss partials are (B, n_up * 64). loss_sum_kernel sums each sample's partials in a fixed order.
//   No atomics anywhere: results do not depend on scheduling.
// * Backward: one GEMM per call, grid (M tiles, C tiles, samples): output tile 64 rows x 64 positions, K = C in
//   steps of 32; the A operand is symmetrised while it is loaded (S[i, k] = D[i, k] + D[k, i], fp32, cast to x's
//   dtype for kWmma16 as the Triton kernel does), the B operand is x. dF is written once, in x's dtype, through
//   dx's strides. The same three products are used (tensor cores when the forward would use them).
// * Index math: sizes, strides and x / dx offsets are int64 (offsets inside one sample's D are int32, which the
//   launcher guarantees); positions inside a tile are int. Elements outside rows / cols < C or k < k_end / M are
//   loaded as 0 (a masked lane reads a valid address and discards it) and never stored.
// * style_index out of [0, R): that sample's target row is not read, its D and loss come out NaN.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "common.cuh"

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define PK_GRAM_TENSOR_CORES 1
#else
#define PK_GRAM_TENSOR_CORES 0
#endif

namespace perceptual_kernels::cuda::gram_kernels {

constexpr int kTile = 64;                             // output tile edge
constexpr int kStep = 32;                             // K per main-loop step
constexpr int kThreads = 256;                         // 8 warps per block
constexpr int kLdC = kTile + 4;                       // row pitch of the fp32 result tile sC
constexpr int kPerThread = kTile * kStep / kThreads;  // 8 operand elements per thread and step

enum Mode : int { kSimt = 0, kTf32 = 1, kWmma16 = 2 };
enum DType : int { kF32 = 0, kF16 = 1, kBF16 = 2, kF64 = 3 };  // epilogue output / target element types

// Row pitch (elements) of a staged operand: 32 K values + 16 bytes of padding.
template <typename T>
constexpr int kLd = kStep + 16 / int(sizeof(T));

template <typename T>
constexpr int kSmemBytes =
    (2 * kTile * kLd<T> * int(sizeof(T))) > (kTile * kLdC * 4) ? 2 * kTile * kLd<T> * int(sizeof(T)) : kTile * kLdC * 4;

// Addressing of the H*W plane as one index m (see triton/_common.py hw_layout).
// A split plane needs M < 2^32 (checked by the launcher): the division is 32-bit.
struct Plane {
  int64_t s_h, s_w;
  uint32_t W;
  int split;  // 1: offset = (m / W) s_h + (m % W) s_w (sliced plane); 0: offset = m s_w
  __device__ __forceinline__ int64_t offset(int64_t m) const {
    if (!split) return m * s_w;
    const uint32_t h = uint32_t(m) / W, w = uint32_t(m) - h * W;
    return int64_t(h) * s_h + int64_t(w) * s_w;
  }
};

// Element (b, c, m) of a (B, C, H, W) tensor is at b s_b + c s_c + plane.offset(m).
struct XDesc {
  int64_t s_b, s_c;
  Plane plane;
  int channel_fast;  // 1: channels are the fastest dimension (channels_last): threads walk c, else m
};

struct FwdArgs {
  int64_t B, C, M;
  XDesc x;
  int n_row;            // row tiles: ceil(C / 64)
  uint32_t n_up;        // upper-triangle tiles: n_row (n_row + 1) / 2 (B * n_up * 64 < 2^31)
  int64_t k_per_split;  // multiple of kStep
  float* ws;            // (splits, B, C, C) partial tiles; nullptr when splits == 1
};

struct Epilogue {
  void* out;           // (B, C, C) contiguous: G (gram) or D (style, fp32)
  int out_dtype;       // DType
  const void* target;  // style: A rows (R, C, C) with strides s_tb (0: broadcast), s_tr, s_tc
  int target_dtype;
  int64_t target_rows, s_tb, s_tr, s_tc;
  const int64_t* index;  // style: contiguous (B,) target row per sample, or nullptr (row b)
  float* loss_parts;     // style: per-sample partial sums of D^2 (|D| for l1); nullptr selects gram mode
  int l1;                // style: 1 stores sign(D) (sign(NaN) = NaN) in place of D and sums |D|
  float scale;
};

struct BwdArgs {
  int64_t b0, C, M;  // this launch covers samples b0 + blockIdx.z
  XDesc x, dx;
  const float* d;  // D (B, C, C) fp32, strides s_db and (int32) s_dr, s_dc
  int64_t s_db;
  int s_dr, s_dc;
  const float* coef;  // (B,) fp32 with stride s_cb, or nullptr (coef_b = 1)
  int64_t s_cb;
  float scale;
};

// ---- element conversions ----------------------------------------------------------------------------------
__device__ __forceinline__ float load_any(const void* p, int64_t i, int dtype) {
  switch (dtype) {
    case kF16: return __half2float(static_cast<const __half*>(p)[i]);
    case kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case kF64: return float(static_cast<const double*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ void store_any(void* p, int64_t i, float v, int dtype) {
  switch (dtype) {
    case kF16: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    case kBF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    case kF64: static_cast<double*>(p)[i] = double(v); break;
    default: static_cast<float*>(p)[i] = v; break;
  }
}

// *p when ok, else 0; a masked lane reads the valid address `safe` instead, so that the load needs no branch
// (all loads of a step are issued back to back) and nothing outside the tensor is read.
template <typename T>
__device__ __forceinline__ T load_or_zero(const T* p, bool ok, const T* safe) {
  const T v = *(ok ? p : safe);
  return ok ? v : from_float<T>(0.f);
}

// Sum of v over the block, valid on thread 0: block_reduce with the warp sums added serially (warps 0..7), the
// order the style loss has always had (the tree of common.cuh's block_sum would change its last bits).
__device__ __forceinline__ float block_sum(float v) {
  return block_reduce<false, BlockFinal::kSerial, kThreads / 32>(v, Add(), 0.f);
}

// Upper-triangle tile number t -> (ti, tj), ti <= tj, row by row.
__device__ __forceinline__ void upper_tile(uint32_t t, int n_row, int& ti, int& tj) {
  ti = 0;
  while (t >= uint32_t(n_row - ti)) {
    t -= n_row - ti;
    ++ti;
  }
  tj = ti + int(t);
}

// ---- tile products: acc[64 x 64] += sA[64][k] * sB[64][k]^T over one K step ----------------------------------
template <typename T, int MODE>
struct TileMma;

// Exact fp32: thread (ty, tx) of 16 x 16 owns rows ty + 16 i and columns tx + 16 j.
template <>
struct TileMma<float, kSimt> {
  float acc[4][4];

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
  }

  __device__ __forceinline__ void step(const float* sA, const float* sB) {
    constexpr int ld = kLd<float>;
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll
    for (int kk = 0; kk < kStep; kk += 4) {
      float4 a[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = *reinterpret_cast<const float4*>(sA + (ty + 16 * i) * ld + kk);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float4 b = *reinterpret_cast<const float4*>(sB + (tx + 16 * j) * ld + kk);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          float s = acc[i][j];
          s = fmaf(a[i].x, b.x, s);
          s = fmaf(a[i].y, b.y, s);
          s = fmaf(a[i].z, b.z, s);
          s = fmaf(a[i].w, b.w, s);
          acc[i][j] = s;
        }
      }
    }
  }

  __device__ __forceinline__ void store(float* sC) const {
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) sC[(ty + 16 * i) * kLdC + tx + 16 * j] = acc[i][j];
  }
};

#if PK_GRAM_TENSOR_CORES
template <typename T>
struct WmmaIn {  // fp16 / bf16 operands, k = 16
  using type = T;
  static constexpr int kK = 16;
};
template <>
struct WmmaIn<float> {  // fp32 operands rounded to tf32, k = 8
  using type = nvcuda::wmma::precision::tf32;
  static constexpr int kK = 8;
};
#endif

// Tensor cores (kTf32 with T = float, kWmma16 with T = half / bf16): warp w owns rows 16 (w >> 1) and
// columns 32 (w & 1) + {0, 16}, two 16 x 16 fp32 accumulator fragments.
template <typename T, int MODE>
struct TileMma {
  static_assert((MODE == kTf32 && std::is_same<T, float>::value) || (MODE == kWmma16 && !std::is_same<T, float>::value),
                "tensor-core variants: float with kTf32, half / bf16 with kWmma16");
#if PK_GRAM_TENSOR_CORES
  using In = typename WmmaIn<T>::type;
  static constexpr int kK = WmmaIn<T>::kK;
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, kK, float> acc[2];

  __device__ __forceinline__ void zero() {
    nvcuda::wmma::fill_fragment(acc[0], 0.f);
    nvcuda::wmma::fill_fragment(acc[1], 0.f);
  }

  __device__ __forceinline__ void step(const T* sA, const T* sB) {
    namespace w = nvcuda::wmma;
    constexpr int ld = kLd<T>;
    const int warp = threadIdx.x >> 5;
    const T* a_rows = sA + (warp >> 1) * 16 * ld;
    const T* b_rows = sB + (warp & 1) * 32 * ld;
#pragma unroll
    for (int kk = 0; kk < kStep; kk += kK) {
      w::fragment<w::matrix_a, 16, 16, kK, In, w::row_major> a;
      w::load_matrix_sync(a, a_rows + kk, ld);
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        // B[k][n] = sB[n][k]: column-major with leading dimension ld
        w::fragment<w::matrix_b, 16, 16, kK, In, w::col_major> bf;
        w::load_matrix_sync(bf, b_rows + j * 16 * ld + kk, ld);
        w::mma_sync(acc[j], a, bf, acc[j]);
      }
    }
  }

  __device__ __forceinline__ void store(float* sC) const {
    const int warp = threadIdx.x >> 5;
    float* c = sC + (warp >> 1) * 16 * kLdC + (warp & 1) * 32;
    nvcuda::wmma::store_matrix_sync(c, acc[0], kLdC, nvcuda::wmma::mem_row_major);
    nvcuda::wmma::store_matrix_sync(c + 16, acc[1], kLdC, nvcuda::wmma::mem_row_major);
  }
#else
  // Built for an architecture without bf16 / tf32 WMMA: never launched there (the launcher requires sm_80).
  __device__ void zero() { __trap(); }
  __device__ void step(const T*, const T*) {}
  __device__ void store(float*) const {}
#endif
};

// Operand as staged in shared memory: kTf32 stores fp32 values already rounded to tf32 (cvt.rna), so the
// fragments loaded from shared memory need no further conversion.
template <int MODE, typename T>
__device__ __forceinline__ T staged(T v) {
#if PK_GRAM_TENSOR_CORES
  if constexpr (MODE == kTf32) return nvcuda::wmma::__float_to_tf32(v);
#endif
  return v;
}

// ---- forward operand staging: 64 channels x 32 k of F, stored [c][k] ----------------------------------------
// Each thread owns one plane position k of the step and the channels c + 8 i: a warp reads 32 consecutive k of
// one channel when the plane is fastest in memory, else 8 consecutive channels at 4 positions.
__device__ __forceinline__ void fwd_pos(int channel_fast, int& c, int& k) {
  const int tid = threadIdx.x;
  c = channel_fast ? (tid & 7) : (tid >> 5);
  k = channel_fast ? (tid >> 3) : (tid & 31);
}

template <typename T>
__device__ __forceinline__ void load_fwd(T (&ra)[kPerThread], T (&rb)[kPerThread], bool two, const T* xb,
                                         const XDesc& xd, int64_t C, int64_t row0, int64_t col0, int64_t k0,
                                         int64_t k_end) {
  int c, k;
  fwd_pos(xd.channel_fast, c, k);
  const bool k_ok = k0 + k < k_end;
  const T* xk = xb + (k_ok ? xd.plane.offset(k0 + k) : 0);
  const T* pa = xk + (row0 + c) * xd.s_c;
  const T* pb = xk + (col0 + c) * xd.s_c;
  const int64_t step = 8 * xd.s_c;  // 8 channels
  const int na = int(min(C - row0, int64_t(kTile))) - c, nb = int(min(C - col0, int64_t(kTile))) - c;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {  // channel c + 8 i is in range when 8 i < n
    ra[i] = load_or_zero(pa + i * step, k_ok && 8 * i < na, xb);
    if (two) rb[i] = load_or_zero(pb + i * step, k_ok && 8 * i < nb, xb);
  }
}

template <int MODE, typename T>
__device__ __forceinline__ void store_fwd(T* s, const T (&r)[kPerThread], int channel_fast) {
  int c, k;
  fwd_pos(channel_fast, c, k);
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) s[(c + 8 * i) * kLd<T> + k] = staged<MODE>(r[i]);
}

// ---- forward epilogue ---------------------------------------------------------------------------------------
// Offset of sample b's target row, or -1 when its style_index is out of range (then A reads as NaN).
__device__ __forceinline__ int64_t target_base(const Epilogue& ep, int64_t b) {
  if (ep.index == nullptr) return b * ep.s_tb;
  const int64_t r = ep.index[b];
  return (r >= 0 && r < ep.target_rows) ? r * ep.s_tb : -1;
}

// out[b, i, j] = v (gram) or D[b, i, j] = v - A_b[i, j] (style, tb = target_base; ep.l1: sign(D) stored). Returns
// the loss term D^2 (|D| for l1; 0 for gram).
__device__ __forceinline__ float emit(const Epilogue& ep, int64_t tb, int64_t ob, int64_t C, int64_t i, int64_t j,
                                      float v) {
  if (ep.loss_parts == nullptr) {
    store_any(ep.out, ob + i * C + j, v, ep.out_dtype);
    return 0.f;
  }
  const float a =
      tb >= 0 ? load_any(ep.target, tb + i * ep.s_tr + j * ep.s_tc, ep.target_dtype) : __int_as_float(0x7fc00000);
  const float d = v - a;
  if (ep.l1) {
    static_cast<float*>(ep.out)[ob + i * C + j] = d > 0.f ? 1.f : (d < 0.f ? -1.f : d);
    return fabsf(d);
  }
  static_cast<float*>(ep.out)[ob + i * C + j] = d;
  return d * d;
}

// Epilogue of a complete tile held (unscaled) in sC: the tile, its mirror off the diagonal, and in style mode
// the tile's share of the loss in loss_parts[b * n_up + t].
__device__ __forceinline__ void tile_epilogue(const float* sC, const Epilogue& ep, int64_t b, uint32_t t, uint32_t n_up,
                                              int64_t C, int64_t row0, int64_t col0, bool diag) {
  const int tid = threadIdx.x;
  const int64_t ob = b * C * C;
  const int64_t tb = ep.loss_parts != nullptr ? target_base(ep, b) : 0;
  float sq = 0.f;
  for (int e = tid; e < kTile * kTile; e += kThreads) {  // columns fastest: out[row0 + r, col0 + c]
    const int r = e >> 6, c = e & 63;
    if (row0 + r < C && col0 + c < C) sq += emit(ep, tb, ob, C, row0 + r, col0 + c, sC[r * kLdC + c] * ep.scale);
  }
  if (!diag) {
    for (int e = tid; e < kTile * kTile; e += kThreads) {  // mirror, rows fastest: out[col0 + c, row0 + r]
      const int r = e & 63, c = e >> 6;
      if (row0 + r < C && col0 + c < C) sq += emit(ep, tb, ob, C, col0 + c, row0 + r, sC[r * kLdC + c] * ep.scale);
    }
  }
  if (ep.loss_parts != nullptr) {
    const float total = block_sum(sq);
    if (tid == 0) ep.loss_parts[b * n_up + t] = total;
  }
}

// ---- kernels ------------------------------------------------------------------------------------------------
// Grid (B * n_up, splits). Tile t = blockIdx.x % n_up of sample blockIdx.x / n_up over the K range of split
// blockIdx.y: epilogue when a.ws == nullptr, else the unscaled partial tile -> ws[split, b].
template <typename T, int MODE>
__global__ void __launch_bounds__(kThreads, 2) gram_fwd_kernel(const T* __restrict__ x, FwdArgs a, Epilogue ep) {
  __shared__ __align__(128) unsigned char smem[kSmemBytes<T>];
  T* sA = reinterpret_cast<T*>(smem);
  T* sB = sA + kTile * kLd<T>;
  float* sC = reinterpret_cast<float*>(smem);

  const uint32_t t = blockIdx.x % a.n_up;
  const int64_t b = blockIdx.x / a.n_up;
  int ti, tj;
  upper_tile(t, a.n_row, ti, tj);
  const bool diag = ti == tj;  // one operand: sB = sA
  const int64_t row0 = int64_t(ti) * kTile, col0 = int64_t(tj) * kTile;
  const int64_t k_begin = int64_t(blockIdx.y) * a.k_per_split;
  const int64_t k_end = min(k_begin + a.k_per_split, a.M);
  const T* xb = x + b * a.x.s_b;

  TileMma<T, MODE> mma;
  mma.zero();
  T ra[kPerThread], rb[kPerThread];
  if (k_begin < k_end) load_fwd(ra, rb, !diag, xb, a.x, a.C, row0, col0, k_begin, k_end);  // M == 0: no x
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kStep) {
    store_fwd<MODE>(sA, ra, a.x.channel_fast);
    if (!diag) store_fwd<MODE>(sB, rb, a.x.channel_fast);
    __syncthreads();
    if (k0 + kStep < k_end) load_fwd(ra, rb, !diag, xb, a.x, a.C, row0, col0, k0 + kStep, k_end);
    mma.step(sA, diag ? sA : sB);
    __syncthreads();
  }
  mma.store(sC);
  __syncthreads();

  if (a.ws == nullptr) {
    tile_epilogue(sC, ep, b, t, a.n_up, a.C, row0, col0, diag);
    return;
  }
  float* ws = a.ws + (int64_t(blockIdx.y) * a.B + b) * a.C * a.C;
  for (int e = threadIdx.x; e < kTile * kTile; e += kThreads) {
    const int r = e >> 6, c = e & 63;
    if (row0 + r < a.C && col0 + c < a.C) ws[(row0 + r) * a.C + col0 + c] = sC[r * kLdC + c];
  }
}

// Split-K reduction + epilogue. Grid (B * n_up * 64): block = row r of tile t of sample b. Thread (g, c),
// g = tid >> 6 in 0..3, sums splits g, g + 4, ... of element (row0 + r, col0 + c); the 4 group sums are added
// in the order 0..3. Style loss partials: loss_parts[(b * n_up + t) * 64 + r].
__global__ void __launch_bounds__(kThreads)
    gram_reduce_kernel(const float* __restrict__ ws, int64_t splits, FwdArgs a, Epilogue ep) {
  __shared__ float part[kThreads / kTile][kTile];
  const int r = int(blockIdx.x % kTile);
  const uint32_t t = (blockIdx.x / kTile) % a.n_up;
  const int64_t b = (blockIdx.x / kTile) / a.n_up;
  int ti, tj;
  upper_tile(t, a.n_row, ti, tj);
  const int g = threadIdx.x >> 6, c = threadIdx.x & 63;
  const int64_t row = int64_t(ti) * kTile + r, col = int64_t(tj) * kTile + c;
  const bool ok = row < a.C && col < a.C;

  float acc = 0.f;
  if (ok) {
    const float* p = ws + (b * a.C + row) * a.C + col;
    const int64_t split_stride = a.B * a.C * a.C;
#pragma unroll 4
    for (int64_t s = g; s < splits; s += kThreads / kTile) acc += p[s * split_stride];
  }
  part[g][c] = acc;
  __syncthreads();

  float sq = 0.f;
  if (g == 0 && ok) {
    const float v = (part[0][c] + part[1][c] + part[2][c] + part[3][c]) * ep.scale;
    const int64_t tb = ep.loss_parts != nullptr ? target_base(ep, b) : 0;
    const int64_t ob = b * a.C * a.C;
    sq = emit(ep, tb, ob, a.C, row, col, v);
    if (ti != tj) sq += emit(ep, tb, ob, a.C, col, row, v);
  }
  if (ep.loss_parts != nullptr) {
    const float total = block_sum(sq);
    if (threadIdx.x == 0) ep.loss_parts[blockIdx.x] = total;
  }
}

// loss[b] = sum of the n_parts partials of sample b (grid B), fixed order.
__global__ void __launch_bounds__(kThreads)
    loss_sum_kernel(const float* __restrict__ parts, int64_t n_parts, float* __restrict__ loss) {
  const int64_t b = blockIdx.x;
  float s = 0.f;
  for (int64_t p = threadIdx.x; p < n_parts; p += kThreads) s += parts[b * n_parts + p];
  const float total = block_sum(s);
  if (threadIdx.x == 0) loss[b] = total;
}

// ---- backward -----------------------------------------------------------------------------------------------
// A operand: S[row0 + r, k0 + k] = D[r, k] + D[k, r] at (r, k) = ((tid >> 5) + 8 i, tid & 31), fp32. Offsets
// inside a sample's D, padding rows / columns included, fit in int32 (the launcher makes sure).
__device__ __forceinline__ void load_sym(float (&rs)[kPerThread], const BwdArgs& a, int64_t b, int row0, int k0) {
  const int tid = threadIdx.x;
  const int k = k0 + (tid & 31), r = row0 + (tid >> 5);
  const bool k_ok = k < a.C;
  const int n = int(a.C) - r;  // row r + 8 i is in range when 8 i < n
  const float* db = a.d + b * a.s_db;
  const float* dr = db + (r * a.s_dr + k * a.s_dc);  // D[r + 8 i, k]
  const float* dc = db + (k * a.s_dr + r * a.s_dc);  // D[k, r + 8 i]
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const bool ok = k_ok && 8 * i < n;
    rs[i] = load_or_zero(dr + i * 8 * a.s_dr, ok, db) + load_or_zero(dc + i * 8 * a.s_dc, ok, db);
  }
}

template <int MODE, typename T>
__device__ __forceinline__ void store_sym(T* s, const float (&rs)[kPerThread]) {
  const int tid = threadIdx.x;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i)
    s[((tid >> 5) + 8 * i) * kLd<T> + (tid & 31)] = staged<MODE>(from_float<T>(rs[i]));
}

// B operand (F[k0 + k, m0 + m] stored [m][k]) and the output tile: each thread owns one plane position m of
// the block and the rows k + 4 i. Plane fastest: a warp covers 32 consecutive m; channels fastest: 8 m x 4
// consecutive channels.
__device__ __forceinline__ void bwd_pos(int channel_fast, int& m, int& k) {
  const int tid = threadIdx.x;
  m = channel_fast ? (tid >> 2) : (tid & 63);
  k = channel_fast ? (tid & 3) : (tid >> 6);
}

// xm = x[b] at the thread's plane position (m_ok: that position is < M).
template <typename T>
__device__ __forceinline__ void load_xk(T (&rf)[kPerThread], const T* xm, bool m_ok, const T* xb, int64_t s_c,
                                        int64_t C, int k0, int channel_fast) {
  int m, k;
  bwd_pos(channel_fast, m, k);
  const T* p = xm + (k0 + k) * s_c;
  const int64_t step = 4 * s_c;  // 4 channels
  const int64_t n = C - k0 - k;  // channel k0 + k + 4 i is in range when 4 i < n
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) rf[i] = load_or_zero(p + i * step, m_ok && 4 * i < n, xb);
}

template <int MODE, typename T>
__device__ __forceinline__ void store_xk(T* s, const T (&rf)[kPerThread], int channel_fast) {
  int m, k;
  bwd_pos(channel_fast, m, k);
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) s[m * kLd<T> + k + 4 * i] = staged<MODE>(rf[i]);
}

// dF_b[row0 + r, m0 + m] = scale * coef_b * sum_k S[row0 + r, k] F[k, m0 + m]. Grid (ceil(M / 64),
// ceil(C / 64), samples b0 .. b0 + gridDim.z - 1).
template <typename T, int MODE>
__global__ void __launch_bounds__(kThreads, 2) sym_dot_kernel(const T* __restrict__ x, T* __restrict__ dx, BwdArgs a) {
  __shared__ __align__(128) unsigned char smem[kSmemBytes<T>];
  T* sA = reinterpret_cast<T*>(smem);
  T* sB = sA + kTile * kLd<T>;
  float* sC = reinterpret_cast<float*>(smem);
  const int64_t b = a.b0 + blockIdx.z;
  const int64_t m0 = int64_t(blockIdx.x) * kTile;
  const int row0 = int(blockIdx.y) * kTile;
  int m, k;
  bwd_pos(a.x.channel_fast, m, k);
  const bool m_ok = m0 + m < a.M;
  const T* xb = x + b * a.x.s_b;
  const T* xm = xb + (m_ok ? a.x.plane.offset(m0 + m) : 0);

  TileMma<T, MODE> mma;
  mma.zero();
  float rs[kPerThread];
  T rf[kPerThread];
  load_sym(rs, a, b, row0, 0);
  load_xk(rf, xm, m_ok, xb, a.x.s_c, a.C, 0, a.x.channel_fast);
  for (int k0 = 0; k0 < a.C; k0 += kStep) {
    store_sym<MODE>(sA, rs);
    store_xk<MODE>(sB, rf, a.x.channel_fast);
    __syncthreads();
    if (k0 + kStep < a.C) {
      load_sym(rs, a, b, row0, k0 + kStep);
      load_xk(rf, xm, m_ok, xb, a.x.s_c, a.C, k0 + kStep, a.x.channel_fast);
    }
    mma.step(sA, sB);
    __syncthreads();
  }
  mma.store(sC);
  __syncthreads();

  const float coef = a.scale * (a.coef != nullptr ? a.coef[b * a.s_cb] : 1.f);
  bwd_pos(a.dx.channel_fast, m, k);
  if (m0 + m >= a.M) return;
  T* om = dx + b * a.dx.s_b + a.dx.plane.offset(m0 + m);
#pragma unroll 4
  for (int i = 0; i < kTile * kTile / kThreads; ++i) {
    const int r = k + 4 * i;
    if (row0 + r < a.C) om[(row0 + r) * a.dx.s_c] = from_float<T>(sC[r * kLdC + m] * coef);
  }
}

// ---- host-side launch plan (torch-free: used by gram.cu and by the CPU emulator harness) -------------------
constexpr int64_t kInt32Max = 2147483647;
constexpr int64_t kMaxGridYZ = 65535;
constexpr int64_t kMinStepsPerSplit = 8;  // a split-K range covers at least 8 * 32 plane positions

inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Product of the tiles: tensor cores for fp16 / bf16 (x_dtype kF16 / kBF16), tf32 tensor cores for fp32 when
// the GPU has them (sm80) and the fp32 precision policy allows it (tf32), exact fp32 FMA otherwise. The caller
// rejects fp16 / bf16 without sm80.
enum class Variant { kF32Simt, kF32Tf32, kF16, kBF16 };

inline Variant pick_variant(int x_dtype, bool sm80, bool tf32) {
  if (x_dtype == kF32) return sm80 && tf32 ? Variant::kF32Tf32 : Variant::kF32Simt;
  return x_dtype == kF16 ? Variant::kF16 : Variant::kBF16;
}

// Calls f(T* null, std::integral_constant<int, MODE>) for the variant's kernel template arguments.
template <typename F>
void with_variant(Variant v, F&& f) {
  switch (v) {
    case Variant::kF32Simt: f(static_cast<float*>(nullptr), std::integral_constant<int, kSimt>()); break;
    case Variant::kF32Tf32: f(static_cast<float*>(nullptr), std::integral_constant<int, kTf32>()); break;
    case Variant::kF16: f(static_cast<__half*>(nullptr), std::integral_constant<int, kWmma16>()); break;
    case Variant::kBF16: f(static_cast<__nv_bfloat16*>(nullptr), std::integral_constant<int, kWmma16>()); break;
  }
}

// How to walk the H x W plane (strides s_h, s_w) as one index m (triton/_common.py hw_layout): one stride when
// the plane is contiguous in m (NCHW, channels_last, H == 1 or W == 1), else m -> (m / W, m % W); the caller
// checks H * W < 2^32 for the latter (plane_is_split).
inline Plane plane_of(int64_t H, int64_t W, int64_t s_h, int64_t s_w) {
  if (W == 1) return {0, s_h, 1, 0};
  if (H == 1 || s_h == W * s_w) return {0, s_w, 1, 0};
  return {s_h, s_w, uint32_t(W), 1};
}

// Addressing of a (B, C, H, W) tensor with these sizes and strides. Threads walk the dimension with the smaller
// stride so that a warp's loads / stores are coalesced.
inline XDesc x_desc(const int64_t* sizes, const int64_t* strides) {
  const Plane p = plane_of(sizes[2], sizes[3], strides[2], strides[3]);
  const int64_t s_c = strides[1] < 0 ? -strides[1] : strides[1], s_w = p.s_w < 0 ? -p.s_w : p.s_w;
  const bool channel_fast = sizes[1] > 1 && s_c < s_w;
  return {strides[0], strides[1], p, channel_fast ? 1 : 0};
}

// Forward launch configuration: upper-triangle tiles and split-K over M, split when the tiles alone would not
// cover the GPU (num_sms multiprocessors) about twice (tall-skinny shapes). The caller checks
// B * n_up * 64 <= 2^31 - 1 and allocates ws (splits, B, C, C) fp32 when splits > 1.
struct FwdPlan {
  FwdArgs args;
  int64_t splits;
  int64_t parts_per_sample;  // style loss partial sums per sample
};

inline FwdPlan plan_forward(const int64_t* sizes, const int64_t* strides, int64_t num_sms) {
  const int64_t B = sizes[0], C = sizes[1], M = sizes[2] * sizes[3];
  const int64_t n_row = cdiv(C, kTile), n_up = n_row * (n_row + 1) / 2;
  const int64_t k_steps = cdiv(M, kStep);
  int64_t wanted = std::max<int64_t>(1, 2 * num_sms / std::max<int64_t>(1, B * n_up));
  wanted = std::min(wanted, std::max<int64_t>(1, k_steps / kMinStepsPerSplit));
  const int64_t per_split = std::max<int64_t>(1, cdiv(k_steps, wanted)) * kStep;
  const int64_t splits = M > 0 ? cdiv(M, per_split) : 1;

  FwdPlan p{};
  p.args.B = B;
  p.args.C = C;
  p.args.M = M;
  p.args.x = x_desc(sizes, strides);
  p.args.n_row = int(n_row);
  p.args.n_up = uint32_t(n_up);
  p.args.k_per_split = per_split;
  p.args.ws = nullptr;
  p.splits = splits;
  p.parts_per_sample = splits > 1 ? n_up * kTile : n_up;
  return p;
}

// The forward kernels of plan p on x (ep.loss_parts set: style mode, B * p.parts_per_sample partial sums).
inline void launch_forward(const void* x, const FwdPlan& p, const Epilogue& ep, Variant v, cudaStream_t stream) {
  const dim3 grid(unsigned(p.args.B * p.args.n_up), unsigned(p.splits));
  with_variant(v, [&](auto* tag, auto mode) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const auto kernel = gram_fwd_kernel<T, decltype(mode)::value>;
    PK_LAUNCH(kernel, grid, kThreads, 0, stream)(static_cast<const T*>(x), p.args, ep);
  });
  if (p.splits > 1) {
    PK_LAUNCH(gram_reduce_kernel, unsigned(p.args.B * p.args.n_up * kTile), kThreads, 0, stream)(p.args.ws, p.splits,
                                                                                                 p.args, ep);
  }
}

// loss[b] = sum of the n_parts partials of sample b, b < B.
inline void launch_loss_sum(const float* parts, int64_t n_parts, float* loss, int64_t B, cudaStream_t stream) {
  PK_LAUNCH(loss_sum_kernel, unsigned(B), kThreads, 0, stream)(parts, n_parts, loss);
}

// Whether the kernel may address D (strides s_dr, s_dc) inside one sample with int32 offsets (rows / columns
// padded to C + 63); else the caller passes a contiguous copy.
inline bool sym_dot_fits(int64_t C, int64_t s_dr, int64_t s_dc) {
  return (C + kTile - 1) * ((s_dr < 0 ? -s_dr : s_dr) + (s_dc < 0 ? -s_dc : s_dc)) <= kInt32Max;
}

// dF_b = a.scale * coef_b * (D_b + D_b^T) F_b for b < B (a.b0 is set per launch: grid.z holds at most 65535
// samples). The caller checks ceil(M / 64) <= 2^31 - 1 and ceil(C / 64) <= 65535.
inline void launch_sym_dot(Variant v, const void* x, void* dx, BwdArgs a, int64_t B, cudaStream_t stream) {
  const int64_t m_tiles = cdiv(a.M, kTile), c_tiles = cdiv(a.C, kTile);
  for (int64_t b0 = 0; b0 < B; b0 += kMaxGridYZ) {
    a.b0 = b0;
    const dim3 grid(unsigned(m_tiles), unsigned(c_tiles), unsigned(std::min(kMaxGridYZ, B - b0)));
    with_variant(v, [&](auto* tag, auto mode) {
      using T = std::remove_pointer_t<decltype(tag)>;
      const auto kernel = sym_dot_kernel<T, decltype(mode)::value>;
      PK_LAUNCH(kernel, grid, kThreads, 0, stream)(static_cast<const T*>(x), static_cast<T*>(dx), a);
    });
  }
}

#ifdef PK_STANDALONE_INSTANTIATE
#define PK_GRAM_INSTANTIATE(T, MODE)                                                           \
  template __global__ void gram_fwd_kernel<T, MODE>(const T* __restrict__, FwdArgs, Epilogue); \
  template __global__ void sym_dot_kernel<T, MODE>(const T* __restrict__, T* __restrict__, BwdArgs);
PK_GRAM_INSTANTIATE(float, kSimt)
PK_GRAM_INSTANTIATE(float, kTf32)
PK_GRAM_INSTANTIATE(__half, kWmma16)
PK_GRAM_INSTANTIATE(__nv_bfloat16, kWmma16)
#undef PK_GRAM_INSTANTIATE
#endif

}  // namespace perceptual_kernels::cuda::gram_kernels
