"""The VGG perceptual (+ Gram style) loss of super-resolution / GAN / restoration training, on the fused ops.

:class:`PerceptualLoss` is the loss that BasicSR and its descendants (ESRGAN, Real-ESRGAN, SwinIR, ...) build by
hand: a frozen VGG, a dict of layer weights, an L1 / L2 / Frobenius feature distance and an optional Gram style
term. For output ``x`` and ground truth ``t`` with VGG features ``f_k(.)`` of the layers ``k`` (weights ``w_k``):

    perceptual = perceptual_weight * sum_k w_k * d(f_k(x), f_k(t))
    style      = style_weight      * sum_k w_k * d_s(G(f_k(x)), G(f_k(t))),   G(f)_b = F_b F_b^T / (C H W)

with ``d`` = mean |a - b| ("l1"), mean (a - b)^2 ("l2", ``F.mse_loss``) or sqrt(sum (a - b)^2) over the whole
batch ("fro", ``torch.norm(a - b, p="fro")``), and ``d_s`` the same for ``style_criterion``. The distances run as
the fused ``content_loss`` / ``style_loss`` ops (the Gram of ``f_k(x)`` is never materialised for autograd).
:class:`BasicSRPerceptualLoss` has BasicSR's constructor and ``(perceptual, style)`` return, for a one-import swap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

import perceptual_kernels as pk

from . import _checks
from .vgg import VGGFeatures, layer_names

__all__ = ["BasicSRPerceptualLoss", "PerceptualLoss", "CRITERIA", "INPUT_RANGES"]

CRITERIA = ("l1", "l2", "fro")
INPUT_RANGES = ((0, 1), (-1, 1))


class _SqrtZeroGrad(torch.autograd.Function):
    """``sqrt(s)`` for a sum of squares ``s >= 0``, with gradient 0 at ``s == 0`` (the subgradient
    ``torch.norm`` uses) instead of ``inf * 0 = nan``; a NaN ``s`` still gives NaN gradients."""

    @staticmethod
    def forward(ctx: Any, s: torch.Tensor) -> torch.Tensor:
        root = torch.sqrt(s)
        ctx.save_for_backward(root)
        return root

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (root,) = ctx.saved_tensors
        return torch.where(root == 0, torch.zeros_like(grad), grad / (2 * root))


def _criterion(name: str, value: object) -> str:
    if value not in CRITERIA:
        raise ValueError(f"{name} must be one of {list(CRITERIA)}, got {value!r}")
    return str(value)


def _input_range(value: object) -> tuple[int, int]:
    pair = None
    if not isinstance(value, (str, bytes)):
        try:
            pair = tuple(float(v) for v in value)  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            pass
    for allowed in INPUT_RANGES:
        if pair == allowed:
            return allowed
    raise ValueError(f"input_range must be (0, 1) or (-1, 1), got {value!r}")


def _layer_weights(value: object, arch: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise TypeError(
            f"layer_weights must be a dict of VGG layer names to weights, e.g. {{'conv5_4': 1.0}}, "
            f"not {type(value).__name__}"
        )
    names = layer_names(arch)  # ValueError for an unknown arch
    if not value:
        raise ValueError(f"layer_weights is empty; valid {arch} layer names: {', '.join(names)}")
    unknown = [k for k in value if k not in names]
    if unknown:
        raise ValueError(
            f"unknown {arch} layer name(s) in layer_weights: {', '.join(map(repr, unknown))}; valid {arch} layer "
            f"names: {', '.join(names)} (convN_M is the conv output before its ReLU, reluN_M after it)"
        )
    return {str(k): _checks.loss_weight(f"layer_weights[{k!r}]", w) for k, w in value.items()}


def _weights_as_buffers(module: nn.Module) -> None:
    """Turn every parameter of ``module`` into a non-persistent buffer: it still follows ``.to()`` / ``.cuda()``
    / ``.half()``, but ``parameters()`` (what an optimizer picks up) and ``state_dict()`` no longer hold it."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is None:
                continue
            del sub._parameters[name]
            sub.register_buffer(name, param.detach(), persistent=False)


