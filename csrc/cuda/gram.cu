// CUDA launchers of the Gram matrix and the fused style loss (kernels and design in gram.cuh):
//   gram_forward         G_b = scale * F_b F_b^T -> (B, C, C) of out_dtype
//   style_loss_forward   D_b = G_b - A_b (fp32), loss_b = sum_ij D_b[i, j]^2 (fp32); l1: sum_ij |D_b[i, j]| and sign(D)
//   gram_backward        dF_b = scale * (dG_b + dG_b^T) F_b
//   style_loss_backward  dF_b = coef_b * (D_b + D_b^T) F_b
// x (B, C, H, W) is read through its strides (contiguous, channels_last and sliced views without a copy); the
// gradients have x's dtype and memory format (at::empty_like(x)).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <type_traits>

#include "../ops.h"
#include "gram.cuh"
#include "launch_utils.h"

namespace perceptual_kernels::cuda {
namespace {

namespace gk = gram_kernels;

using gk::cdiv;
using gk::FwdPlan;
using gk::kInt32Max;
using gk::kMaxGridYZ;
using gk::Variant;

// Element type code of the epilogue's output / target (gram_kernels::DType).
int dtype_code(at::ScalarType st, const char* what) {
  switch (st) {
    case at::kFloat: return gk::kF32;
    case at::kHalf: return gk::kF16;
    case at::kBFloat16: return gk::kBF16;
    case at::kDouble: return gk::kF64;
    default: TORCH_CHECK(false, what, " must be float32, float16, bfloat16 or float64, got ", st);
  }
  return gk::kF32;
}

// Product of the tiles for x's dtype (gram_kernels::pick_variant): tf32 when the fp32 precision policy ("high" /
// "medium") allows it.
Variant pick_variant(const Tensor& x, const char* op) {
  const bool sm80 = device_attribute(cudaDevAttrComputeCapabilityMajor, x.get_device()) >= 8;
  TORCH_CHECK(sm80 || x.scalar_type() == at::kFloat, op, ": ", x.scalar_type(),
              " inputs need a GPU of compute capability 8.0 or newer");
  const bool tf32 = at::globalContext().float32MatmulPrecision() != at::Float32MatmulPrecision::HIGHEST;
  return gk::pick_variant(dtype_code(x.scalar_type(), op), sm80, tf32);
}

void check_x(const Tensor& x, const char* op) {
  TORCH_CHECK(x.is_cuda(), op, ": x must be a CUDA tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (B, C, H, W), got shape ", x.sizes());
  TORCH_CHECK(is_kernel_dtype(x.scalar_type()), op, ": x must be float32, float16 or bfloat16, got ", x.scalar_type());
}

// The plane addressing needs 32-bit m for a strided (sliced) plane.
void check_plane(const Tensor& t, const char* op) {
  const gk::Plane p = gk::plane_of(t.size(2), t.size(3), t.stride(2), t.stride(3));
  TORCH_CHECK(!p.split || t.size(2) * t.size(3) <= int64_t(std::numeric_limits<uint32_t>::max()), op,
              ": a strided (sliced) H x W plane must have fewer than 2^32 elements, got ", t.size(2), " x ", t.size(3));
}

// Forward launch configuration (gram_kernels::plan_forward) for this device.
FwdPlan plan_forward(const Tensor& x, const char* op) {
  const int64_t B = x.size(0), C = x.size(1);
  const int64_t n_row = cdiv(C, gk::kTile), n_up = n_row * (n_row + 1) / 2;
  TORCH_CHECK(B * n_up * gk::kTile <= kInt32Max, op, ": B = ", B, " and C = ", C, " need more blocks than a CUDA grid ",
              "holds");
  check_plane(x, op);
  const FwdPlan p = gk::plan_forward(x.sizes().data(), x.strides().data(),
                                     device_attribute(cudaDevAttrMultiProcessorCount, x.get_device()));
  TORCH_CHECK(p.splits <= kMaxGridYZ, op, ": internal error: ", p.splits, " split-K ranges");
  return p;
}

// Runs the forward kernels (ep.loss_parts set: style mode, with B * p.parts_per_sample partial sums).
void run_forward(const Tensor& x, FwdPlan& p, const gk::Epilogue& ep, Variant v) {
  Tensor ws;  // split-K partial tiles, (splits, B, C, C) fp32
  if (p.splits > 1) {
    ws = at::empty({p.splits, p.args.B, p.args.C, p.args.C}, x.options().dtype(at::kFloat));
    p.args.ws = ws.data_ptr<float>();
  }
  gk::launch_forward(x.const_data_ptr(), p, ep, v, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// dF_b = scale * coef_b * (D_b + D_b^T) F_b (coef == nullptr: coef_b = 1) into at::empty_like(x).
Tensor run_sym_dot(const char* op, const Tensor& d, const float* coef, int64_t s_cb, float scale, const Tensor& x) {
  Tensor dx = at::empty_like(x);
  if (dx.numel() == 0) return dx;
  const int64_t B = x.size(0), C = x.size(1), M = x.size(2) * x.size(3);
  // The kernel addresses D inside one sample with int32 offsets; a copy (C x C per sample) only if they would
  // overflow.
  const auto fits = [C](const Tensor& t) { return gk::sym_dot_fits(C, t.stride(1), t.stride(2)); };
  const Tensor dd = fits(d) ? d : d.contiguous();
  TORCH_CHECK(fits(dd), op, ": C = ", C, " is too large");
  TORCH_CHECK(cdiv(M, gk::kTile) <= kInt32Max && cdiv(C, gk::kTile) <= kMaxGridYZ, op, ": x of shape ", x.sizes(),
              " needs more blocks than a CUDA grid holds");
  check_plane(x, op);
  check_plane(dx, op);

  gk::BwdArgs a{};
  a.C = C;
  a.M = M;
  a.x = gk::x_desc(x.sizes().data(), x.strides().data());
  a.dx = gk::x_desc(dx.sizes().data(), dx.strides().data());
  a.d = dd.const_data_ptr<float>();
  a.s_db = dd.stride(0);
  a.s_dr = int(dd.stride(1));
  a.s_dc = int(dd.stride(2));
  a.coef = coef;
  a.s_cb = s_cb;
  a.scale = scale;
  gk::launch_sym_dot(pick_variant(x, op), x.const_data_ptr(), dx.data_ptr(), a, B, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return dx;
}

}  // namespace

Tensor gram_forward(const Tensor& x, double scale, at::ScalarType out_dtype) {
  check_x(x, "gram_forward");
  const int out_code = dtype_code(out_dtype, "gram_forward: out_dtype");
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0), C = x.size(1);
  Tensor g = at::empty({B, C, C}, x.options().dtype(out_dtype));
  if (g.numel() == 0) return g;
  const Variant v = pick_variant(x, "gram_forward");
  FwdPlan p = plan_forward(x, "gram_forward");
  gk::Epilogue ep{};
  ep.out = g.data_ptr();
  ep.out_dtype = out_code;
  ep.scale = float(scale);
  run_forward(x, p, ep, v);
  return g;
}

std::tuple<Tensor, Tensor> style_loss_forward(const Tensor& x, const Tensor& target, const OptionalTensor& style_index,
                                              double scale, int64_t criterion) {
  check_x(x, "style_loss_forward");
  TORCH_CHECK(criterion == kCriterionL2 || criterion == kCriterionL1, "style_loss_forward: criterion must be ",
              kCriterionL2, " (l2) or ", kCriterionL1, " (l1), got ", criterion);
  const int64_t B = x.size(0), C = x.size(1);
  TORCH_CHECK(target.device() == x.device(), "style_loss_forward: target must be on x's device ", x.device(), ", got ",
              target.device());
  TORCH_CHECK(target.dim() == 3 && target.size(1) == C && target.size(2) == C,
              "style_loss_forward: target must be (R, C, C) with C = ", C, ", got shape ", target.sizes());
  const int target_code = dtype_code(target.scalar_type(), "style_loss_forward: target");
  const int64_t R = target.size(0);
  if (style_index.has_value()) {
    const Tensor& idx = *style_index;
    TORCH_CHECK(idx.device() == x.device(), "style_loss_forward: style_index must be on x's device ", x.device(),
                ", got ", idx.device());
    TORCH_CHECK(idx.scalar_type() == at::kLong && idx.dim() == 1 && idx.size(0) == B,
                "style_loss_forward: style_index must be int64 of shape (", B, "), got ", idx.scalar_type(),
                " of shape ", idx.sizes());
    TORCH_CHECK(R >= 1 || B == 0, "style_loss_forward: target has no rows to index");
  } else {
    TORCH_CHECK(R == 1 || R == B, "style_loss_forward: without style_index, target must have 1 or B = ", B,
                " rows, got ", R);
  }
  c10::cuda::CUDAGuard guard(x.device());
  Tensor diff = at::empty({B, C, C}, x.options().dtype(at::kFloat));
  Tensor loss = at::empty({B}, x.options().dtype(at::kFloat));
  if (B == 0) return {loss, diff};
  if (C == 0) return {loss.zero_(), diff};

  const Variant v = pick_variant(x, "style_loss_forward");
  FwdPlan p = plan_forward(x, "style_loss_forward");
  // The kernels read style_index as a contiguous (B,) array (a copy only for a strided index). An index outside
  // [0, R) is not read through: its sample's D and loss come out NaN (validated in Python; no device sync here).
  const Tensor idx = style_index.has_value() ? style_index->contiguous() : Tensor();
  Tensor parts = at::empty({B, p.parts_per_sample}, x.options().dtype(at::kFloat));
  gk::Epilogue ep{};
  ep.out = diff.data_ptr();
  ep.out_dtype = gk::kF32;
  ep.target = target.const_data_ptr();
  ep.target_dtype = target_code;
  ep.target_rows = R;
  ep.s_tb = (R == 1 && !idx.defined()) ? 0 : target.stride(0);
  ep.s_tr = target.stride(1);
  ep.s_tc = target.stride(2);
  ep.index = idx.defined() ? idx.const_data_ptr<int64_t>() : nullptr;
  ep.loss_parts = parts.data_ptr<float>();
  ep.l1 = criterion == kCriterionL1 ? 1 : 0;
  ep.scale = float(scale);
  run_forward(x, p, ep, v);
  gk::launch_loss_sum(parts.const_data_ptr<float>(), p.parts_per_sample, loss.data_ptr<float>(), B,
                      c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {loss, diff};
}

Tensor gram_backward(const Tensor& grad, const Tensor& x, double scale) {
  check_x(x, "gram_backward");
  const int64_t B = x.size(0), C = x.size(1);
  TORCH_CHECK(grad.device() == x.device(), "gram_backward: grad must be on x's device ", x.device(), ", got ",
              grad.device());
  TORCH_CHECK(grad.dim() == 3 && grad.size(0) == B && grad.size(1) == C && grad.size(2) == C,
              "gram_backward: grad must be (B, C, C) = (", B, ", ", C, ", ", C, "), got shape ", grad.sizes());
  TORCH_CHECK(at::isFloatingType(grad.scalar_type()), "gram_backward: grad must be a floating tensor, got ",
              grad.scalar_type());
  c10::cuda::CUDAGuard guard(x.device());
  // The kernel reads D in fp32: other dtypes are converted once (B x C x C, small next to x).
  const Tensor d = grad.scalar_type() == at::kFloat ? grad : grad.to(at::kFloat);
  return run_sym_dot("gram_backward", d, nullptr, 0, float(scale), x);
}

Tensor style_loss_backward(const Tensor& coef, const Tensor& diff, const Tensor& x) {
  check_x(x, "style_loss_backward");
  const int64_t B = x.size(0), C = x.size(1);
  TORCH_CHECK(coef.device() == x.device() && diff.device() == x.device(),
              "style_loss_backward: coef and diff must be on x's device ", x.device(), ", got ", coef.device(), " and ",
              diff.device());
  TORCH_CHECK(coef.scalar_type() == at::kFloat && coef.dim() == 1 && coef.size(0) == B,
              "style_loss_backward: coef must be float32 of shape (", B, "), got ", coef.scalar_type(), " of shape ",
              coef.sizes());
  TORCH_CHECK(diff.scalar_type() == at::kFloat && diff.dim() == 3 && diff.size(0) == B && diff.size(1) == C &&
                  diff.size(2) == C,
              "style_loss_backward: diff must be float32 of shape (", B, ", ", C, ", ", C, "), got ",
              diff.scalar_type(), " of shape ", diff.sizes());
  c10::cuda::CUDAGuard guard(x.device());
  return run_sym_dot("style_loss_backward", diff, coef.const_data_ptr<float>(), coef.stride(0), 1.f, x);
}

}  // namespace perceptual_kernels::cuda

TORCH_LIBRARY_IMPL(pk_native, CUDA, m) {
  m.impl("gram_forward", &perceptual_kernels::cuda::gram_forward);
  m.impl("gram_backward", &perceptual_kernels::cuda::gram_backward);
  m.impl("style_loss_forward", &perceptual_kernels::cuda::style_loss_forward);
  m.impl("style_loss_backward", &perceptual_kernels::cuda::style_loss_backward);
}
