// Fused (conditional) instance norm with optional ReLU, CPU kernels.
//
// For every plane (b, c) of x (B, C, H, W), M = H * W:
//   mean = sum x / M,   var = sum (x - mean)^2 / M (biased),   rstd = 1 / sqrt(var + eps)
//   y    = (x - mean) * (gamma_b[c] * rstd) + beta_b[c]          then ReLU (y < 0 -> 0, NaN stays NaN)
// Backward, xhat = (x - mean) * rstd, g = grad_y, under ReLU zeroed where y <= 0 (y recomputed in acc exactly as
// the forward computes it; a NaN y lets the gradient through, as torch.relu's backward does):
//   dbeta_b = sum g,   dgamma_b = sum g xhat,   dx = gamma_b rstd (g - dbeta_b / M - xhat dgamma_b / M)
//
// Layouts, read in place:
// * planar (each plane contiguous: NCHW, channel-sliced NCHW): one task per plane. Statistics per chunk of
//   kChunk values (shifted sum, then the centred sum of squares while the chunk is in L1), merged with Chan's
//   formula; the plane (fits in L2 for the usual sizes) is read once more to write y.
// * pixel-major (channels contiguous, pixels at one stride: channels_last) with C >= one vector: tasks of
//   pixel chunks of one sample, vector lanes over channels; per-chunk partials merged in chunk order.
// Any other strides (and channels_last with fewer channels than a vector) go through one contiguous copy.
// Chunking depends on the shape only, and every plane is merged by one thread in a fixed order: deterministic.
//
// Vectors are GCC vector extensions of 64 bytes (16 floats / 8 doubles; fp16 / bf16 are converted in
// registers, accumulation in float). The tasks are compiled twice: for AVX-512 (chosen at run time) and for
// the baseline ISA of the build.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "../ops.h"
#include "common.h"
#include "isa.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // 64-byte vectors never cross a non-inlined call

