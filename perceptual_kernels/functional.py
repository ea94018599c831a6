"""Public ops: check the arguments once, pick a backend, run it.

Shapes: ``x`` is (B, C, H, W) (the Gram and style loss also take (B, C, N)); ``F_b`` is ``x[b]`` as a C x M
matrix, M = H*W. Losses follow ``F.mse_loss`` reduction semantics and return float32 for fp16/bf16 inputs.
The ``reference`` backend is plain torch (autograd, float64); the others go through the custom ops of
:mod:`perceptual_kernels._ops` with hand-written backward kernels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import _ops
from . import _validation as check
from ._reduction import reduce_loss
from .backends import reference, select

__all__ = [
    "gram_matrix",
    "style_loss",
    "content_loss",
    "tv_loss",
    "instance_norm",
    "conditional_instance_norm",
    "lpips_distance",
    "style_loss_gradient",
]


def _reference(fn: Callable[..., torch.Tensor], x: torch.Tensor, *args: object) -> torch.Tensor:
    """Run a reference op with autocast off, so it computes like the kernels (fp32 math on the given dtypes).
    Devices without autocast (``meta`` for shape propagation) run it as it is."""
    if not torch.amp.is_autocast_available(x.device.type):
        return fn(x, *args)
    with torch.autocast(x.device.type, enabled=False):
        return fn(x, *args)


def gram_matrix(x: torch.Tensor, normalize: str | float = "chw", out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Gram matrices ``G_b = F_b F_b^T / s`` -> (B, C, C).

    ``normalize``: "chw" (s = C*H*W, Johnson et al.), "hw" (s = H*W), "none" (s = 1, Gatys' raw Gram) or a
    positive divisor. Accumulates in fp32 and scales before casting to ``out_dtype`` (default: ``x.dtype``).
    """
    x = check.as_4d(check.floating_tensor("x", x, (3, 4)))
    B, C, H, W = x.shape
    scale = check.fits_accumulation("the Gram scale 1 / normalize", check.gram_scale(normalize, C, H * W), x.dtype)
    out_dtype = check.floating_dtype("out_dtype", out_dtype) or x.dtype
    backend = select(x.device, x.dtype)
    if backend == "reference":
        return _reference(reference.gram_matrix, x, scale, out_dtype)
    return _ops.gram(x, scale, out_dtype, backend)


