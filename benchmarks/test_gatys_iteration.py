"""One Gatys iteration (VGG19, 5 style layers + relu4_2 content, forward + backward of the whole loss): the loop
of ``perceptual_kernels.api.gatys`` vs the same loss written with ``bmm`` Grams and ``F.mse_loss`` (the usual
PyTorch examples). Same random weights and inputs. CPU: 256 (512 skipped: too slow for a CPU run); GPU: 256, 512.
Run: ``python -m pytest benchmarks/test_gatys_iteration.py --benchmark-only``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from plain_gatys import gram, plain_loss

from perceptual_kernels.api import gatys
from perceptual_kernels.api.vgg import VGGFeatures

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module")
def extractor():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layers = [*gatys.DEFAULT_CONTENT_LAYERS, *gatys.DEFAULT_STYLE_LAYERS]
        return VGGFeatures(layers, weights="random").to(DEVICE)


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("size", [256, 512])
@pytest.mark.parametrize("loop", ["fused", "plain"])
def test_gatys_iteration(benchmark, extractor, loop, size):
    if DEVICE.type == "cpu" and size > 256:
        pytest.skip("512 takes tens of seconds per iteration on a 2-core CPU; run it on a GPU")
    benchmark.group = f"gatys-iteration-{size}-{DEVICE.type}"
    g = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, size, size, generator=g).to(DEVICE)
    style = torch.rand(1, 3, size, size, generator=g).to(DEVICE)
    with torch.no_grad():
        content_targets = {n: extractor(content)[n] for n in gatys.DEFAULT_CONTENT_LAYERS}
        style_feats = extractor(style)
        style_targets = {n: gram(style_feats[n])[0] for n in gatys.DEFAULT_STYLE_LAYERS}
    image = content.clone().requires_grad_(True)
    if loop == "fused":
        objective = gatys._Objective(
            extractor,
            content_targets,
            style_targets,
            dict.fromkeys(gatys.DEFAULT_STYLE_LAYERS, 1.0),
            1.0,
            1e6,
            0.0,
            False,
        )
        loss_fn = lambda: objective(image)["loss"]  # noqa: E731
    else:
        loss_fn = lambda: plain_loss(extractor, image, content_targets, style_targets, 1.0, 1e6)  # noqa: E731

    def iteration():
        image.grad = None
        loss_fn().backward()
        _sync()

    benchmark.pedantic(iteration, rounds=5, warmup_rounds=1)
