// perceptual_kernels._C: the op schemas (torch.ops.pk_native.*) and the build information of this extension.
// Each csrc/cpu/<op>.cpp and csrc/cuda/<op>.cu registers its own kernels for the schemas below
// (TORCH_LIBRARY_IMPL blocks at the bottom of each file), so CPU and CUDA tensors dispatch by device.
#include <torch/extension.h>
#include <torch/library.h>

#include "ops.h"

#ifndef PK_CUDA_ARCH_LIST
#define PK_CUDA_ARCH_LIST ""
#endif
#ifndef PK_TORCH_VERSION
#define PK_TORCH_VERSION ""
#endif

// clang-format off: one schema per line reads best
TORCH_LIBRARY(pk_native, m) {
  m.def("gram_forward(Tensor x, float scale, ScalarType out_dtype) -> Tensor");
  m.def("gram_backward(Tensor grad, Tensor x, float scale) -> Tensor");
  m.def("style_loss_forward(Tensor x, Tensor target, Tensor? style_index, float scale) -> (Tensor, Tensor)");
  m.def("style_loss_backward(Tensor coef, Tensor diff, Tensor x) -> Tensor");
  m.def("content_loss_forward(Tensor x, Tensor target) -> Tensor");
  m.def("content_loss_backward(Tensor x, Tensor target, Tensor coef) -> Tensor");
  m.def("tv_forward(Tensor x, int kind, float eps) -> Tensor");
  m.def("tv_backward(Tensor x, int kind, float eps, Tensor coef) -> Tensor");
  m.def("instance_norm_forward(Tensor x, Tensor? gamma, Tensor? beta, Tensor? style_index, float eps, "
        "bool relu) -> (Tensor, Tensor, Tensor)");
  m.def("instance_norm_backward(Tensor grad_y, Tensor x, Tensor mean, Tensor rstd, Tensor? gamma, Tensor? beta, "
        "Tensor? style_index, bool relu, bool need_affine_grad) -> (Tensor, Tensor, Tensor)");
  // --- LPIPS layer distance
  m.def("lpips_forward(Tensor f0, Tensor f1, Tensor weight, float eps) -> Tensor");
  m.def("lpips_backward(Tensor f0, Tensor f1, Tensor weight, float eps, Tensor coef, bool need_grad0, "
        "bool need_grad1) -> (Tensor, Tensor)");
}
// clang-format on

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "perceptual-kernels compiled kernels; the ops are torch.ops.pk_native.*";
#ifdef WITH_CUDA
  m.attr("DEVICES") = pybind11::make_tuple("cpu", "cuda");
#else
  m.attr("DEVICES") = pybind11::make_tuple("cpu");
#endif
  m.attr("CUDA_ARCH_LIST") = PK_CUDA_ARCH_LIST;  // TORCH_CUDA_ARCH_LIST at build time ("" without CUDA)
  m.attr("TORCH_VERSION") = PK_TORCH_VERSION;    // the torch this extension was compiled against
}