namespace perceptual_kernels::cpu {
namespace {

typedef float vf32 __attribute__((vector_size(64)));
typedef double vf64 __attribute__((vector_size(64)));
typedef int32_t vi32 __attribute__((vector_size(64)));
typedef int64_t vi64 __attribute__((vector_size(64)));
typedef uint32_t vu32 __attribute__((vector_size(64)));
typedef uint16_t vu16 __attribute__((vector_size(32)));

template <class A>
using vec_t = std::conditional_t<std::is_same_v<A, double>, vf64, vf32>;
template <class A>
using lane_t = std::conditional_t<std::is_same_v<A, double>, vi64, vi32>;  // comparison masks
template <class A>
using lane_int = std::conditional_t<std::is_same_v<A, double>, int64_t, int32_t>;
template <class A>
constexpr int64_t kLanes = 64 / sizeof(A);

constexpr int64_t kChunk = 4096;   // values per statistics chunk / pixel-major task (16 KB of fp32)
constexpr int64_t kGrain = 32768;  // values per parallel_for grain

// ---- loads and stores of one vector (kLanes values), converted to / from the accumulation type ----

PK_INLINE vf32 load(const float* p) {
  vf32 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
PK_INLINE vf64 load(const double* p) {
  vf64 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
PK_INLINE vf32 load(const c10::BFloat16* p) {
  vu16 h;
  std::memcpy(&h, p, sizeof h);
  return (vf32)(__builtin_convertvector(h, vu32) << 16);
}
PK_INLINE vf32 load(const c10::Half* p) {  // IEEE half -> float, branch-free (as c10's fp16_ieee_to_fp32_value)
  vu16 h;
  std::memcpy(&h, p, sizeof h);
  const vu32 w = __builtin_convertvector(h, vu32) << 16;
  const vu32 two_w = w + w;
  const vf32 normal = (vf32)((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const vf32 subnormal = (vf32)((two_w >> 17) | (126u << 23)) - 0.5f;
  return (vf32)((w & 0x80000000u) | (two_w < (1u << 27) ? (vu32)subnormal : (vu32)normal));
}

PK_INLINE void store(float* p, vf32 v) { std::memcpy(p, &v, sizeof v); }
PK_INLINE void store(double* p, vf64 v) { std::memcpy(p, &v, sizeof v); }
PK_INLINE void store(c10::BFloat16* p, vf32 f) {  // round to nearest even, NaN -> 0x7FC0 (as c10::BFloat16)
  const vu32 u = (vu32)f;
  const vu32 r = f != f ? vu32{} + 0x7FC0u : (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const vu16 h = __builtin_convertvector(r, vu16);
  std::memcpy(p, &h, sizeof h);
}
PK_INLINE void store(c10::Half* p, vf32 f) {  // float -> IEEE half, round to nearest even (fp16_ieee_from_fp32_value)
  const vu32 w = (vu32)f;
  const vu32 shl1_w = w + w;
  const vu32 bias0 = shl1_w & 0xFF000000u;
  const vu32 bias = bias0 < 0x71000000u ? vu32{} + 0x71000000u : bias0;
  const vf32 scaled = ((vf32)(w & 0x7FFFFFFFu) * 0x1.0p+112f) * 0x1.0p-110f;
  const vu32 bits = (vu32)((vf32)((bias >> 1) + 0x07800000u) + scaled);
  const vu32 nonsign = ((bits >> 13) & 0x7C00u) + (bits & 0x0FFFu);
  const vu32 r = ((w & 0x80000000u) >> 16) | (shl1_w > 0xFF000000u ? vu32{} + 0x7E00u : nonsign);
  const vu16 h = __builtin_convertvector(r, vu16);
  std::memcpy(p, &h, sizeof h);
}

// The first n (<= kLanes) values at p; missing lanes read as 0.
template <class T>
PK_INLINE vec_t<acc_t<T>> load_n(const T* p, int64_t n) {
  if (n == kLanes<acc_t<T>>) return load(p);
  T buf[kLanes<acc_t<T>>] = {};
  std::memcpy(buf, p, n * sizeof(T));
  return load(buf);
}

template <class T, class V>
PK_INLINE void store_n(T* p, V v, int64_t n) {
  if (n == kLanes<acc_t<T>>) return store(p, v);
  T buf[kLanes<acc_t<T>>];
  store(buf, v);
  std::memcpy(p, buf, n * sizeof(T));
}

// v with the lanes >= n set to 0.
template <class A>
PK_INLINE vec_t<A> first_lanes(vec_t<A> v, int64_t n) {
  if (n == kLanes<A>) return v;
  lane_t<A> idx;
  for (int64_t l = 0; l < kLanes<A>; ++l) idx[l] = l;
  return idx < static_cast<lane_int<A>>(n) ? v : vec_t<A>{};
}

template <class A>
PK_INLINE A hsum(vec_t<A> v) {  // fixed lane order
  A s = v[0];
  for (int64_t l = 1; l < kLanes<A>; ++l) s += v[l];
  return s;
}

template <class V>
PK_INLINE V relu_keep_nan(V y) {
  return y < V{} ? V{} : y;
}

// Calls f(i, n) on [i, i + n) for consecutive groups of [0, len): n = kLanes except for a shorter last group.
template <class A, class F>
PK_INLINE void for_groups(int64_t len, F&& f) {
  int64_t i = 0;
  for (; i + kLanes<A> <= len; i += kLanes<A>) f(i, kLanes<A>);
  if (i < len) f(i, len - i);
}

// Calls f(j, u) for j in [0, n) with u = j % 2 (a constant after inlining): reductions keep two accumulators,
// which halves their chains of dependent adds.
template <class F>
PK_INLINE void two_way(int64_t n, F&& f) {
  int64_t j = 0;
  for (; j + 2 <= n; j += 2) f(j, 0), f(j + 1, 1);
  if (j < n) f(j, 0);
}

// for_groups for reductions: f(i, n, u) with u as in two_way.
template <class A, class F>
PK_INLINE void reduce_groups(int64_t len, F&& f) {
  const int64_t full = len / kLanes<A>;
  two_way(full, [&](int64_t q, int u) __attribute__((always_inline)) { f(q * kLanes<A>, kLanes<A>, u); });
  if (full * kLanes<A> < len) f(full * kLanes<A>, len - full * kLanes<A>, 1);
}

// Chan's merge of (n, mean, m2) with the statistics (nb, mean_b, m2_b) of more values.
template <class A>
PK_INLINE void merge_stats(A& n, A& mean, A& m2, A nb, A mean_b, A m2_b) {
  if (n == 0) {
    n = nb, mean = mean_b, m2 = m2_b;
    return;
  }
  const A total = n + nb, delta = mean_b - mean;
  mean += delta * (nb / total);
  m2 += m2_b + delta * delta * (n * nb / total);
  n = total;
}

// ---- geometry ----

// Strides of one tensor in the layout of the op: planar x[b, c, p] at b * sb + c * sc + p, pixel-major at
// b * sb + p * sp + c.
struct Strides {
  int64_t sb, sc, sp;
};

enum class Layout { kPlanar, kPixelMajor, kOther };

// The stride of the flattened (h, w) pixel index, or -1 when the strides do not allow flattening.
int64_t pixel_stride(const Tensor& t) {
  const int64_t H = t.size(2), W = t.size(3);
  if (W == 1) return H == 1 ? 1 : t.stride(2);
  if (H == 1 || t.stride(2) == W * t.stride(3)) return t.stride(3);
  return -1;
}

Layout layout_of(const Tensor& t, int64_t lanes) {
  const int64_t sp = pixel_stride(t);
  if (sp == 1) return Layout::kPlanar;
  if (sp >= 0 && t.stride(1) == 1 && t.size(1) >= lanes) return Layout::kPixelMajor;
  return Layout::kOther;
}

Strides strides_of(const Tensor& t) { return {t.stride(0), t.stride(1), pixel_stride(t)}; }

// An uninitialised tensor shaped like x in the given kernel layout.
Tensor empty_in(const Tensor& x, Layout layout) {
  return at::empty(x.sizes(), x.options().memory_format(layout == Layout::kPixelMajor ? at::MemoryFormat::ChannelsLast
                                                                                      : at::MemoryFormat::Contiguous));
}

// ---- ISA dispatch: each task's operator() (always inlined) is compiled into both run_* wrappers ----

#ifdef PK_X86
template <class Task>
PK_TARGET_AVX512 void run_avx512(const Task& t, int64_t begin, int64_t end) {
  t(begin, end);
}
#endif

template <class Task>
void run_baseline(const Task& t, int64_t begin, int64_t end) {
  t(begin, end);
}

// Note: ATen's OpenMP backend of at::parallel_for is inline; without -fopenmp in this file's build it runs serially.
template <class Task>
void parallel_run(int64_t n, int64_t grain, const Task& task) {
  at::parallel_for(0, n, std::max<int64_t>(grain, 1), [&](int64_t begin, int64_t end) {
#ifdef PK_X86
    if (cpu_isa() == 2) return run_avx512(task, begin, end);
#endif
    run_baseline(task, begin, end);
  });
}

// ---- forward ----

template <class T>
struct Forward {
  using A = acc_t<T>;
  using V = vec_t<A>;
  const T* x;
  T* y;
  Strides xs, ys;
  int64_t C, M;
  const A* gamma;  // (B, C) rows or nullptr
  const A* beta;
  A eps;
  bool relu;
  A* mean;  // (B, C) outputs
  A* rstd;

  PK_INLINE A scale_of(int64_t i, A r) const { return gamma ? gamma[i] * r : r; }
  PK_INLINE A shift_of(int64_t i) const { return beta ? beta[i] : A(0); }
  PK_INLINE V affine(V xv, V m, V s, V t) const {
    const V v = (xv - m) * s + t;
    return relu ? relu_keep_nan(v) : v;
  }
};

// Planar: tasks are planes i = b * C + c.
template <class T>
struct ForwardPlanar : Forward<T> {
  using typename Forward<T>::A;
  using typename Forward<T>::V;
  PK_INLINE void operator()(int64_t begin, int64_t end) const {
    const auto& f = *this;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / f.C, c = i % f.C;
      const T* xp = f.x + b * f.xs.sb + c * f.xs.sc;
      T* yp = f.y + b * f.ys.sb + c * f.ys.sc;
      A n = 0, mean = 0, m2 = 0;
      for (int64_t s = 0; s < f.M; s += kChunk) {
        const T* p = xp + s;
        const int64_t len = std::min(kChunk, f.M - s);
        const A x0 = static_cast<A>(p[0]);  // shifted sum: exact mean for a constant chunk
        V sum[2] = {}, sq[2] = {};
        reduce_groups<A>(len, [&](int64_t j, int64_t k, int u) __attribute__((always_inline)) {
          sum[u] += first_lanes<A>(load_n(p + j, k) - x0, k);
        });
        const A cmean = x0 + hsum<A>(sum[0] + sum[1]) / A(len);
        reduce_groups<A>(len, [&](int64_t j, int64_t k, int u) __attribute__((always_inline)) {
          const V d = first_lanes<A>(load_n(p + j, k) - cmean, k);
          sq[u] += d * d;
        });
        merge_stats<A>(n, mean, m2, A(len), cmean, hsum<A>(sq[0] + sq[1]));
      }
      const A r = A(1) / std::sqrt(m2 / A(f.M) + f.eps);
      f.mean[i] = mean;
      f.rstd[i] = r;
      const V vm = V{} + mean, vs = V{} + f.scale_of(i, r), vt = V{} + f.shift_of(i);
      for_groups<A>(f.M, [&](int64_t j, int64_t k) __attribute__((always_inline)) {
        store_n(yp + j, f.affine(load_n(xp + j, k), vm, vs, vt), k);
      });
    }
  }
};

// Pixel-major: tasks are (b, pixel chunk) pairs, t = b * n_chunks + k. Channel group g covers channels
// [start(g), start(g) + L) with start(g) = min(g L, C - L): the last group may overlap the previous one, its
// repeated lanes see the same values and produce the same results.
template <class T>
struct PixelMajor {
  int64_t C, M, chunk, n_chunks, n_groups;
  explicit PixelMajor(int64_t C_, int64_t M_) : C(C_), M(M_) {
    chunk = std::max<int64_t>(64, kChunk / C);  // >= 64 pixels: the partials stay small next to x
    n_chunks = (M + chunk - 1) / chunk;
    n_groups = (C + kLanes<acc_t<T>> - 1) / kLanes<acc_t<T>>;
  }
  PK_INLINE int64_t start(int64_t g) const { return std::min(g * kLanes<acc_t<T>>, C - kLanes<acc_t<T>>); }
  PK_INLINE int64_t first_pixel(int64_t t) const { return (t % n_chunks) * chunk; }
  PK_INLINE int64_t pixels(int64_t t) const { return std::min(chunk, M - first_pixel(t)); }
};

// Pass 1: per-chunk mean and centred sum of squares of every channel -> part_mean / part_m2 (B, n_chunks, C).
// Loops run group by group over the chunk's pixels (the chunk stays in L1), accumulators in registers.
template <class T>
struct ForwardPixelStats : Forward<T> {
  using typename Forward<T>::A;
  using typename Forward<T>::V;
  PixelMajor<T> pm;
  A* part_mean;
  A* part_m2;
  PK_INLINE void operator()(int64_t begin, int64_t end) const {
    const auto& f = *this;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / pm.n_chunks, n = pm.pixels(t), sp = f.xs.sp;
      for (int64_t g = 0; g < pm.n_groups; ++g) {
        const T* xp = f.x + b * f.xs.sb + pm.first_pixel(t) * sp + pm.start(g);
        const V x0 = load(xp);  // shifted sum: exact mean for constant channels
        V sum[2] = {}, sq[2] = {};
        two_way(n, [&](int64_t p, int u) __attribute__((always_inline)) { sum[u] += load(xp + p * sp) - x0; });
        const V mean = x0 + (sum[0] + sum[1]) / A(n);
        two_way(n, [&](int64_t p, int u) __attribute__((always_inline)) {
          const V d = load(xp + p * sp) - mean;
          sq[u] += d * d;
        });
        store(part_mean + t * f.C + pm.start(g), mean);
        store(part_m2 + t * f.C + pm.start(g), sq[0] + sq[1]);
      }
    }
  }
};

// Pass 3: y from the per-(b, c) mean, scale = gamma rstd and shift = beta.
template <class T>
struct ForwardPixelWrite : Forward<T> {
  using typename Forward<T>::A;
  using typename Forward<T>::V;
  PixelMajor<T> pm;
  const A* scale;  // (B, C)
  const A* shift;
  PK_INLINE void operator()(int64_t begin, int64_t end) const {
    const auto& f = *this;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / pm.n_chunks, n = pm.pixels(t), p0 = pm.first_pixel(t);
      for (int64_t g = 0; g < pm.n_groups; ++g) {
        const int64_t i = b * f.C + pm.start(g);
        const V vm = load(f.mean + i), vs = load(scale + i), vt = load(shift + i);
        const T* xp = f.x + b * f.xs.sb + p0 * f.xs.sp + pm.start(g);
        T* yp = f.y + b * f.ys.sb + p0 * f.ys.sp + pm.start(g);
        for (int64_t p = 0; p < n; ++p) store(yp + p * f.ys.sp, f.affine(load(xp + p * f.xs.sp), vm, vs, vt));
      }
    }
  }
};

template <class T>
void forward_pixel_major(const Forward<T>& f, int64_t B) {
  using A = acc_t<T>;
  const PixelMajor<T> pm(f.C, f.M);
  const int64_t n_tasks = B * pm.n_chunks, grain = kGrain / (pm.chunk * f.C);
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<A>::value);
  Tensor part = at::empty({2, n_tasks, f.C}, opts), affine = at::empty({2, B, f.C}, opts);
  A* part_mean = part.data_ptr<A>();
  A* part_m2 = part_mean + n_tasks * f.C;
  A* scale = affine.data_ptr<A>();
  A* shift = scale + B * f.C;

  parallel_run(n_tasks, grain, ForwardPixelStats<T>{f, pm, part_mean, part_m2});
  // Pass 2: merge the chunks of each (b, c) in chunk order.
  at::parallel_for(0, B * f.C, kGrain / pm.n_chunks + 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / f.C, c = i % f.C;
      A n = 0, mean = 0, m2 = 0;
      for (int64_t k = 0; k < pm.n_chunks; ++k) {
        const int64_t j = (b * pm.n_chunks + k) * f.C + c;
        merge_stats<A>(n, mean, m2, A(pm.pixels(b * pm.n_chunks + k)), part_mean[j], part_m2[j]);
      }
      const A r = A(1) / std::sqrt(m2 / A(f.M) + f.eps);
      f.mean[i] = mean, f.rstd[i] = r;
      scale[i] = f.scale_of(i, r), shift[i] = f.shift_of(i);
    }
  });
  parallel_run(n_tasks, grain, ForwardPixelWrite<T>{f, pm, scale, shift});
}

// ---- backward ----

template <class T>
struct Backward {
  using A = acc_t<T>;
  using V = vec_t<A>;
  const T* gy;
  const T* x;
  T* dx;
  Strides gs, xs, ds;
  int64_t C, M;
  const A* mean;  // (B, C)
  const A* rstd;
  const A* gamma;  // (B, C) rows or nullptr
  const A* beta;
  bool relu;
  A* dgamma;  // (B, C) or nullptr
  A* dbeta;

