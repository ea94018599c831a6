"""``perceptual-kernels demo``: an offline run on generated images (no downloads).

Writes to the output folder: the generated ``content.png`` and ``style.png``, ``stylized.png`` (Gatys style
transfer), ``texture.png`` (texture synthesis) and ``report.md`` (weights used, backends, loss values, timings).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

import perceptual_kernels as pk

from . import _checks, gatys, images
from ._device import resolve_device
from .vgg import VGGFeatures, cached_weights_path


def content_image(size: int) -> torch.Tensor:
    """A generated landscape (1, 3, size, size): sky gradient, sun, two hills, a house."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    sky = torch.stack([0.35 + 0.3 * y, 0.55 + 0.25 * y, 0.95 - 0.2 * y])
    img = sky.clone()
    sun = ((x - 0.75) ** 2 + (y - 0.22) ** 2) < 0.012
    img[:, sun] = torch.tensor([1.0, 0.85, 0.3])[:, None]
    for height, phase, colour in ((0.62, 0.0, (0.25, 0.55, 0.2)), (0.72, 1.7, (0.15, 0.42, 0.15))):
        hill = y > height + 0.06 * torch.sin(6 * x + phase)
        img[:, hill] = torch.tensor(colour)[:, None]
    house = (x > 0.22) & (x < 0.42) & (y > 0.55) & (y < 0.78)
    roof = (y <= 0.55) & (y > 0.42) & ((x - 0.32).abs() < (y - 0.42) * 0.9)
    img[:, house] = torch.tensor([0.8, 0.75, 0.65])[:, None]
    img[:, roof] = torch.tensor([0.6, 0.15, 0.1])[:, None]
    return img.unsqueeze(0).clamp(0, 1)


def style_image(size: int, seed: int = 0) -> torch.Tensor:
    """A generated abstract painting (1, 3, size, size): coloured swirls of sine strokes over blobs."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = torch.zeros(3, size, size)
    palette = torch.tensor([[0.9, 0.3, 0.1], [0.1, 0.3, 0.8], [0.95, 0.8, 0.1], [0.1, 0.6, 0.4], [0.5, 0.1, 0.5]])
    for k in range(12):
        cx, cy, r = torch.rand(3, generator=g)
        weight = torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (0.02 + 0.05 * r))
        img += weight * palette[k % len(palette)][:, None, None]
    angle = torch.rand(1, generator=g) * math.pi
    strokes = torch.sin(40 * (x * torch.cos(angle) + y * torch.sin(angle)) + 6 * torch.sin(8 * y))
    img = img / img.amax() * (0.75 + 0.25 * strokes)
    return img.unsqueeze(0).clamp(0, 1)


def _default_weights() -> str:
    return "imagenet" if os.path.exists(cached_weights_path("vgg19", "imagenet")) else "random"


def run(
    output: str | os.PathLike,
    *,
    size: int = 128,
    iterations: int = 40,
    weights: str | None = None,
    device: str | None = None,
) -> Path:
    """Generate the inputs, stylize and synthesize a texture, write everything and the report; returns the
    report's path. Every argument is checked before any work."""
    output = _checks.output_path("output", output, folder=True)
    size, iterations = _checks.integer("size", size, 16), _checks.integer("iterations", iterations, 0)
    device = resolve_device(device)
    weights = _default_weights() if weights is None else weights
    layers = list(dict.fromkeys([*gatys.DEFAULT_CONTENT_LAYERS, *gatys.DEFAULT_STYLE_LAYERS]))
    extractor = VGGFeatures(layers, arch="vgg19", weights=weights, seed=0)
    output.mkdir(parents=True, exist_ok=True)
    content, style = content_image(size), style_image(size)
    content_path = images.save_image(content, output / "content.png")
    style_path = images.save_image(style, output / "style.png")
    rows = []
    start = time.perf_counter()
    stylized, history = gatys.stylize(
        content, style, size=size, iterations=iterations, extractor=extractor, device=device
    )
    rows.append(("stylize", size, history))
    stylized_path = images.save_image(stylized, output / "stylized.png", protected=[content_path, style_path])
    texture, texture_history = gatys.synthesize_texture(
        style, size, iterations=iterations, extractor=extractor, device=device
    )
    rows.append(("texture", size, texture_history))
    texture_path = images.save_image(texture, output / "texture.png", protected=[content_path, style_path])
    total = time.perf_counter() - start

    report = [
        "# perceptual-kernels demo",
        "",
        f"- weights: {extractor.weights_description}",
        f"- backend of the losses on {stylized.device.type}: "
        f"{pk.backends.select(stylized.device, stylized.dtype)}; torch {torch.__version__}",
        f"- inputs (generated): {content_path.name}, {style_path.name}; outputs: {stylized_path.name}, "
        f"{texture_path.name}",
        f"- total time {total:.1f} s",
        "",
        "| run | size | iterations | first loss | final loss | style | content | seconds | s / iteration |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, px, h in rows:
        n = len(h.loss)
        report.append(
            f"| {name} | {px} | {n} | {h.loss[0]:.4g} | {h.loss[-1]:.4g} | {h.style[-1]:.4g} | "
            f"{h.content[-1]:.4g} | {h.time[-1]:.2f} | {h.time[-1] / max(n, 1):.3f} |"
        )
    if extractor.weights_format == "random":
        report += [
            "",
            "The VGG weights are random (no ImageNet file was cached and the demo downloads nothing): "
            "the images show what random features capture, not a trained network's style. Put "
            f"{cached_weights_path('vgg19', 'imagenet')} in place (or pass --weights) for the real thing.",
        ]
    text = "\n".join(report) + "\n"
    report_path = output / "report.md"
    tmp = report_path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, report_path)
    print(text)
    return report_path
