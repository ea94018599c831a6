// Total variation loss (forward) and its gradient (backward) on CPU, each in one pass over x.
//
// dh[h,w] = x[h+1,w] - x[h,w], dw[h,w] = x[h,w+1] - x[h,w]; per sample b, summed over c, h, w:
//   squared:   L = sum dh^2 + dw^2,  dL/dx[h,w] = 2 (dh[h-1,w] - dh[h,w] + dw[h,w-1] - dw[h,w])
//   l1:        L = sum |dh| + |dw|,  dL/dx[h,w] = sign dh[h-1,w] - sign dh[h,w] + sign dw[h,w-1] - sign dw[h,w]
//   isotropic: L = sum_{h<H-1, w<W-1} t[h,w], t = sqrt(dh^2 + dw^2 + eps),
//              dL/dx[h,w] = dh[h-1,w] / t[h-1,w] + dw[h,w-1] / t[h,w-1] - (dh[h,w] + dw[h,w]) / t[h,w]
// Terms outside the image are absent (H == 1 or W == 1 has no vertical / horizontal terms). Each gradient element
// is gathered from its neighbourhood and written once: grad = coef_b * dL/dx, scaled in acc_t and cast once at the
// store (coef_b, the upstream gradient times the loss's scale, keeps fp16 / bf16 gradients in range). sign(NaN) = NaN.
//
// Layout: a dense NCHW x is B*C planes of H rows of L = W values; a dense NHWC (channels_last) x is B planes of H
// rows of L = W*C values. In both the w-neighbour of a row element lies S = 1 (NCHW) or S = C (NHWC) elements
// further on, so the same kernels serve both, vectorised along the contiguous rows: the rows strictly inside a plane
// run as one flat range (a per-column flag pattern masks the left / right terms across row ends), the first and
// last rows of a plane on their own (they must not read outside the plane). Isotropic runs in blocks of rows:
// t and the normalised differences a = dh / t, b = dw / t for the block, then the gradient from a, b.
// Work items are runs of whole rows of one plane whose size depends on the shape only; each item's loss is a
// double partial and the partials are summed per sample in a fixed order: deterministic for any thread count.
// fp16 / bf16 rows are converted to float buffers (each row once per item, plus 2 halo rows), double stays double.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../ops.h"

#include "common.h"
#include "isa.h"
#ifdef PK_X86
#include <immintrin.h>
#endif

namespace perceptual_kernels::cpu {
namespace {

constexpr int kVec = 16;                         // block of the vector loops
constexpr int kLanes = 4 * kVec;                 // partial sums: 4 independent vector accumulators
constexpr int64_t kFlush = 4096;                 // values summed in acc_t lanes before they are flushed into a double
constexpr int64_t kItemElems = 8192;             // elements per work item (rounded to whole rows)
constexpr int64_t kIsoBlockElems = 2048;         // isotropic: elements per block of rows (scratch rows stay in L1)
constexpr int64_t kTaskElems = 65536;            // minimum elements per parallel task
enum : uint8_t { kHasLeft = 1, kHasRight = 2 };  // flags of a row element: neighbours in the same row

// keep ? v : +0, bitwise: no floating-point operation has to become conditional (without AVX-512 masking the compiler
// only vectorises selects of values it may compute unconditionally, which trapping math forbids).
template <typename T>
PK_INLINE T keep_if(T v, bool keep) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Bits bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits &= Bits(0) - Bits(keep);
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

// A running sum: acc_t lanes (the vector loops add across them), folded into double lanes every kFlush values
// or fewer and reduced in a fixed tree order.
template <typename T>
struct LaneSum {
  T lane[kLanes] = {};
  double wide[kVec] = {};

  PK_INLINE void fold() {
    for (int k = 0; k < kVec; ++k) {
      wide[k] += static_cast<double>((lane[k] + lane[k + kVec]) + (lane[k + 2 * kVec] + lane[k + 3 * kVec]));
    }
    for (int k = 0; k < kLanes; ++k) lane[k] = T(0);
  }

