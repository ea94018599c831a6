// Run-time choice of the CPU instruction set. The extension is compiled for baseline x86-64 (no -march), so the
// hot loops are compiled again for AVX2 and AVX-512 (function target attributes, bodies forced inline) and the
// best set the CPU supports is picked once, at the first call.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>

#if defined(__GNUC__) && defined(__x86_64__)
#define PK_X86 1
#define PK_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define PK_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#endif
#if defined(__GNUC__)
#define PK_INLINE inline __attribute__((always_inline))  // inlined into each instruction set's kernel
#define PK_INLINE_LAMBDA __attribute__((always_inline))
#else
#define PK_INLINE inline
#define PK_INLINE_LAMBDA
#endif

namespace perceptual_kernels::cpu {

// 2 = AVX-512 (F, BW, VL, DQ), 1 = AVX2 + FMA + F16C, 0 = baseline; capped like torch's own kernels by
// ATEN_CPU_CAPABILITY=default / avx2.
inline int cpu_isa() {
#ifdef PK_X86
  static const int isa = [] {
    __builtin_cpu_init();
    int best = 0;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq")) {
      best = 2;
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
      best = 1;
    }
    const char* cap = std::getenv("ATEN_CPU_CAPABILITY");
    if (cap != nullptr && std::strcmp(cap, "default") == 0) best = 0;
    if (cap != nullptr && std::strcmp(cap, "avx2") == 0) best = std::min(best, 1);
    return best;
  }();
  return isa;
#else
  return 0;
#endif
}

}  // namespace perceptual_kernels::cpu
