"""Triton instance-norm kernels vs a float64 autograd reference.

Runs on the CPU with ``TRITON_INTERPRET=1`` (set here when no GPU is present), or on a GPU.
"""

from __future__ import annotations

import os

import pytest
import torch
from _helpers import shape_id

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from perceptual_kernels.backends.triton.instance_norm import (
    instance_norm_backward,
    instance_norm_forward,
)

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1" else "cpu"
EPS = 1e-5

SHAPES = [(1, 1, 1, 1), (3, 17, 7, 31), (2, 3, 31, 2), (1, 64, 2, 7), (3, 1, 31, 31)]
LAYOUTS = ["contiguous", "channels_last", "sliced_hw", "sliced_c"]
# grad_y gets a layout different from x's.
GRAD_LAYOUT = {
    "contiguous": "channels_last",
    "channels_last": "contiguous",
    "sliced_hw": "sliced_c",
    "sliced_c": "sliced_hw",
}


def _make(shape, layout, dtype=torch.float32, seed=0, offset=3.0, scale=2.0):
    """A (B, C, H, W) tensor with the given memory layout (values offset + scale * N(0, 1))."""
    B, C, H, W = shape
    gen = torch.Generator().manual_seed(seed)

    def rnd(*s):
        return (offset + scale * torch.randn(*s, generator=gen, dtype=torch.float64)).to(dtype).to(DEVICE)

    if layout == "contiguous":
        t = rnd(B, C, H, W)
    elif layout == "channels_last":
        t = rnd(B, C, H, W).contiguous(memory_format=torch.channels_last)
    elif layout == "sliced_hw":
        t = rnd(B, C, H + 2, W + 2)[:, :, 1:-1, 2:]
    elif layout == "sliced_c":
        t = rnd(B, 2 * C, H, W).contiguous(memory_format=torch.channels_last)[:, ::2]
    elif layout == "expanded":
        t = rnd(B, C, 1, 1).expand(B, C, H, W)
    else:
        raise ValueError(layout)
    assert t.shape == shape
    return t


def _affine(shape, seed):
    B, C = shape[:2]
    gen = torch.Generator().manual_seed(seed)
    gamma = (1.0 + 0.5 * torch.randn(B, C, generator=gen)).to(DEVICE)
    beta = (0.5 * torch.randn(B, C, generator=gen)).to(DEVICE)
    return gamma, beta


def _reference(x, gamma, beta, eps, relu, grad_y=None):
    """float64 autograd reference: (y, mean, rstd[, dx, dgamma, dbeta])."""
    x64 = x.detach().double().requires_grad_(True)
    mu = x64.mean(dim=(2, 3), keepdim=True)
    var = ((x64 - mu) ** 2).mean(dim=(2, 3), keepdim=True)
    y = (x64 - mu) / torch.sqrt(var + eps)
    inputs = [x64]
    if gamma is not None:
        g64 = gamma.detach().double().requires_grad_(True)
        b64 = beta.detach().double().requires_grad_(True)
        y = y * g64[:, :, None, None] + b64[:, :, None, None]
        inputs += [g64, b64]
    if relu:
        y = torch.relu(y)
    mean = mu[:, :, 0, 0]
    rstd = 1.0 / torch.sqrt(var[:, :, 0, 0] + eps)
    if grad_y is None:
        return y.detach(), mean.detach(), rstd.detach()
    grads = torch.autograd.grad(y, inputs, grad_y.double())
    dx = grads[0]
    dgamma, dbeta = (grads[1], grads[2]) if gamma is not None else (None, None)
    return y.detach(), mean.detach(), rstd.detach(), dx, dgamma, dbeta


def _close(actual, expected, atol, rtol):
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), atol=atol, rtol=rtol)


