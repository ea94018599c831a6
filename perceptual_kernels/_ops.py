"""``torch.library`` custom ops over the kernel backends: schema, fake (meta) kernels, hand-written autograd.

Each forward op takes the backend name chosen by :mod:`perceptual_kernels.backends` as a string, so the choice
is made once in Python (and is a constant under ``torch.compile``). Every backward is a custom op too, so
``torch.compile(fullgraph=True)`` traces losses built from these ops without graph breaks. Arguments arrive
validated; the ops expect 4-D ``x`` (B, C, H, W).
"""
from __future__ import annotations

import torch
from torch.library import custom_op

from .backends import kernels

_NS = "perceptual_kernels"


def _empty_like_grad(x: torch.Tensor, need: bool) -> torch.Tensor:
    return torch.empty_like(x) if need else x.new_empty(0)


# --- Gram matrix --------------------------------------------------------------------------------------------
@custom_op(f"{_NS}::gram", mutates_args=())
def gram(x: torch.Tensor, scale: float, out_dtype: torch.dtype, backend: str) -> torch.Tensor:
    """``G_b = F_b F_b^T * scale`` -> (B, C, C)."""
    return kernels(backend).gram_forward(x, scale, out_dtype)


@gram.register_fake
def _(x, scale, out_dtype, backend):
    B, C = x.shape[:2]
    return x.new_empty((B, C, C), dtype=out_dtype)


@custom_op(f"{_NS}::gram_backward", mutates_args=())
def gram_backward(grad: torch.Tensor, x: torch.Tensor, scale: float, backend: str) -> torch.Tensor:
    """``dF_b = (dG_b + dG_b^T) F_b * scale``."""
    return kernels(backend).gram_backward(grad, x, scale)


@gram_backward.register_fake
def _(grad, x, scale, backend):
    return torch.empty_like(x)


def _gram_setup(ctx, inputs, output):
    x, scale, _, backend = inputs
    ctx.save_for_backward(x)
    ctx.scale, ctx.backend = scale, backend


def _gram_bwd(ctx, grad):
    (x,) = ctx.saved_tensors
    return gram_backward(grad, x, ctx.scale, ctx.backend), None, None, None


gram.register_autograd(_gram_bwd, setup_context=_gram_setup)