def _style_target(target: object, x: torch.Tensor, style_index: object) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate the style target; returns it as (1 | B | S, C, C) and the int64 index (or None)."""
    B, C = x.shape[:2]
    target = check.floating_tensor("target", target, (2, 3))
    check.same_device(x, target=target)
    if target.shape[-2:] != (C, C):
        raise ValueError(
            f"target must end in ({C}, {C}) to match the {C} channels of x, got shape {tuple(target.shape)}"
        )
    if target.dim() == 2:
        if style_index is not None:
            raise ValueError("style_index needs a stack of targets (S, C, C), got a single (C, C) target")
        return target.unsqueeze(0), None
    if style_index is not None:
        return target, check.index_tensor("style_index", style_index, B, target.shape[0], x.device)
    if target.shape[0] not in (1, B):
        raise ValueError(
            f"target of shape {tuple(target.shape)} needs style_index (B,) to pick one of its "
            f"{target.shape[0]} rows per sample, or a first dimension of 1 or B = {B}"
        )
    return target, None


def style_loss(
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    normalize: str | float = "chw",
    weight: float = 1.0,
    reduction: str = "mean",
    style_index: torch.Tensor | None = None,
    criterion: str = "l2",
) -> torch.Tensor:
    """Style loss ``w * reduce_b sum_ij (G_b - A_b)_ij^2`` with ``G = gram_matrix(x, normalize)``.

    ``target`` A: (C, C) for every sample, (B, C, C) per sample, or (S, C, C) with ``style_index`` (B,) int64
    choosing a row per sample. ``reduction="mean"`` divides by B*C*C (equals ``F.mse_loss(G, A)``), "sum" does
    not, "none" returns (B,). Gatys' layer loss ``1/(4 N^2 M^2) sum (G - A)^2`` is ``normalize="chw",
    reduction="sum", weight=0.25``. ``criterion="l1"``: ``w * reduce_b sum_ij |G_b - A_b|_ij`` ("mean" equals
    ``F.l1_loss(G, A)``), gradient ``sign(G - A)`` with ``sign(NaN) = NaN``. Fused: one pass over x forward, one
    ``(D + D^T) F`` product backward (``D = G - A`` for "l2", ``sign(G - A)`` for "l1").
    """
    x = check.as_4d(check.floating_tensor("x", x, (3, 4)))
    B, C, H, W = x.shape
    scale = check.fits_accumulation("the Gram scale 1 / normalize", check.gram_scale(normalize, C, H * W), x.dtype)
    weight = check.real_number("weight", weight)
    reduction = check.reduction(reduction)
    criterion = check.criterion(criterion)
    target, index = _style_target(target, x, style_index)
    backend = select(x.device, x.dtype)
    if backend == "reference":
        return _reference(reference.style_loss, x, target, index, scale, weight, reduction, criterion)
    per_sample, _ = _ops.style_loss(x, target, index, scale, backend, criterion)
    return reduce_loss(per_sample, reduction, weight, B * C * C)


def _broadcast_shape(x: torch.Tensor, target: torch.Tensor) -> torch.Size:
    """The shape ``x`` and ``target`` broadcast to (``torch.broadcast_shapes``, as ``F.mse_loss``)."""
    try:
        return torch.broadcast_shapes(x.shape, target.shape)
    except RuntimeError:
        raise ValueError(
            f"target of shape {tuple(target.shape)} does not broadcast with x of shape {tuple(x.shape)} "
            "(torch broadcasting rules, as F.mse_loss / F.l1_loss)"
        ) from None


def content_loss(
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: float = 1.0,
    reduction: str = "mean",
    criterion: str = "l2",
) -> torch.Tensor:
    """Feature reconstruction loss ``w * reduce (x - target)^2`` ("l2", ``F.mse_loss`` semantics) or
    ``w * reduce |x - target|`` ("l1", ``F.l1_loss`` semantics; gradient ``sign(x - target)``, ``sign(0) = 0``,
    ``sign(NaN) = NaN``).

    ``x`` and ``target`` broadcast as in ``F.mse_loss``: the loss is over the broadcast shape ("mean" divides by
    its element count, "none" returns it). A shared target, e.g. (1, C, H, W) for a (B, C, H, W) batch, is
    intended usage: no warning, and the kernels read it through stride-0 views (never expanded in memory).
    The backward kernel writes ``c (x - target)`` (or ``c sign(x - target)``) in one pass, with ``c`` (the
    upstream gradient times ``2 w`` or ``2 w / N``; ``w`` or ``w / N`` for "l1") applied in fp32 before the one
    cast to x's dtype. ``reduction="none"`` is elementwise and runs as plain torch ops on every backend. Ranks other
    than 4 are viewed as 4-D; the one exception is a rank-5 or rank-6 pair whose dimensions do not merge into 4
    (e.g. x (2, 3, 2, 5, 4, 6) with target (2, 1, 2, 1, 4, 1)), which is reshaped to 4-D, copying.
    """
    x = check.floating_tensor("x", x, (1, 2, 3, 4, 5, 6))
    target = check.floating_tensor("target", target, (1, 2, 3, 4, 5, 6))
    check.same_device(x, target=target)
    shape = _broadcast_shape(x, target)
    weight = check.real_number("weight", weight)
    reduction = check.reduction(reduction)
    criterion = check.criterion(criterion)
    backend = select(x.device, x.dtype)
    if backend == "reference" or reduction == "none":
        return _reference(reference.content_loss, x, target, weight, reduction, criterion)
    if target.dtype == torch.float64 and x.dtype != torch.float64:
        target = target.float()  # the kernels compute in fp32 (float64 only for float64 x): the same rounding
    # stride-0 views of the broadcast shape (autograd sums x's gradient back over the expanded dimensions)
    x = x if x.shape == shape else x.expand(shape)
    target = target if target.shape == shape else target.expand(shape)
    x, target = _content_views(x, target)
    total = _ops.content_loss(x, target, backend, criterion)
    return reduce_loss(total, reduction, weight, x.numel())


def _content_views(x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` and ``target`` (one shape) as 4-D tensors for the kernels, views wherever possible.

    Ranks below 4 get leading unit dimensions. Above 4, the size-1 dimensions are dropped and neighbours merged
    where both tensors' strides allow it (a contiguous pair, or two stride-0 broadcast dimensions); when more than
    4 dimensions remain, both are reshaped to (-1, *last 3), which copies (a broadcast target of such a shape is
    then expanded in memory).
    """
    if x.dim() <= 4:
        lead = (1,) * (4 - x.dim())
        return x.view(*lead, *x.shape), target.view(*lead, *target.shape)
    dims: list[list[int]] = []  # [size, x stride, target stride], outermost first
    for n, sx, st in zip(x.shape, x.stride(), target.stride()):
        if n == 1:
            continue
        if dims and dims[-1][1] == sx * n and dims[-1][2] == st * n:
            dims[-1] = [dims[-1][0] * n, sx, st]
        else:
            dims.append([n, sx, st])
    if len(dims) <= 4:
        shape4 = (1,) * (4 - len(dims)) + tuple(d[0] for d in dims)
        return x.view(shape4), target.view(shape4)
    shape4 = (-1, *x.shape[-3:])
    return x.reshape(shape4), target.reshape(shape4)


