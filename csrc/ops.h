// The kernel interface of the compiled backends: one declaration per op, implemented once per device
// (csrc/cpu/<op>.cpp, csrc/cuda/<op>.cu) and registered as torch.ops.pk_native.<op> (schemas in bindings.cpp).
//
// Shapes: x is (B, C, H, W) with any strides; F_b = x[b] viewed as a C x M matrix, M = H * W.
// "acc" is the accumulation dtype: float64 for float64 inputs, float32 for fp32 / fp16 / bf16.
// Gradients and y have x's dtype, shape and memory format (at::empty_like(x)). The Python layer has validated
// every argument already; the TORCH_CHECKs here only guard against misuse that would read out of bounds.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <tuple>

namespace perceptual_kernels {

using Tensor = at::Tensor;
using OptionalTensor = std::optional<at::Tensor>;

// Total-variation kinds (tv_forward's ``kind``): the positions of TV_KINDS in perceptual_kernels/backends/interface.py.
enum TvKind : int64_t { kTvSquared = 0, kTvL1 = 1, kTvIsotropic = 2 };

// Content / style loss criteria (``criterion``): the positions of CRITERIA in perceptual_kernels/backends/interface.py.
enum Criterion : int64_t { kCriterionL2 = 0, kCriterionL1 = 1 };

#define PK_DECLARE_KERNELS                                                                                            \
  /* G_b = F_b F_b^T * scale -> (B, C, C) of out_dtype, accumulated in acc, scaled before the cast. */                \
  Tensor gram_forward(const Tensor& x, double scale, at::ScalarType out_dtype);                                       \
  /* dF_b = (dG_b + dG_b^T) F_b * scale; grad (B, C, C) of any float dtype. */                                        \
  Tensor gram_backward(const Tensor& grad, const Tensor& x, double scale);                                            \
  /* D_b = F_b F_b^T * scale - A_b; l2: loss_b = sum_ij D_b[i,j]^2, l1: loss_b = sum_ij |D_b[i,j]| and sign(D)   \
     (sign(0) = 0, sign(NaN) = NaN) in place of D. target (R, C, C), any float dtype and strides;               \
     A_b = target[style_index[b]] (int64 (B,)) or, without an index, target[0] (R == 1) or target[b] (R == B).  \
     Returns (loss (B,) acc, D or sign(D) (B, C, C) acc contiguous). */    \
  std::tuple<Tensor, Tensor> style_loss_forward(const Tensor& x, const Tensor& target,                                \
                                                const OptionalTensor& style_index, double scale, int64_t criterion);  \
  /* dF_b = coef_b (D_b + D_b^T) F_b; coef (B,) acc, diff (B, C, C) acc. */                                           \
  Tensor style_loss_backward(const Tensor& coef, const Tensor& diff, const Tensor& x);                                \
  /* sum (x - t)^2 (l2) or sum |x - t| (l1) as a 0-d acc tensor; target: x's shape, any float dtype; both of any \
     strides, stride 0 included. */    \
  Tensor content_loss_forward(const Tensor& x, const Tensor& target, int64_t criterion);                              \
  /* coef * (x - t) (l2) or coef * sign(x - t) (l1, NaN kept) in x's dtype (at::empty_like(x): dense), computed \
     in acc and cast once; coef: a one-element acc tensor (the upstream gradient times the loss's scale). */     \
  Tensor content_loss_backward(const Tensor& x, const Tensor& target, const Tensor& coef, int64_t criterion);         \
  /* Per-sample total variation (B,) acc. With dh = x[h+1,w] - x[h,w], dw = x[h,w+1] - x[h,w]: squared          \
     sum dh^2 + dw^2; l1 sum |dh| + |dw| (gradient sign(.), NaN stays NaN); isotropic sum over h < H-1,         \
     w < W-1 of sqrt(dh^2 + dw^2 + eps). */     \
  Tensor tv_forward(const Tensor& x, int64_t kind, double eps);                                                       \
  /* coef_b * dTV_b/dx in x's dtype, computed in acc and cast once; coef (B,) acc. */                                 \
  Tensor tv_backward(const Tensor& x, int64_t kind, double eps, const Tensor& coef);                                  \
  /* y = gamma_b * (x - mean_bc) * rstd_bc + beta_b (then ReLU), biased variance, rstd = 1/sqrt(var + eps).     \
     gamma / beta: None, (C,) or (R, C) tables of any float dtype; row b is table[style_index[b]] with an index, \
     else table[0] (R == 1) or table[b] (R == B). Returns (y, mean (B, C) acc, rstd (B, C) acc). */     \
  std::tuple<Tensor, Tensor, Tensor> instance_norm_forward(const Tensor& x, const OptionalTensor& gamma,              \
                                                           const OptionalTensor& beta,                                \
                                                           const OptionalTensor& style_index, double eps, bool relu); \
  /* g = grad_y masked by y > 0 when relu (y recomputed from x, mean, rstd, gamma, beta), xhat = (x-mean)rstd:  \
     dx = rstd * gamma_b * (g - mean_hw(g) - xhat * mean_hw(g * xhat)); dgamma_b = sum_hw g xhat,              \
     dbeta_b = sum_hw g as (B, C) acc per-sample rows (empty tensors unless need_affine_grad). */     \
  std::tuple<Tensor, Tensor, Tensor> instance_norm_backward(                                                          \
      const Tensor& grad_y, const Tensor& x, const Tensor& mean, const Tensor& rstd, const OptionalTensor& gamma,     \
      const OptionalTensor& beta, const OptionalTensor& style_index, bool relu, bool need_affine_grad);

namespace cpu {
PK_DECLARE_KERNELS
}  // namespace cpu

#ifdef WITH_CUDA
namespace cuda {
PK_DECLARE_KERNELS
}  // namespace cuda
#endif

#undef PK_DECLARE_KERNELS

}  // namespace perceptual_kernels
