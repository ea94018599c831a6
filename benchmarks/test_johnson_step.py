"""One Johnson / Dumoulin training step (multi-style transform net with conditional instance norm, VGG16 losses,
backward, Adam): the fused ops vs the same step written with plain PyTorch ops (``F.instance_norm`` + a
``gamma[style_index]`` gather + ReLU, ``bmm`` Grams, ``F.mse_loss``). Same weights, inputs and style indices.
CPU: batch 2 at 128 with 4 styles; GPU: batch 4 and 16 at 256 with 32 styles.
Run: ``python -m pytest benchmarks/test_johnson_step.py --benchmark-only``.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from plain_gatys import gram

import perceptual_kernels as pk
from perceptual_kernels.api.johnson_nets import TransformNet
from perceptual_kernels.api.vgg import VGGFeatures

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
STYLE_LAYERS, CONTENT = ("relu1_2", "relu2_2", "relu3_3", "relu4_3"), "relu2_2"
CASES = [(2, 128, 4)] if DEVICE.type == "cpu" else [(4, 256, 32), (16, 256, 32)]


class PlainCIN(pk.nn.ConditionalInstanceNorm2d):
    """The conditional instance norm people write by hand: instance_norm, gather the rows, affine, ReLU."""

    def forward(self, x, style_index=None, style_weights=None):
        y = F.instance_norm(x, eps=self.eps)
        y = y * self.gamma[style_index][:, :, None, None] + self.beta[style_index][:, :, None, None]
        return F.relu(y) if self.activation == "relu" else y


def plain_copy(model: torch.nn.Module) -> torch.nn.Module:
    plain = copy.deepcopy(model)
    for module in plain.modules():
        if isinstance(module, pk.nn.ConditionalInstanceNorm2d):
            module.__class__ = PlainCIN
    return plain


@pytest.mark.parametrize("batch,size,styles", CASES)
@pytest.mark.parametrize("variant", ["fused", "plain"])
def test_johnson_training_step(benchmark, variant, batch, size, styles):
    benchmark.group = f"johnson-step-b{batch}-{size}-{styles}styles-{DEVICE.type}"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vgg = VGGFeatures([*STYLE_LAYERS], arch="vgg16", weights="random").to(DEVICE)
    model = TransformNet(num_styles=styles).to(DEVICE)
    if variant == "plain":
        model = plain_copy(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 3, size, size, device=DEVICE)
    index = torch.randint(0, styles, (batch,), device=DEVICE)
    with torch.no_grad():
        grams = {n: gram(f) for n, f in vgg(torch.rand(styles, 3, size, size, device=DEVICE)).items()}
        content_target = vgg(x)[CONTENT]

    def step():
        y = model(x, style_index=index)
        feats = vgg(y)
        if variant == "fused":
            loss = pk.content_loss(feats[CONTENT], content_target, weight=1e5) + sum(
                pk.style_loss(feats[n], grams[n], style_index=index, weight=1e10) for n in STYLE_LAYERS
            )
        else:
            loss = 1e5 * F.mse_loss(feats[CONTENT], content_target) + sum(
                1e10 * F.mse_loss(gram(feats[n]), grams[n][index]) for n in STYLE_LAYERS
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