  PK_INLINE double total() {
    fold();
    for (int k = 0; k < 8; ++k) wide[k] += wide[k + 8];
    for (int k = 0; k < 4; ++k) wide[k] += wide[k + 4];
    return (wide[0] + wide[2]) + (wide[1] + wide[3]);
  }
};

// Adds v(j) for j in [j0, j1) to s (v also writes the gradient of j). A last block shorter than kVec is moved back
// to end at j1 when the range has room: v then runs again on up to kVec - 1 elements of the range (rewriting the
// same gradient values), which are not summed twice.
template <typename T, class V>
PK_INLINE void sum_range(LaneSum<T>& s, int64_t j0, int64_t j1, const V& v) {
  for (int64_t c0 = j0; c0 < j1; c0 += kFlush) {
    const int64_t c1 = std::min(j1, c0 + kFlush);
    int64_t j = c0;
    for (; j + kLanes <= c1; j += kLanes) {
      for (int k = 0; k < kLanes; ++k) s.lane[k] += v(j + k);
    }
    for (; j + kVec <= c1; j += kVec) {
      for (int k = 0; k < kVec; ++k) s.lane[k] += v(j + k);
    }
    if (j < c1 && c1 - j0 >= kVec) {
      const int64_t jb = c1 - kVec, skip = j - jb;
      for (int k = 0; k < kVec; ++k) {
        const T t = v(jb + k);
        s.lane[k] += keep_if(t, k >= skip);
      }
    } else {
      for (; j < c1; ++j) s.lane[0] += v(j);
    }
    if (c1 < j1) s.fold();
  }
}

// ---- squared / l1 -----------------------------------------------------------------------------------------
template <int Kind, typename T>
PK_INLINE T tv_f(T d) {
  if constexpr (Kind == kTvSquared)
    return d * d;
  else
    return std::abs(d);
}

// Derivative of tv_f without squared's factor 2 (folded into the gradient scale); sign(0) = 0, sign(NaN) = NaN.
template <int Kind, typename T>
PK_INLINE T tv_df(T d) {
  if constexpr (Kind == kTvSquared)
    return d;
  else
    return std::islessgreater(d, T(0)) ? std::copysign(T(1), d) : d;  // +-1, or d itself when 0 or NaN
}

// Element j of row c with the neighbours present given by Up / Down / Left / Right: returns its loss terms (towards
// the lower and right neighbours) and, with NeedGrad, writes g[j] = gs * dL/dx.
template <int Kind, bool NeedGrad, bool Up, bool Down, bool Left, bool Right, typename T>
PK_INLINE T sl_elem(const T* __restrict xu, const T* __restrict xc, const T* __restrict xd, T* __restrict g, int64_t j,
                    int64_t S, T gs) {
  const T c = xc[j];
  T loss = 0, dl = 0;
  if constexpr (Down) {
    const T d = xd[j] - c;
    loss += tv_f<Kind>(d);
    dl -= tv_df<Kind>(d);
  }
  if constexpr (Right) {
    const T d = xc[j + S] - c;
    loss += tv_f<Kind>(d);
    dl -= tv_df<Kind>(d);
  }
  if constexpr (NeedGrad) {
    if constexpr (Up) dl += tv_df<Kind>(c - xu[j]);
    if constexpr (Left) dl += tv_df<Kind>(c - xc[j - S]);
    g[j] = dl * gs;
  }
  return loss;
}

template <int Kind, bool NeedGrad, bool Up, bool Down, bool Left, bool Right, typename T>
PK_INLINE void sl_segment(LaneSum<T>& s, const T* xu, const T* xc, const T* xd, T* g, int64_t j0, int64_t j1, int64_t S,
                          T gs) {
  sum_range(s, j0, j1, [&](int64_t j) PK_INLINE_LAMBDA {
    return sl_elem<Kind, NeedGrad, Up, Down, Left, Right>(xu, xc, xd, g, j, S, gs);
  });
}

// A first or last row of a plane: elements [0, S) have no left neighbour, [L - S, L) no right one (W == 1:
// neither), and no neighbour outside the plane is read.
template <int Kind, bool NeedGrad, bool Up, bool Down, typename T>
PK_INLINE double sl_edge_row_impl(const T* xc, T* g, int64_t L, int64_t S, T gs) {
  const T* xu = Up ? xc - L : xc;
  const T* xd = Down ? xc + L : xc;
  LaneSum<T> s;
  if (L == S) {
    sl_segment<Kind, NeedGrad, Up, Down, false, false>(s, xu, xc, xd, g, 0, L, S, gs);
  } else {
    sl_segment<Kind, NeedGrad, Up, Down, false, true>(s, xu, xc, xd, g, 0, S, S, gs);
    sl_segment<Kind, NeedGrad, Up, Down, true, true>(s, xu, xc, xd, g, S, L - S, S, gs);
    sl_segment<Kind, NeedGrad, Up, Down, true, false>(s, xu, xc, xd, g, L - S, L, S, gs);
  }
  return s.total();
}

template <int Kind, bool NeedGrad, typename T>
PK_INLINE double sl_edge_row_dispatch(bool up, bool down, const T* xc, T* g, int64_t L, int64_t S, T gs) {
  if (!down) {
    return up ? sl_edge_row_impl<Kind, NeedGrad, true, false>(xc, g, L, S, gs)
              : sl_edge_row_impl<Kind, NeedGrad, false, false>(xc, g, L, S, gs);
  }
  return sl_edge_row_impl<Kind, NeedGrad, false, true>(xc, g, L, S, gs);
}

// Rows strictly inside a plane as one flat range of n elements (starting at a row start): all four neighbours are
// inside the plane, flags[j] says whether the left / right ones belong to the same row (else they are ignored).
template <int Kind, bool NeedGrad, typename T>
PK_INLINE double sl_inner_impl(const T* __restrict x, T* __restrict g, const uint8_t* __restrict flags, int64_t n,
                               int64_t L, int64_t S, T gs) {
  LaneSum<T> s;
  sum_range(s, 0, n, [&](int64_t j) PK_INLINE_LAMBDA {
    const T c = x[j], dd = x[j + L] - c, dr = x[j + S] - c;
    const bool left = flags[j] & kHasLeft, right = flags[j] & kHasRight;
    if constexpr (NeedGrad) {
      const T dl = tv_df<Kind>(c - x[j - L]) - tv_df<Kind>(dd) + keep_if(tv_df<Kind>(c - x[j - S]), left) -
                   keep_if(tv_df<Kind>(dr), right);
      g[j] = dl * gs;
    }
    return tv_f<Kind>(dd) + keep_if(tv_f<Kind>(dr), right);
  });
  return s.total();
}

// ---- isotropic ----------------------------------------------------------------------------------------------
// Terms of n elements of rows that have a lower row (flat from a row start): returns the sum of t where the term
// exists (flags: a right neighbour in the row); with NeedGrad a[j] = dh / t, b[j] = dw / t, 0 where there is no term.
// q is scratch; the square roots run as one vectorised pass of the instruction set.
template <class Isa, bool NeedGrad, typename T>
PK_INLINE double iso_terms_impl(const T* __restrict x, const uint8_t* __restrict flags, T* __restrict a,
                                T* __restrict b, T* __restrict q, int64_t n, int64_t L, int64_t S, T eps) {
  for (int64_t j = 0; j < n; ++j) {
    const T dh = x[j + L] - x[j], dw = x[j + S] - x[j];
    q[j] = dh * dh + dw * dw + eps;
  }
  Isa::sqrt_n(q, n);
  LaneSum<T> s;
  sum_range(s, 0, n, [&](int64_t j) PK_INLINE_LAMBDA {
    const T t = q[j];
    if constexpr (NeedGrad) {
      const T r = T(1) / t;
      a[j] = keep_if((x[j + L] - x[j]) * r, flags[j] & kHasRight);
      b[j] = keep_if((x[j + S] - x[j]) * r, flags[j] & kHasRight);
    }
    return keep_if(t, flags[j] & kHasRight);
  });
  return s.total();
}

// g[j] = gs * (a[j - L] + b[j - S] - a[j] - b[j]) over n elements: the terms above, to the left and of the element
// itself. a and b hold the row above the range too (b is 0 at the end of each row, so b[j - S] needs no mask).
template <typename T>
PK_INLINE void iso_grad_impl(const T* __restrict a, const T* __restrict b, T* __restrict g, int64_t n, int64_t L,
                             int64_t S, T gs) {
  for (int64_t j = 0; j < n; ++j) g[j] = (a[j - L] + b[j - S] - a[j] - b[j]) * gs;
}

// ---- instruction sets ---------------------------------------------------------------------------------------
template <typename From, typename To>
PK_INLINE void convert_impl(const From* __restrict src, To* __restrict dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<To>(src[i]);
}

template <typename T>
inline void sqrt_generic(T* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = std::sqrt(p[i]);
}

#ifdef PK_X86
// Explicit square roots: with errno-setting libm semantics (the default) the compiler does not vectorise sqrt.
PK_TARGET_AVX2 inline void sqrt_avx2(float* p, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(p + i, _mm256_sqrt_ps(_mm256_loadu_ps(p + i)));
  for (; i < n; ++i) p[i] = std::sqrt(p[i]);
}
PK_TARGET_AVX2 inline void sqrt_avx2(double* p, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) _mm256_storeu_pd(p + i, _mm256_sqrt_pd(_mm256_loadu_pd(p + i)));
  for (; i < n; ++i) p[i] = std::sqrt(p[i]);
}
PK_TARGET_AVX512 inline void sqrt_avx512(float* p, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(p + i, _mm512_sqrt_ps(_mm512_loadu_ps(p + i)));
  for (; i < n; ++i) p[i] = std::sqrt(p[i]);
}
PK_TARGET_AVX512 inline void sqrt_avx512(double* p, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm512_storeu_pd(p + i, _mm512_sqrt_pd(_mm512_loadu_pd(p + i)));
  for (; i < n; ++i) p[i] = std::sqrt(p[i]);
}
#endif

// The kernels of one instruction set: the PK_INLINE bodies above compiled with TARGET.
#define PK_TV_ISA(NAME, TARGET, SQRT)                                                                              \
  struct NAME {                                                                                                    \
    template <typename T>                                                                                          \
    TARGET static void sqrt_n(T* p, int64_t n) {                                                                   \
      SQRT(p, n);                                                                                                  \
    }                                                                                                              \
    template <int Kind, bool NeedGrad, typename T>                                                                 \
    TARGET static double sl_edge_row(bool up, bool down, const T* x, T* g, int64_t L, int64_t S, T gs) {           \
      return sl_edge_row_dispatch<Kind, NeedGrad>(up, down, x, g, L, S, gs);                                       \
    }                                                                                                              \
    template <int Kind, bool NeedGrad, typename T>                                                                 \
    TARGET static double sl_inner(const T* x, T* g, const uint8_t* flags, int64_t n, int64_t L, int64_t S, T gs) { \
      return sl_inner_impl<Kind, NeedGrad>(x, g, flags, n, L, S, gs);                                              \
    }                                                                                                              \
    template <bool NeedGrad, typename T>                                                                           \
    TARGET static double iso_terms(const T* x, const uint8_t* flags, T* a, T* b, T* q, int64_t n, int64_t L,       \
                                   int64_t S, T eps) {                                                             \
      return iso_terms_impl<NAME, NeedGrad>(x, flags, a, b, q, n, L, S, eps);                                      \
    }                                                                                                              \
    template <typename T>                                                                                          \
    TARGET static void iso_grad(const T* a, const T* b, T* g, int64_t n, int64_t L, int64_t S, T gs) {             \
      iso_grad_impl(a, b, g, n, L, S, gs);                                                                         \
    }                                                                                                              \
    template <typename From, typename To>                                                                          \
    TARGET static void convert(const From* src, To* dst, int64_t n) {                                              \
      convert_impl(src, dst, n);                                                                                   \
    }                                                                                                              \
  };

PK_TV_ISA(IsaGeneric, , sqrt_generic)
#ifdef PK_X86
PK_TV_ISA(IsaAvx2, PK_TARGET_AVX2, sqrt_avx2)
PK_TV_ISA(IsaAvx512, PK_TARGET_AVX512, sqrt_avx512)
#endif
#undef PK_TV_ISA

// ---- work items ---------------------------------------------------------------------------------------------
struct TvJob {
  const void* x;
  void* grad;
  int64_t H, L, S;  // rows per plane, row length, w-neighbour offset
  int64_t rows_per_item, items_per_plane;
  int64_t items_per_sample;
  const uint8_t* flags;  // kHasLeft / kHasRight of the first rows_per_item * L row elements
  const double* coef;    // (B,) gradient coefficients (NeedGrad only)
  double eps;
};

// Items [begin, end): partial[item] = loss of the item's rows; the gradient rows of the item are written.
template <class Isa, typename scalar_t, int Kind, bool NeedGrad>
void tv_items(const TvJob& job, int64_t begin, int64_t end, double* partial) {
  using T = acc_t<scalar_t>;
  constexpr bool kConvert = !std::is_same_v<scalar_t, T>;
  constexpr bool kIso = Kind == kTvIsotropic;
  const int64_t H = job.H, L = job.L, S = job.S, R = job.rows_per_item;
  const T eps = static_cast<T>(job.eps);
  const int64_t G = std::clamp<int64_t>(kIsoBlockElems / L, 1, R);  // isotropic rows per block
  // Scratch: x rows h0 - 1 .. h1 and the gradient rows (reduced dtypes); a and b with the row above, q (isotropic).
  std::vector<T> scratch(((kConvert ? 2 * R + 2 : 0) + (kIso ? 3 * G + 2 : 0)) * L);
  T* const x_rows = scratch.data();
  T* const g_rows = x_rows + (R + 2) * L;
  T* const a = scratch.data() + (kConvert ? (2 * R + 2) * L : 0) + L;  // a[-L, 0): the row above the block
  T* const b = a + (G + 1) * L;
  T* const q = b + G * L;

  for (int64_t item = begin; item < end; ++item) {
    const int64_t h0 = item % job.items_per_plane * R;
    const int64_t h1 = std::min(H, h0 + R);
    const int64_t plane_offset = item / job.items_per_plane * H * L;
    // The sample's coefficient (squared's factor 2 folded in) in acc_t: dL/dx is scaled in acc_t, cast at the store.
    const T gs = NeedGrad ? static_cast<T>((Kind == kTvSquared ? 2 : 1) * job.coef[item / job.items_per_sample]) : T(0);
    // x0: row h0 of x as acc_t (rows h0 - 1 .. h1 of the plane are addressable from it); g0: gradient row h0.
    const scalar_t* const xp = static_cast<const scalar_t*>(job.x) + plane_offset;
    scalar_t* const gp = NeedGrad ? static_cast<scalar_t*>(job.grad) + plane_offset : nullptr;
    const T* x0;
    T* g0 = nullptr;
    if constexpr (kConvert) {
      const int64_t lo = std::max<int64_t>(h0 - 1, 0), hi = std::min(H, h1 + 1);
      Isa::convert(xp + lo * L, x_rows, (hi - lo) * L);
      x0 = x_rows + (h0 - lo) * L;
      g0 = g_rows;
    } else {
      x0 = xp + h0 * L;
      if constexpr (NeedGrad) g0 = gp + h0 * L;
    }
    auto g_at = [&](int64_t h) { return NeedGrad ? g0 + (h - h0) * L : nullptr; };

    double loss = 0;
    if constexpr (kIso) {
      // Blocks of G rows keep a, b, q in L1; a, b carry the row above the block at [-L, 0).
      if (NeedGrad && h0 > 0) {  // the row above the item (its loss belongs to the previous item)
        Isa::template iso_terms<true>(x0 - L, job.flags, a - L, b - L, q, L, L, S, eps);
      } else if (NeedGrad) {
        std::fill(a - L, a, T(0));
        std::fill(b - L, b, T(0));
      }
      for (int64_t r0 = h0; r0 < h1; r0 += G) {
        const int64_t r1 = std::min(h1, r0 + G), n = (r1 - r0) * L;
        const int64_t n_terms = std::max<int64_t>(std::min(r1, H - 1) - r0, 0) * L;  // rows with a lower row
        if (n_terms > 0) {
          loss += Isa::template iso_terms<NeedGrad>(x0 + (r0 - h0) * L, job.flags, a, b, q, n_terms, L, S, eps);
        }
        if constexpr (NeedGrad) {
          std::fill(a + n_terms, a + n, T(0));  // the last row of the plane has no terms
          std::fill(b + n_terms, b + n, T(0));
          Isa::iso_grad(a, b, g_at(r0), n, L, S, gs);
          if (r1 < h1) {
            std::copy(a + n - L, a + n, a - L);
            std::copy(b + n - L, b + n, b - L);
          }
        }
      }
    } else {
      int64_t h = h0;
      if (h == 0) {  // first row of the plane (also the last when H == 1)
        loss += Isa::template sl_edge_row<Kind, NeedGrad>(false, H > 1, x0, g_at(0), L, S, gs);
        h = 1;
      }
      const int64_t inner_end = std::min(h1, H - 1);
      if (h < inner_end) {
        loss += Isa::template sl_inner<Kind, NeedGrad>(x0 + (h - h0) * L, g_at(h), job.flags, (inner_end - h) * L, L, S,
                                                       gs);
      }
      if (h1 == H && H > 1) {  // last row of the plane
        loss += Isa::template sl_edge_row<Kind, NeedGrad>(true, false, x0 + (H - 1 - h0) * L, g_at(H - 1), L, S, gs);
      }
    }
    if constexpr (NeedGrad && kConvert) Isa::convert(g0, gp + h0 * L, (h1 - h0) * L);
    partial[item] = loss;
  }
}

using ItemsFn = void (*)(const TvJob&, int64_t, int64_t, double*);

template <class Isa, typename scalar_t>
ItemsFn pick_items(int64_t kind, bool need_grad) {
  switch (kind) {
    case kTvSquared:
      return need_grad ? &tv_items<Isa, scalar_t, kTvSquared, true> : &tv_items<Isa, scalar_t, kTvSquared, false>;
    case kTvL1: return need_grad ? &tv_items<Isa, scalar_t, kTvL1, true> : &tv_items<Isa, scalar_t, kTvL1, false>;
    default:
      return need_grad ? &tv_items<Isa, scalar_t, kTvIsotropic, true> : &tv_items<Isa, scalar_t, kTvIsotropic, false>;
  }
}

template <typename scalar_t>
ItemsFn pick_items_for_cpu(int64_t kind, bool need_grad) {
#ifdef PK_X86
  switch (cpu_isa()) {
    case 2: return pick_items<IsaAvx512, scalar_t>(kind, need_grad);
    case 1: return pick_items<IsaAvx2, scalar_t>(kind, need_grad);
    default: break;
  }
#endif
  return pick_items<IsaGeneric, scalar_t>(kind, need_grad);
}

}  // namespace

