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

#define PK_DECLARE_KERNELS                                                                                            \
  /* G_b = F_b F_b^T * scale -> (B, C, C) of out_dtype, accumulated in acc, scaled before the cast. */                \
  Tensor gram_forward(const Tensor& x, double scale, at::ScalarType out_dtype);                                       \
  /* dF_b = (dG_b + dG_b^T) F_b * scale; grad (B, C, C) of any float dtype. */                                        \
  Tensor gram_backward(const Tensor& grad, const Tensor& x, double scale);                                            \
  /* D_b = F_b F_b^T * scale - A_b, loss_b = sum_ij D_b[i,j]^2. target (R, C, C), any float dtype and strides;  \
     A_b = target[style_index[b]] (int64 (B,)) or, without an index, target[0] (R == 1) or target[b] (R == B).  \
     Returns (loss (B,) acc, D (B, C, C) acc contiguous). */     \
  std::tuple<Tensor, Tensor> style_loss_forward(const Tensor& x, const Tensor& target,                                \
                                                const OptionalTensor& style_index, double scale);                     \
  /* dF_b = coef_b (D_b + D_b^T) F_b; coef (B,) acc, diff (B, C, C) acc. */                                           \
  Tensor style_loss_backward(const Tensor& coef, const Tensor& diff, const Tensor& x);                                \
  /* sum (x - t)^2 as a 0-d acc tensor; target: x's shape, any float dtype and strides. */                            \
  Tensor content_loss_forward(const Tensor& x, const Tensor& target);                                                 \
  /* coef * (x - t) in x's dtype, computed in acc and cast once; coef: a one-element acc tensor (the upstream   \
     gradient times the loss's scale). */     \
  Tensor content_loss_backward(const Tensor& x, const Tensor& target, const Tensor& coef);                            \
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

// --- LPIPS layer distance (Zhang et al. 2018) -----------------------------------------------------------------
// With r = ||f|| = sqrt(sum_c f_c^2) at each pixel and n = f / (r + eps):
//   lpips_forward:  d_b = mean_hw sum_c w_c (n0_c - n1_c)^2 -> (B,) acc.
//   lpips_backward: g = 2 w (n0 - n1); df0 = coef_b (g - f0 (g . f0) / (r0 (r0 + eps))) / (r0 + eps),
//                   df1 = coef_b (-g + f1 (g . f1) / (r1 (r1 + eps))) / (r1 + eps) (second terms 0 where r = 0),
//                   in f0's dtype, computed in acc and cast once; an unneeded gradient is an empty tensor.
// f0, f1: (B, C, H, W) of one dtype and any strides; weight: (C,) contiguous acc; coef: (B,) acc, the upstream
// gradient over H*W.
#define PK_DECLARE_LPIPS_KERNELS                                                                                  \
  Tensor lpips_forward(const Tensor& f0, const Tensor& f1, const Tensor& weight, double eps);                     \
  std::tuple<Tensor, Tensor> lpips_backward(const Tensor& f0, const Tensor& f1, const Tensor& weight, double eps, \
                                            const Tensor& coef, bool need_grad0, bool need_grad1);

namespace cpu {
PK_DECLARE_LPIPS_KERNELS
}  // namespace cpu

#ifdef WITH_CUDA
namespace cuda {
PK_DECLARE_LPIPS_KERNELS
}  // namespace cuda
#endif

#undef PK_DECLARE_LPIPS_KERNELS

}  // namespace perceptual_kernels
