// Emulator harness of csrc/cuda/gram.cuh: gram_forward, style_forward, gram_backward, style_backward through the
// launch plan of gram.cu (plan_forward, launch_forward, launch_loss_sum, launch_sym_dot), see harness.h.
#include "../../csrc/cuda/gram.cuh"

#include "harness.h"

namespace gk = perceptual_kernels::cuda::gram_kernels;
using harness::Job;
using harness::Scratch;

static void gram_forward(const Job& job) {
  const auto sizes = job.v("sizes"), strides = job.v("strides");
  const int64_t B = sizes[0], C = sizes[1];
  const gk::Variant v = gk::pick_variant(int(job.i("dtype")), true, job.i("tf32") != 0);
  const bool style = job.op() == "style_forward";
  job.run([&] {
    gk::FwdPlan p = gk::plan_forward(sizes.data(), strides.data(), job.i("sms"));
    std::unique_ptr<Scratch<float>> ws;
    if (p.splits > 1) {
      ws = std::make_unique<Scratch<float>>(p.splits * B * C * C);
      p.args.ws = ws->get();
    }
    gk::Epilogue ep{};
    ep.scale = float(job.f("scale"));
    std::unique_ptr<Scratch<float>> parts;
    if (!style) {
      ep.out = job.out("g").data;
      ep.out_dtype = int(job.i("out_dtype"));
    } else {  // as style_loss_forward in gram.cu
      const auto ts = job.v("t_strides");
      const harness::Buffer* index = job.in_opt("index");
      const int64_t R = job.i("target_rows");
      parts = std::make_unique<Scratch<float>>(B * p.parts_per_sample);
      ep.out = job.out("diff").data;
      ep.out_dtype = gk::kF32;
      ep.target = job.in("target").data;
      ep.target_dtype = int(job.i("target_dtype"));
      ep.target_rows = R;
      ep.s_tb = (R == 1 && index == nullptr) ? 0 : ts[0];
      ep.s_tr = ts[1];
      ep.s_tc = ts[2];
      ep.index = index != nullptr ? index->as<int64_t>() : nullptr;
      ep.loss_parts = parts->get();
      ep.l1 = job.has("l1") ? int(job.i("l1")) : 0;
    }
    gk::launch_forward(job.in("x").data, p, ep, v, nullptr);
    if (style) gk::launch_loss_sum(parts->get(), p.parts_per_sample, job.out("loss").as<float>(), B, nullptr);
  });
}

static void gram_backward(const Job& job) {
  const auto sizes = job.v("sizes"), strides = job.v("strides"), dx_strides = job.v("dx_strides");
  const auto ds = job.v("d_strides");
  const gk::Variant v = gk::pick_variant(int(job.i("dtype")), true, job.i("tf32") != 0);
  if (!gk::sym_dot_fits(sizes[1], ds[1], ds[2])) cuda_emu::fail("D strides too large for the kernel");
  const bool style = job.op() == "style_backward";
  job.run([&] {
    gk::BwdArgs a{};
    a.C = sizes[1];
    a.M = sizes[2] * sizes[3];
    a.x = gk::x_desc(sizes.data(), strides.data());
    a.dx = gk::x_desc(sizes.data(), dx_strides.data());
    a.d = job.in("d").as<float>();
    a.s_db = ds[0];
    a.s_dr = int(ds[1]);
    a.s_dc = int(ds[2]);
    a.coef = style ? job.in("coef").as<float>() : nullptr;
    a.s_cb = style ? job.i("coef_stride") : 0;
    a.scale = style ? 1.f : float(job.f("scale"));
    gk::launch_sym_dot(v, job.in("x").data, job.out("dx").data, a, sizes[0], nullptr);
  });
}

int main(int argc, char** argv) {
  const Job job(argc, argv);
  if (job.op() == "gram_forward" || job.op() == "style_forward") {
    gram_forward(job);
  } else if (job.op() == "gram_backward" || job.op() == "style_backward") {
    gram_backward(job);
  } else {
    cuda_emu::fail("unknown op " + job.op());
  }
  return 0;
}