  PK_INLINE A scale_of(int64_t i) const { return gamma ? gamma[i] * rstd[i] : rstd[i]; }
  PK_INLINE A shift_of(int64_t i) const { return beta ? beta[i] : A(0); }
  // grad_y masked by the ReLU: y = xc * scale + shift recomputed as the forward computes it.
  PK_INLINE V masked(V g, V xc, V s, V t) const { return relu ? (xc * s + t <= V{} ? V{} : g) : g; }
  // dx = (g - mg - xc k) a from the plane sums: a = gamma rstd, mg = sum_g / M, k = rstd^2 sum_g_xc / M.
  PK_INLINE void finish(int64_t i, A sum_g, A sum_gxc, A& mg, A& k) const {
    const A r = rstd[i];
    mg = sum_g / A(M);
    k = r * (sum_gxc * r) / A(M);
    if (dgamma) dgamma[i] = sum_gxc * r, dbeta[i] = sum_g;
  }
  PK_INLINE V dx_of(V g, V xc, V a, V mg, V k) const { return (g - mg - xc * k) * a; }
};

template <class T>
struct BackwardPlanar : Backward<T> {
  using typename Backward<T>::A;
  using typename Backward<T>::V;
  PK_INLINE void operator()(int64_t begin, int64_t end) const {
    const auto& f = *this;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / f.C, c = i % f.C;
      const T* xp = f.x + b * f.xs.sb + c * f.xs.sc;
      const T* gp = f.gy + b * f.gs.sb + c * f.gs.sc;
      T* dp = f.dx + b * f.ds.sb + c * f.ds.sc;
      const V vm = V{} + f.mean[i], vs = V{} + f.scale_of(i), vt = V{} + f.shift_of(i);
      A sum_g = 0, sum_gxc = 0;
      for (int64_t s = 0; s < f.M; s += kChunk) {  // chunk sums added in order (accuracy)
        V sg[2] = {}, sgx[2] = {};
        reduce_groups<A>(std::min(kChunk, f.M - s), [&](int64_t j, int64_t k, int u) __attribute__((always_inline)) {
          const V xc = load_n(xp + s + j, k) - vm;
          const V g = first_lanes<A>(f.masked(load_n(gp + s + j, k), xc, vs, vt), k);
          sg[u] += g;
          sgx[u] += g * xc;
        });
        sum_g += hsum<A>(sg[0] + sg[1]);
        sum_gxc += hsum<A>(sgx[0] + sgx[1]);
      }
      A mg, kc;
      f.finish(i, sum_g, sum_gxc, mg, kc);
      const V vmg = V{} + mg, vk = V{} + kc;
      for_groups<A>(f.M, [&](int64_t j, int64_t k) __attribute__((always_inline)) {
        const V xc = load_n(xp + j, k) - vm;
        const V g = f.masked(load_n(gp + j, k), xc, vs, vt);
        store_n(dp + j, f.dx_of(g, xc, vs, vmg, vk), k);
      });
    }
  }
};

