// Host-side helpers shared by the CPU kernel files (csrc/cpu/<op>.cpp): the accumulation type, the dtypes the
// kernels take, and the argument checks that several ops repeat (x, style_index, tables indexed by it). Every
// message starts with the op's name and names the argument.
#pragma once

#include <ATen/OpMathType.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "../ops.h"

namespace perceptual_kernels::cpu {

// acc_t<T>: the accumulation type of element type T (double for double, float for float / half / bfloat16);
// acc_dtype: the same for a dtype ("acc" in ops.h).
template <typename T>
using acc_t = at::opmath_type<T>;

inline at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// The dtypes the kernels compute on.
inline bool is_supported(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// The argument `name` of op, of dtype t, has a supported dtype.
inline void check_dtype(at::ScalarType t, const char* op, const char* name) {
  TORCH_CHECK(is_supported(t), op, ": ", name, " must be float32, float64, float16 or bfloat16, got ", t);
}

// x is a 4-D (B, C, H, W) CPU tensor of a supported dtype.
inline void check_x(const Tensor& x, const char* op) {
  TORCH_CHECK(x.device().is_cpu(), op, ": x must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (B, C, H, W), got shape ", x.sizes());
  check_dtype(x.scalar_type(), op, "x");
}

// style_index, when given, is an int64 CPU tensor of shape (B,) (any stride); its values are checked per table
// by check_table_rows.
inline void check_index(const OptionalTensor& style_index, int64_t B, const char* op) {
  if (!style_index) return;
  const Tensor& idx = *style_index;
  TORCH_CHECK(idx.device().is_cpu() && idx.scalar_type() == at::kLong && idx.dim() == 1 && idx.size(0) == B, op,
              ": style_index must be an int64 CPU tensor of shape (B,) = (", B, ",), got ", idx.scalar_type(),
              " of shape ", idx.sizes(), " on ", idx.device());
}

// A table of `rows` rows read per sample (name: target, gamma, beta): with style_index (passed check_index) row
// style_index[b], so every value must lie in [0, rows); without it row 0 or row b, so rows must be 1 or B.
inline void check_table_rows(const OptionalTensor& style_index, int64_t rows, int64_t B, const char* op,
                             const char* name) {
  if (style_index) {
    const Tensor& idx = *style_index;
    const int64_t* ip = idx.const_data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      const int64_t r = ip[b * idx.stride(0)];
      TORCH_CHECK(r >= 0 && r < rows, op, ": style_index[", b, "] = ", r, " is out of range for the ", rows,
                  " rows of ", name);
    }
  } else {
    TORCH_CHECK(rows == 1 || rows == B, op, ": without style_index, ", name, " must have 1 or B = ", B, " rows, got ",
                rows);
  }
}

}  // namespace perceptual_kernels::cpu
