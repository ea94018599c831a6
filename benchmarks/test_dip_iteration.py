"""One Deep Image Prior iteration (skip network forward + backward + Adam, denoising data term): the fused
``content_loss`` vs ``F.mse_loss``. CPU: 128 px with the 5x128 net; GPU: 512 px.
Run: ``python -m pytest benchmarks/test_dip_iteration.py --benchmark-only``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import perceptual_kernels as pk
from perceptual_kernels.api.dip_nets import get_net, get_noise, task_defaults

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SIZE = 512 if DEVICE.type == "cuda" else 128


@pytest.mark.parametrize("variant", ["fused", "plain"])
def test_dip_iteration(benchmark, variant):
    benchmark.group = f"dip-iteration-{SIZE}-{DEVICE.type}"
    torch.manual_seed(0)
    kwargs = {k: v for k, v in task_defaults("denoise").items() if k != "input_depth"}
    net = get_net("skip", 32, 3, **kwargs).to(DEVICE)
    z = get_noise(32, (SIZE, SIZE)).to(DEVICE)
    target = torch.rand(1, 3, SIZE, SIZE, device=DEVICE)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    loss_fn = pk.content_loss if variant == "fused" else F.mse_loss

    def step():
        out = net(z + torch.randn_like(z) / 30)
        loss = loss_fn(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
