"""Plain-torch reference of every op: differentiable by autograd, float64-capable; the oracle of the tests.

It is also what CPU tensors run on until the compiled ``cpu`` backend is built, so it uses torch's fused
primitives (``F.mse_loss``, ``F.instance_norm``) where they compute the same thing; the tests check it against
hand-written formulas.

Shapes: ``x`` is (B, C, H, W); ``F_b`` is ``x[b]`` viewed as a C x M matrix, M = H*W. Arguments arrive
validated by :mod:`perceptual_kernels.functional`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._reduction import reduce_loss


def gram_matrix(x: torch.Tensor, scale: float, out_dtype: torch.dtype) -> torch.Tensor:
    """``G_b = F_b F_b^T * scale`` -> (B, C, C), accumulated in fp32 (or fp64) and scaled before the cast."""
    feats = x.flatten(2)
    acc = feats.double() if x.dtype == torch.float64 else feats.float()
    return (torch.bmm(acc, acc.transpose(1, 2)) * scale).to(out_dtype)


def style_loss(
    x: torch.Tensor,
    target: torch.Tensor,
    style_index: torch.Tensor | None,
    scale: float,
    weight: float,
    reduction: str,
    criterion: str = "l2",
) -> torch.Tensor:
    """``w * reduce_b sum_ij (G_b - A_b)^2`` ("l2") or ``|G_b - A_b|`` ("l1"); A is (C, C), (B, C, C) or
    (S, C, C) picked by ``style_index``.

    ``"mean"`` divides by B*C*C (like ``F.mse_loss(G, A)`` / ``F.l1_loss(G, A)``); ``"none"`` returns (B,). The
    l1 gradient is ``sign(G - A)`` with ``sign(NaN) = NaN``.
    """
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    gram = gram_matrix(x, scale, acc_dtype)
    tgt = target.to(acc_dtype)
    if style_index is not None:
        tgt = tgt.index_select(0, style_index)
    diff = gram - tgt
    per_sample = (_abs(diff) if criterion == "l1" else diff**2).sum(dim=(1, 2))
    B, C = x.shape[:2]
    return reduce_loss(per_sample, reduction, weight, B * C * C)


def content_loss(
    x: torch.Tensor, target: torch.Tensor, weight: float, reduction: str, criterion: str = "l2"
) -> torch.Tensor:
    """``w * reduce (x - target)^2`` ("l2") or ``w * reduce |x - target|`` ("l1") with ``F.mse_loss`` /
    ``F.l1_loss`` semantics, broadcasting included (without their warning), computed in x's accumulation dtype like
    the kernels (fp32 for fp16 / bf16 / fp32 x whatever the target's dtype, float64 for float64 x). The l1
    gradient is ``sign(x - target)`` with ``sign(NaN) = NaN``."""
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    shape = torch.broadcast_shapes(x.shape, target.shape)
    xa, ta = x.to(acc_dtype).expand(shape), target.to(acc_dtype).expand(shape)  # views: F.*_loss does not warn
    if criterion == "l2":
        return weight * F.mse_loss(xa, ta, reduction=reduction)
    loss = _abs(xa - ta)
    if reduction == "none":
        return weight * loss
    return weight * (loss.mean() if reduction == "mean" else loss.sum())


def _abs(d: torch.Tensor) -> torch.Tensor:
    """``|d|`` whose gradient ``sign(d)`` is NaN at NaN (``torch.abs``'s backward would give 0 there)."""
    return d * torch.where(d > 0, 1.0, torch.where(d < 0, -1.0, d * 0.0)).detach()


def tv_loss(x: torch.Tensor, kind: str, eps: float, weight: float, reduction: str) -> torch.Tensor:
    """Total variation (squared / l1 / isotropic), per sample summed over C, H, W; ``"mean"`` divides by
    B*C*H*W and ``"none"`` returns (B,)."""
    xf = x.double() if x.dtype == torch.float64 else x.float()
    dh = xf[:, :, 1:, :] - xf[:, :, :-1, :]
    dw = xf[:, :, :, 1:] - xf[:, :, :, :-1]
    if kind == "squared":
        per_sample = (dh**2).sum(dim=(1, 2, 3)) + (dw**2).sum(dim=(1, 2, 3))
    elif kind == "l1":
        per_sample = _abs(dh).sum(dim=(1, 2, 3)) + _abs(dw).sum(dim=(1, 2, 3))
    else:
        mag = dh[:, :, :, :-1] ** 2 + dw[:, :, :-1, :] ** 2 + eps
        per_sample = mag.sqrt().sum(dim=(1, 2, 3))
    return reduce_loss(per_sample, reduction, weight, x.numel())


def instance_norm(
    x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None, eps: float, relu: bool
) -> torch.Tensor:
    """``y = gamma_bc * (x - mu_bc) / sqrt(var_bc + eps) + beta_bc`` (biased variance over H*W), then ReLU.

    ``gamma`` / ``beta`` are per-sample rows (B, C) or None; statistics in fp32 (fp64 for fp64 input).
    """
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    xa = x.to(acc_dtype)
    if x.shape[2] * x.shape[3] > 1:
        y = F.instance_norm(xa, eps=eps)
    else:  # one pixel per plane (F.instance_norm refuses it): x - mean = 0, the output is beta
        y = (xa - xa.mean(dim=(2, 3), keepdim=True)) * (1.0 / eps**0.5)
    if gamma is not None:
        y = y * gamma.to(acc_dtype)[:, :, None, None]
    if beta is not None:
        y = y + beta.to(acc_dtype)[:, :, None, None]
    if relu:
        y = torch.relu(y)
    return y.to(x.dtype)


# --- LPIPS layer distance -------------------------------------------------------------------------------------
def lpips_distance(f0: torch.Tensor, f1: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``d_b = mean_hw sum_c w_c (f0_c / (||f0|| + eps) - f1_c / (||f1|| + eps))^2`` -> (B,) in acc.

    ``||f||`` is the norm over channels at each pixel (``torch.linalg.vector_norm``: its gradient at a zero feature
    vector is the true one, where the ``lpips`` package's ``sqrt(sum f^2)`` gives NaN). ``weight`` (C,) may
    require grad here (the kernel backends refuse it).
    """
    acc_dtype = torch.float64 if f0.dtype == torch.float64 else torch.float32
    a0, a1 = f0.to(acc_dtype), f1.to(acc_dtype)
    n0 = a0 / (torch.linalg.vector_norm(a0, dim=1, keepdim=True) + eps)
    n1 = a1 / (torch.linalg.vector_norm(a1, dim=1, keepdim=True) + eps)
    per_pixel = ((n0 - n1) ** 2 * weight.to(acc_dtype)[:, None, None]).sum(1)
    return per_pixel.mean(dim=(1, 2))


def style_loss_gradient(x: torch.Tensor, diff: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """``dF_b = coef_b (D_b + D_b^T) F_b`` in diff's (accumulation) dtype, cast to x's; diff (B, C, C), coef (B,)."""
    feats = x.flatten(2).to(diff.dtype)
    sym = (diff + diff.transpose(1, 2)) * coef[:, None, None]
    return torch.bmm(sym, feats).view(x.shape).to(x.dtype)
