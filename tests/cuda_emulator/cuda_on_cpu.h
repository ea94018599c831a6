// CUDA execution model on the CPU, for tests only: lets g++ compile the kernels of csrc/cuda/*.cuh unchanged
// and run them (tests/cuda_emulator/README.md).
//
// * Every CUDA thread of a block is a fiber (256 KiB stack above a guard page; an x86-64 context switch that saves
//   the callee-saved registers, cheaper than swapcontext and not intercepted by ASan); blocks run one after
//   another. Between two synchronisation points the ready fibers of a block run in a chosen order
//   (forward, reverse or seeded random; the block order follows it too), so a missing __syncthreads or a
//   warp-synchronous assumption changes the result from one order to another.
// * __syncthreads: all live threads of the block at the same call site, else an error (barrier in divergent
//   code, threads that exited while others wait). Warp collectives (__shfl*_sync, __syncwarp, WMMA) wait for
//   every lane named in the mask; lanes exchange values only there, a named lane that exited or waits elsewhere
//   is an error, as is a source lane outside the mask.
// * __shared__ variables are function-local statics: all fibers of a block share them. The linker script
//   shared.ld gathers the statics of namespace perceptual_kernels into one section that is filled with 0xff
//   bytes (NaN / -1) before every block, so data read before it is written in a block, or left by the previous
//   block, shows up. ASan puts its redzones around them (out-of-bounds shared accesses are reported).
// * WMMA fragments: every lane holds the whole tile; mma_sync multiplies operands rounded as the hardware takes
//   them (tf32: low 13 bits dropped; fp16 / bf16 exact) with fp32 products and fp32 accumulation in k order.
// * __half / __nv_bfloat16 conversions round to nearest even; __float_to_tf32 rounds to nearest, ties away.
// Any error prints "CUDA-EMU ERROR: ..." and exits with status 3; __trap() too.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUDA_EMU_ASAN 1
#else
#define CUDA_EMU_ASAN 0
#endif

// ---- keywords -------------------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
#define CUDA_EMU 1

