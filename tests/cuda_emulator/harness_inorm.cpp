// Emulator harness of csrc/cuda/instance_norm.cuh: inorm_forward and inorm_backward through the launch plan of
// instance_norm.cu (inorm_split_plan, plane_layout, vectorizable, launch_inorm_*), see harness.h.
#include "../../csrc/cuda/instance_norm.cuh"

#include "harness.h"

namespace ik = perceptual_kernels::cuda::inorm_kernels;
using harness::Job;
using harness::Scratch;

static ik::Affine affine(const Job& job) {
  const harness::Buffer* g = job.in_opt("gamma");
  const harness::Buffer* b = job.in_opt("beta");
  const harness::Buffer* index = job.in_opt("index");
  return {g != nullptr ? g->as<float>() : nullptr, b != nullptr ? b->as<float>() : nullptr,
          index != nullptr ? index->as<int64_t>() : nullptr, g != nullptr ? job.i("gamma_rows") : 0,
          b != nullptr ? job.i("beta_rows") : 0};
}

template <typename T>
static void forward(const Job& job) {
  const auto sizes = job.v("sizes"), xs = job.v("strides"), ys = job.v("y_strides");
  const int64_t C = sizes[1], N = sizes[2] * sizes[3], planes = sizes[0] * C;
  const bool relu = job.i("relu") != 0;
  job.run([&] {
    const auto plan = ik::inorm_split_plan(int32_t(N), planes, int(job.i("sms")));
    std::unique_ptr<Scratch<float>> partials;
    if (plan.splits > 1) partials = std::make_unique<Scratch<float>>(planes * plan.splits * 3);
    const ik::PlaneLayout xl = ik::plane_layout(sizes.data(), xs.data()),
                          yl = ik::plane_layout(sizes.data(), ys.data());
    constexpr int vec = ik::vec_width<T>();
    const void *x = job.in("x").data, *y = job.out("y").data;
    const bool use_vec = ik::vectorizable(sizes.data(), xl, x, vec) && ik::vectorizable(sizes.data(), yl, y, vec);
    const ik::FwdArgs<T> args{static_cast<const T*>(x),
                              static_cast<T*>(const_cast<void*>(y)),
                              job.out("mean").as<float>(),
                              job.out("rstd").as<float>(),
                              partials ? partials->get() : nullptr,
                              affine(job),
                              xl,
                              yl,
                              C,
                              int32_t(N),
                              plan.splits,
                              plan.chunk,
                              float(job.f("eps"))};
    ik::launch_inorm_forward<T>(args, planes, use_vec, relu, nullptr);
    if (plan.splits > 1) ik::launch_inorm_forward_split_apply<T>(args, planes, use_vec, relu, nullptr);
  });
}

template <typename T>
static void backward(const Job& job) {
  const auto sizes = job.v("sizes"), xs = job.v("strides"), dys = job.v("dy_strides"), dxs = job.v("dx_strides");
  const int64_t C = sizes[1], N = sizes[2] * sizes[3], planes = sizes[0] * C;
  const bool relu = job.i("relu") != 0, need_affine = job.i("need_affine_grad") != 0;
  job.run([&] {
    const auto plan = ik::inorm_split_plan(int32_t(N), planes, int(job.i("sms")));
    std::unique_ptr<Scratch<float>> partials;
    if (plan.splits > 1) partials = std::make_unique<Scratch<float>>(planes * plan.splits * 2);
    const ik::PlaneLayout dyl = ik::plane_layout(sizes.data(), dys.data()),
                          xl = ik::plane_layout(sizes.data(), xs.data()),
                          dxl = ik::plane_layout(sizes.data(), dxs.data());
    constexpr int vec = ik::vec_width<T>();
    const void *dy = job.in("dy").data, *x = job.in("x").data, *dx = job.out("dx").data;
    const bool use_vec = ik::vectorizable(sizes.data(), dyl, dy, vec) && ik::vectorizable(sizes.data(), xl, x, vec) &&
                         ik::vectorizable(sizes.data(), dxl, dx, vec);
    const ik::BwdArgs<T> args{static_cast<const T*>(dy),
                              static_cast<const T*>(x),
                              static_cast<T*>(const_cast<void*>(dx)),
                              job.in("mean").as<float>(),
                              job.in("rstd").as<float>(),
                              need_affine ? job.out("dgamma").as<float>() : nullptr,
                              need_affine ? job.out("dbeta").as<float>() : nullptr,
                              partials ? partials->get() : nullptr,
                              affine(job),
                              dyl,
                              xl,
                              dxl,
                              C,
                              int32_t(N),
                              plan.splits,
                              plan.chunk};
    ik::launch_inorm_backward<T>(args, planes, use_vec, relu, nullptr);
    if (plan.splits > 1) ik::launch_inorm_backward_split_apply<T>(args, planes, use_vec, relu, nullptr);
  });
}

int main(int argc, char** argv) {
  const Job job(argc, argv);
  harness::with_dtype(job.i("dtype"), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if (job.op() == "inorm_forward") {
      forward<T>(job);
    } else if (job.op() == "inorm_backward") {
      backward<T>(job);
    } else {
      cuda_emu::fail("unknown op " + job.op());
    }
  });
  return 0;
}
