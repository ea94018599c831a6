"""Gatys et al.: iterative style transfer and texture synthesis by optimising the image itself.

Loss over VGG features ``F_l`` of the image x (RGB in [0, 1]):
    L(x) = content_weight * sum_{l in content} mean (F_l(x) - F_l(c))^2
         + style_weight * sum_{l in style} w_l * mean_ij (G_l(x) - A_l)_ij^2 + tv_weight * TV(x)
with ``G = F F^T / (C H W)`` and ``A_l = sum_k b_k G_l(style_k)`` (style blend weights b). These are the fused
ops of :mod:`perceptual_kernels`; the defaults (content 1, style 1e6, torchvision ImageNet weights) follow the
PyTorch neural-style tutorial, whose losses they equal. Targets are computed once per scale.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

import perceptual_kernels as pk

from . import _checks, distributed, gatys_tiled, images, loop
from ._device import resolve_device
from .images import ImageLike
from .vgg import VGGFeatures, layer_names

DEFAULT_CONTENT_LAYERS = ("relu4_2",)
DEFAULT_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
COLOR_METHODS = ("luminance", "mean_cov", "histogram")


@dataclass
class History:
    """Per-iteration record of a run: total and partial losses, seconds since the start, the scale (long side)."""

    loss: list[float] = field(default_factory=list)
    content: list[float] = field(default_factory=list)
    style: list[float] = field(default_factory=list)
    tv: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    scale: list[int] = field(default_factory=list)

    def append(self, losses: dict[str, float], seconds: float, scale: int) -> None:
        for key in ("loss", "content", "style", "tv"):
            getattr(self, key).append(losses[key])
        self.time.append(seconds)
        self.scale.append(scale)


@dataclass
class _Objective:
    """The loss terms of one scale, with their targets computed once."""

    extractor: VGGFeatures
    content_targets: dict[str, torch.Tensor]
    style_targets: dict[str, torch.Tensor]
    style_layer_weights: dict[str, float]
    content_weight: float
    style_weight: float
    tv_weight: float
    autocast: bool

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            feats = self.extractor(image)
        zero = image.new_zeros(())
        content = sum((pk.content_loss(feats[name], target) for name, target in self.content_targets.items()), zero)
        style = sum(
            (
                pk.style_loss(feats[name], target, weight=self.style_layer_weights[name])
                for name, target in self.style_targets.items()
            ),
            zero,
        )
        tv = pk.tv_loss(image) if self.tv_weight else zero
        terms = {
            "content": self.content_weight * content,
            "style": self.style_weight * style,
            "tv": self.tv_weight * tv,
        }
        terms["loss"] = terms["content"] + terms["style"] + terms["tv"]
        return terms


def _check_weights(name: str, weights: Sequence[float] | None, count: int) -> list[float]:
    if weights is None:
        return [1.0] * count
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise TypeError(f"{name} must be a sequence of numbers, got {weights!r}")
    if len(weights) != count:
        raise ValueError(f"{name} needs {count} values (one per entry), got {len(weights)}")
    return _checks.weights(name, weights)


def _save_path_check(save_every: int, save_path: str | os.PathLike | None, protected: Sequence[Path]) -> None:
    """``save_every`` > 0 needs ``save_path``; the path (formatted with iteration 0) must be writable."""
    _checks.integer("save_every", save_every, 0)
    if save_every and save_path is None:
        raise ValueError("save_every > 0 needs save_path (where to write the intermediate images)")
    if save_path is not None:
        if not isinstance(save_path, (str, os.PathLike)):
            raise TypeError(f"save_path must be a path, got {save_path!r}")
        try:
            first = _format_save_path(save_path, 0)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"save_path {save_path} may only contain the placeholder {{iteration}}: {exc!r}") from None
        _checks.output_path("save_path", first, protected, images.SAVE_FORMATS)


def _grams(
    extractor: VGGFeatures, styles: list[torch.Tensor], blend: list[float], layers: Sequence[str], autocast: bool
) -> dict[str, torch.Tensor]:
    """Blended target Grams ``A_l = sum_k b_k G_l(style_k)`` (b normalised to sum 1), computed once."""
    total = sum(blend)
    targets: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for style, b in zip(styles, blend):
            with torch.autocast(style.device.type, dtype=torch.bfloat16, enabled=autocast):
                feats = extractor(style)
            for name in layers:
                gram = pk.gram_matrix(feats[name], out_dtype=torch.float32)[0] * (b / total)
                targets[name] = targets[name] + gram if name in targets else gram
    return targets


def _scales(size: int, multiscale: Sequence[int] | None) -> list[int]:
    size = _checks.integer("size", size, 1)
    if multiscale is None:
        return [size]
    if isinstance(multiscale, (str, bytes)) or not isinstance(multiscale, Sequence) or not multiscale:
        raise ValueError(f"multiscale must be None or a non-empty sequence of long sides, got {multiscale!r}")
    sizes = [_checks.integer(f"multiscale[{i}]", s, 1) for i, s in enumerate(multiscale)]
    if any(a >= b for a, b in zip(sizes, sizes[1:])):
        raise ValueError(f"multiscale must be strictly increasing long sides, got {sizes}")
    return sizes


def _format_save_path(save_path: str | os.PathLike, iteration: int) -> str:
    path = str(save_path)
    return path.format(iteration=iteration) if "{iteration" in path else path


def _save_intermediate(
    image: torch.Tensor, save_path: str | os.PathLike, iteration: int, protected: Sequence[Path]
) -> Path:
    return images.save_image(image.detach().clamp(0, 1), _format_save_path(save_path, iteration), protected=protected)


def _optimize(
    image: torch.Tensor,
    objective: _Objective | gatys_tiled.TiledObjective,
    *,
    optimizer: str,
    iterations: int,
    lr: float | None,
    history: History,
    start: float,
    scale: int,
    callback: Callable[[dict], object] | None,
    progress: bool,
    save_every: int,
    save_path: str | os.PathLike | None,
    protected: Sequence[Path],
    first_iteration: int,
    lbfgs_history: int = 100,
) -> torch.Tensor:
    """Optimise ``image`` (a leaf) for ``iterations`` steps; one L-BFGS iteration or one Adam step per loop."""
    image.requires_grad_(True)
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS(
            [image],
            lr=1.0 if lr is None else lr,
            max_iter=1,
            history_size=lbfgs_history,
            tolerance_grad=-1.0,
            tolerance_change=-1.0,
        )
    else:
        opt = torch.optim.Adam([image], lr=0.02 if lr is None else lr)
    last: dict[str, torch.Tensor] = {}

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        terms = objective(image)
        terms["loss"].backward()
        last.update({k: v.detach() for k, v in terms.items()})
        return terms["loss"]

    iteration = first_iteration

    def keep_last() -> str | None:  # on Ctrl-C
        if save_path is None:
            return None
        saved = _save_intermediate(image, save_path, iteration, protected)
        return f"interrupted at iteration {iteration}: kept {saved}"

    with loop.progress(iterations, f"gatys {scale}px", enabled=progress, on_interrupt=keep_last) as bar:
        for iteration in range(first_iteration, first_iteration + iterations):
            opt.step(closure)
            losses = {k: float(v) for k, v in last.items()}
            history.append(losses, time.perf_counter() - start, scale)
            bar.update(1)
            loop.show(bar, losses)
            loop.check_finite(
                losses["loss"],
                f"at iteration {iteration}",
                "lower the learning rate or the loss weights",
                terms={k: v for k, v in losses.items() if k != "loss"},
            )
            if callback is not None:
                callback({"iteration": iteration, "scale": scale, "image": image.detach(), "losses": losses})
            if save_every and save_path is not None and (iteration + 1) % save_every == 0:
                _save_intermediate(image, save_path, iteration + 1, protected)
    return image.detach()


def _build_extractor(
    extractor: VGGFeatures | None,
    layers: list[str],
    arch: str,
    weights: str | os.PathLike,
    pooling: str,
    seed: int,
    device: torch.device,
) -> VGGFeatures:
    if extractor is None:
        extractor = VGGFeatures(layers, arch=arch, weights=weights, pooling=pooling, seed=seed)
    missing = [name for name in layers if name not in extractor.layers]
    if missing:
        raise ValueError(f"the given extractor does not return layers {missing}")
    return loop.channels_last(extractor.to(device), device)


def _check_tiling(tile_size: int | None, extractor: VGGFeatures | None, arch: str, layers: list[str]) -> None:
    """``tile_size`` must fit the layers' pooling stride (None: untiled, which one process only runs)."""
    if tile_size is None:
        processes = gatys_tiled.launched_processes()
        if processes > 1:
            raise ValueError(
                f"running under torch.distributed with {processes} processes needs tile_size (the tiles are what "
                "is spread over the ranks); pass tile_size / --tile-size, or run one process"
            )
        return
    names = extractor.feature_names if extractor is not None else tuple(layer_names(arch))
    known = [name for name in layers if name in names]
    if not known:
        return  # unknown layers: the extractor's own error follows
    deepest = max(known, key=names.index)
    _, halo, align = gatys_tiled.geometry(names[: names.index(deepest) + 1], known)
    gatys_tiled.check_tile_size(tile_size, align, halo, deepest)