// ---- vector types (CUDA's sizes and alignments) -----------------------------------------------------------------
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) int2 {
  int x, y;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
struct alignas(16) double2 {
  double x, y;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
typedef struct CUstream_st* cudaStream_t;

// ---- device math ------------------------------------------------------------------------------------------------
#define CUDA_EMU_MINMAX(T)                         \
  inline T min(T a, T b) { return b < a ? b : a; } \
  inline T max(T a, T b) { return a < b ? b : a; }
CUDA_EMU_MINMAX(int)
CUDA_EMU_MINMAX(unsigned)
CUDA_EMU_MINMAX(long)
CUDA_EMU_MINMAX(unsigned long)
CUDA_EMU_MINMAX(long long)
CUDA_EMU_MINMAX(unsigned long long)
#undef CUDA_EMU_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline float rsqrtf(float v) { return 1.f / std::sqrt(v); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __int_as_float(int v) {
  float f;
  std::memcpy(&f, &v, 4);
  return f;
}
inline int __float_as_int(float f) {
  int v;
  std::memcpy(&v, &f, 4);
  return v;
}
inline unsigned __float_as_uint(float f) { return static_cast<unsigned>(__float_as_int(f)); }
inline float __uint_as_float(unsigned v) { return __int_as_float(static_cast<int>(v)); }
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

// ---- fp16 / bf16 ------------------------------------------------------------------------------------------------
struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
inline __half __float2half_rn(float v) {  // _Float16 conversion: IEEE round to nearest even
  const _Float16 h = static_cast<_Float16>(v);
  __half r;
  std::memcpy(&r.bits, &h, 2);
  return r;
}
inline __half __float2half(float v) { return __float2half_rn(v); }
inline float __half2float(__half v) {
  _Float16 h;
  std::memcpy(&h, &v.bits, 2);
  return static_cast<float>(h);
}
inline __nv_bfloat16 __float2bfloat16_rn(float v) {
  uint32_t u = __float_as_uint(v);
  __nv_bfloat16 r;
  if (std::isnan(v)) {
    r.bits = static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN, sign kept
    return r;
  }
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even (overflow rounds to inf)
  r.bits = static_cast<uint16_t>(u >> 16);
  return r;
}
inline __nv_bfloat16 __float2bfloat16(float v) { return __float2bfloat16_rn(v); }
inline float __bfloat162float(__nv_bfloat16 v) { return __uint_as_float(static_cast<uint32_t>(v.bits) << 16); }

namespace cuda_emu {

// ---- errors -----------------------------------------------------------------------------------------------------
[[noreturn]] inline void fail(const std::string& what) {
  std::fflush(stdout);
  std::fprintf(stderr, "CUDA-EMU ERROR: %s\n", what.c_str());
  std::fflush(stderr);
  std::_Exit(3);
}

// ---- scheduler --------------------------------------------------------------------------------------------------
enum class Order { kForward, kReverse, kRandom };
enum class State { kReady, kBarrier, kWarp, kDone };
enum class Coll { kShfl, kShflUp, kShflDown, kShflXor, kSyncwarp, kWmma };

constexpr size_t kStackBytes = 256 * 1024;
constexpr int kWarp = 32;

// cuda_emu_switch(save, to): saves the callee-saved registers and the stack pointer in *save, resumes `to`.
extern "C" void cuda_emu_switch(void** save, void* to);
asm(R"(
  .text
  .globl cuda_emu_switch
  .type cuda_emu_switch, @function
cuda_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuda_emu_switch, .-cuda_emu_switch
)");

struct Fiber {
  void* sp = nullptr;     // saved stack pointer while switched out
  char* stack = nullptr;  // kStackBytes usable, a PROT_NONE guard page below
  uint3 tid{0, 0, 0};
  State state = State::kReady;
  const void* site = nullptr;  // __syncthreads call site
  // warp collective in progress
  Coll coll = Coll::kShfl;
  unsigned mask = 0;
  int arg = 0, width = kWarp;  // source lane / delta / lane mask, and segment width
  uint64_t value = 0, result = 0;
  void (*warp_op)(void* const* ctx) = nullptr;  // run once when the collective completes, ctx[lane] per lane
  void* op_ctx = nullptr;
};

struct Runtime {
  std::vector<Fiber> fibers;
  int nthreads = 0;
  Fiber* cur = nullptr;
  void* sched_sp = nullptr;
  Order order = Order::kForward;
  std::mt19937_64 rng{0};
  std::function<void()> body;
  uint3 thread_idx{0, 0, 0};
  uint3 block_idx{0, 0, 0};
  dim3 block_dim{1, 1, 1}, grid_dim{1, 1, 1};
  uint64_t barriers = 0, switches = 0;
  const void* main_stack = nullptr;
  size_t main_stack_size = 0;
};

inline Runtime g_runtime;
inline Runtime& rt() { return g_runtime; }

inline void set_order(Order o, uint64_t seed) {
  rt().order = o;
  rt().rng.seed(seed);
}

// Every byte of the __shared__ variables (section .pk_emu_shared of shared.ld) <- 0xff, redzones untouched.
extern "C" char pk_emu_shared_begin[] __attribute__((weak));
extern "C" char pk_emu_shared_end[] __attribute__((weak));
__attribute__((no_sanitize("address"))) inline void poison_shared() {
  if (pk_emu_shared_begin == nullptr) return;
  for (volatile char* p = pk_emu_shared_begin; p < pk_emu_shared_end; ++p) *p = char(0xff);
}

inline void to_scheduler() {  // from a fiber
  Runtime& r = rt();
  Fiber* f = r.cur;
#if CUDA_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(f->state == State::kDone ? nullptr : &fake, r.main_stack, r.main_stack_size);
#endif
  cuda_emu_switch(&f->sp, r.sched_sp);
#if CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, &r.main_stack, &r.main_stack_size);
#endif
  r.thread_idx = f->tid;
}

[[noreturn]] inline void fiber_entry() {
  Runtime& r = rt();
#if CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &r.main_stack, &r.main_stack_size);
#endif
  r.thread_idx = r.cur->tid;
  r.body();
  r.cur->state = State::kDone;
  to_scheduler();
  fail("a finished fiber was resumed");
}

inline void run_fiber(Fiber& f) {
  Runtime& r = rt();
  r.cur = &f;
  r.thread_idx = f.tid;
  ++r.switches;
#if CUDA_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack, kStackBytes);
#endif
  cuda_emu_switch(&r.sched_sp, f.sp);
#if CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  r.cur = nullptr;
}

inline std::string thread_name(const Fiber& f) {
  const Runtime& r = rt();
  char buf[160];
  std::snprintf(buf, sizeof buf, "block (%u, %u, %u) thread (%u, %u, %u)", r.block_idx.x, r.block_idx.y, r.block_idx.z,
                f.tid.x, f.tid.y, f.tid.z);
  return buf;
}

// Source lane of a shuffle for `lane`, or -1 when the lane keeps its own value.
inline int shfl_source(const Fiber& f, int lane) {
  const int w = f.width, base = lane & ~(w - 1);
  switch (f.coll) {
    case Coll::kShfl: return base + (f.arg & (w - 1));
    case Coll::kShflUp: return (lane - base) - f.arg >= 0 ? lane - f.arg : -1;
    case Coll::kShflDown: return (lane - base) + f.arg < w ? lane + f.arg : -1;
    case Coll::kShflXor: {
      const int src = lane ^ f.arg;
      return src < base + w ? src : -1;  // later groups: own value (earlier ones are readable)
    }
    default: return -1;
  }
}

// Completes the warp collectives whose named lanes have all arrived; returns whether any fiber became ready.
inline bool resolve_warps() {
  Runtime& r = rt();
  bool progressed = false;
  for (int w0 = 0; w0 < r.nthreads; w0 += kWarp) {
    const int n = std::min(kWarp, r.nthreads - w0);
    int first = -1;
    for (int l = 0; l < n; ++l)
      if (r.fibers[w0 + l].state == State::kWarp) {
        first = l;
        break;
      }
    if (first < 0) continue;
    const Fiber& f0 = r.fibers[w0 + first];
    bool complete = true;
    for (int l = 0; l < kWarp; ++l) {
      if (!(f0.mask >> l & 1u)) continue;
      if (l >= n) fail(thread_name(f0) + ": warp collective mask names lane " + std::to_string(l) + " past the block");
      const Fiber& g = r.fibers[w0 + l];
      if (g.state == State::kDone)
        fail(thread_name(f0) + ": warp collective mask names lane " + std::to_string(l) + ", which has exited");
      if (g.state == State::kBarrier)
        fail(thread_name(f0) + ": warp collective mask names lane " + std::to_string(l) +
             ", which waits at __syncthreads");
      if (g.state == State::kReady) complete = false;
      if (g.state == State::kWarp &&
          (g.coll != f0.coll || g.mask != f0.mask || g.width != f0.width || g.warp_op != f0.warp_op))
        fail(thread_name(f0) + " and " + thread_name(g) + ": different warp collectives (kind, mask or width) meet");
    }
    for (int l = 0; l < n; ++l) {
      const Fiber& g = r.fibers[w0 + l];
      if (g.state == State::kWarp && !(f0.mask >> l & 1u))
        fail(thread_name(g) + ": lane in a warp collective that its mask does not name");
    }
    if (!complete) continue;
    for (int l = 0; l < kWarp; ++l) {
      if (!(f0.mask >> l & 1u)) continue;
      Fiber& g = r.fibers[w0 + l];
      const int src = shfl_source(g, l);
      if (src >= 0 && !(f0.mask >> src & 1u))
        fail(thread_name(g) + ": shuffle reads lane " + std::to_string(src) + ", which is not in the mask");
      g.result = src >= 0 ? r.fibers[w0 + src].value : g.value;
    }
    if (f0.warp_op != nullptr) {
      void* ctx[kWarp] = {};
      for (int l = 0; l < n; ++l) ctx[l] = (f0.mask >> l & 1u) ? r.fibers[w0 + l].op_ctx : nullptr;
      f0.warp_op(ctx);
    }
    for (int l = 0; l < kWarp; ++l)
      if (f0.mask >> l & 1u) r.fibers[w0 + l].state = State::kReady;
    progressed = true;
  }
  return progressed;
}

inline void resolve_barrier() {
  Runtime& r = rt();
  const Fiber* waiting = nullptr;
  const Fiber* done = nullptr;
  for (int t = 0; t < r.nthreads; ++t) {
    const Fiber& f = r.fibers[t];
    if (f.state == State::kBarrier) {
      if (waiting != nullptr && waiting->site != f.site)
        fail(thread_name(*waiting) + " and " + thread_name(f) +
             " wait at different __syncthreads (a barrier in divergent code)");
      waiting = &f;
    } else if (f.state == State::kDone) {
      done = &f;
    } else if (f.state == State::kWarp) {
      fail(thread_name(f) + " waits at a warp collective whose lanes never arrive (deadlock)");
    }
  }
  if (waiting == nullptr) return;
  if (done != nullptr)
    fail(thread_name(*done) + " exited while " + thread_name(*waiting) +
         " waits at __syncthreads (a barrier not reached by all threads)");
  for (int t = 0; t < r.nthreads; ++t) r.fibers[t].state = State::kReady;
  ++r.barriers;
}

inline void run_block() {
  Runtime& r = rt();
  poison_shared();
  for (int t = 0; t < r.nthreads; ++t) {
    Fiber& f = r.fibers[t];
    f.state = State::kReady;
    f.tid = {t % r.block_dim.x, (t / r.block_dim.x) % r.block_dim.y, t / (r.block_dim.x * r.block_dim.y)};
#if CUDA_EMU_ASAN
    // the frames a finished fiber left at the top of the stack (fiber_entry, to_scheduler) stay poisoned
    ASAN_UNPOISON_MEMORY_REGION(f.stack + kStackBytes - 65536, 65536);
#endif
    // initial frame: six zero registers, then fiber_entry as the return address (entered with rsp = 8 mod 16)
    void** top = reinterpret_cast<void**>(f.stack + kStackBytes);
    *--top = nullptr;
    *--top = reinterpret_cast<void*>(&fiber_entry);
    for (int i = 0; i < 6; ++i) *--top = nullptr;
    f.sp = top;
  }
  std::vector<int> ready;
  for (;;) {
    ready.clear();
    for (int t = 0; t < r.nthreads; ++t)
      if (r.fibers[t].state == State::kReady) ready.push_back(t);
    if (ready.empty()) {
      if (!resolve_warps()) resolve_barrier();
      bool any = false;
      for (int t = 0; t < r.nthreads; ++t) any |= r.fibers[t].state == State::kReady;
      if (!any) return;  // every thread done
      continue;
    }
    if (r.order == Order::kReverse) std::reverse(ready.begin(), ready.end());
    if (r.order == Order::kRandom) std::shuffle(ready.begin(), ready.end(), r.rng);
    for (int t : ready) run_fiber(r.fibers[t]);
  }
}

inline void ensure_fibers(int n) {
  Runtime& r = rt();
  const size_t page = 4096;
  while (int(r.fibers.size()) < n) {
    r.fibers.emplace_back();
    void* m = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) fail("mmap of a fiber stack failed");
    mprotect(m, page, PROT_NONE);  // guard page: a stack overflow faults
    r.fibers.back().stack = static_cast<char*>(m) + page;
  }
}

// Runs body() as a grid of blocks of threads (the emulated <<<grid, block>>>).
inline void run_grid(dim3 grid, dim3 block, std::function<void()> body) {
  Runtime& r = rt();
  const int n = int(block.x * block.y * block.z);
  if (n <= 0 || n > 1024 || block.z > 64) fail("invalid block size " + std::to_string(n));
  if (grid.y > 65535 || grid.z > 65535 || grid.x == 0 || grid.y == 0 || grid.z == 0) fail("invalid grid");
  ensure_fibers(n);
  r.nthreads = n;
  r.block_dim = block;
  r.grid_dim = grid;
  r.body = std::move(body);
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  std::vector<uint64_t> ids(blocks);
  for (uint64_t i = 0; i < blocks; ++i) ids[i] = i;
  if (r.order == Order::kReverse) std::reverse(ids.begin(), ids.end());
  if (r.order == Order::kRandom) std::shuffle(ids.begin(), ids.end(), r.rng);
  for (uint64_t id : ids) {
    r.block_idx = {unsigned(id % grid.x), unsigned(id / grid.x % grid.y), unsigned(id / (uint64_t(grid.x) * grid.y))};
    run_block();
  }
  r.body = nullptr;
}

// The emulated kernel<<<grid, block, smem, stream>>>(args...): arguments are copied as a launch copies them.
template <typename... P>
struct Launch {
  void (*kernel)(P...);
  dim3 grid, block;
  void operator()(P... args) const {
    auto k = kernel;
    run_grid(grid, block, [=]() { k(args...); });
  }
};
template <typename... P>
Launch<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem) {
  if (smem != 0) fail("dynamic shared memory is not emulated");
  return {kernel, grid, block};
}