def tv_loss(
    x: torch.Tensor, *, kind: str = "squared", weight: float = 1.0, reduction: str = "mean", eps: float = 1e-8
) -> torch.Tensor:
    """Total variation of x (B, C, H, W) with ``dh``, ``dw`` the vertical and horizontal differences.

    "squared": ``sum dh^2 + sum dw^2``; "l1": ``sum |dh| + sum |dw|``; "isotropic":
    ``sum_{i<H-1, j<W-1} sqrt(dh^2 + dw^2 + eps)``. "mean" divides by B*C*H*W; "none" returns (B,).
    One pass over x computes the loss, one more the gradient (scaled in fp32, cast once).
    """
    x = check.floating_tensor("x", x, (4,))
    kind = check.tv_kind(kind)
    weight = check.real_number("weight", weight)
    reduction = check.reduction(reduction)
    eps = check.fits_accumulation("eps", check.real_number("eps", eps, positive=True), x.dtype)
    backend = select(x.device, x.dtype)
    if backend == "reference":
        return _reference(reference.tv_loss, x, kind, eps, weight, reduction)
    per_sample = _ops.tv_loss(x, kind, eps, backend)
    return reduce_loss(per_sample, reduction, weight, x.numel())


def _affine_rows(
    table: torch.Tensor | None,
    x: torch.Tensor,
    index: torch.Tensor | None,
    mix: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor | None:
    """Per-sample rows (B, C) of a (C,) or (S, C) table: ``table[index_b]``, or ``sum_s mix_bs table_s``.

    Picked rows are selected (``torch.where`` over the rows), never multiplied by a one-hot, so a NaN or Inf in
    a row no sample uses stays out of the output; mixing is the weighted sum it is defined as. Both keep the table
    gradient a deterministic reduction (no scatter-add atomics) untouched by the matmul precision (tf32).
    """
    if table is None:
        return None
    table = table.to(dtype)
    if index is not None:
        picked = index[:, None] == torch.arange(table.shape[0], device=x.device)  # (B, S)
        return torch.where(picked[:, :, None], table[None], 0).sum(1)
    if mix is not None:
        return (mix.to(dtype)[:, :, None] * table[None]).sum(1)
    return table.expand(x.shape[0], x.shape[1])  # (C,) or a single (1, C) row


def _check_table(name: str, table: object, C: int, x: torch.Tensor) -> torch.Tensor:
    table = check.floating_tensor(name, table, (1, 2))
    check.same_device(x, **{name: table})
    if table.shape[-1] != C:
        raise ValueError(
            f"{name} must be (S, {C}) or ({C},) to match the {C} channels of x, got shape {tuple(table.shape)}"
        )
    return table


def _instance_norm(
    x: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    index: torch.Tensor | None,
    weights: torch.Tensor | None,
    eps: float,
    activation: str | None,
) -> torch.Tensor:
    """Dispatch instance norm; affine tables are (C,) or (S, C), rows picked by ``index`` or mixed by
    ``weights`` (B, S). Kernels gather picked rows themselves; mixed rows are built here."""
    eps = check.fits_accumulation("eps", check.real_number("eps", eps, positive=True), x.dtype)
    activation = check.choice("activation", activation, check.ACTIVATIONS)  # type: ignore[arg-type]
    relu = activation == "relu"
    backend = select(x.device, x.dtype)
    if backend == "reference" or weights is not None:
        dtype = torch.float64 if backend == "reference" and x.dtype == torch.float64 else torch.float32
        gamma, beta = _affine_rows(gamma, x, index, weights, dtype), _affine_rows(beta, x, index, weights, dtype)
        index = None
        if backend == "reference":
            return _reference(reference.instance_norm, x, gamma, beta, eps, relu)
    y, _, _ = _ops.instance_norm(x, gamma, beta, index, eps, relu, backend)
    return y


def instance_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    activation: str | None = None,
) -> torch.Tensor:
    """Instance norm ``y = weight_c * (x - mu_bc) / sqrt(var_bc + eps) + bias_c``, optionally ReLU'd.

    Statistics per (sample, channel) over H*W (biased variance), always, in training and eval; computed in fp32.
    ``weight`` / ``bias``: (C,) or None. x: (B, C, H, W).
    """
    x = check.floating_tensor("x", x, (4,))
    C = x.shape[1]
    for name, table in (("weight", weight), ("bias", bias)):
        if table is not None:
            table = check.floating_tensor(name, table, (1,))
            check.same_device(x, **{name: table})
            if table.shape != (C,):
                raise ValueError(f"{name} must have shape ({C},), got {tuple(table.shape)}")
    return _instance_norm(x, weight, bias, None, None, eps, activation)


