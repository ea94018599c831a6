// Gram matrix and fused style loss on the CPU.
//
// Per sample b, with F_b = x[b] as a C x M matrix (M = H * W):
//   G_b = F_b F_b^T * scale                                  (gram_forward)
//   D_b = G_b - A_b,  loss_b = sum_ij D_b[i, j]^2             (style_loss_forward, l2)
//   loss_b = sum_ij |D_b[i, j]|, sign(D_b) returned for D_b    (style_loss_forward, l1)
//   dF_b = S_b F_b,  S_b = coef_b (D_b + D_b^T)              (style_loss_backward; gram_backward: D = dG, coef = scale)
// The products run on ATen's BLAS-backed matmul; the small C x C passes (mirror + scale + cast, target gather +
// loss, symmetrisation) are written out here. G is symmetric, so for large C only the lower column panels
// G[p:, p:q] = F[p:] F[p:q]^T are multiplied ((k + 1) / 2k of the flops with k panels) and the epilogue mirrors
// them. The backward is ONE product per sample: S_b is formed first (a C x C pass), never (D F) + (D^T F).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../ops.h"

#include "common.h"
#include "isa.h"

namespace perceptual_kernels::cpu {
namespace {

constexpr int64_t kTile = 32;  // the C x C passes walk kTile x kTile tiles, so the transposed side stays in cache

void check_square(const Tensor& t, const char* op, const char* name, int64_t rows, int64_t C) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", t.device());
  check_dtype(t.scalar_type(), op, name);
  TORCH_CHECK(t.dim() == 3 && t.size(1) == C && t.size(2) == C && (rows < 0 || t.size(0) == rows), op, ": ", name,
              " must be (", rows < 0 ? "R" : std::to_string(rows), ", ", C, ", ", C, "), got shape ", t.sizes());
}

// F = x as (B, C, M) in the acc dtype. Contiguous and channels_last x are views (channels_last gives strides
// (HWC, 1, C), which BLAS reads transposed, no copy); fp16 / bf16 are converted to float once (one copy, layout
// kept); any other layout (sliced or permuted x) is copied once with .contiguous().
Tensor features(const Tensor& x) {
  Tensor f = x.to(acc_dtype(x.scalar_type()));
  if (!f.is_contiguous() && !f.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    f = f.contiguous();
  }
  return f.flatten(2);
}

// Column panels of the Gram product per sample (1: one plain bmm for the batch). Measured with MKL on 2 cores
// (gram_forward, against the plain bmm): 3 panels win for C >= 256 (1.1-1.3x). Below that they win only for
// contiguous x with M >= 2048 (2 panels for C < 128, 3 above: 1.1-1.5x; MKL runs the C x M by M x C product of that
// layout slower), while for channels_last x the plain bmm is as fast for B = 1 and faster for B > 1 (batched).
int64_t num_panels(int64_t C, int64_t M, bool channels_last) {
  if (C >= 256) return 3;
  if (channels_last || M < 2048) return 1;
  return C >= 128 ? 3 : (C >= 64 ? 2 : 1);
}

// (B, C, C) acc contiguous whose lower triangle (j <= i) holds F_b F_b^T (unscaled); the epilogue mirrors it.
Tensor lower_gram(const Tensor& f) {
  const int64_t B = f.size(0), C = f.size(1), M = f.size(2);
  Tensor g = at::empty({B, C, C}, f.options());
  const int64_t k = num_panels(C, M, f.stride(2) != 1);
  if (k == 1) {
    at::bmm_out(g, f, f.transpose(1, 2));
    return g;
  }
  for (int64_t b = 0; b < B; ++b) {
    const Tensor fb = f[b], gb = g[b];
    for (int64_t j = 0; j < k; ++j) {  // panel j: columns [p, q) of the rows [p, C)
      const int64_t p = C * j / k / 16 * 16, q = j + 1 == k ? C : C * (j + 1) / k / 16 * 16;
      Tensor panel = gb.slice(0, p).slice(1, p, q);  // a strided view of G: BLAS writes it with ldc = C
      at::mm_out(panel, fb.slice(0, p), fb.slice(0, p, q).t());
    }
  }
  return g;
}

// Calls tile(b, i0, j0) -> double for every lower tile (j0 <= i0) of each sample's C x C matrix. Work unit u of
// a sample owns tile rows u and T-1-u (together T + 1 tiles, so the units are balanced); the units run in parallel
// and each sums what its tiles return. Returns the per-sample sums, added in unit order (independent of threads).
template <class Tile>
std::vector<double> for_lower_tiles(int64_t B, int64_t C, const Tile& tile) {
  const int64_t T = (C + kTile - 1) / kTile, U = (T + 1) / 2;
  std::vector<double> partial(B * U, 0.0);
  auto tile_row = [&](int64_t b, int64_t t) {
    double sum = 0.0;
    for (int64_t s = 0; s <= t; ++s) sum += tile(b, t * kTile, s * kTile);
    return sum;
  };
  at::parallel_for(0, B * U, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      const int64_t b = w / U, u = w % U;
      partial[w] = tile_row(b, u) + (T - 1 - u != u ? tile_row(b, T - 1 - u) : 0.0);
    }
  });
  std::vector<double> total(B, 0.0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t u = 0; u < U; ++u) total[b] += partial[b * U + u];
  }
  return total;
}