def stylize(
    content: ImageLike,
    styles: ImageLike | Sequence[ImageLike],
    *,
    style_blend_weights: Sequence[float] | None = None,
    size: int = 512,
    style_scale: float = 1.0,
    multiscale: Sequence[int] | None = None,
    content_layers: Sequence[str] = DEFAULT_CONTENT_LAYERS,
    style_layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
    style_layer_weights: Sequence[float] | None = None,
    content_weight: float = 1.0,
    style_weight: float = 1e6,
    tv_weight: float = 0.0,
    init: str | ImageLike = "content",
    optimizer: str = "lbfgs",
    iterations: int = 500,
    lr: float | None = None,
    preserve_colors: str | None = None,
    arch: str = "vgg19",
    weights: str | os.PathLike = "imagenet",
    pooling: str = "max",
    extractor: VGGFeatures | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    autocast: bool = False,
    callback: Callable[[dict], object] | None = None,
    progress: bool = True,
    save_every: int = 0,
    save_path: str | os.PathLike | None = None,
    tile_size: int | None = None,
    lbfgs_history: int = 100,
) -> tuple[torch.Tensor, History]:
    """Gatys style transfer: returns the image (1, 3, H, W) in [0, 1] (content's aspect, long side ``size``) and
    its :class:`History`.

    ``styles``: one or several images (paths or tensors) blended with ``style_blend_weights``; each is resized to
    long side ``size * style_scale``. ``multiscale``: increasing long sides run coarse to fine, ``iterations``
    each, every scale starting from the previous result. ``init``: "content", "noise" (uniform, seeded) or an
    image. ``optimizer``: "lbfgs" (default; lr 1) or "adam" (lr 0.02). ``preserve_colors``: None, "luminance",
    "mean_cov" or "histogram". ``autocast`` runs the VGG pass in bf16 (the losses stay fp32). ``callback``
    receives a dict (iteration, scale, image, losses) after every iteration; ``save_every`` > 0 writes the
    image to ``save_path`` (may contain ``{iteration}``), which also keeps the last image on Ctrl-C.

    ``tile_size``: None computes the loss on the whole image; an int (a multiple of 16 up to relu5_1) computes the
    same loss and gradient exactly tile by tile (:mod:`.gatys_tiled`), in memory bounded by one tile, for images
    of any resolution; under torch.distributed (``torchrun``) the tiles are spread over the ranks, every rank
    takes the same steps, and only rank 0 shows progress and writes ``save_path``. ``lbfgs_history``: the
    L-BFGS memory (pairs of image-sized vectors kept on the image's device: 2 x 100 x 192 MiB at 4096 x 4096).
    """
    device = resolve_device(device)
    style_list = [styles] if isinstance(styles, (torch.Tensor, str, os.PathLike)) else list(styles)
    if not style_list:
        raise ValueError("styles must name at least one style image")
    blend = _check_weights("style_blend_weights", style_blend_weights, len(style_list))
    layer_weights = _check_weights("style_layer_weights", style_layer_weights, len(style_layers))
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if isinstance(init, str) and init not in INITS and not os.path.exists(init):
        raise ValueError(f"init must be one of {INITS}, an image or an image path, got {init!r}")
    if preserve_colors is not None and preserve_colors not in COLOR_METHODS:
        raise ValueError(f"preserve_colors must be None or one of {COLOR_METHODS}, got {preserve_colors!r}")
    style_scale = _checks.number("style_scale", style_scale, positive=True)
    iterations = _checks.integer("iterations", iterations, 0)
    lbfgs_history = _checks.integer("lbfgs_history", lbfgs_history, 1)
    content_weight, style_weight, tv_weight = (
        _checks.loss_weight(name, value)
        for name, value in (
            ("content_weight", content_weight),
            ("style_weight", style_weight),
            ("tv_weight", tv_weight),
        )
    )
    lr = None if lr is None else _checks.number("lr", lr, positive=True)
    seed = _checks.seed(seed)
    _checks.callback(callback)
    scales = _scales(size, multiscale)
    protected = [
        Path(p)
        for p in [content, *style_list, init]
        if isinstance(p, (str, os.PathLike)) and not (isinstance(p, str) and p in INITS)
    ]
    _save_path_check(save_every, save_path, protected)
    layers = list(dict.fromkeys([*content_layers, *style_layers]))
    _check_tiling(tile_size, extractor, arch, layers)
    group = None if tile_size is None else distributed.process_group(device)
    if group is not None:
        device = group.device
    content_full = images.as_image(content, "content", device)
    styles_full = [images.as_image(s, "style", device) for s in style_list]
    init_image = None if isinstance(init, str) and init in INITS else images.as_image(init, "init", device)
    extractor = _build_extractor(extractor, layers, arch, weights, pooling, seed, device)
    if group is not None and not group.is_main:  # every rank computes the same image; rank 0 shows and writes it
        progress, save_every, save_path = False, 0, None
    torch.manual_seed(seed)

    history, start, image = History(), time.perf_counter(), None
    for scale in scales:
        content_img = images.resize_long_side(content_full, scale)
        if min(content_img.shape[-2:]) < extractor.min_size:
            raise ValueError(
                f"size {scale} gives a {tuple(content_img.shape[-2:])} image, smaller than the "
                f"{extractor.min_size} pixels the deepest requested VGG layer needs"
            )
        style_imgs = [images.resize_long_side(s, max(1, round(scale * style_scale))) for s in styles_full]
        for s in style_imgs:
            if min(s.shape[-2:]) < extractor.min_size:
                raise ValueError(
                    f"a style image at scale {style_scale} is {tuple(s.shape[-2:])}, smaller than "
                    f"the {extractor.min_size} pixels the style layers need"
                )
        content_img = loop.channels_last(content_img, device)
        objective: _Objective | gatys_tiled.TiledObjective
        if tile_size is not None:
            objective = gatys_tiled.TiledObjective(
                extractor,
                content_img,
                style_imgs,
                blend,
                content_layers,
                style_layers,
                layer_weights,
                content_weight,
                style_weight,
                tv_weight,
                autocast,
                tile_size,
                group,
            )
        else:
            content_targets = {}
            if content_layers:
                with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    feats = extractor(content_img)
                content_targets = {name: feats[name].float() for name in content_layers}
            objective = _Objective(
                extractor,
                content_targets,
                _grams(extractor, style_imgs, blend, style_layers, autocast),
                dict(zip(style_layers, layer_weights)),
                content_weight,
                style_weight,
                tv_weight,
                autocast,
            )
        if image is not None:
            image = images.resize(image, tuple(content_img.shape[-2:]))
        elif init_image is not None:
            image = images.resize(init_image, tuple(content_img.shape[-2:]))
        elif init == "noise":
            image = torch.rand(content_img.shape, device=device)
        else:
            image = content_img.clone()
        image = loop.channels_last(image.contiguous(), device)
        note = gatys_tiled.memory_note(
            extractor,
            image.shape[-2],
            image.shape[-1],
            tile_size,
            2 * lbfgs_history if optimizer == "lbfgs" else 2,
            device,
            content_layers,
            1 if group is None else group.world_size,
        )
        if note and tile_size is None:
            warnings.warn(note, ResourceWarning, stacklevel=2)
        elif note and progress:
            print(note, file=sys.stderr)
        image = _optimize(
            image,
            objective,
            optimizer=optimizer,
            iterations=iterations,
            lr=lr,
            history=history,
            start=start,
            scale=scale,
            callback=callback,
            progress=progress,
            save_every=save_every,
            save_path=save_path,
            protected=protected,
            first_iteration=len(history.loss),
            lbfgs_history=lbfgs_history,
        )
    result = image.clamp(0, 1)
    if preserve_colors:
        result = images.preserve_colors(result, images.resize(content_full, tuple(result.shape[-2:])), preserve_colors)
    return result.contiguous(), history


