"""Bad input gets a clear error naming the argument, raised before any kernel runs."""

from __future__ import annotations

import re

import pytest
import torch
from _helpers import unique_ids

import perceptual_kernels as pk

x4 = torch.randn(2, 3, 4, 5)
A = torch.randn(3, 3)
G, Bt = torch.ones(4, 3), torch.zeros(4, 3)

BAD_CALLS = [
    # (call, error type, text the message must contain)
    (lambda: pk.gram_matrix(torch.randn(3, 4)), ValueError, "x must be 3-D or 4-D"),
    (lambda: pk.gram_matrix([[1.0]]), TypeError, "x must be a torch.Tensor"),
    (lambda: pk.gram_matrix(torch.ones(2, 3, 4, dtype=torch.int64)), TypeError, "x must have a floating"),
    (lambda: pk.gram_matrix(torch.randn(0, 3, 4, 5)), ValueError, "x must not be empty"),
    (lambda: pk.gram_matrix(torch.randn(2, 3, 0, 5)), ValueError, "x must not be empty"),
    (lambda: pk.gram_matrix(x4, normalize="cwh"), ValueError, "normalize must be one of"),
    (lambda: pk.gram_matrix(x4, normalize=0.0), ValueError, "normalize must be a finite positive"),
    (lambda: pk.gram_matrix(x4, normalize=-2), ValueError, "normalize must be a finite positive"),
    (lambda: pk.gram_matrix(x4, out_dtype=torch.int32), TypeError, "out_dtype"),
    (lambda: pk.style_loss(x4, torch.randn(4, 4)), ValueError, "target must end in (3, 3)"),
    (lambda: pk.style_loss(x4, torch.randn(3)), ValueError, "target must be 2-D or 3-D"),
    (lambda: pk.style_loss(x4, torch.randn(5, 3, 3)), ValueError, "needs style_index"),
    (lambda: pk.style_loss(x4, A, style_index=torch.tensor([0, 0])), ValueError, "style_index needs a stack"),
    (
        lambda: pk.style_loss(x4, torch.randn(5, 3, 3), style_index=torch.tensor([0, 5])),
        ValueError,
        "style_index values must lie in [0, 5)",
    ),
    (
        lambda: pk.style_loss(x4, torch.randn(5, 3, 3), style_index=torch.tensor([-1, 0])),
        ValueError,
        "style_index values must lie in [0, 5)",
    ),
    (
        lambda: pk.style_loss(x4, torch.randn(5, 3, 3), style_index=torch.tensor([0.0, 1.0])),
        TypeError,
        "style_index must have an integer dtype",
    ),
    (
        lambda: pk.style_loss(x4, torch.randn(5, 3, 3), style_index=torch.tensor([0, 1, 2])),
        ValueError,
        "style_index must have shape (2,)",
    ),
    (lambda: pk.style_loss(x4, A, reduction="avg"), ValueError, "reduction must be one of"),
    (lambda: pk.style_loss(x4, A, weight="1"), TypeError, "weight must be a real number"),
    (lambda: pk.style_loss(x4, A, weight=float("nan")), ValueError, "weight must be a finite"),
    (lambda: pk.style_loss(x4, A.to(torch.device("meta"))), ValueError, "target is on meta"),
    (lambda: pk.content_loss(x4, torch.randn(2, 3, 4, 6)), ValueError, "target must have the shape of x"),
    (lambda: pk.content_loss(x4, torch.randn(2, 3, 20)), ValueError, "target must be 4-D"),
    (lambda: pk.content_loss(x4, x4, reduction="mean_"), ValueError, "reduction must be one of"),
    (lambda: pk.content_loss(x4, x4.int()), TypeError, "target must have a floating"),
    (lambda: pk.tv_loss(torch.randn(3, 4, 5)), ValueError, "x must be 4-D"),
    (lambda: pk.tv_loss(x4, kind="l2"), ValueError, "kind must be one of"),
    (lambda: pk.tv_loss(x4, kind="isotropic", eps=0.0), ValueError, "eps must be a finite positive"),
    (lambda: pk.instance_norm(x4, eps=0), ValueError, "eps must be a finite positive"),
    (lambda: pk.instance_norm(x4, eps=-1e-5), ValueError, "eps must be a finite positive"),
    (lambda: pk.instance_norm(x4, torch.ones(4)), ValueError, "weight must have shape (3,)"),
    (lambda: pk.instance_norm(x4, activation="gelu"), ValueError, "activation must be one of"),
    (lambda: pk.instance_norm(torch.randn(2, 3, 5)), ValueError, "x must be 4-D"),
    (lambda: pk.conditional_instance_norm(x4, G, Bt), ValueError, "gamma has 4 style rows"),
    (
        lambda: pk.conditional_instance_norm(x4, G, Bt[:3], style_index=torch.tensor([0, 1])),
        ValueError,
        "gamma and beta must have one shape",
    ),
    (lambda: pk.conditional_instance_norm(x4, torch.ones(4, 2), torch.ones(4, 2)), ValueError, "gamma must be (S, 3)"),
    (
        lambda: pk.conditional_instance_norm(x4, G, Bt, style_index=torch.tensor([0, 4])),
        ValueError,
        "style_index values must lie in [0, 4)",
    ),
    (
        lambda: pk.conditional_instance_norm(x4, G, Bt, style_weights=torch.rand(2, 3)),
        ValueError,
        "style_weights must have shape (B, S) = (2, 4)",
    ),
    (
        lambda: pk.conditional_instance_norm(
            x4, G, Bt, style_index=torch.tensor([0, 1]), style_weights=torch.rand(2, 4)
        ),
        ValueError,
        "not both",
    ),
    (lambda: pk.conditional_instance_norm(x4, G.int(), Bt), TypeError, "gamma must have a floating"),
    (
        lambda: pk.conditional_instance_norm(x4, G, Bt, style_index=torch.tensor([True, False])),
        TypeError,
        "style_index must have an integer dtype",
    ),
]


