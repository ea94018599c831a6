"""The ops exact tiled Gatys is built on, on every kernel backend: ``style_loss_gradient`` (the style backward for
a given ``D``) against a float64 formula and against ``style_loss``'s own backward, and partial Gram matrices of
core views (strided slices, full-image normaliser) that sum to the whole Gram."""

from __future__ import annotations

import itertools

import pytest
import torch
from _helpers import (
    DEVICE,
    KERNEL_BACKEND_DTYPES,
    KERNEL_BACKENDS,
    LAYOUTS,
    TOLERANCES,
    assert_close,
    case_id,
    make_input,
)

import perceptual_kernels as pk

SHAPES = [(1, 1, 1, 1), (3, 3, 7, 31), (1, 17, 31, 2), (3, 64, 2, 7)]
CASES = list(itertools.product(SHAPES, LAYOUTS))
per_backend = pytest.mark.parametrize("kernel_backend", KERNEL_BACKENDS, indirect=True)
per_backend_and_dtype = pytest.mark.parametrize(
    "kernel_backend,dtype", KERNEL_BACKEND_DTYPES, indirect=["kernel_backend"]
)


def expected_gradient(x: torch.Tensor, diff: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """``coef_b (D_b + D_b^T) F_b`` in float64, written out."""
    B, C = x.shape[:2]
    d = diff.double().expand(B, C, C)
    feats = x.double().reshape(B, C, -1)
    return (coef.double().view(B, 1, 1) * torch.bmm(d + d.transpose(1, 2), feats)).view(x.shape)


@per_backend_and_dtype
@pytest.mark.parametrize("diff_kind,coef_kind", [("single", "number"), ("per_sample", "tensor")])
@pytest.mark.parametrize("shape,layout", CASES, ids=case_id)
def test_style_loss_gradient(kernel_backend, shape, layout, diff_kind, coef_kind, dtype):
    B, C = shape[:2]
    x = make_input(shape, layout, dtype)
    diff = torch.randn((C, C) if diff_kind == "single" else (B, C, C), device=DEVICE)  # not symmetric
    coef = torch.rand(B, device=DEVICE) + 0.5 if coef_kind == "tensor" else 0.75
    coefs = coef if isinstance(coef, torch.Tensor) else torch.full((B,), coef, device=DEVICE)
    with pk.use_backend(kernel_backend):
        out = pk.style_loss_gradient(x, diff, coef)
    assert out.dtype == dtype and out.shape == x.shape
    assert_close(out, expected_gradient(x, diff, coefs), dtype, "style_loss_gradient")
    with pk.use_backend("reference"):
        reference = pk.style_loss_gradient(x.double(), diff.double(), coef)
    assert_close(reference, expected_gradient(x, diff, coefs), torch.float64, "reference style_loss_gradient")


@per_backend
def test_style_loss_gradient_is_the_style_loss_backward(kernel_backend):
    """With ``D = G - A`` of the whole tensor and ``coef = 2 w / s``, it is the gradient of ``style_loss``."""
    x, target = make_input((2, 17, 9, 11)), torch.randn(17, 17, device=DEVICE) * 1e-2
    scale = 1.0 / (17 * 9 * 11)
    with pk.use_backend(kernel_backend):
        leaf = x.clone().requires_grad_()
        (expected,) = torch.autograd.grad(pk.style_loss(leaf, target, reduction="sum", weight=0.3), leaf)
        diff = pk.gram_matrix(x, out_dtype=torch.float32) - target
        out = pk.style_loss_gradient(x, diff, 2 * 0.3 * scale)
    assert_close(out, expected, torch.float32, "style_loss_gradient vs style_loss backward")


@per_backend
def test_style_loss_gradient_3d_input(kernel_backend):
    x, diff = make_input((2, 5, 40)), torch.randn(2, 5, 5, device=DEVICE)
    with pk.use_backend(kernel_backend):
        out = pk.style_loss_gradient(x, diff, 2.0)
    assert out.shape == x.shape
    assert_close(out, expected_gradient(x, diff, torch.full((2,), 2.0, device=DEVICE)), torch.float32, "3-D")


@per_backend
def test_style_loss_gradient_nan_propagates(kernel_backend):
    x = make_input((2, 3, 5, 6))
    x[1, 2, 3, 4] = float("nan")
    with pk.use_backend(kernel_backend):
        out = pk.style_loss_gradient(x, torch.randn(3, 3, device=DEVICE), 1.0)
    assert out[1, :, 3, 4].isnan().all() and not out[0].isnan().any()


@per_backend_and_dtype
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_partial_grams_of_core_views_sum_to_the_gram(kernel_backend, layout, dtype):
    """Core views (strided windows of a tile's features) with the full-image normaliser: their Grams add up to
    the Gram of the whole feature map."""
    x = make_input((1, 17, 23, 19), layout, dtype)
    s = float(17 * 23 * 19)
    windows = [(slice(0, 8), slice(0, 11)), (slice(0, 8), slice(11, 19)), (slice(8, 23), slice(0, 5))]
    windows.append((slice(8, 23), slice(5, 19)))
    with pk.use_backend(kernel_backend):
        parts = sum(pk.gram_matrix(x[..., r, c], s, torch.float32) for r, c in windows)
        whole = pk.gram_matrix(x, s, torch.float32)
    assert all(not x[..., r, c].is_contiguous() for r, c in windows[1:])
    rtol, atol = TOLERANCES[dtype]
    assert torch.allclose(parts, whole, rtol=max(rtol, 1e-5), atol=atol * float(whole.abs().max()))


@pytest.mark.parametrize(
    "call,error,text",
    [
        (lambda: pk.style_loss_gradient([[1.0]], torch.ones(1, 1)), TypeError, "x must be a torch.Tensor"),
        (lambda: pk.style_loss_gradient(torch.ones(1, 2, 3, 3), torch.ones(3, 3)), ValueError, "diff must be (2, 2)"),
        (lambda: pk.style_loss_gradient(torch.ones(2, 2, 3), torch.ones(3, 2, 2)), ValueError, "or (2, 2, 2)"),
        (lambda: pk.style_loss_gradient(torch.ones(2, 2, 3), torch.ones(2, 2), torch.ones(3)), ValueError, "coef"),
        (lambda: pk.style_loss_gradient(torch.ones(2, 2, 3), torch.ones(2, 2), float("nan")), ValueError, "coef"),
        (lambda: pk.style_loss_gradient(torch.ones(2, 2, 3), torch.ones(2, 2), "2"), TypeError, "coef"),
    ],
    ids=["x_not_tensor", "diff_channels", "diff_batch", "coef_length", "coef_nan", "coef_str"],
)
def test_style_loss_gradient_bad_input(call, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        call()
