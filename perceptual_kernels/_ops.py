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
from .backends.interface import tv_kind_code

_NS = "perceptual_kernels"


def _acc(dtype: torch.dtype) -> torch.dtype:
    """Accumulation (and loss / statistics) dtype of the kernels: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _first_order_only(backward_op, name: str) -> None:
    """Give a backward op an autograd formula that refuses clearly: the kernels have no second derivatives, and
    without this a double backward (``create_graph=True``) would silently drop the op's second-order term."""

    def refuse(ctx, *grads):
        raise RuntimeError(
            f"perceptual_kernels.{name}: higher-order gradients (double backward through create_graph=True) are "
            "not supported by the kernel backends; compute them under perceptual_kernels.use_backend('reference')"
        )

    backward_op.register_autograd(refuse, setup_context=lambda ctx, inputs, output: None)


def _sum_rows_by_index(per_sample: torch.Tensor, index: torch.Tensor, rows: int) -> torch.Tensor:
    """``out[s] = sum_{b : index_b = s} per_sample[b]`` -> (rows, ...): a fixed-order sum (no scatter-add atomics,
    no tf32 matmul), and a NaN of one sample stays in its own row (rows are selected, not multiplied by a
    one-hot). Chunks of rows keep the (rows, B, ...) selection under 2^22 elements."""
    B, extra = per_sample.shape[0], (1,) * (per_sample.dim() - 1)
    step = max(1, (1 << 22) // per_sample.numel())
    row_ids = torch.arange(rows, device=index.device)
    chunks = []
    for s0 in range(0, rows, step):
        picked = (index[None, :] == row_ids[s0 : s0 + step, None]).view(-1, B, *extra)
        chunks.append(torch.where(picked, per_sample[None], 0).sum(1))
    return torch.cat(chunks)


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


_first_order_only(gram_backward, "gram_matrix")


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
def style_loss(
    x: torch.Tensor, target: torch.Tensor, style_index: torch.Tensor | None, scale: float, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``sum_ij (G_b - A_b)^2`` (B,) and ``D = G - A`` (B, C, C), kept for the backward (fp32; float64
    for float64 x)."""
    return kernels(backend).style_loss_forward(x, target, style_index, scale)


@style_loss.register_fake
def _(x, target, style_index, scale, backend):
    B, C = x.shape[:2]
    acc = _acc(x.dtype)
    return x.new_empty((B,), dtype=acc), x.new_empty((B, C, C), dtype=acc)


@custom_op(f"{_NS}::style_loss_backward", mutates_args=())
def style_loss_backward(coef: torch.Tensor, diff: torch.Tensor, x: torch.Tensor, backend: str) -> torch.Tensor:
    """``dF_b = coef_b * (D_b + D_b^T) F_b``."""
    return kernels(backend).style_loss_backward(coef, diff, x)


@style_loss_backward.register_fake
def _(coef, diff, x, backend):
    return torch.empty_like(x)


_first_order_only(style_loss_backward, "style_loss")


def _style_setup(ctx, inputs, output):
    x, target, style_index, scale, backend = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zero (B, C, C) "gradient" for D
    ctx.save_for_backward(x, output[1], target, style_index)
    ctx.scale, ctx.backend = scale, backend


def _style_bwd(ctx, grad_per_sample, _grad_diff):
    if grad_per_sample is None:  # grads are not materialized (see _style_setup)
        return None, None, None, None, None
    x, diff, target, style_index = ctx.saved_tensors
    grad_x = grad_target = None
    if ctx.needs_input_grad[0]:
        coef = (grad_per_sample.to(diff.dtype) * (2.0 * ctx.scale)).contiguous()
        grad_x = style_loss_backward(coef, diff, x, ctx.backend)
    if ctx.needs_input_grad[1]:
        if torch.is_grad_enabled():  # create_graph=True: D recomputed through the Gram op, so d(dL/dA)/dx exists
            rows = target.index_select(0, style_index) if style_index is not None else target
            diff = gram(x, ctx.scale, diff.dtype, ctx.backend) - rows.to(diff.dtype)
        # dL/dA_b = -2 g_b D_b, summed into the target rows that were read
        per_sample = diff * (-2.0 * grad_per_sample.to(diff.dtype))[:, None, None]
        S = target.shape[0]
        if style_index is not None:
            grad_target = _sum_rows_by_index(per_sample, style_index, S)
        elif S == 1:
            grad_target = per_sample.sum(0, keepdim=True)
        else:
            grad_target = per_sample
        grad_target = grad_target.to(target.dtype)
    return grad_x, grad_target, None, None, None


style_loss.register_autograd(_style_bwd, setup_context=_style_setup)


# --- Content (feature) loss -----------------------------------------------------------------------------------
@custom_op(f"{_NS}::content_loss", mutates_args=())
def content_loss(x: torch.Tensor, target: torch.Tensor, backend: str) -> torch.Tensor:
    """``sum (x - t)^2`` as a 0-d tensor (fp32; float64 for float64 x)."""
    return kernels(backend).content_loss_forward(x, target)


@content_loss.register_fake
def _(x, target, backend):
    return x.new_empty((), dtype=_acc(x.dtype))


@custom_op(f"{_NS}::content_loss_backward", mutates_args=())
def content_loss_backward(x: torch.Tensor, target: torch.Tensor, coef: torch.Tensor, backend: str) -> torch.Tensor:
    """``coef * (x - t)`` in x's dtype, scaled in fp32 (float64) and cast once; ``coef`` 0-d."""
    return kernels(backend).content_loss_backward(x, target, coef)


@content_loss_backward.register_fake
def _(x, target, coef, backend):
    return torch.empty_like(x)


_first_order_only(content_loss_backward, "content_loss")


def _content_setup(ctx, inputs, output):
    x, target, backend = inputs
    ctx.save_for_backward(x, target)
    ctx.backend = backend


def _content_bwd(ctx, grad_total):
    x, target = ctx.saved_tensors
    coef = grad_total.to(_acc(x.dtype)) * 2.0  # d sum (x - t)^2 / dx = 2 (x - t)
    grad_x = content_loss_backward(x, target, coef, ctx.backend) if ctx.needs_input_grad[0] else None
    grad_target = None
    if ctx.needs_input_grad[1]:
        if grad_x is not None and target.dtype == x.dtype:
            grad_target = -grad_x  # exact: coef * (t - x) = -(coef * (x - t))
        else:
            grad_target = (coef * (target.to(coef.dtype) - x.to(coef.dtype))).to(target.dtype)
    return grad_x, grad_target, None


content_loss.register_autograd(_content_bwd, setup_context=_content_setup)


# --- Total variation -------------------------------------------------------------------------------------------
@custom_op(f"{_NS}::tv_loss", mutates_args=())
def tv_loss(x: torch.Tensor, kind: str, eps: float, backend: str) -> torch.Tensor:
    """Per-sample TV sums (B,) (fp32; float64 for float64 x)."""
    return kernels(backend).tv_forward(x, tv_kind_code(kind), eps)


@tv_loss.register_fake
def _(x, kind, eps, backend):
    return x.new_empty((x.shape[0],), dtype=_acc(x.dtype))


@custom_op(f"{_NS}::tv_loss_backward", mutates_args=())
def tv_loss_backward(x: torch.Tensor, kind: str, eps: float, coef: torch.Tensor, backend: str) -> torch.Tensor:
    """``coef_b * dTV_b/dx`` in x's dtype, scaled in fp32 (float64) and cast once; ``coef`` (B,)."""
    return kernels(backend).tv_backward(x, tv_kind_code(kind), eps, coef)


@tv_loss_backward.register_fake
def _(x, kind, eps, coef, backend):
    return torch.empty_like(x)


_first_order_only(tv_loss_backward, "tv_loss")


def _tv_setup(ctx, inputs, output):
    x, kind, eps, backend = inputs
    ctx.save_for_backward(x)
    ctx.kind, ctx.eps, ctx.backend = kind, eps, backend


def _tv_bwd(ctx, grad_per_sample):
    (x,) = ctx.saved_tensors
    coef = grad_per_sample.to(_acc(x.dtype)).contiguous()
    return tv_loss_backward(x, ctx.kind, ctx.eps, coef, ctx.backend), None, None, None


tv_loss.register_autograd(_tv_bwd, setup_context=_tv_setup)


# --- Instance norm (affine rows gathered per sample; conditional instance norm picks them by style) ----------
@custom_op(f"{_NS}::instance_norm", mutates_args=())
def instance_norm(
    x: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    style_index: torch.Tensor | None,
    eps: float,
    relu: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``y = gamma_b * (x - mu_bc) * rstd_bc + beta_b`` (then ReLU), with ``mean`` and ``rstd`` (B, C) (fp32;
    float64 for float64 x).

    ``gamma`` / ``beta``: tables of 1 row (shared), B rows, or S rows picked by ``style_index`` (B,).
    """
    return kernels(backend).instance_norm_forward(x, gamma, beta, style_index, eps, relu)


@instance_norm.register_fake
def _(x, gamma, beta, style_index, eps, relu, backend):
    stats = x.new_empty(x.shape[:2], dtype=_acc(x.dtype))
    return torch.empty_like(x), stats, stats.clone()


@custom_op(f"{_NS}::instance_norm_backward", mutates_args=())
def instance_norm_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    style_index: torch.Tensor | None,
    relu: bool,
    need_affine_grad: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dx`` and the per-sample ``dgamma``, ``dbeta`` (B, C) in mean's dtype (empty unless ``need_affine_grad``)."""
    return kernels(backend).instance_norm_backward(
        grad_y, x, mean, rstd, gamma, beta, style_index, relu, need_affine_grad
    )


@instance_norm_backward.register_fake
def _(grad_y, x, mean, rstd, gamma, beta, style_index, relu, need_affine_grad, backend):
    stats = mean.new_empty(mean.shape if need_affine_grad else (0,))
    return torch.empty_like(x), stats, stats.clone()


_first_order_only(instance_norm_backward, "instance_norm")


def _onto_table(per_sample: torch.Tensor, table: torch.Tensor, style_index: torch.Tensor | None) -> torch.Tensor:
    """Sum per-sample parameter gradients (B, C) onto the rows of ``table`` they were read from."""
    C = per_sample.shape[1]
    rows = table.reshape(-1, C).shape[0]
    if style_index is not None:
        grad = _sum_rows_by_index(per_sample, style_index, rows)
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
        grad_y, x, mean, rstd, gamma, beta, style_index, ctx.relu, need_affine, ctx.backend
    )
    return (
        dx if ctx.needs_input_grad[0] else None,
        _onto_table(dgamma, gamma, style_index) if ctx.needs_input_grad[1] else None,
        _onto_table(dbeta, beta, style_index) if ctx.needs_input_grad[2] else None,
        None,
        None,
        None,
        None,
    )


instance_norm.register_autograd(_in_bwd, setup_context=_in_setup)


# --- LPIPS layer distance (Zhang et al. 2018) -------------------------------------------------------------------
@custom_op(f"{_NS}::lpips_distance", mutates_args=())
def lpips_distance(f0: torch.Tensor, f1: torch.Tensor, weight: torch.Tensor, eps: float, backend: str) -> torch.Tensor:
    """``d_b = mean_hw sum_c w_c (n0 - n1)^2`` (B,) (fp32; float64 for float64 features); ``weight`` (C,) acc."""
    return kernels(backend).lpips_forward(f0, f1, weight, eps)


@lpips_distance.register_fake
def _(f0, f1, weight, eps, backend):
    return f0.new_empty((f0.shape[0],), dtype=_acc(f0.dtype))


@custom_op(f"{_NS}::lpips_distance_backward", mutates_args=())
def lpips_distance_backward(
    f0: torch.Tensor,
    f1: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    coef: torch.Tensor,
    need_grad0: bool,
    need_grad1: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(df0, df1)`` in the features' dtype (empty when not needed); ``coef`` (B,) acc, the upstream gradient
    over H*W."""
    return kernels(backend).lpips_backward(f0, f1, weight, eps, coef, need_grad0, need_grad1)


@lpips_distance_backward.register_fake
def _(f0, f1, weight, eps, coef, need_grad0, need_grad1, backend):
    empty = f0.new_empty((0,))
    return (torch.empty_like(f0) if need_grad0 else empty, torch.empty_like(f1) if need_grad1 else empty.clone())


_first_order_only(lpips_distance_backward, "lpips_distance")


def _lpips_setup(ctx, inputs, output):
    f0, f1, weight, eps, backend = inputs
    ctx.save_for_backward(f0, f1, weight)
    ctx.eps, ctx.backend = eps, backend


def _lpips_bwd(ctx, grad_per_sample):
    f0, f1, weight = ctx.saved_tensors
    if ctx.needs_input_grad[2]:
        raise RuntimeError(
            "perceptual_kernels.lpips_distance: the kernel backends compute no gradient for weight (the published "
            "LPIPS layers are frozen); detach it, or run under perceptual_kernels.use_backend('reference')"
        )
    need0, need1 = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not (need0 or need1):
        return None, None, None, None, None
    H, W = f0.shape[2:]
    coef = (grad_per_sample.to(_acc(f0.dtype)) / (H * W)).contiguous()
    df0, df1 = lpips_distance_backward(f0, f1, weight, ctx.eps, coef, need0, need1, ctx.backend)
    return (df0 if need0 else None), (df1 if need1 else None), None, None, None


lpips_distance.register_autograd(_lpips_bwd, setup_context=_lpips_setup)