// ---- collectives ------------------------------------------------------------------------------------------------
inline Fiber& self() {
  Fiber* f = rt().cur;
  if (f == nullptr) fail("device function called outside a kernel");
  return *f;
}

inline int lane_of(const Fiber& f) {
  const dim3& b = rt().block_dim;
  return int((f.tid.x + b.x * (f.tid.y + b.y * f.tid.z)) % kWarp);
}

inline uint64_t warp_collective(Coll c, unsigned mask, uint64_t value, int arg, int width,
                                void (*op)(void* const*) = nullptr, void* ctx = nullptr) {
  Fiber& f = self();
  if (width <= 0 || width > kWarp || (width & (width - 1)) != 0)
    fail(thread_name(f) + ": shuffle width " + std::to_string(width) + " is not a power of 2 <= 32");
  if (!(mask >> lane_of(f) & 1u)) fail(thread_name(f) + ": warp collective called by a lane not named in its mask");
  f.coll = c;
  f.mask = mask;
  f.value = value;
  f.arg = arg;
  f.width = width;
  f.warp_op = op;
  f.op_ctx = ctx;
  f.state = State::kWarp;
  to_scheduler();
  return f.result;
}

template <typename T>
inline T shuffle(Coll c, unsigned mask, T v, int arg, int width) {
  static_assert(sizeof(T) <= 8, "shuffled values are at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_collective(c, mask, bits, arg, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

}  // namespace cuda_emu

#define threadIdx (::cuda_emu::rt().thread_idx)
#define blockIdx (::cuda_emu::rt().block_idx)
#define blockDim (::cuda_emu::rt().block_dim)
#define gridDim (::cuda_emu::rt().grid_dim)
#define PK_LAUNCH(kernel, grid, block, smem, stream) ::cuda_emu::launch(kernel, dim3(grid), dim3(block), smem)

__attribute__((noinline)) inline void __syncthreads() {
  cuda_emu::Fiber& f = cuda_emu::self();
  f.site = __builtin_return_address(0);
  f.state = cuda_emu::State::kBarrier;
  cuda_emu::to_scheduler();
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  cuda_emu::warp_collective(cuda_emu::Coll::kSyncwarp, mask, 0, 0, cuda_emu::kWarp);
}
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return cuda_emu::shuffle(cuda_emu::Coll::kShfl, mask, v, src, width);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return cuda_emu::shuffle(cuda_emu::Coll::kShflUp, mask, v, int(delta), width);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return cuda_emu::shuffle(cuda_emu::Coll::kShflDown, mask, v, int(delta), width);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return cuda_emu::shuffle(cuda_emu::Coll::kShflXor, mask, v, lane_mask, width);
}
[[noreturn]] inline void __trap() {
  cuda_emu::Fiber& f = cuda_emu::self();
  cuda_emu::fail(cuda_emu::thread_name(f) + ": __trap()");
}

