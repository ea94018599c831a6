// CUDA launchers of the Gram matrix and the fused style loss (kernels and design in gram.cuh):
//   gram_forward         G_b = scale * F_b F_b^T -> (B, C, C) of out_dtype
//   style_loss_forward   D_b = G_b - A_b (fp32), loss_b = sum_ij D_b[i, j]^2 (fp32)
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

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxGridYZ = 65535;
constexpr int64_t kMinStepsPerSplit = 8;  // a split-K range covers at least 8 * 32 plane positions

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

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

// Product of the tiles for x's dtype: tensor cores for fp16 / bf16, tf32 tensor cores for fp32 when the fp32
// precision policy ("high" / "medium") allows it, exact fp32 FMA otherwise.
enum class Variant { kF32Simt, kF32Tf32, kF16, kBF16 };

Variant pick_variant(const Tensor& x, const char* op) {
  const bool sm80 = device_attribute(cudaDevAttrComputeCapabilityMajor, x.get_device()) >= 8;
  if (x.scalar_type() == at::kFloat) {
    const bool tf32 = at::globalContext().float32MatmulPrecision() != at::Float32MatmulPrecision::HIGHEST;
    return sm80 && tf32 ? Variant::kF32Tf32 : Variant::kF32Simt;
  }
  TORCH_CHECK(sm80, op, ": ", x.scalar_type(), " inputs need a GPU of compute capability 8.0 or newer");
  return x.scalar_type() == at::kHalf ? Variant::kF16 : Variant::kBF16;
}

// Calls f(T* null, std::integral_constant<int, MODE>) for the variant's kernel template arguments.
template <typename F>
void with_variant(Variant v, F&& f) {
  switch (v) {
    case Variant::kF32Simt: f(static_cast<float*>(nullptr), std::integral_constant<int, gk::kSimt>()); break;
    case Variant::kF32Tf32: f(static_cast<float*>(nullptr), std::integral_constant<int, gk::kTf32>()); break;
    case Variant::kF16: f(static_cast<__half*>(nullptr), std::integral_constant<int, gk::kWmma16>()); break;
    case Variant::kBF16: f(static_cast<__nv_bfloat16*>(nullptr), std::integral_constant<int, gk::kWmma16>()); break;
  }
}

// How to walk the H*W plane of t as one index m (triton/_common.py hw_layout): one stride when the plane is
// contiguous in m (NCHW, channels_last, H == 1 or W == 1), else m -> (m / W, m % W).
gk::Plane plane_of(const Tensor& t, const char* op) {
  const int64_t H = t.size(2), W = t.size(3), s_h = t.stride(2), s_w = t.stride(3);
  if (W == 1) return {0, s_h, 1, 0};
  if (H == 1 || s_h == W * s_w) return {0, s_w, 1, 0};
  TORCH_CHECK(H * W <= int64_t(std::numeric_limits<uint32_t>::max()), op,
              ": a strided (sliced) H x W plane must have fewer than 2^32 elements, got ", H, " x ", W);
  return {s_h, s_w, uint32_t(W), 1};
}

gk::XDesc x_desc(const Tensor& t, const char* op) {
  const gk::Plane p = plane_of(t, op);
  // Threads walk the dimension with the smaller stride so that a warp's loads / stores are coalesced.
  const bool channel_fast = t.size(1) > 1 && std::abs(t.stride(1)) < std::abs(p.s_w);
  return {t.stride(0), t.stride(1), p, channel_fast ? 1 : 0};
}

void check_x(const Tensor& x, const char* op) {
  TORCH_CHECK(x.is_cuda(), op, ": x must be a CUDA tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (B, C, H, W), got shape ", x.sizes());
  TORCH_CHECK(is_kernel_dtype(x.scalar_type()), op, ": x must be float32, float16 or bfloat16, got ", x.scalar_type());
}

// Forward launch configuration: upper-triangle tiles and split-K.
struct FwdPlan {
  gk::FwdArgs args;
  int64_t splits;
  int64_t parts_per_sample;  // style loss partial sums per sample
};

