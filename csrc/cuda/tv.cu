// CUDA launchers of tv_forward / tv_backward (kernels and design in tv.cuh): per-sample total variation (B,) fp32;
// coef_b * its gradient in x's dtype and memory format. Any strides of x are read in place.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <type_traits>

#include "../ops.h"
#include "tv.cuh"

namespace perceptual_kernels::cuda {
namespace {

// Forward (no coef): (per-sample TV (B,) fp32, undefined); backward: (undefined, coef_b * dTV_b/dx).
std::tuple<Tensor, Tensor> tv_pass(const char* op, const Tensor& x, int64_t kind, double eps, const Tensor* coef) {
  const bool need_grad = coef != nullptr;
  TORCH_CHECK(x.is_cuda(), op, ": x must be a CUDA tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (B, C, H, W), got shape ", x.sizes());
  const auto st = x.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kHalf || st == at::kBFloat16, op,
              ": x must be float32, float16 or bfloat16, got ", st);
  TORCH_CHECK(kind == kTvSquared || kind == kTvL1 || kind == kTvIsotropic, op,
              ": kind must be 0 (squared), 1 (l1) or 2 (isotropic), got ", kind);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t n_per_sample = C * tv_kernels::tv_num_tiles(H, W);
  TORCH_CHECK(B * n_per_sample <= std::numeric_limits<int32_t>::max(), op, ": x of shape ", x.sizes(),
              " needs more tiles than a CUDA grid holds");

  c10::cuda::CUDAGuard guard(x.device());
  if (need_grad) {
    TORCH_CHECK(coef->dim() == 1 && coef->size(0) == B && coef->device() == x.device() &&
                    coef->scalar_type() == at::kFloat && coef->is_contiguous(),
                op, ": coef must be a contiguous (", B, ",) float32 tensor on ", x.device(), ", got ",
                coef->scalar_type(), " ", coef->sizes(), " on ", coef->device());
  }
  Tensor grad = need_grad ? at::empty_like(x) : Tensor();
  if (x.numel() == 0) return {at::zeros({B}, x.options().dtype(at::kFloat)), grad};

  auto stream = c10::cuda::getCurrentCUDAStream();
  Tensor partials = at::empty({B, n_per_sample}, x.options().dtype(at::kFloat));
  const Tensor& g = need_grad ? grad : x;  // strides only; no gradient is written without need_grad
  auto launch = [&](auto* x_ptr) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(x_ptr)>>;
    T* g_ptr = need_grad ? reinterpret_cast<T*>(grad.data_ptr()) : nullptr;
    tv_kernels::launch_tv<T>(x_ptr, g_ptr, partials.data_ptr<float>(), B, C, H, W, x.strides().data(),
                             g.strides().data(), static_cast<int>(kind), need_grad, static_cast<float>(eps),
                             need_grad ? coef->const_data_ptr<float>() : nullptr, stream);
  };
  if (st == at::kFloat) {
    launch(x.const_data_ptr<float>());
  } else if (st == at::kHalf) {
    launch(reinterpret_cast<const __half*>(x.const_data_ptr()));
  } else {
    launch(reinterpret_cast<const __nv_bfloat16*>(x.const_data_ptr()));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (need_grad) return {Tensor(), grad};  // the backward does not use the loss: no row sums
  Tensor per_sample = at::empty({B}, x.options().dtype(at::kFloat));
  tv_kernels::launch_tv_row_sum(partials.const_data_ptr<float>(), n_per_sample, B, per_sample.data_ptr<float>(),
                                stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {per_sample, grad};
}

}  // namespace

Tensor tv_forward(const Tensor& x, int64_t kind, double eps) {
  return std::get<0>(tv_pass("tv_forward", x, kind, eps, nullptr));
}

Tensor tv_backward(const Tensor& x, int64_t kind, double eps, const Tensor& coef) {
  return std::get<1>(tv_pass("tv_backward", x, kind, eps, &coef));
}

}  // namespace perceptual_kernels::cuda

TORCH_LIBRARY_IMPL(pk_native, CUDA, m) {
  m.impl("tv_forward", &perceptual_kernels::cuda::tv_forward);
  m.impl("tv_backward", &perceptual_kernels::cuda::tv_backward);
}