// The pixel-major passes: per-(b, c) coefficients coef (4, B, C) = scale, shift, mg, k.
template <class T>
struct BackwardPixel : Backward<T> {
  using typename Backward<T>::A;
  PixelMajor<T> pm;
  const A* coef;
  int64_t BC;
};

// Pass 1: per-chunk sums of g and g (x - mean) of every channel -> part_g / part_gx (B, n_chunks, C).
template <class T>
struct BackwardPixelSums : BackwardPixel<T> {
  using typename Backward<T>::A;
  using typename Backward<T>::V;
  A* part_g;
  A* part_gx;
  PK_INLINE void operator()(int64_t begin, int64_t end) const {
    const auto& f = *this;
    const auto& pm = f.pm;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / pm.n_chunks, n = pm.pixels(t), p0 = pm.first_pixel(t);
      for (int64_t g = 0; g < pm.n_groups; ++g) {
        const int64_t i = b * f.C + pm.start(g);
        const V vm = load(f.mean + i), vs = load(f.coef + i), vt = load(f.coef + f.BC + i);
        const T* xp = f.x + b * f.xs.sb + p0 * f.xs.sp + pm.start(g);
        const T* gp = f.gy + b * f.gs.sb + p0 * f.gs.sp + pm.start(g);
        V sg[2] = {}, sgx[2] = {};
        two_way(n, [&](int64_t p, int u) __attribute__((always_inline)) {
          const V xc = load(xp + p * f.xs.sp) - vm;
          const V gv = f.masked(load(gp + p * f.gs.sp), xc, vs, vt);
          sg[u] += gv;
          sgx[u] += gv * xc;
        });
        store(part_g + t * f.C + pm.start(g), sg[0] + sg[1]);
        store(part_gx + t * f.C + pm.start(g), sgx[0] + sgx[1]);
      }
    }
  }
};

