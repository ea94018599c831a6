"""One generator training step of a small super-resolution network (x4 SRResNet-style: 64 channels, 4 residual
blocks, two pixel-shuffle upsamplers; forward, loss, backward, Adam) with an ESRGAN-style VGG19 ``conv5_4`` L1
perceptual loss: ``PerceptualLoss`` (fused ops) vs the same step with the plain-torch BasicSR-formula module
(``tests/plain_perceptual.py``), on the same random VGG weights and crops. The loss (the VGG passes included) runs
in fp32 and under ``torch.autocast`` bf16; the generator in fp32. ``fused`` is the default module (NHWC VGG pass,
target in a second ``no_grad`` pass); ``fused-nchw`` is ``channels_last=False`` (the VGG in the images' NCHW
layout, as the plain module) and ``fused-batched`` is ``batched_target=True`` (one VGG pass over
``cat([x, target])``): the choices measured for the defaults.
CPU: batch 8 of 128 px HR crops; GPU: batch 16 of 192 px.
Run: ``python -m pytest benchmarks/test_sr_step.py --benchmark-only``.
"""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
from plain_perceptual import plain_copy_of
from torch import nn

from perceptual_kernels.api import PerceptualLoss

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BATCH, CROP = (8, 128) if DEVICE.type == "cpu" else (16, 192)
FACTOR = 4
LAYERS = {"conv5_4": 1.0}


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def small_sr_net(channels: int = 64, blocks: int = 4) -> nn.Module:
    """x4 SRResNet-style generator (no batch norm), LR (B, 3, h, w) -> HR (B, 3, 4h, 4w)."""

    def upsample() -> list[nn.Module]:
        return [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2), nn.ReLU()]

    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1),
        nn.ReLU(),
        *[_Residual(channels) for _ in range(blocks)],
        *upsample(),
        *upsample(),
        nn.Conv2d(channels, 3, 3, padding=1),
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16-autocast"])
@pytest.mark.parametrize("variant", ["fused", "fused-nchw", "fused-batched", "plain"])
def test_sr_generator_step(benchmark, variant, precision):
    benchmark.group = f"sr-step-conv5_4-l1-b{BATCH}-{CROP}-{precision}-{DEVICE.type}"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fused = PerceptualLoss(
            LAYERS,
            weights="random",
            criterion="l1",
            batched_target=variant == "fused-batched",
            channels_last=variant != "fused-nchw",
        )
    loss_fn: nn.Module = fused if variant != "plain" else plain_copy_of(fused, LAYERS, criterion="l1")
    loss_fn = loss_fn.to(DEVICE)
    net = small_sr_net().to(DEVICE)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    hr = torch.rand(BATCH, 3, CROP, CROP, device=DEVICE)
    lr = nn.functional.avg_pool2d(hr, FACTOR)

    def step():
        sr = net(lr)
        autocast = (
            torch.autocast(DEVICE.type, dtype=torch.bfloat16) if precision != "fp32" else contextlib.nullcontext()
        )
        with autocast:
            out = loss_fn(sr, hr)
        loss = out[0] if isinstance(out, tuple) else out
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(step, rounds=3, warmup_rounds=1)