// The tile kernels below cover the lower tile (I, J) = rows [i0, i0 + kTile) x columns [j0, j0 + kTile), j0 <= i0
// (on a diagonal tile only j <= i), together with its mirror (J, I); C x C matrices are contiguous.

// Gram epilogue: o[i][j] = o[j][i] = s g[i][j] (cast). o may alias g: the mirror is written from G first.
template <class acc_t, class out_t>
void gram_tile(const acc_t* g, out_t* o, int64_t C, int64_t i0, int64_t j0, acc_t s) {
  const int64_t i1 = std::min(C, i0 + kTile), j1 = std::min(C, j0 + kTile);
  for (int64_t j = j0; j < j1; ++j) {
    out_t* orow = o + j * C;
    for (int64_t i = std::max(i0, j + 1); i < i1; ++i) orow[i] = static_cast<out_t>(g[i * C + j] * s);
  }
  for (int64_t i = i0; i < i1; ++i) {
    const acc_t* grow = g + i * C;
    out_t* orow = o + i * C;
    for (int64_t j = j0, je = std::min(j1, i + 1); j < je; ++j) orow[j] = static_cast<out_t>(grow[j] * s);
  }
}

// Style loss: D = s G - A in place over G (d), A[i][j] = a[i * tr + j * tc] of any float dtype. Returns the sum
// of the squares (L1: of |D|, and sign(D) is stored in place of D; sign(0) = 0, sign(NaN) = NaN): acc lanes, one
// per column of the tile (at most 2 kTile terms each, a fixed order), summed in double.
template <bool L1, class acc_t>
PK_INLINE acc_t style_term(acc_t diff, acc_t& stored) {
  if constexpr (L1) {
    stored = diff > acc_t(0) ? acc_t(1) : (diff < acc_t(0) ? acc_t(-1) : diff);
    return std::abs(diff);
  } else {
    stored = diff;
    return diff * diff;
  }
}

template <bool L1, class acc_t, class t_t>
double style_tile(acc_t* d, const t_t* a, int64_t tr, int64_t tc, int64_t C, int64_t i0, int64_t j0, acc_t s) {
  const int64_t i1 = std::min(C, i0 + kTile), j1 = std::min(C, j0 + kTile);
  acc_t lanes[kTile] = {};
  for (int64_t j = j0; j < j1; ++j) {  // the mirror first, from G[i][j]
    acc_t* drow = d + j * C;
    const t_t* arow = a + j * tr;
    for (int64_t i = std::max(i0, j + 1); i < i1; ++i) {
      const acc_t diff = d[i * C + j] * s - static_cast<acc_t>(arow[i * tc]);
      lanes[i - i0] += style_term<L1>(diff, drow[i]);
    }
  }
  for (int64_t i = i0; i < i1; ++i) {
    acc_t* drow = d + i * C;
    const t_t* arow = a + i * tr;
    for (int64_t j = j0, je = std::min(j1, i + 1); j < je; ++j) {
      const acc_t diff = drow[j] * s - static_cast<acc_t>(arow[j * tc]);
      lanes[j - j0] += style_term<L1>(diff, drow[j]);
    }
  }
  double sum = 0.0;
  for (int64_t l = 0; l < kTile; ++l) sum += lanes[l];
  return sum;
}