// Pass 3: dx = (g - mg - xc k) a.
template <class T>
struct BackwardPixelWrite : BackwardPixel<T> {
  using typename Backward<T>::V;
  PK_INLINE void operator()(int64_t begin, int64_t end) const {
    const auto& f = *this;
    const auto& pm = f.pm;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / pm.n_chunks, n = pm.pixels(t), p0 = pm.first_pixel(t);
      for (int64_t g = 0; g < pm.n_groups; ++g) {
        const int64_t i = b * f.C + pm.start(g);
        const V vm = load(f.mean + i), vs = load(f.coef + i), vt = load(f.coef + f.BC + i),
                vmg = load(f.coef + 2 * f.BC + i), vk = load(f.coef + 3 * f.BC + i);
        const T* xp = f.x + b * f.xs.sb + p0 * f.xs.sp + pm.start(g);
        const T* gp = f.gy + b * f.gs.sb + p0 * f.gs.sp + pm.start(g);
        T* dp = f.dx + b * f.ds.sb + p0 * f.ds.sp + pm.start(g);
        for (int64_t p = 0; p < n; ++p) {
          const V xc = load(xp + p * f.xs.sp) - vm;
          const V gv = f.masked(load(gp + p * f.gs.sp), xc, vs, vt);
          store(dp + p * f.ds.sp, f.dx_of(gv, xc, vs, vmg, vk));
        }
      }
    }
  }
};

