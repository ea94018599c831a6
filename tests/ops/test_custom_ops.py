"""The custom ops' plumbing, independent of any kernel: the hand-written backward formulas of
``perceptual_kernels._ops`` gradchecked in float64 over a plain-torch implementation of the kernel interface."""

from __future__ import annotations

import pytest
import torch
import torch_kernels

from perceptual_kernels import _ops
from perceptual_kernels.backends import register_backend, unregister_backend

f64 = torch.float64
BACKEND = "torch-test"


@pytest.fixture(autouse=True)
def torch_test_backend():
    register_backend(BACKEND, torch_kernels, dtypes=(f64,))
    yield
    unregister_backend(BACKEND)


def _x(layout="contiguous"):
    x = torch.randn(2, 3, 4, 5, dtype=f64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gram_and_style_backward(layout):
    x = _x(layout)
    assert torch.autograd.gradcheck(lambda x: _ops.gram(x, 0.1, f64, BACKEND), (x,))
    target = torch.randn(1, 3, 3, dtype=f64, requires_grad=True)  # asymmetric, broadcast over the batch
    assert torch.autograd.gradcheck(lambda x, t: _ops.style_loss(x, t, None, 0.1, BACKEND)[0], (x, target))
    targets = torch.randn(4, 3, 3, dtype=f64, requires_grad=True)
    index = torch.tensor([1, 1])
    assert torch.autograd.gradcheck(lambda x, t: _ops.style_loss(x, t, index, 0.1, BACKEND)[0], (x, targets))
    per_sample = torch.randn(2, 3, 3, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, t: _ops.style_loss(x, t, None, 0.1, BACKEND)[0], (x, per_sample))


def test_content_backward():
    x, target = _x(), torch.randn(2, 3, 4, 5, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, t: _ops.content_loss(x, t, BACKEND), (x, target))


@pytest.mark.parametrize("kind", ["squared", "isotropic"])
def test_tv_backward(kind):
    assert torch.autograd.gradcheck(lambda x: _ops.tv_loss(x, kind, 1e-3, BACKEND), (_x(),))


# gamma / beta rows: one per sample, a table of styles picked by index, one row shared by the batch
AFFINE_ROWS = {"per_sample": (2, 3), "table": (4, 3), "shared": (3,)}


@pytest.mark.parametrize("affine", [*AFFINE_ROWS, "none"])
@pytest.mark.parametrize("relu", [False, True], ids=["no_relu", "relu"])
def test_instance_norm_backward(relu, affine):
    x = _x()
    if affine == "none":
        assert torch.autograd.gradcheck(lambda x: _ops.instance_norm(x, None, None, None, 1e-5, relu, BACKEND)[0], (x,))
        return
    params = [torch.randn(AFFINE_ROWS[affine], dtype=f64, requires_grad=True) for _ in range(2)]
    index = torch.tensor([2, 2]) if affine == "table" else None  # a repeated style: its row gets both gradients
    assert torch.autograd.gradcheck(
        lambda x, g, b: _ops.instance_norm(x, g, b, index, 1e-5, relu, BACKEND)[0], (x, *params)
    )


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_lpips_backward(layout):
    f0, f1 = _x(layout), _x()
    weight = torch.rand(3, dtype=f64)
    assert torch.autograd.gradcheck(lambda a, b: _ops.lpips_distance(a, b, weight, 1e-10, BACKEND), (f0, f1))
    # one side only (the target of a loss): the other gradient is not computed
    assert torch.autograd.gradcheck(lambda a: _ops.lpips_distance(a, f1.detach(), weight, 1e-10, BACKEND), (f0,))