FwdPlan plan_forward(const Tensor& x, const char* op) {
  const int64_t B = x.size(0), C = x.size(1), M = x.size(2) * x.size(3);
  const int64_t n_row = cdiv(C, gk::kTile), n_up = n_row * (n_row + 1) / 2;
  TORCH_CHECK(B * n_up * gk::kTile <= kInt32Max, op, ": B = ", B, " and C = ", C, " need more blocks than a CUDA grid ",
              "holds");
  // Split the reduction over M when the tiles alone would not cover the GPU about twice (tall-skinny shapes).
  const int64_t sms = device_attribute(cudaDevAttrMultiProcessorCount, x.get_device());
  const int64_t k_steps = cdiv(M, gk::kStep);
  int64_t wanted = std::max<int64_t>(1, 2 * sms / std::max<int64_t>(1, B * n_up));
  wanted = std::min(wanted, std::max<int64_t>(1, k_steps / kMinStepsPerSplit));
  const int64_t per_split = std::max<int64_t>(1, cdiv(k_steps, wanted)) * gk::kStep;
  const int64_t splits = M > 0 ? cdiv(M, per_split) : 1;
  TORCH_CHECK(splits <= kMaxGridYZ, op, ": internal error: ", splits, " split-K ranges");

  FwdPlan p{};
  p.args.B = B;
  p.args.C = C;
  p.args.M = M;
  p.args.x = x_desc(x, op);
  p.args.n_row = int(n_row);
  p.args.n_up = uint32_t(n_up);
  p.args.k_per_split = per_split;
  p.args.ws = nullptr;
  p.splits = splits;
  p.parts_per_sample = splits > 1 ? n_up * gk::kTile : n_up;
  return p;
}

// Runs the forward kernels (ep.loss_parts set: style mode, with B * p.parts_per_sample partial sums).
void run_forward(const Tensor& x, FwdPlan& p, const gk::Epilogue& ep, Variant v) {
  auto stream = c10::cuda::getCurrentCUDAStream();
  Tensor ws;  // split-K partial tiles, (splits, B, C, C) fp32
  if (p.splits > 1) {
    ws = at::empty({p.splits, p.args.B, p.args.C, p.args.C}, x.options().dtype(at::kFloat));
    p.args.ws = ws.data_ptr<float>();
  }
  const dim3 grid(unsigned(p.args.B * p.args.n_up), unsigned(p.splits));
  with_variant(v, [&](auto* tag, auto mode) {
    using T = std::remove_pointer_t<decltype(tag)>;
    gk::gram_fwd_kernel<T, decltype(mode)::value>
        <<<grid, gk::kThreads, 0, stream>>>(static_cast<const T*>(x.const_data_ptr()), p.args, ep);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (p.splits > 1) {
    gk::gram_reduce_kernel<<<unsigned(p.args.B * p.args.n_up * gk::kTile), gk::kThreads, 0, stream>>>(
        p.args.ws, p.splits, p.args, ep);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// dF_b = scale * coef_b * (D_b + D_b^T) F_b (coef == nullptr: coef_b = 1) into at::empty_like(x).
Tensor run_sym_dot(const char* op, const Tensor& d, const float* coef, int64_t s_cb, float scale, const Tensor& x) {
  Tensor dx = at::empty_like(x);
  if (dx.numel() == 0) return dx;
  const int64_t B = x.size(0), C = x.size(1), M = x.size(2) * x.size(3);
  // The kernel addresses D inside one sample (rows / columns padded to C + 63) with int32 offsets; a copy
  // (C x C per sample) only if they would overflow.
  const auto fits = [C](const Tensor& t) {
    return (C + gk::kTile - 1) * (std::abs(t.stride(1)) + std::abs(t.stride(2))) <= kInt32Max;
  };
  const Tensor dd = fits(d) ? d : d.contiguous();
  TORCH_CHECK(fits(dd), op, ": C = ", C, " is too large");
  const int64_t m_tiles = cdiv(M, gk::kTile), c_tiles = cdiv(C, gk::kTile);
  TORCH_CHECK(m_tiles <= kInt32Max && c_tiles <= kMaxGridYZ, op, ": x of shape ", x.sizes(),
              " needs more blocks than a CUDA grid holds");

  gk::BwdArgs a{};
  a.C = C;
  a.M = M;
  a.x = x_desc(x, op);
  a.dx = x_desc(dx, op);
  a.d = dd.const_data_ptr<float>();
  a.s_db = dd.stride(0);
  a.s_dr = int(dd.stride(1));
  a.s_dc = int(dd.stride(2));
  a.coef = coef;
  a.s_cb = s_cb;
  a.scale = scale;
  const Variant v = pick_variant(x, op);
  auto stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t b0 = 0; b0 < B; b0 += kMaxGridYZ) {  // grid.z holds at most 65535 samples per launch
    a.b0 = b0;
    const dim3 grid(unsigned(m_tiles), unsigned(c_tiles), unsigned(std::min(kMaxGridYZ, B - b0)));
    with_variant(v, [&](auto* tag, auto mode) {
      using T = std::remove_pointer_t<decltype(tag)>;
      gk::sym_dot_kernel<T, decltype(mode)::value><<<grid, gk::kThreads, 0, stream>>>(
          static_cast<const T*>(x.const_data_ptr()), static_cast<T*>(dx.data_ptr()), a);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
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
                                              double scale) {
  check_x(x, "style_loss_forward");
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
  ep.scale = float(scale);
  run_forward(x, p, ep, v);
  gk::loss_sum_kernel<<<unsigned(B), gk::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      parts.const_data_ptr<float>(), p.parts_per_sample, loss.data_ptr<float>());
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