template <class T>
void backward_pixel_major(const Backward<T>& f, int64_t B) {
  using A = acc_t<T>;
  const PixelMajor<T> pm(f.C, f.M);
  const int64_t n_tasks = B * pm.n_chunks, grain = kGrain / (pm.chunk * f.C), BC = B * f.C;
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<A>::value);
  Tensor part = at::empty({2, n_tasks, f.C}, opts), coef_t = at::empty({4, B, f.C}, opts);
  A* part_g = part.data_ptr<A>();
  A* part_gx = part_g + n_tasks * f.C;
  A* coef = coef_t.data_ptr<A>();
  for (int64_t i = 0; i < BC; ++i) coef[i] = f.scale_of(i), coef[BC + i] = f.shift_of(i);

  parallel_run(n_tasks, grain, BackwardPixelSums<T>{{f, pm, coef, BC}, part_g, part_gx});
  // Pass 2: chunk sums of each (b, c) added in chunk order -> mg, k (and dgamma, dbeta).
  at::parallel_for(0, BC, kGrain / pm.n_chunks + 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / f.C, c = i % f.C;
      A sum_g = 0, sum_gxc = 0;
      for (int64_t k = 0; k < pm.n_chunks; ++k) {
        const int64_t j = (b * pm.n_chunks + k) * f.C + c;
        sum_g += part_g[j], sum_gxc += part_gx[j];
      }
      f.finish(i, sum_g, sum_gxc, coef[2 * BC + i], coef[3 * BC + i]);
    }
  });
  parallel_run(n_tasks, grain, BackwardPixelWrite<T>{{f, pm, coef, BC}});
}