// Backward: o[i][j] = o[j][i] = c (d[i][j] + d[j][i]).
template <class acc_t>
void sym_tile(const acc_t* __restrict__ d, acc_t* __restrict__ o, int64_t C, int64_t i0, int64_t j0, acc_t c) {
  const int64_t i1 = std::min(C, i0 + kTile), j1 = std::min(C, j0 + kTile);
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t j = j0, je = std::min(j1, i + 1); j < je; ++j) o[i * C + j] = c * (d[i * C + j] + d[j * C + i]);
  }
  for (int64_t j = j0; j < j1; ++j) {
    for (int64_t i = std::max(i0, j + 1); i < i1; ++i) o[j * C + i] = c * (d[j * C + i] + d[i * C + j]);
  }
}

// S_b = coef_b (D_b + D_b^T) as (B, C, C) acc contiguous; coef (B,) acc. d of another dtype or layout (an fp16
// or transposed gradient) is first converted to acc contiguous (one C x C copy per sample).
Tensor symmetrise(const Tensor& d_any, const Tensor& coef, at::ScalarType acc) {
  const Tensor d = d_any.to(acc).contiguous();
  const int64_t B = d.size(0), C = d.size(1);
  Tensor s = at::empty({B, C, C}, d.options());
  AT_DISPATCH_FLOATING_TYPES(acc, "pk_gram_symmetrise", [&] {
    const scalar_t* dp = d.const_data_ptr<scalar_t>();
    const scalar_t* cp = coef.const_data_ptr<scalar_t>();
    scalar_t* sp = s.mutable_data_ptr<scalar_t>();
    for_lower_tiles(B, C, [&](int64_t b, int64_t i0, int64_t j0) {
      sym_tile(dp + b * C * C, sp + b * C * C, C, i0, j0, cp[b]);
      return 0.0;
    });
  });
  return s;
}

// dx = S_b F_b in x's dtype and memory format, with one product per sample written straight into dx (or into an
// acc buffer of dx's layout that is cast into dx once, for fp16 / bf16).
Tensor sym_product(const Tensor& s, const Tensor& x) {
  const int64_t B = x.size(0), C = x.size(1), M = x.size(2) * x.size(3);
  const Tensor f = features(x);
  Tensor dx = at::empty_like(x);
  Tensor out = dx.scalar_type() == f.scalar_type() ? dx : at::empty_like(dx, dx.options().dtype(f.scalar_type()));
  if (out.is_contiguous(at::MemoryFormat::ChannelsLast) && !out.is_contiguous()) {
    // dx as (B, M, C) row-major: F^T S = (S F)^T since S is symmetric
    Tensor view = out.permute({0, 2, 3, 1}).view({B, M, C});
    at::bmm_out(view, f.transpose(1, 2), s);
  } else {
    // a dense permuted dx (neither layout) is computed contiguous and copied into dx once
    if (!out.is_contiguous()) out = at::empty(x.sizes(), f.options());
    Tensor view = out.view({B, C, M});
    at::bmm_out(view, s, f);
  }
  if (!out.is_same(dx)) dx.copy_(out);
  return dx;
}

}  // namespace

Tensor gram_forward(const Tensor& x, double scale, at::ScalarType out_dtype) {
  check_x(x, "gram_forward");
  check_dtype(out_dtype, "gram_forward", "out_dtype");
  const int64_t B = x.size(0), C = x.size(1);
  Tensor g = lower_gram(features(x));
  Tensor out = out_dtype == g.scalar_type() ? g : at::empty({B, C, C}, g.options().dtype(out_dtype));
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "pk_gram_forward", [&] {
    using acc_t = scalar_t;
    const acc_t* gp = g.const_data_ptr<acc_t>();
    const acc_t s = static_cast<acc_t>(scale);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out_dtype, "pk_gram_forward_out", [&] {
      scalar_t* op = out.mutable_data_ptr<scalar_t>();  // may alias gp
      for_lower_tiles(B, C, [&](int64_t b, int64_t i0, int64_t j0) {
        gram_tile(gp + b * C * C, op + b * C * C, C, i0, j0, s);
        return 0.0;
      });
    });
  });
  return out;
}

