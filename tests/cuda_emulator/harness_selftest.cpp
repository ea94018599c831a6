// Deliberately broken kernels: the emulator must report each (test_emulator_selftest.py). Every case writes the
// block sum of 0..255 to out[0] when it does not fail.
//   ok               correct shared-memory reduction (the control)
//   missing_sync     no __syncthreads between the shared-memory writes and thread 0's reads
//   off_by_one       reads in[n] (one past the end: ASan)
//   shared_oob       reads shared[256] of a 256-element __shared__ array (ASan global redzone)
//   misaligned       float4 load from an address 4 bytes past 16-byte alignment (UBSan)
//   divergent_sync   __syncthreads inside if (threadIdx.x < 128)
//   shfl_mask        __shfl_down_sync(0xffffffff) called by lanes 0..15 only
//   shfl_src         __shfl_sync(0x0000ffff) by lanes 0..15 reading lane 16
//   trap             __trap()
#include <string>

#include "cuda_on_cpu.h"
#include "harness.h"

namespace perceptual_kernels::selftest {

__global__ void reduce_kernel(const float* in, float* out, int n, int variant) {
  __shared__ float s[256];
  const int t = threadIdx.x;
  s[t] = t < n ? in[variant == 1 ? t + 1 : t] : 0.f;
  if (variant != 0) __syncthreads();
  if (t == 0) {
    float acc = 0.f;
    for (int i = 0; i < 256; ++i) acc += s[i];
    out[0] = acc;
  }
}

__global__ void shared_oob_kernel(const float* in, float* out) {
  __shared__ float s[256];
  s[threadIdx.x] = in[threadIdx.x];
  __syncthreads();
  if (threadIdx.x == 0) out[0] = s[threadIdx.x + 256];
}

__global__ void misaligned_kernel(const float* in, float* out) {
  const float4 v = *reinterpret_cast<const float4*>(in + 1);
  if (threadIdx.x == 0) out[0] = v.x;
}

__global__ void divergent_sync_kernel(const float* in, float* out) {
  if (threadIdx.x < 128) __syncthreads();
  if (threadIdx.x == 0) out[0] = in[0];
}

__global__ void shfl_kernel(const float* in, float* out, int variant) {
  float v = in[threadIdx.x];
  if ((threadIdx.x & 31) < 16) {
    v = variant == 0 ? __shfl_down_sync(0xffffffffu, v, 1) : __shfl_sync(0x0000ffffu, v, 16);
  }
  if (threadIdx.x == 0) out[0] = v;
}

__global__ void trap_kernel(float* out) {
  if (threadIdx.x == 7) __trap();
  out[0] = 0.f;
}

}  // namespace perceptual_kernels::selftest

int main(int argc, char** argv) {
  namespace st = perceptual_kernels::selftest;
  const harness::Job job(argc, argv);
  const std::string c = job.op();
  const float* in = job.in("in").as<float>();  // 256 floats
  float* out = job.out("out").as<float>();
  job.run([&] {
    if (c == "ok") PK_LAUNCH(st::reduce_kernel, 1, 256, 0, nullptr)(in, out, 256, 2);
    if (c == "missing_sync") PK_LAUNCH(st::reduce_kernel, 1, 256, 0, nullptr)(in, out, 256, 0);
    if (c == "off_by_one") PK_LAUNCH(st::reduce_kernel, 1, 256, 0, nullptr)(in, out, 256, 1);
    if (c == "shared_oob") PK_LAUNCH(st::shared_oob_kernel, 1, 256, 0, nullptr)(in, out);
    if (c == "misaligned") PK_LAUNCH(st::misaligned_kernel, 1, 32, 0, nullptr)(in, out);
    if (c == "divergent_sync") PK_LAUNCH(st::divergent_sync_kernel, 1, 256, 0, nullptr)(in, out);
    if (c == "shfl_mask") PK_LAUNCH(st::shfl_kernel, 1, 64, 0, nullptr)(in, out, 0);
    if (c == "shfl_src") PK_LAUNCH(st::shfl_kernel, 1, 64, 0, nullptr)(in, out, 1);
    if (c == "trap") PK_LAUNCH(st::trap_kernel, 1, 32, 0, nullptr)(out);
  });
  return 0;
}
