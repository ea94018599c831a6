// Emulator harness of csrc/cuda/content.cuh (content_forward / content_backward) and csrc/cuda/tv.cuh
// (tv_forward / tv_backward), through the launchers content.cu and tv.cu call, see harness.h.
#include "../../csrc/cuda/content.cuh"
#include "../../csrc/cuda/tv.cuh"

#include "harness.h"

namespace ck = perceptual_kernels::cuda::content_kernels;
namespace tk = perceptual_kernels::cuda::tv_kernels;
using harness::Job;
using harness::Scratch;

static ck::Strides4 s4(const std::vector<int64_t>& s) { return {s[0], s[1], s[2], s[3]}; }

template <typename TX, typename TT>
static void content(const Job& job) {  // as content_pass in content.cu
  const auto sizes = job.v("sizes"), xs = job.v("strides"), ts = job.v("t_strides");
  const bool need_grad = job.op() == "content_backward";
  const auto gs = need_grad ? job.v("g_strides") : xs;
  const int64_t n = sizes[0] * sizes[1] * sizes[2] * sizes[3];
  job.run([&] {
    const void* x = job.in("x").data;
    const void* t = job.in("t").data;
    const void* g = need_grad ? job.out("grad").data : x;
    const bool flat = ck::content_flat(job.i("dense") != 0, sizes.data(), xs.data(), ts.data(), gs.data(), x, t, g,
                                       sizeof(TX), sizeof(TT));
    const int64_t n_blocks = ck::content_num_blocks<TX>(n, flat);
    Scratch<float> partials(n_blocks);
    ck::launch_content<TX, TT>(static_cast<const TX*>(x), static_cast<const TT*>(t),
                               need_grad ? static_cast<TX*>(const_cast<void*>(g)) : nullptr, partials.get(), n,
                               sizes[1], sizes[2], sizes[3], s4(xs), s4(ts), s4(gs), flat, need_grad,
                               job.has("l1") && job.i("l1") != 0, need_grad ? job.in("coef").as<float>() : nullptr,
                               nullptr);
    if (!need_grad) ck::launch_content_sum(partials.get(), n_blocks, job.out("loss").as<float>(), nullptr);
  });
}

template <typename T>
static void tv(const Job& job) {  // as tv_pass in tv.cu
  const auto sizes = job.v("sizes"), xs = job.v("strides");
  const bool need_grad = job.op() == "tv_backward";
  const auto gs = need_grad ? job.v("g_strides") : xs;
  const int64_t B = sizes[0], C = sizes[1], H = sizes[2], W = sizes[3];
  const int64_t n_per_sample = C * tk::tv_num_tiles(H, W);
  job.run([&] {
    Scratch<float> partials(B * n_per_sample);
    tk::launch_tv<T>(job.in("x").as<T>(), need_grad ? job.out("grad").as<T>() : nullptr, partials.get(), B, C, H, W,
                     xs.data(), gs.data(), int(job.i("kind")), need_grad, float(job.f("eps")),
                     need_grad ? job.in("coef").as<float>() : nullptr, nullptr);
    if (!need_grad) tk::launch_tv_row_sum(partials.get(), n_per_sample, B, job.out("loss").as<float>(), nullptr);
  });
}

int main(int argc, char** argv) {
  const Job job(argc, argv);
  harness::with_dtype(job.i("dtype"), [&](auto* tx) {
    using TX = std::remove_pointer_t<decltype(tx)>;
    if (job.op() == "content_forward" || job.op() == "content_backward") {
      harness::with_dtype(job.i("t_dtype"), [&](auto* tt) { content<TX, std::remove_pointer_t<decltype(tt)>>(job); });
    } else if (job.op() == "tv_forward" || job.op() == "tv_backward") {
      tv<TX>(job);
    } else {
      cuda_emu::fail("unknown op " + job.op());
    }
  });
  return 0;
}
