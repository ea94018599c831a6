// LPIPS layer distance on CPU (Zhang et al. 2018). At each pixel, with r = ||f|| = sqrt(sum_c f_c^2) over the
// channels and n = f / (r + eps):
//   forward   d_b = mean_hw sum_c w_c (n0_c - n1_c)^2
//   backward  g = 2 w (n0 - n1),  df0 = coef_b (g - f0 (g . f0) / (r0 (r0 + eps))) / (r0 + eps),
//             df1 = coef_b (-g + f1 (g . f1) / (r1 (r1 + eps))) / (r1 + eps)   (second terms 0 where r = 0)
// coef_b is the upstream gradient over H*W, applied in acc_t before the one cast at the store.
//
// Work unit: a run of up to kPix pixels of one image row (b, h). The channel loops run over the run's pixels
// in the innermost loop (unit stride for NCHW, stride C for channels_last), so the per-pixel sums are lanes:
// forward two sweeps over C (the norms, then the weighted squared difference), backward three (norms, the two
// dot products, the stores). Any strides are read in place. The per-pixel distances of a row are summed in a
// fixed order into one double per row, the rows of a sample in row order: deterministic for any thread count.
// fp16 / bf16 are computed in float, float64 in double.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../ops.h"

#include "common.h"
#include "isa.h"

