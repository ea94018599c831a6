// CUDA launchers of content_loss_forward / _backward (kernels and design in content.cuh): sum (x - t)^2 (l1:
// sum |x - t|) as a 0-d fp32 tensor; coef * (x - t) (l1: coef * sign(x - t)) in x's dtype and memory format
// (at::empty_like(x), dense). t may have another dtype and other strides; x and t may have stride-0 dimensions.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <type_traits>

#include "../ops.h"
#include "content.cuh"
#include "launch_utils.h"

namespace perceptual_kernels::cuda {
namespace {

content_kernels::Strides4 strides4(const Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// Forward (no coef): (sum (x - t)^2 as a 0-d fp32 tensor, undefined); backward: (undefined, coef * (x - t)).
std::tuple<Tensor, Tensor> content_pass(const char* op, const Tensor& x, const Tensor& target, const Tensor* coef,
                                        int64_t criterion) {
  const bool need_grad = coef != nullptr;
  TORCH_CHECK(criterion == kCriterionL2 || criterion == kCriterionL1, op, ": criterion must be ", kCriterionL2,
              " (l2) or ", kCriterionL1, " (l1), got ", criterion);
  TORCH_CHECK(x.is_cuda(), op, ": x must be a CUDA tensor, got ", x.device());
  TORCH_CHECK(target.device() == x.device(), op, ": target must be on x's device ", x.device(), ", got ",
              target.device());
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (B, C, H, W), got shape ", x.sizes());
  TORCH_CHECK(target.sizes() == x.sizes(), op, ": target must have x's shape ", x.sizes(), ", got ", target.sizes());
  TORCH_CHECK(is_kernel_dtype(x.scalar_type()), op, ": x must be float32, float16 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(is_kernel_dtype(target.scalar_type()), op, ": target must be float32, float16 or bfloat16, got ",
              target.scalar_type());

  c10::cuda::CUDAGuard guard(x.device());
  if (need_grad) {
    TORCH_CHECK(coef->numel() == 1 && coef->device() == x.device() && coef->scalar_type() == at::kFloat, op,
                ": coef must be a one-element float32 tensor on ", x.device(), ", got ", coef->scalar_type(), " ",
                coef->sizes(), " on ", coef->device());
  }
  Tensor grad = need_grad ? at::empty_like(x) : Tensor();
  const int64_t n = x.numel();
  if (n == 0) return {at::zeros({}, x.options().dtype(at::kFloat)), grad};

  const Tensor& g = need_grad ? grad : x;  // strides / alignment only; no gradient is written without need_grad
  const bool flat = content_kernels::content_flat(
      x.is_non_overlapping_and_dense(), x.sizes().data(), x.strides().data(), target.strides().data(),
      g.strides().data(), x.const_data_ptr(), target.const_data_ptr(), g.const_data_ptr(),
      static_cast<int>(x.element_size()), static_cast<int>(target.element_size()));
  int64_t n_blocks = 0;
  with_dtype(x.scalar_type(), [&](auto* tx) {
    n_blocks = content_kernels::content_num_blocks<std::remove_pointer_t<decltype(tx)>>(n, flat);
  });
  TORCH_CHECK(n_blocks <= std::numeric_limits<int32_t>::max(), op, ": x of shape ", x.sizes(),
              " needs more blocks than a CUDA grid holds");

  auto stream = c10::cuda::getCurrentCUDAStream();
  Tensor partials = at::empty({n_blocks}, x.options().dtype(at::kFloat));
  with_dtype(x.scalar_type(), [&](auto* tx) {
    with_dtype(target.scalar_type(), [&](auto* tt) {
      using TX = std::remove_pointer_t<decltype(tx)>;
      using TT = std::remove_pointer_t<decltype(tt)>;
      content_kernels::launch_content<TX, TT>(
          reinterpret_cast<const TX*>(x.const_data_ptr()), reinterpret_cast<const TT*>(target.const_data_ptr()),
          need_grad ? reinterpret_cast<TX*>(grad.data_ptr()) : nullptr, partials.data_ptr<float>(), n, x.size(1),
          x.size(2), x.size(3), strides4(x), strides4(target), strides4(g), flat, need_grad, criterion == kCriterionL1,
          need_grad ? coef->const_data_ptr<float>() : nullptr, stream);
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (need_grad) return {Tensor(), grad};  // the backward does not use the loss: no final sum
  Tensor loss = at::empty({}, x.options().dtype(at::kFloat));
  content_kernels::launch_content_sum(partials.const_data_ptr<float>(), n_blocks, loss.data_ptr<float>(), stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {loss, grad};
}

}  // namespace

Tensor content_loss_forward(const Tensor& x, const Tensor& target, int64_t criterion) {
  return std::get<0>(content_pass("content_loss_forward", x, target, nullptr, criterion));
}

Tensor content_loss_backward(const Tensor& x, const Tensor& target, const Tensor& coef, int64_t criterion) {
  return std::get<1>(content_pass("content_loss_backward", x, target, &coef, criterion));
}

}  // namespace perceptual_kernels::cuda

TORCH_LIBRARY_IMPL(pk_native, CUDA, m) {
  m.impl("content_loss_forward", &perceptual_kernels::cuda::content_loss_forward);
  m.impl("content_loss_backward", &perceptual_kernels::cuda::content_loss_backward);
}
