// Content (feature) loss on CPU, criterion l2 or l1: d = x - target;
//   l2: loss = sum d^2,   grad = coef * d
//   l1: loss = sum |d|,   grad = coef * sign(d)   (sign(0) = 0, sign(NaN) = NaN)
// coef is the upstream gradient times the loss's scale, so fp16 / bf16 gradients are scaled in fp32 and cast once.
//
// x, target and grad are walked in place through their own strides (stride 0 included: a target or an x expanded
// over the batch is never copied). The walk follows the dense layout torch gives grad (at::empty_like(x)):
// dimensions ordered by that layout's strides, size-1 dimensions dropped and neighbours merged where all three
// tensors allow it. Contiguous or channels_last x and target of one layout thus become one dimension walked as a
// flat array, and a (1, C, H, W) target of a (B, C, H, W) batch a batch of unit-stride runs of C*H*W.
// The sum runs over fixed chunks of kChunk elements of the walk (acc_t lanes, flushed into one double partial per
// chunk) and the partials are added in chunk order: deterministic for any thread count.
// fp16 / bf16 are computed in float, float64 in double; target may have any float dtype.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/scalar_tensor.h>
#include <c10/core/MemoryFormat.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <vector>

#include "../ops.h"

#include "common.h"
#include "isa.h"

namespace perceptual_kernels::cpu {
namespace {

constexpr int kLanes = 64;          // independent partial sums: the loop vectorises across them
constexpr int64_t kChunk = 8192;    // elements per partial sum
constexpr int64_t kTaskChunks = 8;  // minimum chunks per parallel task
constexpr int kMaxDims = 8;

// The walk: dims outermost first, sizes and the strides of x, target and the gradient layout; the innermost
// dimension has gradient stride 1 (runs are written as unit-stride arrays).
struct Walk {
  int nd = 0;
  int64_t size[kMaxDims], sx[kMaxDims], st[kMaxDims], sg[kMaxDims];
};

// sign(d) with sign(0) = 0 (of d's sign) and sign(NaN) = NaN.
template <typename T>
PK_INLINE T sign_of(T d) {
  return d > T(0) ? T(1) : (d < T(0) ? T(-1) : d);
}

// Loss term of one element; with NeedGrad writes *g = gs * (d or sign(d)).
template <typename scalar_t, bool NeedGrad, bool L1, typename T>
PK_INLINE T content_elem(T xv, T tv, scalar_t* __restrict g, T gs) {
  const T d = xv - tv;
  if constexpr (NeedGrad) *g = static_cast<scalar_t>((L1 ? sign_of(d) : d) * gs);
  if constexpr (L1) {
    return std::abs(d);
  } else {
    return d * d;
  }
}

// n elements of one run (x stride sx, target stride st, grad stride 1) added into the lanes.
template <typename scalar_t, typename target_t, bool NeedGrad, bool L1, typename T>
PK_INLINE void content_run(const scalar_t* __restrict xp, int64_t sx, const target_t* __restrict tp, int64_t st,
                           scalar_t* __restrict gp, int64_t n, T gs, T* __restrict lane) {
  int64_t i = 0;
  if (sx == 1 && st == 1) {  // the flat case: contiguous / channels_last pairs, shared-target runs
    for (; i + kLanes <= n; i += kLanes) {
      for (int k = 0; k < kLanes; ++k) {
        lane[k] += content_elem<scalar_t, NeedGrad, L1>(static_cast<T>(xp[i + k]), static_cast<T>(tp[i + k]),
                                                        NeedGrad ? gp + i + k : nullptr, gs);
      }
    }
    for (; i < n; ++i) {
      lane[0] += content_elem<scalar_t, NeedGrad, L1>(static_cast<T>(xp[i]), static_cast<T>(tp[i]),
                                                      NeedGrad ? gp + i : nullptr, gs);
    }
    return;
  }
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      lane[k] += content_elem<scalar_t, NeedGrad, L1>(
          static_cast<T>(xp[(i + k) * sx]), static_cast<T>(tp[(i + k) * st]), NeedGrad ? gp + i + k : nullptr, gs);
    }
  }
  for (; i < n; ++i) {
    lane[0] += content_elem<scalar_t, NeedGrad, L1>(static_cast<T>(xp[i * sx]), static_cast<T>(tp[i * st]),
                                                    NeedGrad ? gp + i : nullptr, gs);
  }
}