namespace {

// One pass over x: (per-sample TV (B,) acc, coef_b * dTV_b/dx if coef, a (B,) double array, is given).
std::tuple<Tensor, Tensor> tv_pass(const char* op, const Tensor& x, int64_t kind, double eps, const double* coef) {
  const bool need_grad = coef != nullptr;
  check_x(x, op);
  const auto dtype = x.scalar_type();
  TORCH_CHECK(kind == kTvSquared || kind == kTvL1 || kind == kTvIsotropic, op,
              ": kind must be 0 (squared), 1 (l1) or 2 (isotropic), got ", kind);

  // Dense NCHW and NHWC are read in place; any other layout (slices, other permutations) is copied once to the
  // memory format empty_like(x) would give it.
  Tensor xd = x;
  if (!x.is_contiguous() && !x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    xd = x.contiguous(x.suggest_memory_format());
  }
  const bool nhwc = !xd.is_contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const auto acc = acc_dtype(dtype);
  Tensor grad = need_grad ? at::empty_like(xd) : Tensor();
  if (xd.numel() == 0) return {at::zeros({B}, x.options().dtype(acc)), grad};

  TvJob job{};
  job.x = xd.data_ptr();
  job.grad = need_grad ? grad.data_ptr() : nullptr;
  job.H = H;
  job.L = nhwc ? W * C : W;
  job.S = nhwc ? C : 1;
  job.rows_per_item = std::clamp<int64_t>(kItemElems / job.L, 1, H);
  job.items_per_plane = (H + job.rows_per_item - 1) / job.rows_per_item;
  // Items start at row starts, so one pattern of row flags serves every item.
  std::vector<uint8_t> flags(job.rows_per_item * job.L);
  for (int64_t j = 0; j < static_cast<int64_t>(flags.size()); ++j) {
    const int64_t col = j % job.L;
    flags[j] = (col >= job.S ? kHasLeft : 0) | (col < job.L - job.S ? kHasRight : 0);
  }
  job.flags = flags.data();
  job.eps = eps;
  job.coef = coef;
  const int64_t items_per_sample = (nhwc ? 1 : C) * job.items_per_plane;
  job.items_per_sample = items_per_sample;
  const int64_t n_items = B * items_per_sample;
  const int64_t grain = std::max<int64_t>(1, kTaskElems / (job.rows_per_item * job.L));

  ItemsFn items = nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "tv",
                                  [&] { items = pick_items_for_cpu<scalar_t>(kind, need_grad); });
  std::vector<double> partial(n_items);
  at::parallel_for(0, n_items, grain, [&](int64_t begin, int64_t end) { items(job, begin, end, partial.data()); });

