// CUDA launchers of instance_norm_forward / instance_norm_backward (kernels and design in instance_norm.cuh).
// The affine tables are converted here to fp32 contiguous (rows, C) (they are tiny); the kernels gather row
// style_index[b] (or row 0 / row b) themselves. x, y, grad_y and dx are read and written in place through
// their own strides; the statistics and affine gradients are (B, C) fp32.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <type_traits>

#include "../ops.h"
#include "instance_norm.cuh"
#include "launch_utils.h"

namespace perceptual_kernels::cuda {
namespace {

using inorm_kernels::Affine;
using inorm_kernels::PlaneLayout;

constexpr int64_t kMaxPlane = int64_t{1} << 30;  // plane indices are int32 in the kernels

void check_input(const Tensor& x, const char* op) {
  TORCH_CHECK(x.is_cuda(), op, ": x must be a CUDA tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (B, C, H, W), got shape ", x.sizes());
  TORCH_CHECK(is_kernel_dtype(x.scalar_type()), op, ": x must be float32, float16 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(x.size(2) * x.size(3) <= kMaxPlane, op, ": H * W must be at most 2^30, got shape ", x.sizes());
}

// The checked style index (B,) int64, contiguous, or an undefined tensor.
Tensor check_index(const OptionalTensor& index, const Tensor& x, const char* op) {
  if (!index.has_value() || !index->defined()) return Tensor();
  TORCH_CHECK(index->device() == x.device(), op, ": style_index must be on x's device ", x.device(), ", got ",
              index->device());
  TORCH_CHECK(index->scalar_type() == at::kLong, op, ": style_index must be int64, got ", index->scalar_type());
  TORCH_CHECK(index->dim() == 1 && index->size(0) == x.size(0), op, ": style_index must have shape (", x.size(0),
              ",), got ", index->sizes());
  return index->contiguous();
}

// Checks gamma / beta ((C,) or (rows, C), any float dtype; rows 1 or B without an index) and returns it as an
// fp32 contiguous (rows, C) table, or an undefined tensor when absent.
Tensor affine_table(const OptionalTensor& t, const char* name, const Tensor& x, bool has_index, const char* op) {
  if (!t.has_value() || !t->defined()) return Tensor();
  const int64_t B = x.size(0), C = x.size(1);
  TORCH_CHECK(t->device() == x.device(), op, ": ", name, " must be on x's device ", x.device(), ", got ", t->device());
  TORCH_CHECK(at::isFloatingType(t->scalar_type()), op, ": ", name, " must be a floating tensor, got ",
              t->scalar_type());
  TORCH_CHECK((t->dim() == 1 || t->dim() == 2) && t->size(-1) == C, op, ": ", name, " must be (", C, ",) or (rows, ", C,
              "), got shape ", t->sizes());
  const Tensor table = t->dim() == 1 ? t->unsqueeze(0) : *t;
  const int64_t rows = table.size(0);
  TORCH_CHECK(rows >= 1, op, ": ", name, " has no rows");
  TORCH_CHECK(has_index || rows == 1 || rows == B, op, ": ", name, " needs 1 or ", B,
              " rows without style_index, got shape ", t->sizes());
  return table.to(at::kFloat).contiguous();
}

Affine make_affine(const Tensor& gamma, const Tensor& beta, const Tensor& index) {
  return {gamma.defined() ? gamma.const_data_ptr<float>() : nullptr,
          beta.defined() ? beta.const_data_ptr<float>() : nullptr,
          index.defined() ? index.const_data_ptr<int64_t>() : nullptr, gamma.defined() ? gamma.size(0) : 0,
          beta.defined() ? beta.size(0) : 0};
}

PlaneLayout plane_layout(const Tensor& t) { return inorm_kernels::plane_layout(t.sizes().data(), t.strides().data()); }

bool vectorizable(const Tensor& t, const PlaneLayout& l, int vec) {
  return inorm_kernels::vectorizable(t.sizes().data(), l, t.const_data_ptr(), vec);
}

template <typename T>
const T* cptr(const Tensor& t) {
  return reinterpret_cast<const T*>(t.const_data_ptr());
}

template <typename T>
T* mptr(Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> instance_norm_forward(const Tensor& x, const OptionalTensor& gamma,
                                                         const OptionalTensor& beta, const OptionalTensor& style_index,
                                                         double eps, bool relu) {
  constexpr const char* op = "instance_norm_forward";
  check_input(x, op);
  const Tensor index = check_index(style_index, x, op);
  const Tensor gamma_t = affine_table(gamma, "gamma", x, index.defined(), op);
  const Tensor beta_t = affine_table(beta, "beta", x, index.defined(), op);
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2) * x.size(3), planes = B * C;

  c10::cuda::CUDAGuard guard(x.device());
  Tensor y = at::empty_like(x);
  const auto stat_options = x.options().dtype(at::kFloat);
  if (planes == 0 || N == 0) {  // statistics of empty planes are NaN, as torch's mean of nothing
    return {y, at::full({B, C}, std::numeric_limits<float>::quiet_NaN(), stat_options),
            at::full({B, C}, std::numeric_limits<float>::quiet_NaN(), stat_options)};
  }
  Tensor mean = at::empty({B, C}, stat_options);
  Tensor rstd = at::empty({B, C}, stat_options);

  const auto plan = inorm_kernels::inorm_split_plan(static_cast<int32_t>(N), planes,
                                                    device_attribute(cudaDevAttrMultiProcessorCount, x.get_device()));
  TORCH_CHECK(planes * plan.splits <= std::numeric_limits<int32_t>::max(), op, ": x of shape ", x.sizes(),
              " needs more blocks than a CUDA grid holds");
  Tensor partials = plan.splits > 1 ? at::empty({planes * plan.splits * 3}, stat_options) : Tensor();
  const PlaneLayout xl = plane_layout(x), yl = plane_layout(y);
  auto stream = c10::cuda::getCurrentCUDAStream();

  with_dtype(x.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    constexpr int vec = inorm_kernels::vec_width<T>();
    const bool use_vec = vectorizable(x, xl, vec) && vectorizable(y, yl, vec);
    const inorm_kernels::FwdArgs<T> args{cptr<T>(x),
                                         mptr<T>(y),
                                         mean.data_ptr<float>(),
                                         rstd.data_ptr<float>(),
                                         partials.defined() ? partials.data_ptr<float>() : nullptr,
                                         make_affine(gamma_t, beta_t, index),
                                         xl,
                                         yl,
                                         C,
                                         static_cast<int32_t>(N),
                                         plan.splits,
                                         plan.chunk,
                                         static_cast<float>(eps)};
    inorm_kernels::launch_inorm_forward<T>(args, planes, use_vec, relu, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (plan.splits > 1) {
      inorm_kernels::launch_inorm_forward_split_apply<T>(args, planes, use_vec, relu, stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {y, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor> instance_norm_backward(const Tensor& grad_y, const Tensor& x, const Tensor& mean,
                                                          const Tensor& rstd, const OptionalTensor& gamma,
                                                          const OptionalTensor& beta, const OptionalTensor& style_index,
                                                          bool relu, bool need_affine_grad) {
  constexpr const char* op = "instance_norm_backward";
  check_input(x, op);
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2) * x.size(3), planes = B * C;
  TORCH_CHECK(grad_y.device() == x.device(), op, ": grad_y must be on x's device ", x.device(), ", got ",
              grad_y.device());
  TORCH_CHECK(grad_y.sizes() == x.sizes(), op, ": grad_y must have x's shape ", x.sizes(), ", got ", grad_y.sizes());
  TORCH_CHECK(grad_y.scalar_type() == x.scalar_type(), op, ": grad_y must have x's dtype ", x.scalar_type(), ", got ",
              grad_y.scalar_type());
  for (const auto& [name, stat] : {std::pair<const char*, const Tensor&>{"mean", mean}, {"rstd", rstd}}) {
    TORCH_CHECK(stat.device() == x.device(), op, ": ", name, " must be on x's device ", x.device(), ", got ",
                stat.device());
    TORCH_CHECK(stat.dim() == 2 && stat.size(0) == B && stat.size(1) == C, op, ": ", name, " must have shape (", B,
                ", ", C, "), got ", stat.sizes());
    TORCH_CHECK(at::isFloatingType(stat.scalar_type()), op, ": ", name, " must be floating, got ", stat.scalar_type());
  }
  const Tensor index = check_index(style_index, x, op);
  const Tensor gamma_t = affine_table(gamma, "gamma", x, index.defined(), op);
  const Tensor beta_t = affine_table(beta, "beta", x, index.defined(), op);

  c10::cuda::CUDAGuard guard(x.device());
  Tensor dx = at::empty_like(x);
  const auto stat_options = x.options().dtype(at::kFloat);
  Tensor dgamma = need_affine_grad ? at::empty({B, C}, stat_options) : at::empty({0}, stat_options);
  Tensor dbeta = need_affine_grad ? at::empty({B, C}, stat_options) : at::empty({0}, stat_options);
  if (planes == 0) return {dx, dgamma, dbeta};
  if (N == 0) {  // sums over empty planes
    dgamma.zero_();
    dbeta.zero_();
    return {dx, dgamma, dbeta};
  }
  const Tensor mean_f = mean.to(at::kFloat).contiguous();  // no-ops for the forward's outputs
  const Tensor rstd_f = rstd.to(at::kFloat).contiguous();

  const auto plan = inorm_kernels::inorm_split_plan(static_cast<int32_t>(N), planes,
                                                    device_attribute(cudaDevAttrMultiProcessorCount, x.get_device()));
  TORCH_CHECK(planes * plan.splits <= std::numeric_limits<int32_t>::max(), op, ": x of shape ", x.sizes(),
              " needs more blocks than a CUDA grid holds");
  Tensor partials = plan.splits > 1 ? at::empty({planes * plan.splits * 2}, stat_options) : Tensor();
  const PlaneLayout dyl = plane_layout(grad_y), xl = plane_layout(x), dxl = plane_layout(dx);
  auto stream = c10::cuda::getCurrentCUDAStream();

  with_dtype(x.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    constexpr int vec = inorm_kernels::vec_width<T>();
    const bool use_vec = vectorizable(grad_y, dyl, vec) && vectorizable(x, xl, vec) && vectorizable(dx, dxl, vec);
    const inorm_kernels::BwdArgs<T> args{cptr<T>(grad_y),
                                         cptr<T>(x),
                                         mptr<T>(dx),
                                         mean_f.const_data_ptr<float>(),
                                         rstd_f.const_data_ptr<float>(),
                                         need_affine_grad ? dgamma.data_ptr<float>() : nullptr,
                                         need_affine_grad ? dbeta.data_ptr<float>() : nullptr,
                                         partials.defined() ? partials.data_ptr<float>() : nullptr,
                                         make_affine(gamma_t, beta_t, index),
                                         dyl,
                                         xl,
                                         dxl,
                                         C,
                                         static_cast<int32_t>(N),
                                         plan.splits,
                                         plan.chunk};
    inorm_kernels::launch_inorm_backward<T>(args, planes, use_vec, relu, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (plan.splits > 1) {
      inorm_kernels::launch_inorm_backward_split_apply<T>(args, planes, use_vec, relu, stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {dx, dgamma, dbeta};
}

}  // namespace perceptual_kernels::cuda

TORCH_LIBRARY_IMPL(pk_native, CUDA, m) {
  m.impl("instance_norm_forward", &perceptual_kernels::cuda::instance_norm_forward);
  m.impl("instance_norm_backward", &perceptual_kernels::cuda::instance_norm_backward);
}
