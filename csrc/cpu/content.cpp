// Content (feature MSE) loss on CPU: d = x - target; forward loss = sum d^2, backward grad = coef * d (coef: the
// upstream gradient times the loss's scale, so fp16 / bf16 gradients are scaled in fp32 and cast once).
//
// x, target and grad are walked as flat arrays, which needs the same dense layout for all three (contiguous,
// channels_last, ...). The sum runs over fixed chunks of kChunk elements (acc_t lanes, flushed into one double
// partial per chunk) and the partials are added in chunk order: deterministic for any thread count.
// fp16 / bf16 are computed in float, float64 in double; target may have any float dtype.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../ops.h"

#include "common.h"
#include "isa.h"

namespace perceptual_kernels::cpu {
namespace {

constexpr int kLanes = 64;          // independent partial sums: the loop vectorises across them
constexpr int64_t kChunk = 8192;    // elements per partial sum
constexpr int64_t kTaskChunks = 8;  // minimum chunks per parallel task

// (x - t)^2 of element i; with NeedGrad writes g[i] = gs * (x - t).
template <typename scalar_t, typename target_t, bool NeedGrad, typename T>
PK_INLINE T content_elem(const scalar_t* __restrict xp, const target_t* __restrict tp, scalar_t* __restrict gp,
                         int64_t i, T gs) {
  const T d = static_cast<T>(xp[i]) - static_cast<T>(tp[i]);
  if constexpr (NeedGrad) gp[i] = static_cast<scalar_t>(d * gs);
  return d * d;
}

// Loss of elements [i0, i0 + n) and, with NeedGrad, their gradient.
template <typename scalar_t, typename target_t, bool NeedGrad>
PK_INLINE double content_chunk_impl(const void* x, const void* target, void* grad, int64_t i0, int64_t n,
                                    double grad_scale) {
  using T = acc_t<scalar_t>;
  const scalar_t* xp = static_cast<const scalar_t*>(x) + i0;
  const target_t* tp = static_cast<const target_t*>(target) + i0;
  scalar_t* gp = NeedGrad ? static_cast<scalar_t*>(grad) + i0 : nullptr;
  const T gs = static_cast<T>(grad_scale);
  T lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) lane[k] += content_elem<scalar_t, target_t, NeedGrad>(xp, tp, gp, i + k, gs);
  }
  for (; i < n; ++i) lane[0] += content_elem<scalar_t, target_t, NeedGrad>(xp, tp, gp, i, gs);
  // Fixed-order tree: kLanes -> kLanes / 4 in acc_t, then halving in double.
  double wide[kLanes / 4];
  for (int k = 0; k < kLanes / 4; ++k) {
    wide[k] = static_cast<double>((lane[k] + lane[k + kLanes / 4]) + (lane[k + kLanes / 2] + lane[k + 3 * kLanes / 4]));
  }
  for (int w = kLanes / 8; w > 0; w /= 2) {
    for (int k = 0; k < w; ++k) wide[k] += wide[k + w];
  }
  return wide[0];
}

using ChunkFn = double (*)(const void*, const void*, void*, int64_t, int64_t, double);

// The chunk kernel of one instruction set: content_chunk_impl compiled with TARGET.
#define PK_CONTENT_ISA(NAME, TARGET)                                                                 \
  struct NAME {                                                                                      \
    template <typename scalar_t, typename target_t, bool NeedGrad>                                   \
    TARGET static double chunk(const void* x, const void* target, void* grad, int64_t i0, int64_t n, \
                               double grad_scale) {                                                  \
      return content_chunk_impl<scalar_t, target_t, NeedGrad>(x, target, grad, i0, n, grad_scale);   \
    }                                                                                                \
  };

PK_CONTENT_ISA(IsaGeneric, )
#ifdef PK_X86
PK_CONTENT_ISA(IsaAvx2, PK_TARGET_AVX2)
PK_CONTENT_ISA(IsaAvx512, PK_TARGET_AVX512)
#endif
#undef PK_CONTENT_ISA