def conditional_instance_norm(
    x: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    *,
    style_index: torch.Tensor | None = None,
    style_weights: torch.Tensor | None = None,
    eps: float = 1e-5,
    activation: str | None = None,
) -> torch.Tensor:
    """Conditional instance norm (Dumoulin et al.): instance norm with per-sample affine rows of (S, C) tables.

    ``style_index`` (B,) int picks ``gamma[s_b]``; ``style_weights`` (B, S) mixes ``sum_s w_bs gamma[s]``
    (style interpolation); with neither, the tables must have one row (or be (C,)). Gradients flow to x, gamma
    and beta (summed over samples that share a style).
    """
    x = check.floating_tensor("x", x, (4,))
    B, C = x.shape[:2]
    gamma = _check_table("gamma", gamma, C, x)
    beta = _check_table("beta", beta, C, x)
    if gamma.shape != beta.shape:
        raise ValueError(f"gamma and beta must have one shape, got {tuple(gamma.shape)} and {tuple(beta.shape)}")
    S = gamma.shape[0] if gamma.dim() == 2 else 1
    if style_index is not None and style_weights is not None:
        raise ValueError("give style_index or style_weights, not both")
    index = weights = None
    if style_index is not None:
        index = check.index_tensor("style_index", style_index, B, S, x.device)
    elif style_weights is not None:
        weights = check.floating_tensor("style_weights", style_weights, (2,))
        check.same_device(x, style_weights=weights)
        if weights.shape != (B, S):
            raise ValueError(f"style_weights must have shape (B, S) = ({B}, {S}), got {tuple(weights.shape)}")
    elif gamma.dim() == 2 and S != 1:
        raise ValueError(f"gamma has {S} style rows: give style_index (B,) or style_weights (B, {S})")
    if gamma.dim() == 1 and (index is not None or weights is not None):
        raise ValueError("style_index / style_weights need (S, C) tables, got (C,) gamma and beta")
    return _instance_norm(x, gamma, beta, index, weights, eps, activation)


