"""The kernel interface: the functions every kernel backend implements, in the argument order of the C++
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


class KernelBackend(Protocol):
    """What a kernel backend provides (shapes and formulas; see each backend's docstrings for its layouts)."""

    def gram_forward(self, x: torch.Tensor, scale: float, out_dtype: torch.dtype) -> torch.Tensor:
        """``G_b = scale * F_b F_b^T`` -> (B, C, C) in ``out_dtype``, accumulated in acc."""
        ...

    def gram_backward(self, grad: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
        """``dF_b = scale * (dG_b + dG_b^T) F_b``; ``grad`` (B, C, C)."""
        ...

    def style_loss_forward(
        self, x: torch.Tensor, target: torch.Tensor, style_index: torch.Tensor | None, scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sum_ij D_b^2 (B,), D (B, C, C))`` in acc, ``D_b = scale * F_b F_b^T - A_b``; ``target`` (1, C, C),
        (B, C, C), or (S, C, C) with rows picked by ``style_index`` (B,) int64."""
        ...

    def style_loss_backward(self, coef: torch.Tensor, diff: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``dF_b = coef_b (D_b + D_b^T) F_b``; ``coef`` (B,) acc, ``diff`` the D of the forward."""
        ...

    def content_loss_forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``sum (x - t)^2`` -> 0-d acc; ``target`` of x's shape, any floating dtype."""
        ...

    def content_loss_backward(self, x: torch.Tensor, target: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """``coef * (x - t)``; ``coef`` a one-element acc tensor."""
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

    # --- LPIPS layer distance ---------------------------------------------------------------------------------
    def lpips_forward(self, f0: torch.Tensor, f1: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """``d_b = mean_hw sum_c w_c (n0_c - n1_c)^2`` (B,) acc, ``n = f / (||f|| + eps)`` with ``||f||`` the
        channel norm at each pixel; ``f0``, ``f1`` (B, C, H, W) of one dtype, ``weight`` (C,) contiguous acc."""
        ...

    def lpips_backward(
        self,
        f0: torch.Tensor,
        f1: torch.Tensor,
        weight: torch.Tensor,
        eps: float,
        coef: torch.Tensor,
        need_grad0: bool,
        need_grad1: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(df0, df1)`` in the features' dtype, scaled in acc and cast once: with ``g = 2 w (n0 - n1)`` and
        ``r = ||f||`` at a pixel, ``df0 = coef_b (g - f0 (g . f0) / (r0 (r0 + eps))) / (r0 + eps)`` and ``df1``
        the same with ``-g`` and f1 (the second term is 0 where r = 0). ``coef`` (B,) acc is the upstream
        gradient divided by H*W. A gradient not asked for (``need_grad0`` / ``need_grad1``) is an empty tensor."""
        ...


KERNEL_FUNCTIONS = tuple(name for name in KernelBackend.__dict__ if not name.startswith("_"))


def missing_functions(backend: object) -> list[str]:
    """The kernel-interface functions ``backend`` does not provide (empty when it implements them all)."""
    return [name for name in KERNEL_FUNCTIONS if not callable(getattr(backend, name, None))]
