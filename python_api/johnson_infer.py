"""Running a trained Johnson et al. network: style selection (an index, or a Dumoulin mix of conditional
instance norm rows) and :func:`stylize_feedforward`."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from . import _checks, images
from ._device import resolve_device
from .johnson_nets import load_model

_STYLE_FORMS = '"K" (a style index) or a mix "I:W,I:W,..." (non-negative weights with a positive sum)'


def _check_mix(mix: Mapping[object, object], spec: object) -> dict[int, float]:
    """{index: weight} with int indices >= 0 and finite non-negative weights summing to > 0."""
    out = {}
    for index, weight in mix.items():
        index = _checks.integer(f"style index in {spec!r}", index, 0)
        out[index] = _checks.number(f"weight of style {index} in {spec!r}", weight, 0.0)
    if not out or sum(out.values()) <= 0:
        raise ValueError(f"style mix {spec!r}: the weights must sum to a positive number")
    return out


def parse_style(spec: str | int | Mapping[int, float] | None) -> int | dict[int, float] | None:
    """``"3"`` -> 3; ``"0:0.5,3:0.5"`` -> {0: 0.5, 3: 0.5} (a mix, normalised when used); None stays None.
    ValueError naming the part that is not an index or a valid weight, or a repeated index."""
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        return _check_mix(spec, dict(spec))
    if not isinstance(spec, str):
        return _checks.integer("style", spec, 0)
    if ":" not in spec:
        if not re.fullmatch(r"\s*\d+\s*", spec):
            raise ValueError(f"style {spec!r} is not {_STYLE_FORMS}")
        return int(spec)
    mix: dict[object, object] = {}
    for part in spec.split(","):
        index, sep, weight = part.partition(":")
        if not re.fullmatch(r"\s*\d+\s*", index) or not sep:
            raise ValueError(f"style {spec!r}: {part.strip()!r} is not INDEX:WEIGHT; expected {_STYLE_FORMS}")
        if int(index) in mix:
            raise ValueError(f"style {spec!r}: style {int(index)} is given twice")
        try:
            mix[int(index)] = float(weight)
        except ValueError:
            raise ValueError(
                f"style {spec!r}: the weight {weight.strip()!r} of style {int(index)} is not a number"
            ) from None
    return _check_mix(mix, spec)


def check_style(
    model: torch.nn.Module, style: int | Mapping[int, float] | str | None = None, all_styles: bool = False
) -> int | dict[int, float] | None:
    """The style selection for ``model``, checked (see :func:`stylize_feedforward`): an index or a mix in range,
    none for a single-style or super-resolution model, not both ``style`` and ``all_styles``."""
    style = parse_style(style)
    num_styles = getattr(model, "num_styles", None)
    if not isinstance(all_styles, bool):
        raise TypeError(f"all_styles must be a bool, got {all_styles!r}")
    if not num_styles:
        if style is not None or all_styles:
            raise ValueError("this model has a single style (or is a super-resolution model): no style selection")
        return None
    if all_styles:
        if style is not None:
            raise ValueError("give style or all_styles, not both")
        return None
    indices = list(style) if isinstance(style, dict) else [style]
    if style is None and num_styles > 1 or any(i is not None and i >= num_styles for i in indices):
        raise ValueError(
            f"this model has {num_styles} styles: pass style=0..{num_styles - 1}, a mix or "
            f"all_styles=True (got {style!r})"
        )
    return style


def stylize_feedforward(
    model: torch.nn.Module | str | os.PathLike,
    image: torch.Tensor | str | os.PathLike,
    *,
    style: int | dict[int, float] | str | None = None,
    all_styles: bool = False,
    device: str | torch.device | None = None,
    autocast: bool = False,
) -> torch.Tensor:
    """Run a trained model on one image (1, 3, H, W) in [0, 1] (a super-resolution model upscales it).

    Multi-style models take ``style`` (an index, or {index: weight} mixing gamma/beta rows, weights normalised to
    sum 1: Dumoulin's interpolation; a string as :func:`parse_style` reads it) or ``all_styles=True`` (all N
    styles in one batched pass, (N, 3, H, W)). Every argument is checked before the network runs.
    """
    device = resolve_device(device)
    if not isinstance(model, torch.nn.Module):
        model, _ = load_model(model)
    style = check_style(model, style, all_styles)
    x = image if isinstance(image, torch.Tensor) else images.load_image(image)
    x = images._as_batch("image", x)[0]
    model = model.to(device).eval()
    x = x.to(device)
    num_styles = getattr(model, "num_styles", None)
    kwargs: dict = {}
    if all_styles:
        x = x.expand(num_styles, -1, -1, -1)
        kwargs["style_index"] = torch.arange(num_styles, device=device)
    elif isinstance(style, dict):
        weights = torch.zeros(1, num_styles, device=device)
        for index, w in style.items():
            weights[0, index] = w
        kwargs["style_weights"] = weights / weights.sum()
    elif style is not None:
        kwargs["style_index"] = torch.tensor([style], device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        return model(x, **kwargs).float().clamp(0, 1)