  // Per-sample sums of the item partials, in item order.
  Tensor per_sample = at::empty({B}, x.options().dtype(acc));
  for (int64_t s = 0; s < B; ++s) {
    double total = 0;
    for (int64_t i = s * items_per_sample; i < (s + 1) * items_per_sample; ++i) total += partial[i];
    if (acc == at::kDouble)
      per_sample.data_ptr<double>()[s] = total;
    else
      per_sample.data_ptr<float>()[s] = static_cast<float>(total);
  }
  return {per_sample, grad};
}

}  // namespace

Tensor tv_forward(const Tensor& x, int64_t kind, double eps) {
  return std::get<0>(tv_pass("tv_forward", x, kind, eps, nullptr));
}

Tensor tv_backward(const Tensor& x, int64_t kind, double eps, const Tensor& coef) {
  TORCH_CHECK(x.dim() == 4 && coef.dim() == 1 && coef.size(0) == x.size(0) && coef.device().is_cpu(),
              "tv_backward: coef must be a (B,) CPU tensor for x of shape ", x.sizes(), ", got shape ", coef.sizes(),
              " on ", coef.device());
  const Tensor c = coef.to(at::kDouble).contiguous();
  return std::get<1>(tv_pass("tv_backward", x, kind, eps, c.const_data_ptr<double>()));
}

}  // namespace perceptual_kernels::cpu

TORCH_LIBRARY_IMPL(pk_native, CPU, m) {
  m.impl("tv_forward", &perceptual_kernels::cpu::tv_forward);
  m.impl("tv_backward", &perceptual_kernels::cpu::tv_backward);
}