namespace perceptual_kernels::cpu {
namespace {

constexpr int kPix = 64;          // pixels of one row handled together (the lanes of the channel loops)
constexpr int64_t kTaskRows = 1;  // minimum rows per parallel task

struct Plane {  // the (b, h) row of a 4-D tensor: base pointer offset and the channel / width strides
  int64_t sb, sc, sh, sw;
};

inline Plane plane_of(const Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// The run [w0, w0 + n) of row (b, h): returns sum_p d_p (forward) or writes df0 / df1 (NeedGrad).
template <typename scalar_t, bool NeedGrad>
PK_INLINE double lpips_run_impl(const scalar_t* __restrict f0, const scalar_t* __restrict f1, Plane p0, Plane p1,
                                const acc_t<scalar_t>* __restrict wt, int64_t C, int64_t b, int64_t h, int64_t w0,
                                int n, double eps_d, double coef_d, scalar_t* __restrict g0, Plane q0,
                                scalar_t* __restrict g1, Plane q1) {
  using T = acc_t<scalar_t>;
  const T eps = static_cast<T>(eps_d);
  const scalar_t* a = f0 + b * p0.sb + h * p0.sh + w0 * p0.sw;
  const scalar_t* c1 = f1 + b * p1.sb + h * p1.sh + w0 * p1.sw;
  T ss0[kPix] = {}, ss1[kPix] = {};
  for (int64_t c = 0; c < C; ++c) {
    const scalar_t* ac = a + c * p0.sc;
    const scalar_t* bc = c1 + c * p1.sc;
    for (int p = 0; p < n; ++p) {
      const T x0 = static_cast<T>(ac[p * p0.sw]), x1 = static_cast<T>(bc[p * p1.sw]);
      ss0[p] += x0 * x0;
      ss1[p] += x1 * x1;
    }
  }
  T r0[kPix], r1[kPix], inv0[kPix], inv1[kPix];
  for (int p = 0; p < n; ++p) {
    r0[p] = std::sqrt(ss0[p]);
    r1[p] = std::sqrt(ss1[p]);
    inv0[p] = T(1) / (r0[p] + eps);
    inv1[p] = T(1) / (r1[p] + eps);
  }
  if constexpr (!NeedGrad) {
    T d[kPix] = {};
    for (int64_t c = 0; c < C; ++c) {
      const scalar_t* ac = a + c * p0.sc;
      const scalar_t* bc = c1 + c * p1.sc;
      const T wc = wt[c];
      for (int p = 0; p < n; ++p) {
        const T u = static_cast<T>(ac[p * p0.sw]) * inv0[p] - static_cast<T>(bc[p * p1.sw]) * inv1[p];
        d[p] += wc * u * u;
      }
    }
    double total = 0;
    for (int p = 0; p < n; ++p) total += static_cast<double>(d[p]);  // pixel order
    return total;
  } else {
    T dot0[kPix] = {}, dot1[kPix] = {};
    for (int64_t c = 0; c < C; ++c) {
      const scalar_t* ac = a + c * p0.sc;
      const scalar_t* bc = c1 + c * p1.sc;
      const T w2 = T(2) * wt[c];
      for (int p = 0; p < n; ++p) {
        const T x0 = static_cast<T>(ac[p * p0.sw]), x1 = static_cast<T>(bc[p * p1.sw]);
        const T g = w2 * (x0 * inv0[p] - x1 * inv1[p]);
        dot0[p] += g * x0;
        dot1[p] += g * x1;
      }
    }
    const T coef = static_cast<T>(coef_d);
    T k0[kPix], k1[kPix];  // (g . f) / (r (r + eps)): 0 where r = 0 (then f = 0 and the term vanishes)
    T s0[kPix], s1[kPix];  // coef / (r + eps)
    for (int p = 0; p < n; ++p) {
      k0[p] = r0[p] > T(0) ? dot0[p] * inv0[p] / r0[p] : T(0);
      k1[p] = r1[p] > T(0) ? dot1[p] * inv1[p] / r1[p] : T(0);
      s0[p] = coef * inv0[p];
      s1[p] = coef * inv1[p];
    }
    scalar_t* o0 = g0 ? g0 + b * q0.sb + h * q0.sh + w0 * q0.sw : nullptr;
    scalar_t* o1 = g1 ? g1 + b * q1.sb + h * q1.sh + w0 * q1.sw : nullptr;
    for (int64_t c = 0; c < C; ++c) {
      const scalar_t* ac = a + c * p0.sc;
      const scalar_t* bc = c1 + c * p1.sc;
      const T w2 = T(2) * wt[c];
      for (int p = 0; p < n; ++p) {
        const T x0 = static_cast<T>(ac[p * p0.sw]), x1 = static_cast<T>(bc[p * p1.sw]);
        const T g = w2 * (x0 * inv0[p] - x1 * inv1[p]);
        if (o0) o0[c * q0.sc + p * q0.sw] = static_cast<scalar_t>(s0[p] * (g - x0 * k0[p]));
        if (o1) o1[c * q1.sc + p * q1.sw] = static_cast<scalar_t>(s1[p] * (x1 * k1[p] - g));
      }
    }
    return 0;
  }
}

template <typename scalar_t>
using RunFn = double (*)(const scalar_t*, const scalar_t*, Plane, Plane, const acc_t<scalar_t>*, int64_t, int64_t,
                         int64_t, int64_t, int, double, double, scalar_t*, Plane, scalar_t*, Plane);

// The run kernel of one instruction set: lpips_run_impl compiled with TARGET.
#define PK_LPIPS_ISA(NAME, TARGET)                                                                                  \
  struct NAME {                                                                                                     \
    template <typename scalar_t, bool NeedGrad>                                                                     \
    TARGET static double run(const scalar_t* f0, const scalar_t* f1, Plane p0, Plane p1, const acc_t<scalar_t>* wt, \
                             int64_t C, int64_t b, int64_t h, int64_t w0, int n, double eps, double coef,           \
                             scalar_t* g0, Plane q0, scalar_t* g1, Plane q1) {                                      \
      return lpips_run_impl<scalar_t, NeedGrad>(f0, f1, p0, p1, wt, C, b, h, w0, n, eps, coef, g0, q0, g1, q1);     \
    }                                                                                                               \
  };

PK_LPIPS_ISA(IsaGeneric, )
#ifdef PK_X86
PK_LPIPS_ISA(IsaAvx2, PK_TARGET_AVX2)
PK_LPIPS_ISA(IsaAvx512, PK_TARGET_AVX512)
#endif
#undef PK_LPIPS_ISA

template <typename scalar_t, bool NeedGrad>
RunFn<scalar_t> pick_run() {
#ifdef PK_X86
  switch (cpu_isa()) {
    case 2: return &IsaAvx512::run<scalar_t, NeedGrad>;
    case 1: return &IsaAvx2::run<scalar_t, NeedGrad>;
    default: break;
  }
#endif
  return &IsaGeneric::run<scalar_t, NeedGrad>;
}

void check_args(const char* op, const Tensor& f0, const Tensor& f1, const Tensor& weight) {
  TORCH_CHECK(f0.device().is_cpu() && f1.device().is_cpu() && weight.device().is_cpu(), op,
              ": f0, f1 and weight must be CPU tensors, got ", f0.device(), ", ", f1.device(), " and ",
              weight.device());
  TORCH_CHECK(f0.dim() == 4, op, ": f0 must be 4-D (B, C, H, W), got shape ", f0.sizes());
  check_dtype(f0.scalar_type(), op, "f0");
  TORCH_CHECK(f1.sizes() == f0.sizes() && f1.scalar_type() == f0.scalar_type(), op,
              ": f1 must have the shape and dtype of f0 ", f0.sizes(), " ", f0.scalar_type(), ", got ", f1.sizes(), " ",
              f1.scalar_type());
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == f0.size(1) && weight.is_contiguous() &&
                  weight.scalar_type() == acc_dtype(f0.scalar_type()),
              op, ": weight must be a contiguous (", f0.size(1), ",) ", acc_dtype(f0.scalar_type()), " tensor, got ",
              weight.scalar_type(), " of shape ", weight.sizes());
}

}  // namespace

Tensor lpips_forward(const Tensor& f0, const Tensor& f1, const Tensor& weight, double eps) {
  check_args("lpips_forward", f0, f1, weight);
  const int64_t B = f0.size(0), C = f0.size(1), H = f0.size(2), W = f0.size(3);
  Tensor out = at::empty({B}, f0.options().dtype(acc_dtype(f0.scalar_type())));
  if (f0.numel() == 0) return out.fill_(NAN);  // mean over no pixels, as torch
  std::vector<double> rows(B * H);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f0.scalar_type(), "lpips_forward", [&] {
    using T = acc_t<scalar_t>;
    const auto run = pick_run<scalar_t, false>();
    const scalar_t* a = f0.const_data_ptr<scalar_t>();
    const scalar_t* c = f1.const_data_ptr<scalar_t>();
    const T* wt = weight.const_data_ptr<T>();
    const Plane p0 = plane_of(f0), p1 = plane_of(f1);
    at::parallel_for(0, B * H, kTaskRows, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / H, h = row % H;
        double total = 0;
        for (int64_t w0 = 0; w0 < W; w0 += kPix) {
          const int n = static_cast<int>(std::min<int64_t>(kPix, W - w0));
          total += run(a, c, p0, p1, wt, C, b, h, w0, n, eps, 0.0, nullptr, p0, nullptr, p1);
        }
        rows[row] = total;
      }
    });
  });
  auto* op = out.data_ptr();
  for (int64_t b = 0; b < B; ++b) {
    double s = 0;
    for (int64_t h = 0; h < H; ++h) s += rows[b * H + h];  // row order
    s /= static_cast<double>(H * W);
    if (out.scalar_type() == at::kDouble) {
      static_cast<double*>(op)[b] = s;
    } else {
      static_cast<float*>(op)[b] = static_cast<float>(s);
    }
  }
  return out;
}