// ---- host side ----

void check_tables(const OptionalTensor& gamma, const OptionalTensor& beta, const OptionalTensor& style_index, int64_t B,
                  int64_t C, const char* op) {
  check_index(style_index, B, op);
  for (const auto& [name, table] : {std::pair<const char*, const OptionalTensor&>{"gamma", gamma}, {"beta", beta}}) {
    if (!table) continue;
    const Tensor& t = *table;
    TORCH_CHECK(t.device().is_cpu() && at::isFloatingType(t.scalar_type()), op, ": ", name,
                " must be a floating-point CPU tensor, got ", t.scalar_type(), " on ", t.device());
    TORCH_CHECK((t.dim() == 1 || t.dim() == 2) && t.size(-1) == C, op, ": ", name,
                " must be (C,) or (R, C) with C = ", C, ", got shape ", t.sizes());
    check_table_rows(style_index, t.dim() == 2 ? t.size(0) : 1, B, op, name);
  }
}

// Row b of a table as a (B, C) acc-dtype contiguous tensor (undefined for None).
Tensor gather_rows(const OptionalTensor& table, const OptionalTensor& style_index, int64_t B, int64_t C,
                   at::ScalarType acc) {
  if (!table) return Tensor();
  Tensor t = table->to(acc).reshape({-1, C});
  if (style_index) return t.index_select(0, *style_index).contiguous();
  return t.expand({B, C}).contiguous();
}