# --- LPIPS layer distance (Zhang et al. 2018) -------------------------------------------------------------------
def lpips_distance(f0: torch.Tensor, f1: torch.Tensor, weight: torch.Tensor, *, eps: float = 1e-10) -> torch.Tensor:
    """The LPIPS distance of one feature layer -> (B,) (float32 for fp16 / bf16 / fp32 features, float64 for
    float64).

    ``d_b = mean_hw sum_c w_c (f0_c / (||f0|| + eps) - f1_c / (||f1|| + eps))^2`` with ``||f|| = sqrt(sum_c f_c^2)``
    at each pixel (Zhang et al. 2018; ``eps`` as the ``lpips`` package). ``f0``, ``f1``: (B, C, H, W) of one shape
    and dtype, any strides; ``weight``: the layer's (C,) linear weights. One pass per pixel forward; the backward
    writes the gradients of ``f0`` and ``f1`` (either or both) in one pass, scaled in fp32 and cast once.
    ``weight`` is a frozen published layer: the kernel backends compute no gradient for it and refuse a ``weight``
    that requires grad (the ``reference`` backend differentiates it).
    """
    f0 = check.floating_tensor("f0", f0, (4,))
    f1 = check.floating_tensor("f1", f1, (4,))
    check.same_device(f0, f1=f1)
    if f1.shape != f0.shape or f1.dtype != f0.dtype:
        raise ValueError(
            f"f1 must have the shape and dtype of f0 {tuple(f0.shape)} {f0.dtype}, got {tuple(f1.shape)} {f1.dtype}"
        )
    C = f0.shape[1]
    weight = check.floating_tensor("weight", weight, (1, 4))
    check.same_device(f0, weight=weight)
    if weight.numel() != C or (weight.dim() == 4 and weight.shape != (1, C, 1, 1)):
        raise ValueError(
            f"weight must be ({C},) or (1, {C}, 1, 1) (a 1x1 convolution) to match the {C} channels of f0, "
            f"got shape {tuple(weight.shape)}"
        )
    eps = check.fits_accumulation("eps", check.real_number("eps", eps, positive=True), f0.dtype)
    backend = select(f0.device, f0.dtype)
    weight = weight.reshape(C)
    if backend == "reference":
        return _reference(reference.lpips_distance, f0, f1, weight, eps)
    if weight.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            "weight requires grad, but the LPIPS kernels compute no gradient for it (the published linear layers "
            "are frozen): pass weight.detach(), or use perceptual_kernels.use_backend('reference') to train it"
        )
    acc = torch.float64 if f0.dtype == torch.float64 else torch.float32
    return _ops.lpips_distance(f0, f1, weight.detach().to(acc).contiguous(), eps, backend)


# --- Style loss gradient with a given D (tiled / distributed Gatys) --------------------------------------------
def style_loss_gradient(x: torch.Tensor, diff: torch.Tensor, coef: float | torch.Tensor = 1.0) -> torch.Tensor:
    """The style loss gradient for a fixed ``D``: ``dF_b = coef_b (D_b + D_b^T) F_b`` -> x's shape and dtype.

    With ``D = G - A`` of the whole image (``G`` summed over tiles with :func:`gram_matrix` and the full-image
    normaliser), the gradient of ``coef / 2 * sum_ij D_ij^2`` (times ``1 / scale``) at the positions of any part
    of the image is this product of D with that part's features: ``style_loss``'s backward without its forward.

    ``x``: (B, C, H, W) or (B, C, N), any strides (a core view of a tile's features). ``diff``: (C, C) or
    (B, C, C). ``coef``: a number or a (B,) tensor. Computed in fp32 (float64 for float64 x), cast once. Not
    differentiable on the kernel backends (the reference backend is plain torch).
    """
    x = check.floating_tensor("x", x, (3, 4))
    shape = x.shape
    x = check.as_4d(x)
    B, C = x.shape[:2]
    diff = check.floating_tensor("diff", diff, (2, 3))
    check.same_device(x, diff=diff)
    if diff.shape[-2:] != (C, C) or (diff.dim() == 3 and diff.shape[0] != B):
        raise ValueError(f"diff must be ({C}, {C}) or ({B}, {C}, {C}) to match x, got shape {tuple(diff.shape)}")
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    if isinstance(coef, torch.Tensor):
        coef = check.floating_tensor("coef", coef, (0, 1))
        check.same_device(x, coef=coef)
        if coef.dim() == 1 and coef.shape[0] != B:
            raise ValueError(f"coef must be a number or a ({B},) tensor, got shape {tuple(coef.shape)}")
        coef = coef.to(acc).expand(B).contiguous()
    else:
        coef = torch.full((B,), check.real_number("coef", coef), dtype=acc, device=x.device)
    diff = diff.to(acc).expand(B, C, C)
    backend = select(x.device, x.dtype)
    if backend == "reference":
        out = _reference(reference.style_loss_gradient, x, diff, coef)
    else:
        out = _ops.style_loss_backward(coef, diff.contiguous(), x, backend)
    return out.squeeze(2) if len(shape) == 3 else out
