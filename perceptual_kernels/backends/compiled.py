"""The kernel interface of the compiled backends ``cpu`` and ``cuda``: thin calls into ``torch.ops.pk_native``
(C++ in ``csrc/``, registered per device, so one function serves both). Only the Python conventions differ from
the C++ ones: TV kinds are names here and "no gradient" is None rather than an empty tensor."""
from __future__ import annotations

import torch

from . import native

if native.load() is None:  # importing _C registers torch.ops.pk_native
    raise ImportError(native.LOAD_ERROR)
_native = torch.ops.pk_native
TV_KINDS = {"squared": 0, "l1": 1, "isotropic": 2}
__all__ = ["content_loss_forward", "gram_backward", "gram_forward", "instance_norm_backward",
           "instance_norm_forward", "style_loss_backward", "style_loss_forward", "tv_forward"]


def gram_forward(x, scale, out_dtype):
    return _native.gram_forward(x, scale, out_dtype)


def gram_backward(grad, x, scale):
    return _native.gram_backward(grad, x, scale)


def style_loss_forward(x, target, style_index, scale):
    return _native.style_loss_forward(x, target, style_index, scale)


def style_loss_backward(coef, diff, x):
    return _native.style_loss_backward(coef, diff, x)


def content_loss_forward(x, target, grad_scale, need_grad):
    if x.is_cuda and target.dtype == torch.float64:  # the CUDA kernels read fp32 / fp16 / bf16 targets
        target = target.float()
    total, grad = _native.content_loss_forward(x, target, grad_scale, need_grad)
    return total, grad if need_grad else None


def tv_forward(x, kind, eps, grad_scale, need_grad):
    per_sample, grad = _native.tv_forward(x, TV_KINDS[kind], eps, grad_scale, need_grad)
    return per_sample, grad if need_grad else None


def instance_norm_forward(x, gamma, beta, eps, relu, style_index=None):
    return _native.instance_norm_forward(x, gamma, beta, style_index, eps, relu)


def instance_norm_backward(grad_y, x, mean, rstd, gamma, beta, relu, need_affine_grad, style_index=None):
    dx, dgamma, dbeta = _native.instance_norm_backward(grad_y, x, mean, rstd, gamma, beta, style_index, relu,
                                                        need_affine_grad)
    return (dx, dgamma, dbeta) if need_affine_grad else (dx, None, None)