Tensor gram_backward(const Tensor& grad, const Tensor& x, double scale) {
  check_x(x, "gram_backward");
  const int64_t B = x.size(0), C = x.size(1);
  check_square(grad, "gram_backward", "grad", B, C);
  const at::ScalarType acc = acc_dtype(x.scalar_type());
  return sym_product(symmetrise(grad, at::full({B}, scale, x.options().dtype(acc)), acc), x);
}

std::tuple<Tensor, Tensor> style_loss_forward(const Tensor& x, const Tensor& target, const OptionalTensor& style_index,
                                              double scale, int64_t criterion) {
  check_x(x, "style_loss_forward");
  TORCH_CHECK(criterion == kCriterionL2 || criterion == kCriterionL1, "style_loss_forward: criterion must be ",
              kCriterionL2, " (l2) or ", kCriterionL1, " (l1), got ", criterion);
  const bool l1 = criterion == kCriterionL1;
  const int64_t B = x.size(0), C = x.size(1);
  check_square(target, "style_loss_forward", "target", -1, C);
  const int64_t R = target.size(0);
  check_index(style_index, B, "style_loss_forward");
  check_table_rows(style_index, R, B, "style_loss_forward", "target");
  std::vector<int64_t> rows(B);  // target row of each sample
  const int64_t* ip = style_index ? style_index->const_data_ptr<int64_t>() : nullptr;
  for (int64_t b = 0; b < B; ++b) rows[b] = ip ? ip[b * style_index->stride(0)] : (R == 1 ? 0 : b);
  Tensor d = lower_gram(features(x));  // becomes D in place
  Tensor loss = at::empty({B}, d.options());
  const int64_t tb = target.stride(0), tr = target.stride(1), tc = target.stride(2);
  AT_DISPATCH_FLOATING_TYPES(d.scalar_type(), "pk_style_loss_forward", [&] {
    using acc_t = scalar_t;
    acc_t* dp = d.mutable_data_ptr<acc_t>();  // G in, D out
    const acc_t s = static_cast<acc_t>(scale);
    std::vector<double> sums;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, target.scalar_type(), "pk_style_loss_target", [&] {
      const scalar_t* tp = target.const_data_ptr<scalar_t>();
      sums = for_lower_tiles(B, C, [&](int64_t b, int64_t i0, int64_t j0) {
        return l1 ? style_tile<true>(dp + b * C * C, tp + rows[b] * tb, tr, tc, C, i0, j0, s)
                  : style_tile<false>(dp + b * C * C, tp + rows[b] * tb, tr, tc, C, i0, j0, s);
      });
    });
    acc_t* lp = loss.mutable_data_ptr<acc_t>();
    for (int64_t b = 0; b < B; ++b) lp[b] = static_cast<acc_t>(sums[b]);
  });
  return {loss, d};
}

Tensor style_loss_backward(const Tensor& coef, const Tensor& diff, const Tensor& x) {
  check_x(x, "style_loss_backward");
  const int64_t B = x.size(0), C = x.size(1);
  check_square(diff, "style_loss_backward", "diff", B, C);
  TORCH_CHECK(coef.device().is_cpu() && coef.dim() == 1 && coef.size(0) == B && is_supported(coef.scalar_type()),
              "style_loss_backward: coef must be a float CPU tensor of shape (", B, "), got ", coef.scalar_type(), " ",
              coef.sizes(), " on ", coef.device());
  const at::ScalarType acc = acc_dtype(x.scalar_type());
  return sym_product(symmetrise(diff, coef.to(acc).contiguous(), acc), x);
}

}  // namespace perceptual_kernels::cpu

TORCH_LIBRARY_IMPL(pk_native, CPU, m) {
  m.impl("gram_forward", &perceptual_kernels::cpu::gram_forward);
  m.impl("gram_backward", &perceptual_kernels::cpu::gram_backward);
  m.impl("style_loss_forward", &perceptual_kernels::cpu::style_loss_forward);
  m.impl("style_loss_backward", &perceptual_kernels::cpu::style_loss_backward);
}
