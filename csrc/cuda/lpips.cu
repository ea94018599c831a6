// CUDA launchers of lpips_forward / lpips_backward (kernels and design in lpips.cuh): the per-sample LPIPS layer
// distance (B,) fp32; the gradients of f0 / f1 in their dtype and memory format. Any strides are read in place.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <type_traits>

#include "../ops.h"
#include "launch_utils.h"
#include "lpips.cuh"

namespace perceptual_kernels::cuda {
namespace {

lpips_kernels::Strides4 strides_of(const Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

void check_args(const char* op, const Tensor& f0, const Tensor& f1, const Tensor& weight) {
  TORCH_CHECK(f0.is_cuda(), op, ": f0 must be a CUDA tensor, got ", f0.device());
  TORCH_CHECK(f0.dim() == 4, op, ": f0 must be 4-D (B, C, H, W), got shape ", f0.sizes());
  TORCH_CHECK(is_kernel_dtype(f0.scalar_type()), op, ": f0 must be float32, float16 or bfloat16, got ",
              f0.scalar_type());
  TORCH_CHECK(f1.device() == f0.device() && f1.sizes() == f0.sizes() && f1.scalar_type() == f0.scalar_type(), op,
              ": f1 must have the device, shape and dtype of f0 (", f0.device(), ", ", f0.sizes(), ", ",
              f0.scalar_type(), "), got ", f1.device(), ", ", f1.sizes(), ", ", f1.scalar_type());
  TORCH_CHECK(weight.device() == f0.device() && weight.dim() == 1 && weight.size(0) == f0.size(1) &&
                  weight.scalar_type() == at::kFloat && weight.is_contiguous(),
              op, ": weight must be a contiguous (", f0.size(1), ",) float32 tensor on ", f0.device(), ", got ",
              weight.scalar_type(), " ", weight.sizes(), " on ", weight.device());
  const int64_t blocks = f0.size(0) * lpips_kernels::lpips_num_pblocks(f0.size(2), f0.size(3));
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), op, ": f0 of shape ", f0.sizes(),
              " needs more blocks than a CUDA grid holds");
}

}  // namespace

Tensor lpips_forward(const Tensor& f0, const Tensor& f1, const Tensor& weight, double eps) {
  check_args("lpips_forward", f0, f1, weight);
  c10::cuda::CUDAGuard guard(f0.device());
  const int64_t B = f0.size(0), C = f0.size(1), H = f0.size(2), W = f0.size(3);
  Tensor out = at::empty({B}, f0.options().dtype(at::kFloat));
  if (f0.numel() == 0) return out.fill_(std::numeric_limits<float>::quiet_NaN());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t n = lpips_kernels::lpips_num_pblocks(H, W);
  Tensor partials = at::empty({B, n}, f0.options().dtype(at::kFloat));
  with_dtype(f0.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    lpips_kernels::launch_lpips<T>(
        reinterpret_cast<const T*>(f0.const_data_ptr()), reinterpret_cast<const T*>(f1.const_data_ptr()),
        weight.const_data_ptr<float>(), partials.data_ptr<float>(), nullptr, nullptr, nullptr, B, C, H, W,
        strides_of(f0), strides_of(f1), strides_of(f0), strides_of(f1), false, static_cast<float>(eps), stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  lpips_kernels::launch_lpips_row_mean(partials.const_data_ptr<float>(), n, B, static_cast<float>(H * W),
                                       out.data_ptr<float>(), stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<Tensor, Tensor> lpips_backward(const Tensor& f0, const Tensor& f1, const Tensor& weight, double eps,
                                          const Tensor& coef, bool need_grad0, bool need_grad1) {
  check_args("lpips_backward", f0, f1, weight);
  c10::cuda::CUDAGuard guard(f0.device());
  const int64_t B = f0.size(0), C = f0.size(1), H = f0.size(2), W = f0.size(3);
  TORCH_CHECK(coef.dim() == 1 && coef.size(0) == B && coef.device() == f0.device() &&
                  coef.scalar_type() == at::kFloat && coef.is_contiguous(),
              "lpips_backward: coef must be a contiguous (", B, ",) float32 tensor on ", f0.device(), ", got ",
              coef.scalar_type(), " ", coef.sizes(), " on ", coef.device());
  Tensor g0 = need_grad0 ? at::empty_like(f0) : at::empty({0}, f0.options());
  Tensor g1 = need_grad1 ? at::empty_like(f1) : at::empty({0}, f1.options());
  if (f0.numel() == 0 || !(need_grad0 || need_grad1)) return {g0, g1};
  auto stream = c10::cuda::getCurrentCUDAStream();
  with_dtype(f0.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    lpips_kernels::launch_lpips<T>(
        reinterpret_cast<const T*>(f0.const_data_ptr()), reinterpret_cast<const T*>(f1.const_data_ptr()),
        weight.const_data_ptr<float>(), nullptr, need_grad0 ? reinterpret_cast<T*>(g0.data_ptr()) : nullptr,
        need_grad1 ? reinterpret_cast<T*>(g1.data_ptr()) : nullptr, coef.const_data_ptr<float>(), B, C, H, W,
        strides_of(f0), strides_of(f1), need_grad0 ? strides_of(g0) : strides_of(f0),
        need_grad1 ? strides_of(g1) : strides_of(f1), true, static_cast<float>(eps), stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {g0, g1};
}

}  // namespace perceptual_kernels::cuda

TORCH_LIBRARY_IMPL(pk_native, CUDA, m) {
  m.impl("lpips_forward", &perceptual_kernels::cuda::lpips_forward);
  m.impl("lpips_backward", &perceptual_kernels::cuda::lpips_backward);
}
