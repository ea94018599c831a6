"""The nn modules as drop-in replacements in the usual PyTorch style-transfer code, on every backend."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _helpers import DEVICE, KERNEL_BACKENDS, assert_close

import perceptual_kernels as pk

BACKENDS = ["reference"] + KERNEL_BACKENDS


@pytest.fixture(params=BACKENDS)
def backend(request):
    from perceptual_kernels.backends import unavailable_reason

    reason = unavailable_reason(request.param, DEVICE, torch.float32)
    if reason:
        pytest.skip(reason)
    with pk.use_backend(request.param):
        yield request.param


def tutorial_gram_matrix(input):
    """``gram_matrix`` of the PyTorch neural-style tutorial."""
    a, b, c, d = input.size()
    features = input.view(a * b, c * d)
    G = torch.mm(features, features.t())
    return G.div(a * b * c * d)


def fast_neural_style_gram_matrix(y):
    """``gram_matrix`` of the PyTorch examples' fast neural style."""
    (b, ch, h, w) = y.size()
    features = y.view(b, ch, w * h)
    return features.bmm(features.transpose(1, 2)) / (ch * h * w)


def test_style_loss_module_matches_the_tutorial(backend):
    target_feature, x = torch.randn(1, 8, 9, 7, device=DEVICE), torch.randn(1, 8, 9, 7, device=DEVICE)
    layer = pk.nn.StyleLoss(target_feature, passthrough=True)
    assert layer(x) is x
    expected = F.mse_loss(tutorial_gram_matrix(x), tutorial_gram_matrix(target_feature))
    assert_close(layer.loss, expected, torch.float32)


def test_style_and_content_match_fast_neural_style(backend):
    features_y, features_style = torch.randn(3, 8, 6, 5, device=DEVICE), torch.randn(1, 8, 6, 5, device=DEVICE)
    gm_s = fast_neural_style_gram_matrix(features_style.repeat(3, 1, 1, 1))
    expected = F.mse_loss(fast_neural_style_gram_matrix(features_y), gm_s)
    assert_close(pk.nn.StyleLoss(features_style)(features_y), expected, torch.float32)
    assert_close(pk.style_loss(features_y, gm_s), expected, torch.float32)
    assert_close(pk.gram_matrix(features_y), fast_neural_style_gram_matrix(features_y), torch.float32)
    features_x = torch.randn_like(features_y)
    assert_close(pk.nn.ContentLoss(features_x)(features_y), F.mse_loss(features_y, features_x), torch.float32)


def test_l1_criterion_modules_match_f_l1_loss(backend):
    """criterion="l1": ContentLoss is F.l1_loss (a shared (1, C, H, W) target broadcast over the batch, without
    F.l1_loss's warning), StyleLoss is F.l1_loss of the Grams; gradients agree too."""
    y = torch.randn(3, 8, 6, 5, device=DEVICE, requires_grad=True)
    style, content = torch.randn(1, 8, 6, 5, device=DEVICE), torch.randn(1, 8, 6, 5, device=DEVICE)
    ours = pk.nn.StyleLoss(style, criterion="l1")(y) + pk.nn.ContentLoss(content, criterion="l1", weight=0.5)(y)
    gm_s = fast_neural_style_gram_matrix(style).expand(3, -1, -1)
    expected = F.l1_loss(fast_neural_style_gram_matrix(y), gm_s) + 0.5 * F.l1_loss(y, content.expand_as(y))
    assert_close(ours, expected, torch.float32)
    (grad,) = torch.autograd.grad(ours, y)
    (expected_grad,) = torch.autograd.grad(expected, y)
    assert_close(grad, expected_grad, torch.float32)
    assert pk.nn.StyleLoss(style, criterion="l1").criterion == "l1"


def test_multi_style_loss_with_style_index(backend):
    styles = torch.randn(4, 5, 6, 6, device=DEVICE)
    module = pk.nn.StyleLoss(styles, weight=2.0)
    assert module.target.shape == (4, 5, 5)
    x, index = torch.randn(3, 5, 6, 6, device=DEVICE), torch.tensor([3, 0, 3], device=DEVICE)
    expected = 2.0 * F.mse_loss(fast_neural_style_gram_matrix(x), fast_neural_style_gram_matrix(styles)[index])
    assert_close(module(x, style_index=index), expected, torch.float32)


def test_tv_and_gram_modules(backend):
    x = torch.randn(2, 3, 5, 4, device=DEVICE)
    assert_close(pk.nn.TotalVariation(weight=3.0)(x), 3.0 * pk.tv_loss(x), torch.float32)
    assert_close(pk.nn.GramMatrix("hw")(x), pk.gram_matrix(x, "hw"), torch.float32)


def test_conditional_instance_norm_module_trains(backend):
    torch.manual_seed(0)
    layer = pk.nn.ConditionalInstanceNorm2d(3, 4, activation="relu").to(DEVICE)
    assert "num_styles=3, num_features=4" in repr(layer)
    x = torch.randn(2, 4, 5, 5, device=DEVICE)
    y = layer(x, style_index=torch.tensor([2, 2], device=DEVICE))
    assert_close(y, F.relu(F.instance_norm(x)), torch.float32)
    y.sum().backward()
    assert layer.gamma.grad[[0, 1]].abs().max() == 0 and layer.gamma.grad[2].abs().max() > 0
    mixed = layer(x, style_weights=torch.tensor([[0.5, 0.5, 0.0]] * 2, device=DEVICE))
    assert mixed.shape == x.shape
    plain = pk.nn.InstanceNorm2d(4).to(DEVICE)
    assert_close(plain(x), F.instance_norm(x), torch.float32)


def test_module_state_dict_round_trip():
    module = pk.nn.StyleLoss(torch.randn(1, 3, 4, 4))
    clone = pk.nn.StyleLoss(target_gram=torch.zeros(3, 3))
    clone.load_state_dict(module.state_dict())
    assert torch.equal(clone.target, module.target)
    with pytest.raises(ValueError, match="exactly one"):
        pk.nn.StyleLoss()
