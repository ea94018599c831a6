// Emulator harness of csrc/cuda/lpips.cuh (lpips_forward / lpips_backward), through the launchers lpips.cu calls,
// see harness.h.
#include "../../csrc/cuda/lpips.cuh"

#include "harness.h"

namespace lk = perceptual_kernels::cuda::lpips_kernels;
using harness::Job;
using harness::Scratch;

static lk::Strides4 s4(const std::vector<int64_t>& s) { return {s[0], s[1], s[2], s[3]}; }

template <typename T>
static void lpips(const Job& job) {  // as lpips_forward / lpips_backward in lpips.cu
  const auto sizes = job.v("sizes"), s0 = job.v("strides0"), s1 = job.v("strides1");
  const int64_t B = sizes[0], C = sizes[1], H = sizes[2], W = sizes[3];
  const bool need_grad = job.op() == "lpips_backward";
  const bool need0 = need_grad && job.i("need_grad0") != 0, need1 = need_grad && job.i("need_grad1") != 0;
  const auto t0 = need0 ? job.v("g_strides0") : s0, t1 = need1 ? job.v("g_strides1") : s1;
  const int64_t n = lk::lpips_num_pblocks(H, W);
  job.run([&] {
    Scratch<float> partials(B * n);
    lk::launch_lpips<T>(job.in("f0").as<T>(), job.in("f1").as<T>(), job.in("weight").as<float>(), partials.get(),
                        need0 ? job.out("grad0").as<T>() : nullptr, need1 ? job.out("grad1").as<T>() : nullptr,
                        need_grad ? job.in("coef").as<float>() : nullptr, B, C, H, W, s4(s0), s4(s1), s4(t0), s4(t1),
                        need_grad, float(job.f("eps")), nullptr);
    if (!need_grad) lk::launch_lpips_row_mean(partials.get(), n, B, float(H * W), job.out("dist").as<float>(), nullptr);
  });
}

int main(int argc, char** argv) {
  const Job job(argc, argv);
  harness::with_dtype(job.i("dtype"), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if (job.op() == "lpips_forward" || job.op() == "lpips_backward") {
      lpips<T>(job);
    } else {
      cuda_emu::fail("unknown op " + job.op());
    }
  });
  return 0;
}
