"""Eager per-call overhead of the Python layer, on tiny inputs where the math costs almost nothing.

For each op: the argument checks + backend choice (``functional`` minus the reference math it calls), the
``torch.library`` custom-op dispatch with its autograd wiring (``_ops`` minus the kernel-interface function it
calls; the kernels are the plain-torch ones from ``tests/torch_kernels.py``), and the whole public call on that
kernel path minus the kernel function. Run:
``python -m pytest benchmarks/test_dispatch_overhead.py --benchmark-only``.
"""

from __future__ import annotations

import pytest
import torch
import torch_kernels

import perceptual_kernels as pk
from perceptual_kernels import _ops
from perceptual_kernels.backends import reference, register_backend

register_backend("torch-test", torch_kernels)
x = torch.randn(2, 4, 4, 4, requires_grad=True)
target, index = torch.randn(3, 4, 4), torch.tensor([2, 0])
gamma, beta = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4)
rows = gamma[index].detach().contiguous()

CASES = {
    # op: (public call on the reference backend, the reference math alone,
    #      the custom op, the kernel-interface function alone)
    "gram_matrix": (
        lambda: pk.gram_matrix(x),
        lambda: reference.gram_matrix(x, 1 / 64, x.dtype),
        lambda: _ops.gram(x, 1 / 64, x.dtype, "torch-test"),
        lambda: torch_kernels.gram_forward(x, 1 / 64, x.dtype),
    ),
    "style_loss": (
        lambda: pk.style_loss(x, target, style_index=index),
        lambda: reference.style_loss(x, target, index, 1 / 64, 1.0, "mean"),
        lambda: _ops.style_loss(x, target, index, 1 / 64, "torch-test"),
        lambda: torch_kernels.style_loss_forward(x, target, index, 1 / 64, 0),
    ),
    "content_loss": (
        lambda: pk.content_loss(x, x.detach()),
        lambda: reference.content_loss(x, x.detach(), 1.0, "mean"),
        lambda: _ops.content_loss(x, x.detach(), "torch-test"),
        lambda: torch_kernels.content_loss_forward(x, x.detach(), 0),
    ),
    "tv_loss": (
        lambda: pk.tv_loss(x),
        lambda: reference.tv_loss(x, "squared", 1e-8, 1.0, "mean"),
        lambda: _ops.tv_loss(x, "squared", 1e-8, "torch-test"),
        lambda: torch_kernels.tv_forward(x, 0, 1e-8),
    ),
    "conditional_instance_norm": (
        lambda: pk.conditional_instance_norm(x, gamma, beta, style_index=index),
        lambda: reference.instance_norm(x, rows, rows, 1e-5, False),
        lambda: _ops.instance_norm(x, gamma, beta, index, 1e-5, False, "torch-test"),
        lambda: torch_kernels.instance_norm_forward(x, gamma, beta, index, 1e-5, False),
    ),
}
PARTS = ("public_reference", "reference_math", "custom_op", "kernel_function", "public_kernel_path")


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("op", list(CASES))
def test_overhead(benchmark, monkeypatch, op, part):
    """``public_kernel_path``: the public call routed to the torch kernels (checks + custom op + kernel)."""
    benchmark.group = op
    if part == "public_kernel_path":
        monkeypatch.setattr(pk.functional, "select", lambda device, dtype: "torch-test")
        benchmark(CASES[op][0])
        return
    with pk.use_backend("reference"):
        benchmark(CASES[op][PARTS.index(part)])