def synthesize_texture(
    style: ImageLike | Sequence[ImageLike],
    size: int | tuple[int, int] = 256,
    *,
    style_size: int | None = None,
    style_blend_weights: Sequence[float] | None = None,
    style_layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
    style_layer_weights: Sequence[float] | None = None,
    style_weight: float = 1e6,
    tv_weight: float = 0.0,
    optimizer: str = "lbfgs",
    iterations: int = 500,
    lr: float | None = None,
    arch: str = "vgg19",
    weights: str | os.PathLike = "imagenet",
    pooling: str = "avg",
    extractor: VGGFeatures | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    autocast: bool = False,
    callback: Callable[[dict], object] | None = None,
    progress: bool = True,
    save_every: int = 0,
    save_path: str | os.PathLike | None = None,
    tile_size: int | None = None,
    lbfgs_history: int = 100,
) -> tuple[torch.Tensor, History]:
    """Gatys texture synthesis: an image of ``size`` (square side or (H, W)) whose Gram statistics match the
    style image(s), optimised from seeded uniform noise. ``style_size``: long side the style is resized to
    (default: the output's long side). Average pooling by default (Gatys et al. 2015). ``tile_size``,
    ``lbfgs_history``: as in :func:`stylize`."""
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise ValueError(f"size must be a side or (height, width), got {size!r}")
        height, width = (_checks.integer(f"size[{i}]", s, 1) for i, s in enumerate(size))
    else:
        height = width = _checks.integer("size", size, 1)
    long_side = max(height, width)
    style_size = long_side if style_size is None else _checks.integer("style_size", style_size, 1)
    device = resolve_device(device)
    canvas = torch.zeros(1, 3, height, width, device=device)
    return stylize(
        canvas,
        style,
        style_blend_weights=style_blend_weights,
        size=long_side,
        style_scale=style_size / long_side,
        content_layers=(),
        style_layers=style_layers,
        style_layer_weights=style_layer_weights,
        content_weight=0.0,
        style_weight=style_weight,
        tv_weight=tv_weight,
        init="noise",
        optimizer=optimizer,
        iterations=iterations,
        lr=lr,
        arch=arch,
        weights=weights,
        pooling=pooling,
        extractor=extractor,
        seed=seed,
        device=device,
        autocast=autocast,
        callback=callback,
        progress=progress,
        save_every=save_every,
        save_path=save_path,
        tile_size=tile_size,
        lbfgs_history=lbfgs_history,
    )