template <typename scalar_t, typename target_t, bool NeedGrad>
ChunkFn pick_chunk() {
#ifdef PK_X86
  switch (cpu_isa()) {
    case 2: return &IsaAvx512::chunk<scalar_t, target_t, NeedGrad>;
    case 1: return &IsaAvx2::chunk<scalar_t, target_t, NeedGrad>;
    default: break;
  }
#endif
  return &IsaGeneric::chunk<scalar_t, target_t, NeedGrad>;
}

// Equal strides on every dimension of size > 1 (the others never move a pointer).
bool same_strides(const Tensor& a, const Tensor& b) {
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

// One pass over x and target: (sum (x - t)^2 as a 0-d acc tensor, grad_scale * (x - t) if need_grad).
std::tuple<Tensor, Tensor> content_pass(const char* op, const Tensor& x, const Tensor& target, double grad_scale,
                                        bool need_grad) {
  TORCH_CHECK(x.device().is_cpu() && target.device().is_cpu(), op, ": x and target must be CPU tensors, got ",
              x.device(), " and ", target.device());
  TORCH_CHECK(x.sizes() == target.sizes(), op, ": target must have x's shape ", x.sizes(), ", got ", target.sizes());
  check_dtype(x.scalar_type(), op, "x");
  check_dtype(target.scalar_type(), op, "target");

  // Flat walk over one dense layout: a non-dense x is copied once to the memory format empty_like(x) gives it,
  // a target with other strides is copied once to x's strides (keeping its dtype).
  const Tensor xd = x.is_non_overlapping_and_dense() ? x : x.contiguous(x.suggest_memory_format());
  const Tensor td = same_strides(xd, target) ? target : at::empty_like(xd, target.options()).copy_(target);
  Tensor grad = need_grad ? at::empty_like(xd) : Tensor();
  const auto acc = acc_dtype(x.scalar_type());

  ChunkFn chunk = nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "content_loss", [&] {
    using x_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, td.scalar_type(), "content_loss", [&] {
      chunk = need_grad ? pick_chunk<x_t, scalar_t, true>() : pick_chunk<x_t, scalar_t, false>();
    });
  });

  const int64_t n = xd.numel();
  const int64_t n_chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(n_chunks);
  const void* xp = xd.data_ptr();
  const void* tp = td.data_ptr();
  void* gp = need_grad ? grad.data_ptr() : nullptr;
  at::parallel_for(0, n_chunks, kTaskChunks, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      partial[c] = chunk(xp, tp, gp, c * kChunk, std::min(kChunk, n - c * kChunk), grad_scale);
    }
  });
  double total = 0;
  for (const double p : partial) total += p;  // chunk order
  return {at::scalar_tensor(total, x.options().dtype(acc)), grad};
}

}  // namespace

Tensor content_loss_forward(const Tensor& x, const Tensor& target) {
  return std::get<0>(content_pass("content_loss_forward", x, target, 0.0, false));
}

Tensor content_loss_backward(const Tensor& x, const Tensor& target, const Tensor& coef) {
  TORCH_CHECK(coef.numel() == 1 && coef.device().is_cpu(),
              "content_loss_backward: coef must be a one-element CPU tensor, got shape ", coef.sizes(), " on ",
              coef.device());
  // The coefficient is applied in acc_t to the fp32 difference and the product cast once at the store.
  return std::get<1>(content_pass("content_loss_backward", x, target, coef.item<double>(), true));
}

}  // namespace perceptual_kernels::cpu

TORCH_LIBRARY_IMPL(pk_native, CPU, m) {
  m.impl("content_loss_forward", &perceptual_kernels::cpu::content_loss_forward);
  m.impl("content_loss_backward", &perceptual_kernels::cpu::content_loss_backward);
}