class PerceptualLoss(nn.Module):
    """VGG perceptual loss (+ optional Gram style loss) between an output ``x`` and a target, fused ops inside.

    Args:
        layer_weights: ``{layer: weight}`` over ``layer_names(arch)``: ``"convN_M"`` is the conv output before
            its ReLU (SRGAN's VGG54 / ESRGAN: ``{"conv5_4": 1.0}``), ``"reluN_M"`` after it (Johnson et al.:
            ``{"relu2_2": 1.0}``). The VGG is built only up to the deepest layer.
        arch: "vgg19" or "vgg16".
        weights, weights_format, pooling, seed: as :class:`~perceptual_kernels.api.VGGFeatures` takes them
            ("imagenet" torchvision weights by default, "caffe", a state-dict path, or "random").
        criterion: feature distance, "l1" (mean abs), "l2" (mean square) or "fro" (Frobenius norm of the whole
            batch's difference, not divided by anything).
        perceptual_weight: weight of the feature term; 0 disables it (nothing computed for it).
        style_weight: weight of the Gram style term; 0 (default) disables it and no Gram is computed.
        style_criterion: distance between Grams (normalised by C*H*W); None uses ``criterion`` (as BasicSR).
        input_range: (0, 1) or (-1, 1); (-1, 1) images are mapped to (0, 1) by ``(x + 1) / 2`` first.
        normalize_input: apply the weights' input normalisation (ImageNet mean / std for torchvision weights);
            False feeds the (0, 1) images to the VGG as they are (BasicSR's ``use_input_norm=False``).
        return_pair: ``forward`` returns BasicSR's ``(perceptual, style)`` pair, each already multiplied by its
            weight, None for a disabled term, instead of their sum.
        batched_target: run ``x`` and the target through the VGG as one ``cat([x, target])`` batch instead of
            two passes (the target's under ``no_grad``). Off by default: the batched pass also back-propagates
            through the target half, which costs more than it saves on a CPU (see benchmarks/test_sr_step.py).
        channels_last: run the VGG on channels_last (NHWC) copies of the images whatever their layout (False:
            in the images' own layout, as ``VGGFeatures`` does). oneDNN (CPU) and cuDNN (GPU, bf16 / fp16 tensor
            cores) convolutions are faster in NHWC (VGG19 up to conv5_4, batch 8 of 128 px, forward + backward,
            one thread of this project's CPU: 1.25x in fp32, 1.15x in bf16). The values equal the NCHW pass's up
            to the convolutions' rounding (~1e-5 relative in the input gradient).

    ``forward(x, target)``: (B, 3, H, W) float images of the same shape in ``input_range``; returns a float32
    scalar (or the pair). The target's features are computed under ``no_grad``; gradients flow to ``x`` only.

    The VGG is frozen and always in eval mode (``train()`` does not change it). Its weights are kept as
    non-persistent buffers: ``.to(device)`` / ``.cuda()`` move them, but ``parameters()`` is empty (an optimizer
    over ``loss.parameters()`` or a model holding the loss picks nothing up) and ``state_dict()`` holds nothing of
    the VGG (a checkpoint stays small; the weights come from ``weights`` again when the loss is built). Under
    ``torch.autocast`` the VGG runs in the autocast dtype (bf16 / fp16) and the distances accumulate in fp32;
    ``channels_last`` inputs keep their layout through the VGG; the module works under ``torch.compile``.
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float],
        *,
        arch: str = "vgg19",
        weights: str | os.PathLike = "imagenet",
        criterion: str = "l1",
        perceptual_weight: float = 1.0,
        style_weight: float = 0.0,
        style_criterion: str | None = None,
        input_range: Sequence[float] = (0, 1),
        normalize_input: bool = True,
        return_pair: bool = False,
        batched_target: bool = False,
        channels_last: bool = True,
        weights_format: str | None = None,
        pooling: str = "max",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.layer_weights = _layer_weights(layer_weights, arch)
        self.criterion = _criterion("criterion", criterion)
        self.style_criterion = (
            self.criterion if style_criterion is None else _criterion("style_criterion", style_criterion)
        )
        self.perceptual_weight = _checks.loss_weight("perceptual_weight", perceptual_weight)
        self.style_weight = _checks.loss_weight("style_weight", style_weight)
        if self.perceptual_weight == 0 and self.style_weight == 0:
            raise ValueError("perceptual_weight and style_weight are both 0: the loss would compute nothing")
        self.input_range = _input_range(input_range)
        self.return_pair = _checks.flag("return_pair", return_pair)
        self.batched_target = _checks.flag("batched_target", batched_target)
        self.channels_last = _checks.flag("channels_last", channels_last)
        self.vgg = VGGFeatures(
            list(self.layer_weights),
            arch,
            weights,
            pooling=pooling,
            weights_format=weights_format,
            seed=seed,
            normalize_input=normalize_input,
        )
        _weights_as_buffers(self.vgg)

    def extra_repr(self) -> str:
        return (
            f"layer_weights={self.layer_weights}, criterion={self.criterion!r}, "
            f"perceptual_weight={self.perceptual_weight:g}, style_weight={self.style_weight:g}, "
            f"style_criterion={self.style_criterion!r}, input_range={self.input_range}, "
            f"return_pair={self.return_pair}, batched_target={self.batched_target}, "
            f"channels_last={self.channels_last}"
        )

    def train(self, mode: bool = True) -> PerceptualLoss:
        """The VGG stays in eval mode whatever ``mode`` is (it has no train-time behaviour)."""
        super().train(mode)
        self.vgg.train(False)
        return self

    # ---------------------------------------------------------------------------------------------- forward
    def _check_inputs(self, x: object, target: object) -> None:
        for what, value in (("x", x), ("target", target)):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{what} must be a tensor, not {type(value).__name__}")
        assert isinstance(x, torch.Tensor) and isinstance(target, torch.Tensor)
        if x.shape != target.shape:
            raise ValueError(
                f"x and target must have the same shape (B, 3, H, W), got {tuple(x.shape)} and {tuple(target.shape)}"
            )
        if x.device != target.device:
            raise ValueError(f"x and target must be on the same device, got {x.device} and {target.device}")
        self.vgg._check_input(x, "x")
        self.vgg._check_input(target, "target")

    def _vgg_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in [0, 1] (from ``input_range``), channels_last when ``self.channels_last``."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return (x + 1) / 2 if self.input_range == (-1, 1) else x

    def _features(
        self, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """VGG features of ``x`` (with autograd) and of ``target`` (without)."""
        target = target.detach()
        if self.batched_target:
            both = self.vgg(self._vgg_input(torch.cat([x, target.to(x.dtype)])))
            B = x.shape[0]
            return {k: f[:B] for k, f in both.items()}, {k: f[B:].detach() for k, f in both.items()}
        x_features = self.vgg(self._vgg_input(x))
        with torch.no_grad():
            target_features = self.vgg(self._vgg_input(target))
        return x_features, target_features

    @staticmethod
    def _distance(f: torch.Tensor, t: torch.Tensor, criterion: str, weight: float) -> torch.Tensor:
        if criterion == "fro":
            return _SqrtZeroGrad.apply(pk.content_loss(f, t, reduction="sum")) * weight
        return pk.content_loss(f, t, criterion=criterion, weight=weight)  # mean |f - t| or mean (f - t)^2

    @staticmethod
    def _gram_distance(f: torch.Tensor, t: torch.Tensor, criterion: str, weight: float) -> torch.Tensor:
        with torch.no_grad():
            target_gram = pk.gram_matrix(t, "chw", torch.float32)  # (B, C, C): one target per sample
        if criterion == "fro":
            return _SqrtZeroGrad.apply(pk.style_loss(f, target_gram, reduction="sum")) * weight
        return pk.style_loss(f, target_gram, criterion=criterion, weight=weight)  # mean over B*C*C

    def forward(
        self, x: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor | None, torch.Tensor | None]:
        """``perceptual + style`` (float32 scalar), or ``(perceptual, style)`` with ``return_pair``."""
        self._check_inputs(x, target)
        x_features, target_features = self._features(x, target)
        perceptual: torch.Tensor | None = None
        style: torch.Tensor | None = None
        if self.perceptual_weight > 0:
            terms = [
                self._distance(x_features[k], target_features[k], self.criterion, w)
                for k, w in self.layer_weights.items()
            ]
            perceptual = torch.stack(terms).sum() * self.perceptual_weight
        if self.style_weight > 0:
            terms = [
                self._gram_distance(x_features[k], target_features[k], self.style_criterion, w)
                for k, w in self.layer_weights.items()
            ]
            style = torch.stack(terms).sum() * self.style_weight
        if self.return_pair:
            return perceptual, style
        if perceptual is None:
            assert style is not None
            return style
        return perceptual if style is None else perceptual + style


class BasicSRPerceptualLoss(PerceptualLoss):
    """BasicSR's ``PerceptualLoss`` constructor and ``(perceptual, style)`` return on the fused ops:
    ``from perceptual_kernels.api import BasicSRPerceptualLoss as PerceptualLoss`` replaces
    ``from basicsr.losses.basic_loss import PerceptualLoss`` with the same arguments and numbers.

    ``vgg_type`` is "vgg19" or "vgg16" (the ``_bn`` and vgg11 / vgg13 variants are not built);
    ``use_input_norm`` is ``normalize_input``; ``range_norm=True`` is ``input_range=(-1, 1)``; the style term
    uses ``criterion`` too. ``weights`` (keyword) defaults to torchvision's ImageNet file, the one BasicSR loads.
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float],
        vgg_type: str = "vgg19",
        use_input_norm: bool = True,
        range_norm: bool = False,
        perceptual_weight: float = 1.0,
        style_weight: float = 0.0,
        criterion: str = "l1",
        *,
        weights: str | os.PathLike = "imagenet",
    ) -> None:
        _checks.flag("range_norm", range_norm)
        if vgg_type not in ("vgg16", "vgg19"):
            raise ValueError(f"vgg_type must be 'vgg19' or 'vgg16' (no batch-norm or vgg11 / vgg13), got {vgg_type!r}")
        super().__init__(
            layer_weights,
            arch=vgg_type,
            weights=weights,
            criterion=criterion,
            perceptual_weight=perceptual_weight,
            style_weight=style_weight,
            input_range=(-1, 1) if range_norm else (0, 1),
            normalize_input=use_input_norm,
            return_pair=True,
        )