// ---- WMMA -------------------------------------------------------------------------------------------------------
namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

inline float __float_to_tf32(float v) {  // cvt.rna.tf32.f32: 10-bit mantissa, round to nearest, ties away
  if (!std::isfinite(v)) return v;
  return __uint_as_float((__float_as_uint(v) + 0x1000u) & 0xffffe000u);
}

namespace detail {
template <typename T>
struct Elem;  // element type in memory, operand value as the tensor core takes it
template <>
struct Elem<precision::tf32> {
  using mem = float;
  static float value(float v) { return std::isfinite(v) ? __uint_as_float(__float_as_uint(v) & 0xffffe000u) : v; }
};
template <>
struct Elem<__half> {
  using mem = __half;
  static float value(__half v) { return __half2float(v); }
};
template <>
struct Elem<__nv_bfloat16> {
  using mem = __nv_bfloat16;
  static float value(__nv_bfloat16 v) { return __bfloat162float(v); }
};
template <>
struct Elem<float> {
  using mem = float;
  static float value(float v) { return v; }
};
template <typename Use, int M, int N, int K>
struct Shape;
template <int M, int N, int K>
struct Shape<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct Shape<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct Shape<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};

// A warp-wide WMMA operation: every lane passes its operands; op(ctx) runs once, when all 32 lanes are there.
template <typename Ctx>
inline void collective(Ctx& c) {
  ::cuda_emu::warp_collective(
      ::cuda_emu::Coll::kWmma, 0xffffffffu, 0, 0, 32, [](void* const* ctx) { Ctx::run(ctx); }, &c);
}