# --- Style loss -----------------------------------------------------------------------------------------------
@custom_op(f"{_NS}::style_loss", mutates_args=())
def style_loss(x: torch.Tensor, target: torch.Tensor, style_index: torch.Tensor | None, scale: float,
               backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``sum_ij (G_b - A_b)^2`` (B,) fp32 and ``D = G - A`` (B, C, C) fp32, kept for the backward."""
    return kernels(backend).style_loss_forward(x, target, style_index, scale)


@style_loss.register_fake
def _(x, target, style_index, scale, backend):
    B, C = x.shape[:2]
    return x.new_empty((B,), dtype=torch.float32), x.new_empty((B, C, C), dtype=torch.float32)


@custom_op(f"{_NS}::style_loss_backward", mutates_args=())
def style_loss_backward(coef: torch.Tensor, diff: torch.Tensor, x: torch.Tensor, backend: str) -> torch.Tensor:
    """``dF_b = coef_b * (D_b + D_b^T) F_b``."""
    return kernels(backend).style_loss_backward(coef, diff, x)


@style_loss_backward.register_fake
def _(coef, diff, x, backend):
    return torch.empty_like(x)


def _style_setup(ctx, inputs, output):
    x, target, style_index, scale, backend = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zero (B, C, C) "gradient" for D
    ctx.save_for_backward(x, output[1], style_index)
    ctx.scale, ctx.backend, ctx.target_shape, ctx.target_dtype = scale, backend, target.shape, target.dtype


def _style_bwd(ctx, grad_per_sample, _grad_diff):
    if grad_per_sample is None:  # grads are not materialized (see _style_setup)
        return None, None, None, None, None
    x, diff, style_index = ctx.saved_tensors
    grad_x = grad_target = None
    if ctx.needs_input_grad[0]:
        coef = (grad_per_sample.to(diff.dtype) * (2.0 * ctx.scale)).contiguous()
        grad_x = style_loss_backward(coef, diff, x, ctx.backend)
    if ctx.needs_input_grad[1]:
        # dL/dA_b = -2 g_b D_b, summed into the target rows (a matmul: deterministic, no atomics)
        per_sample = diff * (-2.0 * grad_per_sample.to(diff.dtype))[:, None, None]
        S, C = ctx.target_shape[0], ctx.target_shape[1]
        if style_index is not None:
            one_hot = (style_index[None, :] == torch.arange(S, device=x.device)[:, None]).to(diff.dtype)
            grad_target = (one_hot @ per_sample.flatten(1)).view(S, C, C)
        elif S == 1:
            grad_target = per_sample.sum(0, keepdim=True)
        else:
            grad_target = per_sample
        grad_target = grad_target.to(ctx.target_dtype)
    return grad_x, grad_target, None, None, None


style_loss.register_autograd(_style_bwd, setup_context=_style_setup)


# --- Content (feature) loss -----------------------------------------------------------------------------------
@custom_op(f"{_NS}::content_loss", mutates_args=())
def content_loss(x: torch.Tensor, target: torch.Tensor, need_grad: bool,
                 backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum (x - t)^2`` (0-d fp32) and its gradient ``2 (x - t)`` (dtype of x; empty unless ``need_grad``)."""
    total, grad = kernels(backend).content_loss_forward(x, target, 2.0, need_grad)
    return total, grad if grad is not None else x.new_empty(0)


@content_loss.register_fake
def _(x, target, need_grad, backend):
    return x.new_empty((), dtype=torch.float32), _empty_like_grad(x, need_grad)


def _content_setup(ctx, inputs, output):
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # else autograd fills a zero "gradient" for the gradient buffer output
    ctx.save_for_backward(output[1])
    ctx.target_dtype = inputs[1].dtype


def _content_bwd(ctx, grad_total, _grad_grad):
    if grad_total is None:
        return None, None, None, None
    (grad,) = ctx.saved_tensors
    grad_x = grad * grad_total.to(grad.dtype)
    grad_target = -grad_x.to(ctx.target_dtype) if ctx.needs_input_grad[1] else None
    return grad_x if ctx.needs_input_grad[0] else None, grad_target, None, None


content_loss.register_autograd(_content_bwd, setup_context=_content_setup)


# --- Total variation -------------------------------------------------------------------------------------------
@custom_op(f"{_NS}::tv_loss", mutates_args=())
def tv_loss(x: torch.Tensor, kind: str, eps: float, need_grad: bool,
            backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample TV sums (B,) fp32 and their gradient (dtype of x; empty unless ``need_grad``)."""
    per_sample, grad = kernels(backend).tv_forward(x, kind, eps, 1.0, need_grad)
    return per_sample, grad if grad is not None else x.new_empty(0)


@tv_loss.register_fake
def _(x, kind, eps, need_grad, backend):
    return x.new_empty((x.shape[0],), dtype=torch.float32), _empty_like_grad(x, need_grad)


def _tv_setup(ctx, inputs, output):
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # as for the content loss: no zero tensor the size of x
    ctx.save_for_backward(output[1])


def _tv_bwd(ctx, grad_per_sample, _grad_grad):
    if grad_per_sample is None:
        return None, None, None, None, None
    (grad,) = ctx.saved_tensors
    return grad * grad_per_sample.to(grad.dtype)[:, None, None, None], None, None, None, None


tv_loss.register_autograd(_tv_bwd, setup_context=_tv_setup)


# --- Instance norm (affine rows gathered per sample; conditional instance norm picks them by style) ----------
@custom_op(f"{_NS}::instance_norm", mutates_args=())
def instance_norm(x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None,
                  style_index: torch.Tensor | None, eps: float, relu: bool,
                  backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``y = gamma_b * (x - mu_bc) * rstd_bc + beta_b`` (then ReLU), with ``mean`` and ``rstd`` (B, C) fp32.

    ``gamma`` / ``beta``: tables of 1 row (shared), B rows, or S rows picked by ``style_index`` (B,).
    """
    return kernels(backend).instance_norm_forward(x, gamma, beta, eps, relu, style_index)


@instance_norm.register_fake
def _(x, gamma, beta, style_index, eps, relu, backend):
    stats = x.new_empty(x.shape[:2], dtype=torch.float32)
    return torch.empty_like(x), stats, stats.clone()


@custom_op(f"{_NS}::instance_norm_backward", mutates_args=())
def instance_norm_backward(grad_y: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                           gamma: torch.Tensor | None, beta: torch.Tensor | None,
                           style_index: torch.Tensor | None, relu: bool, need_affine_grad: bool, backend: str
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dx`` and the per-sample ``dgamma``, ``dbeta`` (B, C) fp32 (empty unless ``need_affine_grad``)."""
    dx, dgamma, dbeta = kernels(backend).instance_norm_backward(
        grad_y, x, mean, rstd, gamma, beta, relu, need_affine_grad, style_index)
    if dgamma is None:
        dgamma, dbeta = mean.new_empty(0), mean.new_empty(0)
    return dx, dgamma, dbeta


@instance_norm_backward.register_fake
def _(grad_y, x, mean, rstd, gamma, beta, style_index, relu, need_affine_grad, backend):
    stats = mean.new_empty(mean.shape if need_affine_grad else (0,))
    return torch.empty_like(x), stats, stats.clone()


def _onto_table(per_sample: torch.Tensor, table: torch.Tensor, style_index: torch.Tensor | None) -> torch.Tensor:
    """Sum per-sample parameter gradients (B, C) onto the rows of ``table`` they were read from, in a fixed
    order (an elementwise one-hot sum: deterministic, no scatter-add atomics, no tf32)."""
    C = per_sample.shape[1]
    rows = table.reshape(-1, C).shape[0]
    if style_index is not None:
        one_hot = style_index[None, :] == torch.arange(rows, device=per_sample.device)[:, None]
        grad = (one_hot[:, :, None] * per_sample[None]).sum(1)
    elif rows == 1:
        grad = per_sample.sum(0)
    else:
        grad = per_sample
    return grad.reshape(table.shape).to(table.dtype)


def _in_setup(ctx, inputs, output):
    x, gamma, beta, style_index, eps, relu, backend = inputs
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.set_materialize_grads(False)  # no zero "gradients" for mean and rstd
    ctx.save_for_backward(x, output[1], output[2], gamma, beta, style_index)
    ctx.relu, ctx.backend = relu, backend


def _in_bwd(ctx, grad_y, _grad_mean, _grad_rstd):
    if grad_y is None:
        return None, None, None, None, None, None, None
    x, mean, rstd, gamma, beta, style_index = ctx.saved_tensors
    need_affine = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
    dx, dgamma, dbeta = instance_norm_backward(
        grad_y, x, mean, rstd, gamma, beta, style_index, ctx.relu, need_affine, ctx.backend)
    return (dx if ctx.needs_input_grad[0] else None,
            _onto_table(dgamma, gamma, style_index) if ctx.needs_input_grad[1] else None,
            _onto_table(dbeta, beta, style_index) if ctx.needs_input_grad[2] else None, None, None, None, None)


instance_norm.register_autograd(_in_bwd, setup_context=_in_setup)
