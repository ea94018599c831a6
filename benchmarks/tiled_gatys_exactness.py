"""The issue's exactness check by hand: a 448 x 320 content image with tiles of 128 (no padded tile covers the
image), random VGG19 weights, the default layers: tiled vs untiled loss terms and gradient (fp32, and float64),
then the per-iteration losses of ``--iterations`` L-BFGS iterations (fp32). Prints one JSON line.

    python benchmarks/tiled_gatys_exactness.py --iterations 10
"""

from __future__ import annotations

import argparse
import json
import warnings

import torch

from perceptual_kernels.api import gatys, gatys_tiled
from perceptual_kernels.api.vgg import VGGFeatures


def loss_and_grad(objective, image):
    image = image.clone().requires_grad_()
    terms = objective(image)
    terms["loss"].backward()
    return {k: float(v.detach()) for k, v in terms.items()}, image.grad


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--tile-size", type=int, default=128)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    content_layers, style_layers = gatys.DEFAULT_CONTENT_LAYERS, gatys.DEFAULT_STYLE_LAYERS
    g = torch.Generator().manual_seed(0)
    content, style = torch.rand(1, 3, 320, 448, generator=g), torch.rand(1, 3, 320, 448, generator=g)
    image = torch.rand(1, 3, 320, 448, generator=g)
    report: dict = {"tiles": None}
    for dtype in (torch.float32, torch.float64):
        vgg = VGGFeatures([*content_layers, *style_layers], weights="random", seed=0).to(dtype)
        c, s, x = content.to(dtype), style.to(dtype), image.to(dtype)
        with torch.no_grad():
            targets = {n: vgg(c)[n] for n in content_layers}
        weights = [1.0] * len(style_layers)
        untiled = gatys._Objective(
            vgg,
            targets,
            gatys._grams(vgg, [s], [1.0], style_layers, False),
            dict(zip(style_layers, weights)),
            1.0,
            1e6,
            1e-3,
            False,
        )
        tiled = gatys_tiled.TiledObjective(
            vgg, c, [s], [1.0], content_layers, style_layers, weights, 1.0, 1e6, 1e-3, False, args.tile_size
        )
        report["tiles"] = [t.crop for t in tiled.tiles]
        (a, ga), (b, gb) = loss_and_grad(tiled, x), loss_and_grad(untiled, x)
        report[str(dtype)] = {
            "loss_rel": {k: abs(a[k] - b[k]) / abs(b[k]) for k in a},
            "grad_err_over_max": float((ga - gb).abs().max() / gb.abs().max()),
        }
        print(json.dumps(report), flush=True)
    vgg = VGGFeatures([*content_layers, *style_layers], weights="random", seed=0)
    kwargs = dict(size=448, iterations=args.iterations, extractor=vgg, progress=False, device="cpu", tv_weight=1e-3)
    _, untiled_history = gatys.stylize(content, style, **kwargs)
    _, tiled_history = gatys.stylize(content, style, tile_size=args.tile_size, **kwargs)
    report["lbfgs"] = {
        "untiled": untiled_history.loss,
        "tiled": tiled_history.loss,
        "max_rel": max(abs(a - b) / abs(b) for a, b in zip(tiled_history.loss, untiled_history.loss)),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