inline void check_ptr(const void* p, unsigned ldm, size_t elem) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    ::cuda_emu::fail(::cuda_emu::thread_name(::cuda_emu::self()) + ": WMMA pointer not 256-bit aligned");
  if ((size_t(ldm) * elem) % 16 != 0)
    ::cuda_emu::fail(::cuda_emu::thread_name(::cuda_emu::self()) + ": WMMA ldm not a multiple of 16 bytes");
}
}  // namespace detail

// Every lane holds the whole tile (values as float, already as the tensor core takes them).
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int rows = detail::Shape<Use, M, N, K>::rows, cols = detail::Shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  static constexpr bool row_layout = std::is_same<Layout, row_major>::value;
  static float value(typename detail::Elem<T>::mem v) { return detail::Elem<T>::value(v); }
  float x[rows * cols];
};

template <typename Use, int M, int N, int K, typename T, typename L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, float v) {
  for (float& e : f.x) e = v;
}

namespace detail {
// ctx[lane] -> its operands; lane 0's fragment is computed, then copied to the other lanes.
template <typename F>
inline void broadcast(void* const* ctx, F* (*frag)(void*)) {
  for (int l = 1; l < 32; ++l) std::memcpy(frag(ctx[l])->x, frag(ctx[0])->x, sizeof(frag(ctx[0])->x));
}

template <typename F, typename P>
struct Load {
  F* f;
  const P* p;
  unsigned ldm;
  static void run(void* const* ctx) {
    const Load& c = *static_cast<const Load*>(ctx[0]);
    for (int l = 1; l < 32; ++l) {
      const Load& o = *static_cast<const Load*>(ctx[l]);
      if (o.p != c.p || o.ldm != c.ldm) ::cuda_emu::fail("load_matrix_sync: lanes of a warp pass different arguments");
    }
    constexpr bool row = F::row_layout;
    for (int i = 0; i < F::rows; ++i)
      for (int j = 0; j < F::cols; ++j)
        c.f->x[i * F::cols + j] = F::value(row ? c.p[size_t(i) * c.ldm + j] : c.p[size_t(j) * c.ldm + i]);
    broadcast<F>(ctx, [](void* v) { return static_cast<Load*>(v)->f; });
  }
};

template <typename D, typename A, typename B, int M, int N, int K>
struct Mma {
  D* d;
  const A* a;
  const B* b;
  const D* c;
  static void run(void* const* ctx) {
    const Mma& m = *static_cast<const Mma*>(ctx[0]);
    float out[M * N];
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        float s = m.c->x[i * N + j];
        for (int k = 0; k < K; ++k) s += m.a->x[i * K + k] * m.b->x[k * N + j];  // exact products, fp32 sums
        out[i * N + j] = s;
      }
    std::memcpy(m.d->x, out, sizeof out);
    broadcast<D>(ctx, [](void* v) { return static_cast<Mma*>(v)->d; });
  }
};