def bad_call_id(call, error, text) -> str:
    """``gram_matrix-x_must_be_3-D_or_4-D``: the op the call makes and the message it must give."""
    op = next(name for name in call.__code__.co_names if name != "pk")
    return f"{op}-" + re.sub(r"[^\w.-]+", "_", text).strip("_")


@pytest.mark.parametrize("backend", ["reference", None], ids=["reference", "auto"])
@pytest.mark.parametrize("call,error,text", BAD_CALLS, ids=unique_ids(bad_call_id(*case) for case in BAD_CALLS))
def test_bad_input_raises_named_error(call, error, text, backend):
    with pk.use_backend(backend):
        with pytest.raises(error) as info:
            call()
    assert text in str(info.value), str(info.value)


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="backend must be one of"):
        with pk.use_backend("tpu"):
            pass


@pytest.mark.triton
def test_float64_on_triton_is_an_error_naming_the_dtype():
    with pk.use_backend("triton"):
        with pytest.raises(pk.BackendUnavailableError, match="float64"):
            pk.style_loss(x4.double(), A.double())


def test_unbuilt_backend_error_says_why():
    with pk.use_backend("cuda"):
        with pytest.raises(pk.BackendUnavailableError, match="backend 'cuda' cannot run"):
            pk.tv_loss(x4)


# --- LPIPS layer distance ---------------------------------------------------------------------------------------
w3 = torch.rand(3)
LPIPS_BAD_CALLS = [
    (lambda: pk.lpips_distance(torch.randn(2, 3, 4), x4, w3), ValueError, "f0 must be 4-D"),
    (lambda: pk.lpips_distance(x4, [1.0], w3), TypeError, "f1 must be a torch.Tensor"),
    (lambda: pk.lpips_distance(x4, x4.int(), w3), TypeError, "f1 must have a floating"),
    (lambda: pk.lpips_distance(x4, torch.randn(2, 3, 4, 6), w3), ValueError, "f1 must have the shape and dtype of f0"),
    (lambda: pk.lpips_distance(x4, x4.double(), w3), ValueError, "f1 must have the shape and dtype of f0"),
    (lambda: pk.lpips_distance(x4, x4, torch.rand(4)), ValueError, "weight must be (3,) or (1, 3, 1, 1)"),
    (lambda: pk.lpips_distance(x4, x4, torch.rand(3, 1)), ValueError, "weight must be 1-D or 4-D"),
    (lambda: pk.lpips_distance(x4, x4, torch.rand(1, 1, 3, 1)), ValueError, "weight must be (3,) or (1, 3, 1, 1)"),
    (lambda: pk.lpips_distance(x4, x4, w3.int()), TypeError, "weight must have a floating"),
    (lambda: pk.lpips_distance(x4, x4, w3, eps=0.0), ValueError, "eps must be a finite positive"),
    (lambda: pk.lpips_distance(x4, x4, w3, eps=1e-50), ValueError, "eps = 1e-50 is not representable in float32"),
    (lambda: pk.lpips_distance(x4, torch.randn(2, 3, 4, 5, device="meta"), w3), ValueError, "f1 is on meta"),
]


@pytest.mark.parametrize("backend", ["reference", None], ids=["reference", "auto"])
@pytest.mark.parametrize(
    "call,error,text", LPIPS_BAD_CALLS, ids=unique_ids(bad_call_id(*case) for case in LPIPS_BAD_CALLS)
)
def test_lpips_bad_input_raises_named_error(call, error, text, backend):
    with pk.use_backend(backend):
        with pytest.raises(error) as info:
            call()
    assert text in str(info.value), str(info.value)


def test_lpips_weight_gradient_is_refused_by_the_kernels_and_given_by_the_reference():
    if reason := pk.backends.unavailable_reason("cpu", torch.device("cpu"), torch.float32):
        pytest.skip(reason)
    f0, f1, w = x4.clone().requires_grad_(), torch.randn(2, 3, 4, 5), torch.rand(3, requires_grad=True)
    with pk.use_backend("cpu"), pytest.raises(ValueError, match="weight requires grad.*weight.detach"):
        pk.lpips_distance(f0, f1, w)
    with pk.use_backend("cpu"), torch.no_grad():
        pk.lpips_distance(f0, f1, w)  # no graph: nothing to refuse
    with pk.use_backend("reference"):
        (gw,) = torch.autograd.grad(pk.lpips_distance(f0, f1, w).sum(), w)
    assert gw.shape == (3,) and bool((gw > 0).all())
