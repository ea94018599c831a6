"""The compiled extension ``perceptual_kernels._C``: it is built (unless the install opted out), a build for
another torch is refused with a clear message, and the ``cpu`` kernels pass float64 forward and gradcheck
through the custom ops (the float32 / fp16 / bf16 sweeps are in tests/ops/test_ops.py)."""

from __future__ import annotations

import functools
import os

import pytest
import torch
from _helpers import LAYOUTS, assert_close, make_input

import perceptual_kernels as pk
from perceptual_kernels import _ops
from perceptual_kernels.backends import native

f64 = torch.float64
built = pytest.mark.skipif(
    os.environ.get("PERCEPTUAL_KERNELS_NO_EXT") == "1",
    reason="installed with PERCEPTUAL_KERNELS_NO_EXT=1 (no compiled extension)",
)


@built
def test_extension_is_built_with_every_cpu_kernel():
    assert native.load() is not None, native.LOAD_ERROR
    assert native.build_info()["torch"] == torch.__version__ == native.load().TORCH_VERSION
    expected = {
        "gram_forward",
        "gram_backward",
        "style_loss_forward",
        "style_loss_backward",
        "content_loss_forward",
        "content_loss_backward",
        "tv_forward",
        "tv_backward",
        "instance_norm_forward",
        "instance_norm_backward",
        "lpips_forward",
        "lpips_backward",
    }
    assert set(native.provided_ops("cpu")) == expected


def test_a_build_for_another_torch_is_not_loaded(monkeypatch):
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "LOAD_ERROR", None)
    monkeypatch.setattr(native, "build_info", lambda: {"torch": "1.0.0", "cuda": None, "cuda_arch_list": ""})
    assert native.load() is None
    assert "built against torch 1.0.0" in native.LOAD_ERROR and "rebuild" in native.LOAD_ERROR
    assert "built against torch 1.0.0" in native.unavailable_reason("cpu")


def _cpu_backend():
    if reason := pk.backends.unavailable_reason("cpu", torch.device("cpu"), f64):
        pytest.skip(reason)
    return "cpu"


OPS = {
    "gram": lambda x: pk.gram_matrix(x, "hw"),
    "style": lambda x: pk.style_loss(
        x, torch.randn(4, 5, 5, dtype=f64) * 0.1, style_index=torch.tensor([3, 0, 3]), reduction="none"
    ),
    "content": lambda x: pk.content_loss(x, torch.ones_like(x), reduction="sum"),
    "tv_squared": lambda x: pk.tv_loss(x, reduction="none"),
    "tv_l1": lambda x: pk.tv_loss(x, kind="l1", reduction="none"),
    "tv_isotropic": lambda x: pk.tv_loss(x, kind="isotropic", reduction="none"),
    "cin": lambda x: pk.conditional_instance_norm(
        x,
        torch.randn(4, 5, dtype=f64),
        torch.randn(4, 5, dtype=f64),
        style_index=torch.tensor([1, 1, 2]),
        activation="relu",
    ),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", list(OPS))
def test_float64_forward_and_backward_match_the_reference(op, layout):
    backend = _cpu_backend()
    x = make_input((3, 5, 7, 6), layout, f64)
    ours, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    seed = int(torch.randint(2**31, ()))
    torch.manual_seed(seed)
    with pk.use_backend(backend):
        out = OPS[op](ours)
    torch.manual_seed(seed)  # the same random targets / tables
    with pk.use_backend("reference"):
        expected = OPS[op](ref)
    assert out.dtype == f64
    assert_close(out, expected, f64, "forward")
    probe = torch.randn_like(expected)
    assert_close(
        torch.autograd.grad((out * probe).sum(), ours)[0],
        torch.autograd.grad((expected * probe).sum(), ref)[0],
        f64,
        "grad",
    )


def _leaf(*shape):
    return torch.randn(*shape, dtype=f64, requires_grad=True)


INDEX = torch.tensor([1, 1])
# op: (the custom op as a function of x and the extra inputs, the extra inputs' shapes), backend name last
GRADCHECKS = {
    "gram": (lambda backend, x: _ops.gram(x, 0.1, f64, backend), ()),
    "style": (lambda backend, x, t: _ops.style_loss(x, t, INDEX, 0.1, backend)[0], ((4, 3, 3),)),
    "content": (lambda backend, x, t: _ops.content_loss(x, t, backend), ((2, 3, 4, 5),)),
    "tv_squared": (lambda backend, x: _ops.tv_loss(x, "squared", 1e-3, backend), ()),
    "tv_isotropic": (lambda backend, x: _ops.tv_loss(x, "isotropic", 1e-3, backend), ()),
    "cin": (lambda backend, x, g, b: _ops.instance_norm(x, g, b, INDEX, 1e-5, False, backend)[0], ((4, 3), (4, 3))),
    "cin_relu": (
        lambda backend, x, g, b: _ops.instance_norm(x, g, b, INDEX, 1e-5, True, backend)[0],
        ((4, 3), (4, 3)),
    ),
}


@pytest.mark.parametrize("op", list(GRADCHECKS))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradcheck_through_the_custom_ops(layout, op):
    backend = _cpu_backend()
    x = make_input((2, 3, 4, 5), layout, f64).requires_grad_()
    fn, extra_shapes = GRADCHECKS[op]
    assert torch.autograd.gradcheck(functools.partial(fn, backend), (x, *(_leaf(*s) for s in extra_shapes)))


def test_a_module_built_for_another_torch_is_dropped_after_import(monkeypatch):
    """Without _build_info.json (a copied build) the version the module reports is checked instead."""
    import types

    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "LOAD_ERROR", None)
    monkeypatch.setattr(native, "build_info", lambda: None)
    monkeypatch.setattr(
        native.importlib, "import_module", lambda name: types.SimpleNamespace(TORCH_VERSION="1.0.0", DEVICES=("cpu",))
    )
    assert native.load() is None
    assert "built against torch 1.0.0" in native.unavailable_reason("cpu")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_lpips_gradcheck_and_float64_forward(layout):
    """The cpu LPIPS kernels in float64: gradcheck of both feature gradients, and the forward to 1e-12 of the
    reference."""
    backend = _cpu_backend()
    f0, f1 = make_input((2, 5, 3, 4), layout, f64).requires_grad_(), _leaf(2, 5, 3, 4)
    weight = torch.rand(5, dtype=f64)
    assert torch.autograd.gradcheck(lambda a, b: _ops.lpips_distance(a, b, weight, 1e-10, backend), (f0, f1))
    with pk.use_backend("reference"):
        expected = pk.lpips_distance(f0, f1, weight)
    torch.testing.assert_close(_ops.lpips_distance(f0, f1, weight, 1e-10, backend), expected, rtol=1e-12, atol=0)
