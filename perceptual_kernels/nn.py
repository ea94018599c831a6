"""Drop-in ``nn.Module`` wrappers of the ops that hold their targets and parameters.

``StyleLoss`` and ``ContentLoss`` replace the hand-written ``gram_matrix`` + ``F.mse_loss`` code of the usual
PyTorch style-transfer examples with identical numbers; ``passthrough=True`` gives the layer form of the
PyTorch tutorial (``forward`` stores ``self.loss`` and returns its input unchanged). Every option is checked when
the module is built, with the message the op would give.

``PerceptualLoss`` / ``BasicSRPerceptualLoss`` (the SR / GAN VGG perceptual loss) live in
:mod:`perceptual_kernels.api.perceptual_loss` and are also reachable here; they are imported on first access, so
importing ``perceptual_kernels`` does not import the API.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import _validation as check
from . import functional as F

__all__ = ["GramMatrix", "StyleLoss", "ContentLoss", "TotalVariation", "InstanceNorm2d", "ConditionalInstanceNorm2d"]


class GramMatrix(nn.Module):
    """``G_b = F_b F_b^T / s`` (see :func:`perceptual_kernels.gram_matrix`)."""

    def __init__(self, normalize: str | float = "chw", out_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.normalize = check.normalization(normalize)
        self.out_dtype = check.floating_dtype("out_dtype", out_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gram_matrix(x, self.normalize, self.out_dtype)


class StyleLoss(nn.Module):
    """Style loss against Gram matrices computed once from ``target_features``.

    ``target_features``: (N, C, H, W) or (N, C, M) feature maps of N style images; their Grams (fp32) are kept
    as the buffer ``target``, (C, C) when N == 1, else (N, C, C) (per sample, or picked by ``style_index``).
    ``target_gram`` gives precomputed Grams instead. ``criterion``: "l2" (squared Gram difference) or "l1"
    (absolute), see :func:`perceptual_kernels.style_loss`.
    """

    target: torch.Tensor  # buffer

    def __init__(
        self,
        target_features: torch.Tensor | None = None,
        *,
        target_gram: torch.Tensor | None = None,
        normalize: str | float = "chw",
        weight: float = 1.0,
        reduction: str = "mean",
        passthrough: bool = False,
        criterion: str = "l2",
    ) -> None:
        super().__init__()
        if (target_features is None) == (target_gram is None):
            raise ValueError("give exactly one of target_features and target_gram")
        normalize = check.normalization(normalize)
        weight = check.real_number("weight", weight)
        reduction = check.reduction(reduction)
        self.criterion = check.criterion(criterion)
        if target_gram is not None:
            target_gram = check.floating_tensor("target_gram", target_gram, (2, 3))
            if target_gram.shape[-1] != target_gram.shape[-2]:
                raise ValueError(f"target_gram must be (C, C) or (N, C, C), got shape {tuple(target_gram.shape)}")
        else:
            features = check.floating_tensor("target_features", target_features, (3, 4))
            with torch.no_grad():
                target_gram = F.gram_matrix(features.detach(), normalize, torch.float32)
            if target_gram.shape[0] == 1:
                target_gram = target_gram[0]
        self.register_buffer("target", target_gram.detach().clone())
        self.normalize, self.weight, self.reduction, self.passthrough = normalize, weight, reduction, passthrough
        self.loss: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, style_index: torch.Tensor | None = None) -> torch.Tensor:
        loss = F.style_loss(
            x,
            self.target,
            normalize=self.normalize,
            weight=self.weight,
            reduction=self.reduction,
            style_index=style_index,
            criterion=self.criterion,
        )
        if self.passthrough:
            self.loss = loss
            return x
        return loss


class ContentLoss(nn.Module):
    """Feature reconstruction loss ``w * mean((x - target)^2)`` ("l2") or ``w * mean(|x - target|)`` ("l1")
    against a fixed ``target`` (kept detached; it broadcasts against x, e.g. one (1, C, H, W) target for a batch)."""

    target: torch.Tensor  # buffer

    def __init__(
        self,
        target: torch.Tensor,
        *,
        weight: float = 1.0,
        reduction: str = "mean",
        passthrough: bool = False,
        criterion: str = "l2",
    ) -> None:
        super().__init__()
        target = check.floating_tensor("target", target, (1, 2, 3, 4, 5, 6))
        self.criterion = check.criterion(criterion)
        self.register_buffer("target", target.detach().clone())
        self.weight = check.real_number("weight", weight)
        self.reduction = check.reduction(reduction)
        self.passthrough = passthrough
        self.loss: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        loss = F.content_loss(x, self.target, weight=self.weight, reduction=self.reduction, criterion=self.criterion)
        if self.passthrough:
            self.loss = loss
            return x
        return loss


class TotalVariation(nn.Module):
    """Total variation loss (see :func:`perceptual_kernels.tv_loss`)."""

    def __init__(self, kind: str = "squared", weight: float = 1.0, reduction: str = "mean", eps: float = 1e-8) -> None:
        super().__init__()
        self.kind = check.tv_kind(kind)
        self.weight = check.real_number("weight", weight)
        self.reduction = check.reduction(reduction)
        self.eps = check.real_number("eps", eps, positive=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.tv_loss(x, kind=self.kind, weight=self.weight, reduction=self.reduction, eps=self.eps)


class InstanceNorm2d(nn.Module):
    """Instance norm with optional affine (C,) parameters and a fused ReLU; statistics always per instance
    (like ``nn.InstanceNorm2d(C, affine=...)`` without running stats)."""

    def __init__(
        self, num_features: int, eps: float = 1e-5, affine: bool = True, activation: str | None = None
    ) -> None:
        super().__init__()
        num_features = check.positive_int("num_features", num_features)
        self.eps = check.real_number("eps", eps, positive=True)
        self.activation = check.choice("activation", activation, check.ACTIVATIONS)  # type: ignore[arg-type]
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, self.weight, self.bias, self.eps, self.activation)


class ConditionalInstanceNorm2d(nn.Module):
    """Conditional instance norm (Dumoulin et al.): one (gamma, beta) row per style, gamma = 1, beta = 0 at init.

    ``forward(x, style_index=None, style_weights=None)``: ``style_index`` (B,) picks a row per sample,
    ``style_weights`` (B, num_styles) mixes rows; with one style neither is needed.
    """

    def __init__(self, num_styles: int, num_features: int, eps: float = 1e-5, activation: str | None = None) -> None:
        super().__init__()
        num_styles = check.positive_int("num_styles", num_styles)
        num_features = check.positive_int("num_features", num_features)
        self.eps = check.real_number("eps", eps, positive=True)
        self.activation = check.choice("activation", activation, check.ACTIVATIONS)  # type: ignore[arg-type]
        self.gamma = nn.Parameter(torch.ones(num_styles, num_features))
        self.beta = nn.Parameter(torch.zeros(num_styles, num_features))

    def forward(
        self, x: torch.Tensor, style_index: torch.Tensor | None = None, style_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.conditional_instance_norm(
            x,
            self.gamma,
            self.beta,
            style_index=style_index,
            style_weights=style_weights,
            eps=self.eps,
            activation=self.activation,
        )

    def extra_repr(self) -> str:
        S, C = self.gamma.shape
        return f"num_styles={S}, num_features={C}, eps={self.eps}, activation={self.activation}"


# ----------------------------------------------------------------------------- the API's VGG perceptual loss
_API_MODULES = {"PerceptualLoss": "perceptual_loss", "BasicSRPerceptualLoss": "perceptual_loss"}


def __getattr__(name: str) -> Any:
    """``perceptual_kernels.nn.PerceptualLoss`` (and ``BasicSRPerceptualLoss``): imported from the API on first
    access, so that importing the core package does not import the API (VGG weights code, images, ...)."""
    if name in _API_MODULES:
        import importlib

        module = importlib.import_module(f"perceptual_kernels.api.{_API_MODULES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