template <typename F>
struct Store {
  float* p;
  const F* f;
  unsigned ldm;
  layout_t layout;
  static void run(void* const* ctx) {
    const Store& s = *static_cast<const Store*>(ctx[0]);
    for (int l = 1; l < 32; ++l) {
      const Store& o = *static_cast<const Store*>(ctx[l]);
      if (o.p != s.p || o.ldm != s.ldm || o.layout != s.layout)
        ::cuda_emu::fail("store_matrix_sync: lanes of a warp pass different arguments");
    }
    for (int i = 0; i < F::rows; ++i)
      for (int j = 0; j < F::cols; ++j)
        s.p[s.layout == mem_row_major ? size_t(i) * s.ldm + j : size_t(j) * s.ldm + i] = s.f->x[i * F::cols + j];
  }
};
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const typename detail::Elem<T>::mem* p, unsigned ldm) {
  detail::check_ptr(p, ldm, sizeof(*p));
  detail::Load<fragment<Use, M, N, K, T, L>, typename detail::Elem<T>::mem> c{&f, p, ldm};
  detail::collective(c);
}

template <int M, int N, int K, typename TA, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TA, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  detail::Mma<fragment<accumulator, M, N, K, float>, fragment<matrix_a, M, N, K, TA, LA>,
              fragment<matrix_b, M, N, K, TA, LB>, M, N, K>
      m{&d, &a, &b, &c};
  detail::collective(m);
}

template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
  detail::check_ptr(p, ldm, sizeof(float));
  detail::Store<fragment<accumulator, M, N, K, float>> s{p, &f, ldm, layout};
  detail::collective(s);
}
}  // namespace nvcuda::wmma