@pytest.mark.triton
# the backward without the affine gradients (need_affine_grad=False) is checked once per affine setting, with ReLU
@pytest.mark.parametrize(
    "relu,need_affine_grad", [(False, True), (True, True), (True, False)], ids=["no_relu", "relu", "relu-dx_only"]
)
@pytest.mark.parametrize("affine", [False, True], ids=["no_affine", "affine"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_forward_backward_fp32(shape, layout, affine, relu, need_affine_grad):
    x = _make(shape, layout, seed=1)
    grad_y = _make(shape, GRAD_LAYOUT[layout], seed=2, offset=0.0, scale=1.0)
    HW = shape[2] * shape[3]
    sum_atol = 1e-5 * max(1.0, HW**0.5)
    gamma, beta = _affine(shape, seed=3) if affine else (None, None)
    y, mean, rstd = instance_norm_forward(x, gamma, beta, None, EPS, relu)
    y_ref, mean_ref, rstd_ref, dx_ref, dg_ref, db_ref = _reference(x, gamma, beta, EPS, relu, grad_y)
    assert y.dtype == x.dtype and y.stride() == torch.empty_like(x).stride()
    assert mean.shape == rstd.shape == shape[:2] and mean.dtype == rstd.dtype == torch.float32
    _close(y, y_ref, atol=1e-5, rtol=1e-4)
    _close(mean, mean_ref, atol=1e-5, rtol=1e-5)
    _close(rstd, rstd_ref, atol=1e-5, rtol=1e-4)

    dx, dgamma, dbeta = instance_norm_backward(grad_y, x, mean, rstd, gamma, beta, None, relu, need_affine_grad)
    assert dx.dtype == x.dtype and dx.stride() == torch.empty_like(x).stride()
    _close(dx, dx_ref, atol=1e-5 * max(1.0, dx_ref.abs().max().item()), rtol=1e-4)
    if not need_affine_grad:
        assert dgamma.numel() == dbeta.numel() == 0
        return
    assert dgamma.shape == dbeta.shape == shape[:2]
    assert dgamma.dtype == dbeta.dtype == torch.float32
    if affine:
        _close(dgamma, dg_ref, atol=sum_atol, rtol=1e-4)
        _close(dbeta, db_ref, atol=sum_atol, rtol=1e-4)
    else:  # no affine: the sums are still the gradients of an identity affine
        _, _, _, _, dg1, db1 = _reference(
            x,
            torch.ones(shape[:2], device=DEVICE),
            torch.zeros(shape[:2], device=DEVICE),
            EPS,
            relu,
            grad_y,
        )
        _close(dgamma, dg1, atol=sum_atol, rtol=1e-4)
        _close(dbeta, db1, atol=sum_atol, rtol=1e-4)


@pytest.mark.triton
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_expanded_grad_y(layout):
    """A zero-stride grad_y (as produced by ``loss.sum().backward()``-style expands)."""
    shape = (2, 5, 9, 11)
    x = _make(shape, layout, seed=4)
    gamma, beta = _affine(shape, seed=5)
    grad_y = _make(shape, "expanded", seed=6, offset=0.0, scale=1.0)
    y, mean, rstd = instance_norm_forward(x, gamma, beta, None, EPS, True)
    *_, dx_ref, dg_ref, db_ref = _reference(x, gamma, beta, EPS, True, grad_y)
    dx, dgamma, dbeta = instance_norm_backward(grad_y, x, mean, rstd, gamma, beta, None, True, True)
    _close(dx, dx_ref, atol=1e-5 * max(1.0, dx_ref.abs().max().item()), rtol=1e-4)
    _close(dgamma, dg_ref, atol=1e-4, rtol=1e-4)
    _close(dbeta, db_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.triton
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)], ids=["fp16", "bf16"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced_hw"])
@pytest.mark.parametrize("relu", [False, True], ids=["no_relu", "relu"])
def test_half_precision(dtype, tol, layout, relu):
    shape = (2, 17, 7, 31)
    x = _make(shape, layout, dtype=dtype, seed=7)
    grad_y = _make(shape, GRAD_LAYOUT[layout], dtype=dtype, seed=8, offset=0.0, scale=1.0)
    gamma, beta = _affine(shape, seed=9)
    y, mean, rstd = instance_norm_forward(x, gamma, beta, None, EPS, relu)
    assert y.dtype == dtype and mean.dtype == rstd.dtype == torch.float32
    y_ref, mean_ref, rstd_ref, dx_ref, dg_ref, db_ref = _reference(x, gamma, beta, EPS, relu, grad_y)
    _close(y, y_ref, atol=tol, rtol=tol)
    # The statistics are fp32 math on exactly representable inputs.
    _close(mean, mean_ref, atol=1e-5, rtol=1e-5)
    _close(rstd, rstd_ref, atol=1e-5, rtol=1e-4)

    dx, dgamma, dbeta = instance_norm_backward(grad_y, x, mean, rstd, gamma, beta, None, relu, True)
    assert dx.dtype == dtype
    _close(dx, dx_ref, atol=tol * max(1.0, dx_ref.abs().max().item()), rtol=tol)
    _close(dgamma, dg_ref, atol=1e-3, rtol=1e-4)
    _close(dbeta, db_ref, atol=1e-3, rtol=1e-4)


@pytest.mark.triton
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("relu", [False, True], ids=["no_relu", "relu"])
def test_nan_propagation(layout, relu):
    """A NaN in plane (1, 2) makes that plane's outputs NaN and leaves every other plane finite."""
    shape = (2, 5, 6, 7)
    x = _make(shape, "contiguous", seed=10)
    x[1, 2, 3, 4] = float("nan")
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    gamma, beta = _affine(shape, seed=11)
    grad_y = _make(shape, "contiguous", seed=12, offset=0.0, scale=1.0)
    bad = torch.zeros(shape[:2], dtype=torch.bool, device=DEVICE)
    bad[1, 2] = True

    y, mean, rstd = instance_norm_forward(x, gamma, beta, None, EPS, relu)
    dx, dgamma, dbeta = instance_norm_backward(grad_y, x, mean, rstd, gamma, beta, None, relu, True)
    for per_plane in (y, dx):
        assert per_plane[bad].isnan().all()
        assert per_plane[~bad].isfinite().all()
    for stat in (mean, rstd, dgamma):
        assert stat[bad].isnan().all()
        assert stat[~bad].isfinite().all()
    # dbeta = sum g does not depend on x: without ReLU g = dy; with ReLU the NaN plane's y are all NaN and,
    # as in torch.relu's backward (mask = not (y <= 0)), the gradient passes.
    assert dbeta.isfinite().all()

    # The healthy planes match the reference.
    y_ref, mean_ref, rstd_ref, dx_ref, dg_ref, db_ref = _reference(x, gamma, beta, EPS, relu, grad_y)
    _close(y[~bad], y_ref[~bad], atol=1e-5, rtol=1e-4)
    _close(dx[~bad], dx_ref[~bad], atol=1e-5 * max(1.0, dx_ref[~bad].abs().max().item()), rtol=1e-4)
    _close(dgamma[~bad], dg_ref[~bad], atol=1e-4, rtol=1e-4)
    _close(dbeta, db_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.triton
def test_deterministic_and_large_offset_statistics():
    """Bitwise-identical reruns; a large common offset does not destroy the variance (no E[x^2]-E[x]^2)."""
    shape = (2, 3, 40, 33)
    x = _make(shape, "channels_last", seed=13, offset=1e4, scale=1.0)
    gamma, beta = _affine(shape, seed=14)
    grad_y = _make(shape, "contiguous", seed=15, offset=0.0, scale=1.0)
    y1, mean1, rstd1 = instance_norm_forward(x, gamma, beta, None, EPS, False)
    y2, mean2, rstd2 = instance_norm_forward(x, gamma, beta, None, EPS, False)
    g1 = instance_norm_backward(grad_y, x, mean1, rstd1, gamma, beta, None, False, True)
    g2 = instance_norm_backward(grad_y, x, mean1, rstd1, gamma, beta, None, False, True)
    for a, b in [(y1, y2), (mean1, mean2), (rstd1, rstd2), *zip(g1, g2)]:
        assert torch.equal(a, b)
    _, mean_ref, rstd_ref = _reference(x, gamma, beta, EPS, False)
    _close(mean1, mean_ref, atol=1e-3, rtol=1e-6)  # fp32 resolution at 1e4 is ~1e-3
    _close(rstd1, rstd_ref, atol=0.0, rtol=1e-3)


@pytest.mark.triton
def test_tile_follows_layout():
    """NCHW tiles walk one plane (BLOCK_C = 1); channels_last tiles span several channels."""
    from perceptual_kernels.backends.triton.instance_norm import _launch_config

    x = torch.empty(2, 64, 64, 64, device=DEVICE)
    assert _launch_config(x)[0] == 1
    assert _launch_config(x.contiguous(memory_format=torch.channels_last))[0] >= 8
    assert _launch_config(x[:, :, 1:-1, 2:])[0] == 1
    assert _launch_config(x.contiguous(memory_format=torch.channels_last)[:, ::2])[0] >= 8
