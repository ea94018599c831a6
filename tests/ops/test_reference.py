"""The float64 reference (the oracle of every other test) against independent formulations, plus gradcheck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_close, make_input

import perceptual_kernels as pk

f64 = torch.float64


@pytest.fixture(autouse=True)
def reference_backend():
    with pk.use_backend("reference"):
        yield


def test_gram_matches_pytorch_examples():
    """The fast-neural-style example's gram (bmm / (c*h*w)) and the tutorial's (mm / (a*b*c*d), batch 1)."""
    y = torch.randn(3, 5, 7, 6, dtype=f64)
    b, ch, h, w = y.shape
    feats = y.view(b, ch, h * w)
    assert_close(pk.gram_matrix(y), feats.bmm(feats.transpose(1, 2)) / (ch * h * w), f64)
    x1 = y[:1]
    tutorial = torch.mm(x1.view(5, 42), x1.view(5, 42).t()).div(1 * 5 * 7 * 6)
    assert_close(pk.gram_matrix(x1)[0], tutorial, f64)
    assert_close(pk.gram_matrix(y, "none"), feats.bmm(feats.transpose(1, 2)), f64)
    assert_close(pk.gram_matrix(y, "hw"), feats.bmm(feats.transpose(1, 2)) / (h * w), f64)


def test_style_loss_is_mse_of_grams_and_gatys_layer_loss():
    x = torch.randn(2, 4, 5, 3, dtype=f64)
    target = torch.randn(2, 4, 4, dtype=f64)
    G = pk.gram_matrix(x)
    assert_close(pk.style_loss(x, target), F.mse_loss(G, target), f64)
    assert_close(pk.style_loss(x, target[0]), F.mse_loss(G, target[0].expand(2, 4, 4)), f64)
    assert_close(pk.style_loss(x, target, reduction="none"), ((G - target) ** 2).sum((1, 2)), f64)
    # Gatys: E_l = 1 / (4 N^2 M^2) sum (G_raw - A_raw)^2
    N, M = 4, 15
    raw_G, raw_A = pk.gram_matrix(x, "none"), target * N * M
    gatys = ((raw_G - raw_A) ** 2).sum() / (4 * N**2 * M**2)
    assert_close(pk.style_loss(x, target, reduction="sum", weight=0.25), gatys, f64)
    index = torch.tensor([1, 1])
    assert_close(pk.style_loss(x, target, style_index=index), F.mse_loss(G, target[index]), f64)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_content_loss_is_mse(reduction):
    x, t = torch.randn(2, 3, 4, 5, dtype=f64), torch.randn(2, 3, 4, 5, dtype=f64)
    sq = (x - t) ** 2
    expected = {"mean": sq.sum() / sq.numel(), "sum": sq.sum(), "none": sq}[reduction]
    assert_close(pk.content_loss(x, t, weight=2.0, reduction=reduction), 2.0 * expected, f64)


def test_tv_loss_against_loops():
    x = torch.randn(2, 2, 4, 5, dtype=f64)
    B, C, H, W = x.shape
    sq = l1 = iso = 0.0
    for b in range(B):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    if i + 1 < H:
                        d = x[b, c, i + 1, j] - x[b, c, i, j]
                        sq, l1 = sq + d**2, l1 + d.abs()
                    if j + 1 < W:
                        d = x[b, c, i, j + 1] - x[b, c, i, j]
                        sq, l1 = sq + d**2, l1 + d.abs()
                    if i + 1 < H and j + 1 < W:
                        dh, dw = x[b, c, i + 1, j] - x[b, c, i, j], x[b, c, i, j + 1] - x[b, c, i, j]
                        iso = iso + (dh**2 + dw**2 + 1e-8).sqrt()
    assert_close(pk.tv_loss(x, reduction="sum"), sq, f64)
    assert_close(pk.tv_loss(x, kind="l1", reduction="sum"), l1, f64)
    assert_close(pk.tv_loss(x, kind="isotropic", reduction="sum"), iso, f64)
    assert_close(pk.tv_loss(x), sq / x.numel(), f64)
    assert pk.tv_loss(x, reduction="none").shape == (B,)


def _normalized(x, eps=1e-5):
    """Instance normalisation written out: per (b, c) plane, biased variance."""
    planes = x.flatten(2)
    mean = planes.mean(-1, keepdim=True)
    var = ((planes - mean) ** 2).mean(-1, keepdim=True)
    return ((planes - mean) / (var + eps).sqrt()).view_as(x)


def test_instance_norm_against_the_formula():
    x = torch.randn(3, 4, 5, 6, dtype=f64) * 3 + 1
    w, b = torch.randn(4, dtype=f64), torch.randn(4, dtype=f64)
    expected = _normalized(x) * w[:, None, None] + b[:, None, None]
    assert_close(pk.instance_norm(x, w, b), expected, f64)
    assert_close(pk.instance_norm(x, w, b, activation="relu"), expected.clamp_min(0), f64)
    assert_close(pk.instance_norm(x, eps=0.1), _normalized(x, 0.1), f64)
    gamma, beta = torch.randn(5, 4, dtype=f64), torch.randn(5, 4, dtype=f64)
    index = torch.tensor([4, 0, 4])
    expected = _normalized(x) * gamma[index][:, :, None, None] + beta[index][:, :, None, None]
    assert_close(pk.conditional_instance_norm(x, gamma, beta, style_index=index), expected, f64)
    mix = torch.rand(3, 5, dtype=f64)
    expected = _normalized(x) * (mix @ gamma)[:, :, None, None] + (mix @ beta)[:, :, None, None]
    assert_close(pk.conditional_instance_norm(x, gamma, beta, style_weights=mix), expected, f64)


def test_low_precision_losses_return_float32():
    x = torch.randn(2, 3, 4, 5).bfloat16()
    assert pk.style_loss(x, torch.zeros(3, 3)).dtype == torch.float32
    assert pk.content_loss(x, torch.zeros_like(x)).dtype == torch.float32
    assert pk.tv_loss(x).dtype == torch.float32
    assert pk.gram_matrix(x).dtype == torch.bfloat16
    assert pk.gram_matrix(x, out_dtype=torch.float32).dtype == torch.float32
    assert pk.instance_norm(x).dtype == torch.bfloat16


def _leaf(*shape, rand=False):
    return (torch.rand if rand else torch.randn)(*shape, dtype=f64, requires_grad=True)


INDEX = torch.tensor([3, 3])
# name: (the op as a function of x and the extra inputs, a function of x giving those inputs)
GRADCHECKS = {
    "gram": (lambda x: pk.gram_matrix(x), lambda x: ()),
    "style": (lambda x, t: pk.style_loss(x, t), lambda x: (_leaf(3, 3),)),
    "style_indexed": (
        lambda x, t: pk.style_loss(x, t, style_index=INDEX, reduction="none"),
        lambda x: (_leaf(4, 3, 3),),
    ),
    "content": (lambda x, t: pk.content_loss(x, t), lambda x: (torch.randn_like(x, requires_grad=True),)),
    "tv_squared": (lambda x: pk.tv_loss(x), lambda x: ()),
    "tv_isotropic": (lambda x: pk.tv_loss(x, kind="isotropic"), lambda x: ()),
    "cin_index": (
        lambda x, g, b: pk.conditional_instance_norm(x, g, b, style_index=INDEX),
        lambda x: (_leaf(4, 3), _leaf(4, 3)),
    ),
    "cin_weights": (
        lambda x, g, b, m: pk.conditional_instance_norm(x, g, b, style_weights=m),
        lambda x: (_leaf(4, 3), _leaf(4, 3), _leaf(2, 4, rand=True)),
    ),
}


@pytest.mark.parametrize("op", list(GRADCHECKS))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_gradcheck(layout, op):
    x = make_input((2, 3, 4, 5), layout, f64).requires_grad_()
    fn, extra_inputs = GRADCHECKS[op]
    assert torch.autograd.gradcheck(fn, (x, *extra_inputs(x)))


def test_autocast_leaves_the_losses_in_fp32():
    x, target = torch.randn(2, 4, 6, 5), torch.randn(4, 4)
    expected = pk.style_loss(x, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert_close(pk.style_loss(x, target), expected, torch.float32)
        feats = torch.nn.functional.conv2d(x, torch.randn(4, 4, 1, 1))  # bf16 under autocast
        assert feats.dtype == torch.bfloat16
        assert pk.style_loss(feats, target).dtype == torch.float32
        assert pk.content_loss(feats, x).dtype == torch.float32
        assert pk.gram_matrix(x).dtype == torch.float32


def test_l1_tv_gradient_keeps_nan():
    x = torch.zeros(1, 1, 3, 3, dtype=f64)
    x[0, 0, 1, 1] = float("nan")
    x.requires_grad_()
    pk.tv_loss(x, kind="l1").backward()
    assert x.grad[0, 0, 1, 1].isnan() and x.grad[0, 0, 0, 0] == 0  # NaN where it entered, 0 (sign(0)) elsewhere


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_lpips_gradcheck_with_the_weight(layout):
    """The reference differentiates all three inputs (the kernel backends refuse a weight gradient)."""
    f0 = make_input((2, 3, 4, 5), layout, torch.float64).requires_grad_()
    with pk.use_backend("reference"):
        assert torch.autograd.gradcheck(pk.lpips_distance, (f0, _leaf(2, 3, 4, 5), _leaf(3, rand=True)))