template <class T>
const acc_t<T>* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<acc_t<T>>() : nullptr;
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> instance_norm_forward(const Tensor& x, const OptionalTensor& gamma,
                                                         const OptionalTensor& beta, const OptionalTensor& style_index,
                                                         double eps, bool relu) {
  const char* op = "instance_norm_forward";
  check_x(x, op);
  const int64_t B = x.size(0), C = x.size(1), M = x.size(2) * x.size(3);
  check_tables(gamma, beta, style_index, B, C, op);
  const at::ScalarType acc = acc_dtype(x.scalar_type());
  const int64_t lanes = acc == at::kDouble ? kLanes<double> : kLanes<float>;
  Tensor y = at::empty_like(x);
  Tensor mean = at::empty({B, C}, x.options().dtype(acc)), rstd = at::empty({B, C}, x.options().dtype(acc));
  if (B * C == 0) return {y, mean, rstd};
  if (M == 0) {  // statistics of no values
    mean.fill_(NAN), rstd.fill_(NAN);
    return {y, mean, rstd};
  }
  // Strides the kernels cannot read in place (and channels_last with C < one vector): one contiguous copy.
  const Tensor xw = layout_of(x, lanes) == Layout::kOther ? x.contiguous() : x;
  const Layout layout = layout_of(xw, lanes);
  // y is written in xw's layout; when empty_like(x) has another one, through a temporary and one copy.
  const Tensor yw = layout_of(y, lanes) == layout ? y : empty_in(x, layout);
  const Tensor g = gather_rows(gamma, style_index, B, C, acc), bt = gather_rows(beta, style_index, B, C, acc);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "instance_norm_forward", [&] {
    using A = acc_t<scalar_t>;
    const Forward<scalar_t> f{xw.data_ptr<scalar_t>(),
                              yw.data_ptr<scalar_t>(),
                              strides_of(xw),
                              strides_of(yw),
                              C,
                              M,
                              ptr_or_null<scalar_t>(g),
                              ptr_or_null<scalar_t>(bt),
                              static_cast<A>(eps),
                              relu,
                              mean.data_ptr<A>(),
                              rstd.data_ptr<A>()};
    if (layout == Layout::kPlanar)
      parallel_run(B * C, kGrain / M, ForwardPlanar<scalar_t>{f});
    else
      forward_pixel_major(f, B);
  });
  if (!yw.is_same(y)) y.copy_(yw);
  return {y, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor> instance_norm_backward(const Tensor& grad_y, const Tensor& x, const Tensor& mean,
                                                          const Tensor& rstd, const OptionalTensor& gamma,
                                                          const OptionalTensor& beta, const OptionalTensor& style_index,
                                                          bool relu, bool need_affine_grad) {
  const char* op = "instance_norm_backward";
  check_x(x, op);
  const int64_t B = x.size(0), C = x.size(1), M = x.size(2) * x.size(3);
  TORCH_CHECK(grad_y.device().is_cpu() && grad_y.sizes() == x.sizes() && at::isFloatingType(grad_y.scalar_type()), op,
              ": grad_y must be a floating-point CPU tensor of x's shape ", x.sizes(), ", got ", grad_y.scalar_type(),
              " of shape ", grad_y.sizes(), " on ", grad_y.device());
  for (const auto& [name, t] : {std::pair<const char*, const Tensor&>{"mean", mean}, {"rstd", rstd}})
    TORCH_CHECK(
        t.device().is_cpu() && at::isFloatingType(t.scalar_type()) && t.dim() == 2 && t.size(0) == B && t.size(1) == C,
        op, ": ", name, " must be a floating-point CPU tensor of shape (B, C) = (", B, ", ", C, "), got ", t.sizes());
  check_tables(gamma, beta, style_index, B, C, op);
  const at::ScalarType acc = acc_dtype(x.scalar_type());
  const int64_t lanes = acc == at::kDouble ? kLanes<double> : kLanes<float>;
  Tensor dx = at::empty_like(x);
  Tensor dgamma = at::empty({0}, mean.options()), dbeta = at::empty({0}, mean.options());
  if (need_affine_grad) {
    dgamma = at::zeros({B, C}, x.options().dtype(acc));
    dbeta = at::zeros({B, C}, x.options().dtype(acc));
  }
  if (B * C == 0 || M == 0) return {dx, dgamma, dbeta};
  // As in the forward: x read in place or copied once; grad_y copied once into that layout (and x's dtype) when
  // its own strides are of another kind (e.g. a contiguous grad for a channels_last x); dx through a temporary
  // when empty_like(x) has another layout.
  const Tensor xw = layout_of(x, lanes) == Layout::kOther ? x.contiguous() : x;
  const Layout layout = layout_of(xw, lanes);
  const Tensor gw = layout_of(grad_y, lanes) == layout && grad_y.scalar_type() == x.scalar_type()
                        ? grad_y
                        : empty_in(x, layout).copy_(grad_y);
  const Tensor dxw = layout_of(dx, lanes) == layout ? dx : empty_in(x, layout);
  const Tensor m = mean.to(acc).contiguous(), r = rstd.to(acc).contiguous();
  const Tensor g = gather_rows(gamma, style_index, B, C, acc), bt = gather_rows(beta, style_index, B, C, acc);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "instance_norm_backward", [&] {
    using A = acc_t<scalar_t>;
    const Backward<scalar_t> f{gw.data_ptr<scalar_t>(),
                               xw.data_ptr<scalar_t>(),
                               dxw.data_ptr<scalar_t>(),
                               strides_of(gw),
                               strides_of(xw),
                               strides_of(dxw),
                               C,
                               M,
                               m.data_ptr<A>(),
                               r.data_ptr<A>(),
                               ptr_or_null<scalar_t>(g),
                               ptr_or_null<scalar_t>(bt),
                               relu,
                               need_affine_grad ? dgamma.data_ptr<A>() : nullptr,
                               need_affine_grad ? dbeta.data_ptr<A>() : nullptr};
    if (layout == Layout::kPlanar)
      parallel_run(B * C, kGrain / M, BackwardPlanar<scalar_t>{f});
    else
      backward_pixel_major(f, B);
  });
  if (!dxw.is_same(dx)) dx.copy_(dxw);
  return {dx, dgamma, dbeta};
}

}  // namespace perceptual_kernels::cpu

TORCH_LIBRARY_IMPL(pk_native, CPU, m) {
  m.impl("instance_norm_forward", &perceptual_kernels::cpu::instance_norm_forward);
  m.impl("instance_norm_backward", &perceptual_kernels::cpu::instance_norm_backward);
}