// Loss of the walk's elements [i0, i0 + n) and, with NeedGrad, their gradient.
template <typename scalar_t, typename target_t, bool NeedGrad, bool L1>
PK_INLINE double content_chunk_impl(const Walk& w, const void* x, const void* target, void* grad, int64_t i0, int64_t n,
                                    double grad_scale) {
  using T = acc_t<scalar_t>;
  const T gs = static_cast<T>(grad_scale);
  const int in = w.nd - 1;
  int64_t idx[kMaxDims];
  int64_t rest = i0;
  for (int d = in; d >= 0; --d) {
    idx[d] = rest % w.size[d];
    rest /= w.size[d];
  }
  T lane[kLanes] = {};
  while (n > 0) {
    int64_t ox = 0, ot = 0, og = 0;
    for (int d = 0; d <= in; ++d) {
      ox += idx[d] * w.sx[d];
      ot += idx[d] * w.st[d];
      og += idx[d] * w.sg[d];
    }
    const int64_t run = std::min(n, w.size[in] - idx[in]);
    content_run<scalar_t, target_t, NeedGrad, L1>(
        static_cast<const scalar_t*>(x) + ox, w.sx[in], static_cast<const target_t*>(target) + ot, w.st[in],
        NeedGrad ? static_cast<scalar_t*>(grad) + og : nullptr, run, gs, lane);
    n -= run;
    idx[in] += run;
    for (int d = in; d > 0 && idx[d] == w.size[d]; --d) {  // carry
      idx[d] = 0;
      ++idx[d - 1];
    }
  }
  // Fixed-order tree: kLanes -> kLanes / 4 in acc_t, then halving in double.
  double wide[kLanes / 4];
  for (int k = 0; k < kLanes / 4; ++k) {
    wide[k] = static_cast<double>((lane[k] + lane[k + kLanes / 4]) + (lane[k + kLanes / 2] + lane[k + 3 * kLanes / 4]));
  }
  for (int v = kLanes / 8; v > 0; v /= 2) {
    for (int k = 0; k < v; ++k) wide[k] += wide[k + v];
  }
  return wide[0];
}

using ChunkFn = double (*)(const Walk&, const void*, const void*, void*, int64_t, int64_t, double);

// The chunk kernel of one instruction set: content_chunk_impl compiled with TARGET.
#define PK_CONTENT_ISA(NAME, TARGET)                                                                                \
  struct NAME {                                                                                                     \
    template <typename scalar_t, typename target_t, bool NeedGrad, bool L1>                                         \
    TARGET static double chunk(const Walk& w, const void* x, const void* target, void* grad, int64_t i0, int64_t n, \
                               double grad_scale) {                                                                 \
      return content_chunk_impl<scalar_t, target_t, NeedGrad, L1>(w, x, target, grad, i0, n, grad_scale);           \
    }                                                                                                               \
  };

PK_CONTENT_ISA(IsaGeneric, )
#ifdef PK_X86
PK_CONTENT_ISA(IsaAvx2, PK_TARGET_AVX2)
PK_CONTENT_ISA(IsaAvx512, PK_TARGET_AVX512)
#endif
#undef PK_CONTENT_ISA

template <typename scalar_t, typename target_t, bool NeedGrad, bool L1>
ChunkFn pick_chunk() {
#ifdef PK_X86
  switch (cpu_isa()) {
    case 2: return &IsaAvx512::chunk<scalar_t, target_t, NeedGrad, L1>;
    case 1: return &IsaAvx2::chunk<scalar_t, target_t, NeedGrad, L1>;
    default: break;
  }
#endif
  return &IsaGeneric::chunk<scalar_t, target_t, NeedGrad, L1>;
}

// The strides at::empty_like(x) gives: x's own when x is non-overlapping and dense, else the dense strides of
// x.suggest_memory_format() (channels_last or contiguous).
std::vector<int64_t> dense_layout(const Tensor& x) {
  if (x.is_non_overlapping_and_dense()) return x.strides().vec();
  if (x.dim() == 4 && x.suggest_memory_format() == at::MemoryFormat::ChannelsLast) {
    return c10::get_channels_last_strides_2d(x.sizes());
  }
  std::vector<int64_t> s(x.dim());
  int64_t step = 1;
  for (int64_t d = x.dim() - 1; d >= 0; --d) {
    s[d] = step;
    step *= std::max<int64_t>(x.size(d), 1);
  }
  return s;
}

