"""The kernel interface: the ten functions every kernel backend implements, in the argument order of the C++
schemas (``csrc/bindings.cpp``), so the compiled backends are ``torch.ops.pk_native`` itself.

Callers (:mod:`perceptual_kernels._ops`) pass validated 4-D ``x`` (B, C, H, W) of any strides; ``F_b`` is
``x[b]`` as a C x M matrix, M = H*W. "acc" is the accumulation dtype: float64 for float64 ``x`` (backends that
take it), else float32. Gradients come back in ``x``'s dtype, scaled in acc and cast once. A backend is a module
(or any object) with these functions: :data:`KERNEL_FUNCTIONS` lists them and :func:`register_backend
<perceptual_kernels.backends.register_backend>` checks them.
"""

from __future__ import annotations

from typing import Protocol

import torch

# TV kinds: the position in this tuple is the integer ``kind`` of tv_forward / tv_backward (C++ ``TvKind``).
TV_KINDS = ("squared", "l1", "isotropic")


def tv_kind_code(kind: str) -> int:
    """The kernel interface's integer for a TV kind name (``"squared"`` -> 0, ``"l1"`` -> 1, ``"isotropic"`` -> 2)."""
    return TV_KINDS.index(kind)


# Loss criteria of content_loss / style_loss: the position in this tuple is the integer ``criterion`` of
# content_loss_forward / content_loss_backward / style_loss_forward (C++ ``Criterion``).
CRITERIA = ("l2", "l1")


def criterion_code(criterion: str) -> int:
    """The kernel interface's integer for a criterion name (``"l2"`` -> 0, ``"l1"`` -> 1)."""
    return CRITERIA.index(criterion)


class KernelBackend(Protocol):
    """What a kernel backend provides (shapes and formulas; see each backend's docstrings for its layouts)."""

    def gram_forward(self, x: torch.Tensor, scale: float, out_dtype: torch.dtype) -> torch.Tensor:
        """``G_b = scale * F_b F_b^T`` -> (B, C, C) in ``out_dtype``, accumulated in acc."""
        ...

    def gram_backward(self, grad: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
        """``dF_b = scale * (dG_b + dG_b^T) F_b``; ``grad`` (B, C, C)."""
        ...

    def style_loss_forward(
        self, x: torch.Tensor, target: torch.Tensor, style_index: torch.Tensor | None, scale: float, criterion: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """With ``D_b = scale * F_b F_b^T - A_b``: ``criterion`` 0 ("l2") gives ``(sum_ij D_b^2 (B,), D (B, C, C))``,
        1 ("l1") ``(sum_ij |D_b| (B,), sign(D) (B, C, C))`` (``sign(0) = 0``, ``sign(NaN) = NaN``), in acc.
        ``target`` (1, C, C), (B, C, C), or (S, C, C) with rows picked by ``style_index`` (B,) int64.
        ``criterion`` is :func:`criterion_code` of a :data:`CRITERIA` name."""
        ...

    def style_loss_backward(self, coef: torch.Tensor, diff: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``dF_b = coef_b (D_b + D_b^T) F_b``; ``coef`` (B,) acc, ``diff`` the D (or sign(D)) of the forward."""
        ...

    def content_loss_forward(self, x: torch.Tensor, target: torch.Tensor, criterion: int) -> torch.Tensor:
        """``sum (x - t)^2`` (criterion 0, "l2") or ``sum |x - t|`` (1, "l1") -> 0-d acc; ``target`` of x's shape,
        any floating dtype; both of any strides, stride-0 (expanded) dimensions included."""
        ...

    def content_loss_backward(
        self, x: torch.Tensor, target: torch.Tensor, coef: torch.Tensor, criterion: int
    ) -> torch.Tensor:
        """``coef * (x - t)`` ("l2") or ``coef * sign(x - t)`` ("l1", ``sign(NaN) = NaN``); ``coef`` a one-element
        acc tensor; the result is allocated like ``torch.empty_like(x)`` (dense even for a stride-0 x)."""
        ...

    def tv_forward(self, x: torch.Tensor, kind: int, eps: float) -> torch.Tensor:
        """Per-sample total variation (B,) in acc; ``kind`` is :func:`tv_kind_code` of a :data:`TV_KINDS` name."""
        ...

    def tv_backward(self, x: torch.Tensor, kind: int, eps: float, coef: torch.Tensor) -> torch.Tensor:
        """``coef_b * dTV_b/dx``; ``coef`` (B,) acc."""
        ...

    def instance_norm_forward(
        self,
        x: torch.Tensor,
        gamma: torch.Tensor | None,
        beta: torch.Tensor | None,
        style_index: torch.Tensor | None,
        eps: float,
        relu: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(y, mean, rstd)``: ``y = gamma_b (x - mean_bc) rstd_bc + beta_b`` (then ReLU) in x's dtype;
        ``mean``, ``rstd = 1 / sqrt(var + eps)`` (B, C) acc. ``gamma`` / ``beta``: tables of 1 row, B rows, or S
        rows picked by ``style_index`` (B,); None means 1 / 0."""
        ...

    def instance_norm_backward(
        self,
        grad_y: torch.Tensor,
        x: torch.Tensor,
        mean: torch.Tensor,
        rstd: torch.Tensor,
        gamma: torch.Tensor | None,
        beta: torch.Tensor | None,
        style_index: torch.Tensor | None,
        relu: bool,
        need_affine_grad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(dx, dgamma, dbeta)``; the per-sample ``dgamma = sum_hw g xhat``, ``dbeta = sum_hw g`` (B, C) acc,
        or empty tensors when not ``need_affine_grad``."""
        ...


KERNEL_FUNCTIONS = tuple(name for name in KernelBackend.__dict__ if not name.startswith("_"))


def missing_functions(backend: object) -> list[str]:
    """The kernel-interface functions ``backend`` does not provide (empty when it implements them all)."""
    return [name for name in KERNEL_FUNCTIONS if not callable(getattr(backend, name, None))]
