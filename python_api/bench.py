"""``perceptual-kernels bench``: what the library buys on this machine, in under two minutes.

Times forward+backward of every op at one realistic shape per op, the plain PyTorch code people write (``eager``)
against our ops on the backend this machine picks (and, with ``--compile``, against ``torch.compile`` of the plain
code), with ``torch.utils.benchmark`` (medians of adaptive repetitions). The full suites live in ``benchmarks/``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils import benchmark as tb

import perceptual_kernels as pk
from perceptual_kernels.backends import select

from . import _checks
from ._device import resolve_device


def _gram(x):
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def _cases(device: torch.device, quick: bool) -> list[tuple[str, str, tuple, object, object]]:
    """(op, shape text, inputs, eager fn, our fn); inputs that need gradients require them."""
    side = 128 if quick and device.type == "cpu" else 256
    g = torch.Generator(device=device).manual_seed(0)

    def rand(*shape, grad=False):
        return torch.randn(*shape, device=device, generator=g).requires_grad_(grad)

    x1 = rand(1, 64, side, side, grad=True)
    x2 = rand(4, 128, side // 2, side // 2, grad=True)
    img = rand(4, 3, side, side, grad=True)
    cin = rand(4, 64, side // 2, side // 2, grad=True)
    gamma, beta, index = rand(32, 64, grad=True), rand(32, 64, grad=True), torch.arange(4, device=device) * 7
    target1, target2 = rand(1, 64, 64) * 1e-3, rand(4, 128, side // 2, side // 2)
    return [
        ("gram_matrix", f"1x64x{side}x{side}", (x1,), _gram, pk.gram_matrix),
        (
            "style_loss",
            f"1x64x{side}x{side}",
            (x1, target1),
            lambda x, t: F.mse_loss(_gram(x), t),
            lambda x, t: pk.style_loss(x, t),
        ),
        ("content_loss", "4x128x{0}x{0}".format(side // 2), (x2, target2), F.mse_loss, pk.content_loss),
        (
            "tv_loss",
            f"4x3x{side}x{side}",
            (img,),
            lambda x: (
                ((x[:, :, 1:] - x[:, :, :-1]) ** 2).sum() / x.numel()
                + ((x[:, :, :, 1:] - x[:, :, :, :-1]) ** 2).sum() / x.numel()
            ),
            pk.tv_loss,
        ),
        (
            "conditional_instance_norm",
            "4x64x{0}x{0}, 32 styles".format(side // 2),
            (cin, gamma, beta, index),
            lambda x, g_, b_, i: F.relu(F.instance_norm(x) * g_[i][:, :, None, None] + b_[i][:, :, None, None]),
            lambda x, g_, b_, i: pk.conditional_instance_norm(x, g_, b_, style_index=i, activation="relu"),
        ),
    ]


def _time(fn, inputs, device: torch.device, min_run_time: float) -> float:
    """Median seconds of forward + backward."""

    def step():
        out = fn(*inputs)
        out.backward(torch.ones_like(out))
        for t in inputs:
            if isinstance(t, torch.Tensor):
                t.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()
    return tb.Timer("step()", globals={"step": step}).blocked_autorange(min_run_time=min_run_time).median


def run(device: str | None = None, quick: bool = True, compile: bool = False, min_run_time: float = 0.5) -> str:
    """Time every op and return the markdown table (also the one printed by the CLI)."""
    dev = resolve_device(device)
    min_run_time = _checks.number("min_run_time", min_run_time, positive=True)
    backend = select(dev, torch.float32)
    lines = [
        f"device {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}, torch {torch.__version__},"
        f" our backend: {backend}; forward+backward, fp32, median ms",
        "",
        "| op | shape | eager | ours | speed-up" + (" | compile | vs compile |" if compile else " |"),
        "|---|---|---|---|---|" + ("---|---|" if compile else ""),
    ]
    for op, shape, inputs, eager, ours in _cases(dev, quick):
        t_eager, t_ours = _time(eager, inputs, dev, min_run_time), _time(ours, inputs, dev, min_run_time)
        row = f"| {op} | {shape} | {t_eager * 1e3:.2f} | {t_ours * 1e3:.2f} | {t_eager / t_ours:.2f}x |"
        if compile:
            t_comp = _time(torch.compile(eager), inputs, dev, min_run_time)
            row += f" {t_comp * 1e3:.2f} | {t_comp / t_ours:.2f}x |"
        lines.append(row)
    return "\n".join(lines)