// The walk over x, target and the gradient layout `layout` (strides sg, used for grad when it is written).
Walk make_walk(const Tensor& x, const Tensor& target, const std::vector<int64_t>& layout) {
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (x.size(d) != 1) dims.push_back(d);
  }
  std::stable_sort(dims.begin(), dims.end(), [&](int64_t a, int64_t b) { return layout[a] > layout[b]; });
  Walk w;
  for (const int64_t d : dims) {
    const int64_t n = x.size(d), sx = x.stride(d), st = target.stride(d), sg = layout[d];
    if (w.nd > 0) {
      const int o = w.nd - 1;  // merge into the outer neighbour when every stride allows it
      if (w.sx[o] == sx * n && w.st[o] == st * n && w.sg[o] == sg * n) {
        w.size[o] *= n;
        w.sx[o] = sx, w.st[o] = st, w.sg[o] = sg;
        continue;
      }
    }
    w.size[w.nd] = n, w.sx[w.nd] = sx, w.st[w.nd] = st, w.sg[w.nd] = sg;
    ++w.nd;
  }
  if (w.nd == 0) {  // a single element
    w.nd = 1;
    w.size[0] = 1, w.sx[0] = w.st[0] = w.sg[0] = 0;
  }
  return w;
}

// One pass over x and target: (the loss as a 0-d acc tensor, grad_scale * (d or sign(d)) if need_grad).
std::tuple<Tensor, Tensor> content_pass(const char* op, const Tensor& x, const Tensor& target, double grad_scale,
                                        bool need_grad, int64_t criterion) {
  TORCH_CHECK(x.device().is_cpu() && target.device().is_cpu(), op, ": x and target must be CPU tensors, got ",
              x.device(), " and ", target.device());
  TORCH_CHECK(x.sizes() == target.sizes(), op, ": target must have x's shape ", x.sizes(), ", got ", target.sizes());
  TORCH_CHECK(x.dim() <= kMaxDims, op, ": x must have at most ", kMaxDims, " dimensions, got ", x.dim());
  TORCH_CHECK(criterion == kCriterionL2 || criterion == kCriterionL1, op, ": criterion must be ", kCriterionL2,
              " (l2) or ", kCriterionL1, " (l1), got ", criterion);
  check_dtype(x.scalar_type(), op, "x");
  check_dtype(target.scalar_type(), op, "target");

  Tensor grad = need_grad ? at::empty_like(x) : Tensor();  // dense, also for a stride-0 x
  const Walk walk = make_walk(x, target, need_grad ? grad.strides().vec() : dense_layout(x));
  TORCH_INTERNAL_ASSERT(walk.sg[walk.nd - 1] == 1 || x.numel() <= 1, op, ": the gradient layout is not dense");
  const auto acc = acc_dtype(x.scalar_type());
  const bool l1 = criterion == kCriterionL1;

  ChunkFn chunk = nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "content_loss", [&] {
    using x_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, target.scalar_type(), "content_loss", [&] {
      if (need_grad) {
        chunk = l1 ? pick_chunk<x_t, scalar_t, true, true>() : pick_chunk<x_t, scalar_t, true, false>();
      } else {
        chunk = l1 ? pick_chunk<x_t, scalar_t, false, true>() : pick_chunk<x_t, scalar_t, false, false>();
      }
    });
  });

  const int64_t n = x.numel();
  const int64_t n_chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(n_chunks);
  const void* xp = x.const_data_ptr();
  const void* tp = target.const_data_ptr();
  void* gp = need_grad ? grad.data_ptr() : nullptr;
  at::parallel_for(0, n_chunks, kTaskChunks, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      partial[c] = chunk(walk, xp, tp, gp, c * kChunk, std::min(kChunk, n - c * kChunk), grad_scale);
    }
  });
  double total = 0;
  for (const double p : partial) total += p;  // chunk order
  return {at::scalar_tensor(total, x.options().dtype(acc)), grad};
}

}  // namespace

Tensor content_loss_forward(const Tensor& x, const Tensor& target, int64_t criterion) {
  return std::get<0>(content_pass("content_loss_forward", x, target, 0.0, false, criterion));
}

Tensor content_loss_backward(const Tensor& x, const Tensor& target, const Tensor& coef, int64_t criterion) {
  TORCH_CHECK(coef.numel() == 1 && coef.device().is_cpu(),
              "content_loss_backward: coef must be a one-element CPU tensor, got shape ", coef.sizes(), " on ",
              coef.device());
  // The coefficient is applied in acc_t to the fp32 difference (or its sign) and the product cast once.
  return std::get<1>(content_pass("content_loss_backward", x, target, coef.item<double>(), true, criterion));
}

}  // namespace perceptual_kernels::cpu

TORCH_LIBRARY_IMPL(pk_native, CPU, m) {
  m.impl("content_loss_forward", &perceptual_kernels::cpu::content_loss_forward);
  m.impl("content_loss_backward", &perceptual_kernels::cpu::content_loss_backward);
}
