"""torch.compile(fullgraph=True) traces losses built from the ops (no graph breaks) and matches eager."""

from __future__ import annotations

import pytest
import torch
from _helpers import DEVICE, KERNEL_BACKENDS, assert_close

import perceptual_kernels as pk


def perceptual_objective(x, feats, gram_targets, content_target, gamma, beta, index):
    """A loss touching every op, forward and backward."""
    y = pk.conditional_instance_norm(feats, gamma, beta, style_index=index, activation="relu")
    return (
        pk.style_loss(y, gram_targets, style_index=index)
        + pk.style_loss(feats, gram_targets[0], reduction="sum", weight=0.25)
        + pk.gram_matrix(y).square().mean()
        + pk.content_loss(y, content_target)
        + pk.tv_loss(x, weight=0.1)
        + pk.tv_loss(x, kind="isotropic", weight=0.1)
        + pk.instance_norm(x).abs().mean()
    )


def _inputs():
    x = torch.randn(2, 3, 9, 10, device=DEVICE, requires_grad=True)
    feats = torch.randn(2, 6, 5, 7, device=DEVICE, requires_grad=True)
    gamma = torch.randn(3, 6, device=DEVICE, requires_grad=True)
    beta = torch.randn(3, 6, device=DEVICE, requires_grad=True)
    return (
        x,
        feats,
        torch.randn(3, 6, 6, device=DEVICE) * 0.1,
        torch.randn(2, 6, 5, 7, device=DEVICE),
        gamma,
        beta,
        torch.tensor([2, 0], device=DEVICE),
    )


def _compare(backend: str, compile_backend: str) -> None:
    torch._dynamo.reset()
    args = _inputs()
    leaves = [a for a in args if a.requires_grad]
    with pk.use_backend(backend):
        eager = perceptual_objective(*args)
        eager_grads = torch.autograd.grad(eager, leaves)
        compiled_fn = torch.compile(perceptual_objective, fullgraph=True, backend=compile_backend)
        compiled = compiled_fn(*args)
        compiled_grads = torch.autograd.grad(compiled, leaves)
    assert_close(compiled, eager, torch.float32, "loss")
    for got, expected in zip(compiled_grads, eager_grads):
        assert_close(got, expected, torch.float32, "grad")


@pytest.mark.parametrize("backend", ["reference"] + KERNEL_BACKENDS)
def test_fullgraph_aot_eager(backend):
    from perceptual_kernels.backends import unavailable_reason

    if reason := unavailable_reason(backend, DEVICE, torch.float32):
        pytest.skip(reason)
    _compare(backend, "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_fullgraph_inductor_with_kernel_ops(backend):
    """One Inductor compile (about 20 s on a CPU) with the custom ops inside the graph."""
    from perceptual_kernels.backends import unavailable_reason

    if reason := unavailable_reason(backend, DEVICE, torch.float32):
        pytest.skip(reason)
    _compare(backend, "inductor")


@pytest.mark.parametrize("backend", ["reference"] + KERNEL_BACKENDS)
def test_lpips_fullgraph_aot_eager(backend):
    """The LPIPS layer distance (both feature gradients) traces without graph breaks and matches eager."""
    from perceptual_kernels.backends import unavailable_reason

    if reason := unavailable_reason(backend, DEVICE, torch.float32):
        pytest.skip(reason)
    torch._dynamo.reset()
    f0, f1 = (torch.randn(2, 6, 5, 7, device=DEVICE, requires_grad=True) for _ in range(2))
    weight = torch.rand(6, device=DEVICE)

    def objective(f0, f1):
        return (pk.lpips_distance(f0, f1, weight) * torch.tensor([1.0, 2.0], device=DEVICE)).sum()

    with pk.use_backend(backend):
        eager = objective(f0, f1)
        eager_grads = torch.autograd.grad(eager, [f0, f1])
        compiled = torch.compile(objective, fullgraph=True, backend="aot_eager")(f0, f1)
        compiled_grads = torch.autograd.grad(compiled, [f0, f1])
    assert_close(compiled, eager, torch.float32, "loss")
    for got, expected in zip(compiled_grads, eager_grads):
        assert_close(got, expected, torch.float32, "grad")
