"""Exact tiled Gatys: the full-image loss and gradient computed tile by tile, in bounded memory, with the tiles
spread over the ranks of torch.distributed.

Method (exact up to float rounding, not an approximation). The image is split into core tiles (side
``tile_size``, a multiple of the total pooling stride ``s``, 16 up to relu5_1; the last tile of a row or column
may be smaller). Each tile is read with a halo of ``h`` pixels on every side, cut from the image itself (clipped
at its border, where the network's own zero padding then applies as in the full image). ``h`` is the distance a
crop edge's wrong padding reaches into the deepest layer used (80 px at relu5_1, 48 at relu4_2), rounded up to
``s``; crop origins and interior crop ends are multiples of ``s``, so every pooling window of the crop is one of
the full image's. The features at a tile's core positions then equal the full-image features.

Per loss evaluation:

* pass 1 (no autograd): every tile forward; each style layer's partial Gram over the core positions,
  ``G_l += F_core F_core^T / (C H W)`` (:func:`perceptual_kernels.gram_matrix` of the core view with the
  full-image normaliser), and the content term's partial sums of squares. The sums over tiles are the exact
  ``G_l`` and loss;
* pass 2 (autograd, at ``backward``): every tile forward again; the core positions get the feature gradients
  ``c_l (D_l + D_l^T) F_l`` with ``D_l = G_l - A_l`` fixed (:func:`perceptual_kernels.style_loss_gradient`)
  plus the content gradient, the halo positions none; back-propagated to the crop's pixels (halo included) and
  summed into the image gradient, which is the exact gradient of the full-image loss.

The total variation term is cheap and computed on the whole image. Under torch.distributed rank r takes tiles
r, r + N, ...; the partial Grams and loss sums are all-reduced after pass 1 and the image gradient after pass 2,
so every rank takes the same optimizer step. Memory: one padded tile's activations, plus the image, its gradient,
the content targets at the content layer and the optimizer state.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

import perceptual_kernels as pk

from . import distributed
from .vgg import VGGFeatures

__all__ = [
    "Tile",
    "TiledObjective",
    "check_tile_size",
    "geometry",
    "launched_processes",
    "memory_estimate",
    "memory_note",
    "plan_tiles",
]


def launched_processes() -> int:
    """The number of processes of this run: the initialised group's size, else torchrun's ``WORLD_SIZE`` (1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1")) if distributed.launched_by_torchrun() else 1


def _sum_over_ranks_(tensor: torch.Tensor, group: distributed.Group | None) -> torch.Tensor:
    """Sum ``tensor`` over the ranks in place (every rank gets the same values); unchanged for one process."""
    if group is not None and group.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


@dataclass(frozen=True)
class Tile:
    """One tile: its core ``[y0, y1) x [x0, x1)`` and the crop read for it (core plus halo, clipped to the image),
    in image pixels."""

    core: tuple[int, int, int, int]
    crop: tuple[int, int, int, int]

    def crop_of(self, image: torch.Tensor) -> torch.Tensor:
        y0, y1, x0, x1 = self.crop
        return image[..., y0:y1, x0:x1]

    def core_view(self, feats: torch.Tensor, stride: int, full_hw: tuple[int, int]) -> torch.Tensor:
        """The core positions of the crop's features at a layer of total stride ``stride`` (a view).
        ``full_hw``: the layer's feature size for the whole image, where the last tiles end."""
        (cy0, cy1, cx0, cx1), (py0, _, px0, _) = self.core, self.crop
        rows = _core_range(cy0, cy1, py0, stride, full_hw[0])
        cols = _core_range(cx0, cx1, px0, stride, full_hw[1])
        return feats[..., rows[0] : rows[1], cols[0] : cols[1]]


def _core_range(start: int, end: int, crop_start: int, stride: int, full: int) -> tuple[int, int]:
    """Core ``[start, end)`` in pixels -> feature positions ``[start / stride, end / stride)`` (the image's last
    feature position when the core ends at the image border), relative to the crop's first feature position."""
    first, last = start // stride, min(end // stride, full)
    return first - crop_start // stride, last - crop_start // stride


def geometry(feature_names: Sequence[str], layers: Sequence[str]) -> tuple[dict[str, int], int, int]:
    """(``{layer: total stride}``, halo, alignment) of a VGG stack (``feature_names``: its modules in order,
    conv3x3 pad 1 / relu / 2x2 pool) for the requested ``layers``.

    The reach of a crop edge: its wrong padding spoils 1 more row per conv; a 2x2 pooling aligned to the crop
    halves the spoiled rows (rounding up). The halo is the largest reach of a requested layer in pixels,
    rounded up to the alignment (the stride of the deepest module built)."""
    strides, reach, stride, spoiled = {}, {}, 1, 0
    for name in feature_names:
        if name.startswith("conv"):
            spoiled += 1
        elif name.startswith("pool"):
            spoiled, stride = -(-spoiled // 2), stride * 2
        strides[name], reach[name] = stride, spoiled * stride
    align = stride
    halo = max(reach[name] for name in layers)
    return {name: strides[name] for name in layers}, -(-halo // align) * align, align


def check_tile_size(tile_size: object, align: int, halo: int, deepest: str) -> int:
    """``tile_size`` (the core side) must be an int multiple of the pooling stride ``align``: ValueError naming the
    minimum otherwise."""
    if isinstance(tile_size, bool) or not isinstance(tile_size, int):
        raise TypeError(f"tile_size must be None or an int, got {tile_size!r}")
    if tile_size < align or tile_size % align:
        raise ValueError(
            f"tile_size {tile_size} cannot be tiled exactly: the tiles' cores must be multiples of {align} px (the "
            f"total pooling stride up to {deepest}), so the smallest tile_size is {align}; each tile is read with "
            f"a {halo} px halo on every side (tile_size 256 or more keeps that overhead low)"
        )
    return tile_size


def _splits(length: int, tile_size: int, align: int) -> list[tuple[int, int]]:
    """Cores along one side: ``ceil(length / tile_size)`` balanced cores, multiples of ``align`` but the last."""
    count = math.ceil(length / tile_size)
    core = -(-math.ceil(length / count) // align) * align
    starts = list(range(0, length, core))
    return [(a, min(a + core, length)) for a in starts]


def plan_tiles(height: int, width: int, tile_size: int, halo: int, align: int) -> list[Tile]:
    """Row-major tiles covering a ``height`` x ``width`` image (see the module docstring)."""
    tiles = []
    for y0, y1 in _splits(height, tile_size, align):
        for x0, x1 in _splits(width, tile_size, align):
            crop = (max(0, y0 - halo), min(height, y1 + halo), max(0, x0 - halo), min(width, x1 + halo))
            tiles.append(Tile((y0, y1, x0, x1), crop))
    return tiles


def _feature_shapes(extractor: VGGFeatures, height: int, width: int) -> list[tuple[int, int, int]]:
    """(C, H, W) of every module output of the extractor for a ``height`` x ``width`` input."""
    shapes, channels = [], 3
    for module in extractor.features:
        if isinstance(module, nn.Conv2d):
            channels = module.out_channels
        elif not isinstance(module, nn.ReLU):
            height, width = height // 2, width // 2
        shapes.append((channels, height, width))
    return shapes


def memory_estimate(
    extractor: VGGFeatures,
    height: int,
    width: int,
    tile_size: int | None,
    lbfgs_history: int,
    content_layers: Sequence[str] = ("relu4_2",),
    element_size: int = 4,
) -> dict[str, int]:
    """Bytes a Gatys run of a ``height`` x ``width`` image needs (estimate): the activations autograd keeps for
    one forward of a (padded) tile or of the whole image (every module's output once), the image state (6
    image-sized vectors: image, gradient, L-BFGS direction and gradients; and the content targets) and the L-BFGS
    history (``2 * lbfgs_history`` image-sized vectors, reached after that many iterations)."""
    if tile_size is None:
        crop_h, crop_w = height, width
    else:
        _, halo, align = geometry(extractor.feature_names, extractor.layers)
        tiles = plan_tiles(height, width, tile_size, halo, align)
        crop_h = max(t.crop[1] - t.crop[0] for t in tiles)
        crop_w = max(t.crop[3] - t.crop[2] for t in tiles)
    shapes = _feature_shapes(extractor, crop_h, crop_w)
    activations = sum(c * h * w for c, h, w in shapes)
    full = dict(zip(extractor.feature_names, _feature_shapes(extractor, height, width)))
    targets = sum(math.prod(full[name]) for name in content_layers if name in full)
    image = 3 * height * width
    return {
        "activations": activations * element_size,
        "image_state": (6 * image + targets) * element_size,
        "optimizer": 2 * lbfgs_history * image * element_size,
    }


def format_bytes(count: float) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (CUDA: ``mem_get_info``; CPU: the available physical pages), None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_note(
    extractor: VGGFeatures,
    height: int,
    width: int,
    tile_size: int | None,
    optimizer_vectors: int,
    device: torch.device,
    content_layers: Sequence[str] = ("relu4_2",),
    processes: int = 1,
) -> str | None:
    """A line saying what a run needs (tiled), or advising ``tile_size`` when an untiled run needs more memory
    than ``device`` has free; None when there is nothing to say. ``optimizer_vectors``: image-sized vectors the
    optimizer keeps (``2 * lbfgs_history`` for L-BFGS, 2 for Adam)."""
    parts = memory_estimate(extractor, height, width, tile_size, 0, content_layers)
    parts["optimizer"] = optimizer_vectors * 3 * height * width * 4
    total = sum(parts.values())
    detail = (
        f"{format_bytes(parts['activations'])} of activations, {format_bytes(parts['image_state'])} of image state, "
        f"{format_bytes(parts['optimizer'])} of optimizer state"
    )
    if tile_size is None:
        free = available_memory(device)
        if free is None or total <= free:
            return None
        return (
            f"a {height}x{width} untiled Gatys run needs about {format_bytes(total)} ({detail}) but {device} has "
            f"{format_bytes(free)} free: pass tile_size=256 (--tile-size 256) for the same result tile by tile"
            + (", and a smaller lbfgs_history" if parts["optimizer"] > free // 2 else "")
        )
    _, halo, align = geometry(extractor.feature_names, extractor.layers)
    count = len(plan_tiles(height, width, tile_size, halo, align))
    return (
        f"tiled {height}x{width}: {count} tiles of {tile_size} px (+{halo} px halo) over {processes} "
        f"process(es); about {format_bytes(total)} per process ({detail})"
    )


class _InjectGradient(torch.autograd.Function):
    """``loss`` as a function of ``image`` whose backward runs pass 2 of the objective."""

    @staticmethod
    def forward(ctx, image: torch.Tensor, loss: torch.Tensor, objective: TiledObjective, diffs: dict) -> torch.Tensor:
        ctx.save_for_backward(image)
        ctx.objective, ctx.diffs = objective, diffs
        return loss.clone()

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        (image,) = ctx.saved_tensors
        grad = ctx.objective.gradient(image, ctx.diffs)
        return grad * grad_loss.to(grad.dtype), None, None, None


class TiledObjective:
    """The Gatys loss terms of one scale over ``image`` of a fixed size, evaluated tile by tile.

    Calling it returns ``{"content", "style", "tv", "loss"}`` like the untiled objective; ``loss.backward()``
    runs pass 2 and leaves the exact image gradient in ``image.grad``. The content targets (at the core positions
    of this rank's tiles) and the blended style Grams (of the style images, tiled too) are computed once here.
    """

    def __init__(
        self,
        extractor: VGGFeatures,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        blend: Sequence[float],
        content_layers: Sequence[str],
        style_layers: Sequence[str],
        style_layer_weights: Sequence[float],
        content_weight: float,
        style_weight: float,
        tv_weight: float,
        autocast: bool,
        tile_size: int,
        group: distributed.Group | None = None,
    ) -> None:
        self.extractor, self.autocast, self.tile_size, self.group = extractor, autocast, tile_size, group
        self.content_layers, self.style_layers = list(content_layers), list(style_layers)
        self.style_layer_weights = dict(zip(style_layers, style_layer_weights))
        self.content_weight, self.style_weight, self.tv_weight = content_weight, style_weight, tv_weight
        self.layers = list(dict.fromkeys([*self.content_layers, *self.style_layers]))
        self.strides, self.halo, self.align = geometry(extractor.feature_names, self.layers)
        self.height, self.width = content.shape[-2:]
        self.tiles = self._my_tiles(self.height, self.width)
        self.full_shapes = self._full_shapes(self.height, self.width)
        self.content_targets: list[dict[str, torch.Tensor]] = []
        if self.content_layers:
            with torch.no_grad():
                for tile in self.tiles:
                    feats = self._features(tile.crop_of(content))
                    self.content_targets.append(
                        {name: self._core(tile, feats, name).float().contiguous() for name in self.content_layers}
                    )
        total = sum(blend)
        self.style_targets: dict[str, torch.Tensor] = {}
        for style, b in zip(styles, blend):
            grams, _ = self._pass1(style, with_content=False)
            for name, gram in grams.items():
                gram = gram.float() * (b / total)
                self.style_targets[name] = self.style_targets[name] + gram if name in self.style_targets else gram

    # ----------------------------------------------------------------------------------------------- helpers
    def _my_tiles(self, height: int, width: int) -> list[Tile]:
        """This rank's share of the tiles of a ``height`` x ``width`` image."""
        tiles = plan_tiles(height, width, self.tile_size, self.halo, self.align)
        rank, world = (0, 1) if self.group is None else (self.group.rank, self.group.world_size)
        return tiles[rank::world]

    def _full_shapes(self, height: int, width: int) -> dict[str, tuple[int, int, int]]:
        shapes = _feature_shapes(self.extractor, height, width)
        index = {name: i for i, name in enumerate(self.extractor.feature_names)}
        return {name: shapes[index[name]] for name in self.layers}

    def _features(self, crop: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(crop.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return self.extractor(crop)

    def _core(self, tile: Tile, feats: dict[str, torch.Tensor], name: str, shapes: dict | None = None) -> torch.Tensor:
        full = (shapes or self.full_shapes)[name]
        return tile.core_view(feats[name], self.strides[name], (full[1], full[2]))

    def _pass1(self, image: torch.Tensor, with_content: bool = True) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Exact (all-reduced) style Grams ``G_l`` (acc dtype) of ``image`` and the content loss sums per layer
        (an (n_content,) tensor of ``sum (F - T)^2``), from this rank's tiles of it."""
        height, width = image.shape[-2:]
        tiles = self.tiles if with_content else self._my_tiles(height, width)
        shapes = self.full_shapes if with_content else self._full_shapes(height, width)
        acc = torch.float64 if image.dtype == torch.float64 else torch.float32
        grams = {name: image.new_zeros((shapes[name][0],) * 2, dtype=acc) for name in self.style_layers}  # (C, C) each
        sums = image.new_zeros((len(self.content_layers) if with_content else 0,), dtype=acc)
        with torch.no_grad():
            for i, tile in enumerate(tiles):
                feats = self._features(tile.crop_of(image))
                for name, gram in grams.items():
                    core = self._core(tile, feats, name, shapes)
                    if core.numel():
                        c, h, w = shapes[name]
                        gram += pk.gram_matrix(core, normalize=float(c * h * w), out_dtype=acc)[0]
                if with_content:
                    for j, name in enumerate(self.content_layers):
                        core = self._core(tile, feats, name)
                        if core.numel():
                            sums[j] += pk.content_loss(core, self.content_targets[i][name], reduction="sum")
                del feats
        flat = torch.cat([*(g.flatten() for g in grams.values()), sums])
        _sum_over_ranks_(flat, self.group)
        out, offset = {}, 0
        for name, gram in grams.items():
            out[name] = flat[offset : offset + gram.numel()].view_as(gram)
            offset += gram.numel()
        return out, flat[offset:]

    # --------------------------------------------------------------------------------------------- objective
    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if tuple(image.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"this objective is for {self.height}x{self.width} images, got {tuple(image.shape)}")
        grams, sums = self._pass1(image.detach())
        diffs, style = {}, sums.new_zeros(())
        for name, gram in grams.items():
            diff = gram - self.style_targets[name].to(gram.dtype)
            diffs[name] = diff
            style = style + self.style_layer_weights[name] * (diff * diff).sum() / diff.numel()
        content = sums.new_zeros(())
        for j, name in enumerate(self.content_layers):
            content = content + sums[j] / math.prod(self.full_shapes[name])
        content, style = self.content_weight * content, self.style_weight * style
        tiled = (content + style).float() if image.dtype != torch.float64 else content + style
        loss = _InjectGradient.apply(image, tiled, self, diffs)
        tv = self.tv_weight * pk.tv_loss(image) if self.tv_weight else image.new_zeros(())
        return {"content": content, "style": style, "tv": tv, "loss": loss + tv}

    def gradient(self, image: torch.Tensor, diffs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pass 2: the exact gradient of the content and style terms w.r.t. ``image`` (all-reduced), given the
        ``D_l`` of pass 1."""
        image = image.detach()
        grad = torch.zeros_like(image)
        coefs = {}
        for name in self.style_layers:  # d/dF of w_l * sum_ij D_ij^2 / C^2 with G = F F^T / (C H W)
            c, h, w = self.full_shapes[name]
            coefs[name] = self.style_weight * self.style_layer_weights[name] * 2.0 / (c * c) / (c * h * w)
        for i, tile in enumerate(self.tiles):
            with torch.enable_grad():
                crop = tile.crop_of(image).requires_grad_(True)
                feats = self._features(crop)
                outputs, grads = [], []
                for name in self.layers:
                    f = feats[name]
                    g = torch.zeros_like(f)
                    core_grad = self._core(tile, {name: g}, name)
                    core = self._core(tile, feats, name).detach()
                    if not core.numel():
                        continue
                    if name in coefs:
                        core_grad += pk.style_loss_gradient(core, diffs[name], coefs[name]).to(g.dtype)
                    if name in self.content_layers:
                        coef = 2.0 * self.content_weight / math.prod(self.full_shapes[name])
                        target = self.content_targets[i][name]
                        core_grad += ((core.to(target.dtype) - target) * coef).to(g.dtype)
                    outputs.append(f)
                    grads.append(g)
                if outputs:
                    (crop_grad,) = torch.autograd.grad(outputs, crop, grads)
                    y0, y1, x0, x1 = tile.crop
                    grad[..., y0:y1, x0:x1] += crop_grad
            del feats, outputs, grads
        return _sum_over_ranks_(grad, self.group)
