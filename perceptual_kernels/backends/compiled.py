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
__all__ = [
    "content_loss_backward",
    "content_loss_forward",
    "gram_backward",
    "gram_forward",
    "instance_norm_backward",
    "instance_norm_forward",
    "style_loss_backward",
    "style_loss_forward",
    "tv_backward",
    "tv_forward",
]


def gram_forward(x, scale, out_dtype):
    return _native.gram_forward(x, scale, out_dtype)


def gram_backward(grad, x, scale):
    return _native.gram_backward(grad, x, scale)


def style_loss_forward(x, target, style_index, scale):
    return _native.style_loss_forward(x, target, style_index, scale)


def style_loss_backward(coef, diff, x):
    return _native.style_loss_backward(coef, diff, x)


def _cuda_target(x, target):
    """The CUDA kernels read fp32 / fp16 / bf16 targets: a float64 target is converted once."""
    return target.float() if x.is_cuda and target.dtype == torch.float64 else target


def content_loss_forward(x, target):
    return _native.content_loss_forward(x, _cuda_target(x, target))


def content_loss_backward(x, target, coef):
    return _native.content_loss_backward(x, _cuda_target(x, target), coef)


def tv_forward(x, kind, eps):
    return _native.tv_forward(x, TV_KINDS[kind], eps)


def tv_backward(x, kind, eps, coef):
    return _native.tv_backward(x, TV_KINDS[kind], eps, coef)


def instance_norm_forward(x, gamma, beta, eps, relu, style_index=None):
    return _native.instance_norm_forward(x, gamma, beta, style_index, eps, relu)


def instance_norm_backward(grad_y, x, mean, rstd, gamma, beta, relu, need_affine_grad, style_index=None):
    dx, dgamma, dbeta = _native.instance_norm_backward(
        grad_y, x, mean, rstd, gamma, beta, style_index, relu, need_affine_grad
    )
    return (dx, dgamma, dbeta) if need_affine_grad else (dx, None, None)