std::tuple<Tensor, Tensor> lpips_backward(const Tensor& f0, const Tensor& f1, const Tensor& weight, double eps,
                                          const Tensor& coef, bool need_grad0, bool need_grad1) {
  check_args("lpips_backward", f0, f1, weight);
  const int64_t B = f0.size(0), C = f0.size(1), H = f0.size(2), W = f0.size(3);
  TORCH_CHECK(coef.device().is_cpu() && coef.dim() == 1 && coef.size(0) == B &&
                  coef.scalar_type() == acc_dtype(f0.scalar_type()),
              "lpips_backward: coef must be a (", B, ",) ", acc_dtype(f0.scalar_type()), " CPU tensor, got ",
              coef.scalar_type(), " of shape ", coef.sizes(), " on ", coef.device());
  Tensor g0 = need_grad0 ? at::empty_like(f0) : at::empty({0}, f0.options());
  Tensor g1 = need_grad1 ? at::empty_like(f1) : at::empty({0}, f1.options());
  if (f0.numel() == 0 || !(need_grad0 || need_grad1)) return {g0, g1};
  const Tensor coef_d = coef.to(at::kDouble).contiguous();
  const double* cp = coef_d.const_data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f0.scalar_type(), "lpips_backward", [&] {
    using T = acc_t<scalar_t>;
    const auto run = pick_run<scalar_t, true>();
    const scalar_t* a = f0.const_data_ptr<scalar_t>();
    const scalar_t* c = f1.const_data_ptr<scalar_t>();
    const T* wt = weight.const_data_ptr<T>();
    const Plane p0 = plane_of(f0), p1 = plane_of(f1);
    scalar_t* o0 = need_grad0 ? g0.data_ptr<scalar_t>() : nullptr;
    scalar_t* o1 = need_grad1 ? g1.data_ptr<scalar_t>() : nullptr;
    const Plane q0 = need_grad0 ? plane_of(g0) : p0, q1 = need_grad1 ? plane_of(g1) : p1;
    at::parallel_for(0, B * H, kTaskRows, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / H, h = row % H;
        for (int64_t w0 = 0; w0 < W; w0 += kPix) {
          const int n = static_cast<int>(std::min<int64_t>(kPix, W - w0));
          run(a, c, p0, p1, wt, C, b, h, w0, n, eps, cp[b], o0, q0, o1, q1);
        }
      }
    });
  });
  return {g0, g1};
}

}  // namespace perceptual_kernels::cpu

TORCH_LIBRARY_IMPL(pk_native, CPU, m) {
  m.impl("lpips_forward", &perceptual_kernels::cpu::lpips_forward);
  m.impl("lpips_backward", &perceptual_kernels::cpu::lpips_backward);
}
