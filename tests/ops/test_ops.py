"""Every op on every kernel backend against the float64 reference: forward and every gradient.

Inputs: fresh random seeds, odd sizes (C in {1, 3, 17, 64}, H, W in {1, 2, 7, 31}), B in {1, 3},
contiguous / channels_last / sliced, every kernel dtype of the device.
"""

from __future__ import annotations

import itertools
import types
import warnings

import pytest
import torch
import torch_kernels
from _helpers import (
    DEVICE,
    KERNEL_BACKEND_DTYPES,
    KERNEL_BACKENDS,
    LAYOUTS,
    assert_close,
    case_id,
    dtype_id,
    make_input,
    shape_id,
)

import perceptual_kernels as pk
from perceptual_kernels import backends
from perceptual_kernels.backends import interface

SHAPES = [(1, 1, 1, 1), (3, 3, 7, 31), (1, 17, 31, 2), (3, 64, 2, 7)]
CASES = list(itertools.product(SHAPES, LAYOUTS))
per_backend = pytest.mark.parametrize("kernel_backend", KERNEL_BACKENDS, indirect=True)
per_backend_and_dtype = pytest.mark.parametrize(
    "kernel_backend,dtype", KERNEL_BACKEND_DTYPES, indirect=["kernel_backend"]
)
# the loss reductions, each at its own weight
per_reduction = pytest.mark.parametrize(
    "reduction,weight", [("mean", 1.0), ("sum", 0.5), ("none", 2.0)], ids=["mean", "sum-w0.5", "none-w2"]
)


def check_against_reference(
    fn,
    inputs: dict,
    backend: str,
    dtype: torch.dtype,
    grad_names: tuple[str, ...],
    out_dtype: torch.dtype | None = None,
) -> None:
    """Run ``fn(**inputs)`` on ``backend`` and on the reference in float64; compare the output (whose dtype must
    be ``out_dtype``, default: ``dtype``) and the gradients of ``(out * probe).sum()`` for the inputs named in
    ``grad_names`` (probe: random, the same for both)."""

    def prepare(to64: bool) -> dict:
        prepared = {}
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.detach()
                if to64 and value.is_floating_point():
                    value = value.double()
                value.requires_grad_(name in grad_names)
            prepared[name] = value
        return prepared

    ours, ref = prepare(False), prepare(True)
    with pk.use_backend(backend):
        out = fn(**ours)
    with pk.use_backend("reference"):
        expected = fn(**ref)
    assert out.dtype == (out_dtype or dtype), f"output dtype {out.dtype}"
    assert_close(out, expected, dtype, "forward")
    if not grad_names:
        return
    # random signs, magnitudes in [0.5, 1.5]: a near-zero probe would push fp16 gradients into underflow
    probe = (
        (torch.rand(out.shape, device=out.device) + 0.5) * (torch.randint(0, 2, out.shape, device=out.device) * 2 - 1)
    ).to(out.dtype)
    grads = torch.autograd.grad((out * probe).sum(), [ours[n] for n in grad_names])
    expected_grads = torch.autograd.grad((expected * probe.double()).sum(), [ref[n] for n in grad_names])
    for name, grad, expected_grad in zip(grad_names, grads, expected_grads):
        assert grad.dtype == ours[name].dtype, f"grad of {name} has dtype {grad.dtype}"
        assert_close(grad, expected_grad, dtype, f"grad of {name}")


@per_backend_and_dtype
@pytest.mark.parametrize(
    "normalize,out_dtype", [("chw", None), ("none", torch.float32), (3.5, None)], ids=["chw", "none-fp32_out", "3.5"]
)
@pytest.mark.parametrize("shape,layout", CASES, ids=case_id)
def test_gram_matrix(kernel_backend, shape, layout, normalize, out_dtype, dtype):
    x = make_input(shape, layout, dtype)
    check_against_reference(
        lambda x: pk.gram_matrix(x, normalize, out_dtype),
        {"x": x},
        kernel_backend,
        dtype,
        ("x",),
        out_dtype=out_dtype or dtype,
    )


@per_backend
def test_gram_matrix_3d_input(kernel_backend):
    x = make_input((3, 17, 40))
    check_against_reference(lambda x: pk.gram_matrix(x, "hw"), {"x": x}, kernel_backend, torch.float32, ("x",))


@per_backend_and_dtype
@pytest.mark.parametrize(
    "reduction,weight,normalize",
    # weight None: 1, or C^2 for fp16 (see below)
    [("mean", None, "chw"), ("sum", 0.25, "hw"), ("none", 3.0, "chw")],
    ids=["mean-chw", "sum-hw", "none-chw"],
)
@pytest.mark.parametrize("target_kind", ["single", "per_sample", "indexed"])
@pytest.mark.parametrize("shape,layout", CASES, ids=case_id)
def test_style_loss(kernel_backend, shape, layout, target_kind, reduction, weight, normalize, dtype):
    B, C = shape[:2]
    x = make_input(shape, layout, dtype)
    rows = {"single": (C, C), "per_sample": (B, C, C), "indexed": (4, C, C)}[target_kind]
    target = torch.randn(rows, device=DEVICE) * 0.1
    index = torch.tensor([2, 0, 2][:B], device=DEVICE) if target_kind == "indexed" else None  # repeated rows
    if weight is None:
        # fp16: "mean" divides by C^2 and "chw" by C*M, so at weight 1 the gradients fall to ~1e-7, below fp16's
        # normal range (6e-5) where no fp16 kernel could meet the tolerance; a weight of C^2 (style weights are
        # large in practice) keeps them representable
        weight = float(C * C) if dtype == torch.float16 else 1.0
    check_against_reference(
        lambda x, target: pk.style_loss(
            x, target, normalize=normalize, weight=weight, reduction=reduction, style_index=index
        ),
        {"x": x, "target": target},
        kernel_backend,
        dtype,
        ("x", "target"),
        out_dtype=torch.float32,
    )


@per_backend
def test_style_loss_3d_input_and_asymmetric_target(kernel_backend):
    x = make_input((2, 17, 40))
    target = torch.randn(17, 17, device=DEVICE)  # not symmetric: the backward must use D + D^T
    check_against_reference(
        lambda x, target: pk.style_loss(x, target),
        {"x": x, "target": target},
        kernel_backend,
        torch.float32,
        ("x", "target"),
    )


@per_backend_and_dtype
@per_reduction
@pytest.mark.parametrize("target_layout", ["contiguous", "sliced"], ids=["target_contiguous", "target_sliced"])
@pytest.mark.parametrize("shape,layout", CASES, ids=case_id)
def test_content_loss(kernel_backend, shape, layout, target_layout, reduction, weight, dtype):
    x = make_input(shape, layout, dtype)
    target = make_input(shape, target_layout)  # fp32 target beside a low-precision x (the autocast case)
    check_against_reference(
        lambda x, target: pk.content_loss(x, target, weight=weight, reduction=reduction),
        {"x": x, "target": target},
        kernel_backend,
        dtype,
        ("x", "target"),
        out_dtype=torch.float32,
    )


@per_backend
@pytest.mark.parametrize("shape", [(5,), (3, 17), (2, 3, 7, 4, 5)], ids=shape_id)
def test_content_loss_other_ranks(kernel_backend, shape):
    x, target = torch.randn(shape, device=DEVICE), torch.randn(shape, device=DEVICE)
    check_against_reference(
        lambda x, target: pk.content_loss(x, target),
        {"x": x, "target": target},
        kernel_backend,
        torch.float32,
        ("x", "target"),
    )


@per_backend_and_dtype
@per_reduction
@pytest.mark.parametrize("kind", ["squared", "l1", "isotropic"])
@pytest.mark.parametrize("shape,layout", CASES, ids=case_id)
def test_tv_loss(kernel_backend, shape, layout, kind, reduction, weight, dtype):
    x = make_input(shape, layout, dtype)
    check_against_reference(
        lambda x: pk.tv_loss(x, kind=kind, weight=weight, reduction=reduction),
        {"x": x},
        kernel_backend,
        dtype,
        ("x",),
        out_dtype=torch.float32,
    )


def off_the_relu_kink(make, *pre_activations):
    """An input whose pre-activations ``f(x)`` (reference, float64) have no element within 1e-5 max|f| of 0.

    ReLU's gradient mask flips at 0, and fp32 and float64 may round a near-tie to opposite sides, which changes
    that element's gradient and, through the plane mean, its whole plane's (both answers are right). fp16 / bf16
    inputs make exact ties x == mean likely. Exact zeros (1-pixel planes without affine) agree in every precision.
    """
    for _ in range(20):
        x = make()
        with pk.use_backend("reference"):
            values = [f(x.detach().double()) for f in pre_activations]
        if not any(((v.abs() < 1e-5 * v.abs().max()) & (v != 0)).any() for v in values):
            return x
    raise AssertionError("could not draw an input away from the ReLU kink")


@per_backend_and_dtype
@pytest.mark.parametrize("activation", [None, "relu"], ids=["identity", "relu"])
@pytest.mark.parametrize("shape,layout", CASES, ids=case_id)
def test_instance_norm(kernel_backend, shape, layout, activation, dtype):
    C = shape[1]
    weight, bias = torch.randn(C, device=DEVICE), torch.randn(C, device=DEVICE)
    x = off_the_relu_kink(
        lambda: make_input(shape, layout, dtype, scale=3.0) + 2.0,
        pk.instance_norm,
        lambda x: pk.instance_norm(x, weight.double(), bias.double(), eps=1e-3),
    )
    check_against_reference(
        lambda x: pk.instance_norm(x, activation=activation), {"x": x}, kernel_backend, dtype, ("x",)
    )
    check_against_reference(
        lambda x, weight, bias: pk.instance_norm(x, weight, bias, eps=1e-3, activation=activation),
        {"x": x, "weight": weight, "bias": bias},
        kernel_backend,
        dtype,
        ("x", "weight", "bias"),
    )


@per_backend_and_dtype
@pytest.mark.parametrize("activation", [None, "relu"], ids=["identity", "relu"])
@pytest.mark.parametrize("mode", ["index", "weights", "single_row"])
@pytest.mark.parametrize("shape,layout", CASES, ids=case_id)
def test_conditional_instance_norm(kernel_backend, shape, layout, mode, activation, dtype):
    B, C = shape[:2]
    S = 1 if mode == "single_row" else 5
    gamma, beta = torch.randn(S, C, device=DEVICE), torch.randn(S, C, device=DEVICE)
    kwargs = {}
    if mode == "index":
        kwargs["style_index"] = torch.tensor([3, 1, 3][:B], device=DEVICE)  # style 3 repeats: scatter-add
    elif mode == "weights":
        kwargs["style_weights"] = torch.rand(B, S, device=DEVICE)
    x = off_the_relu_kink(
        lambda: make_input(shape, layout, dtype),
        lambda x: pk.conditional_instance_norm(x, gamma.double(), beta.double(), **kwargs),
    )
    check_against_reference(
        lambda x, gamma, beta: pk.conditional_instance_norm(x, gamma, beta, activation=activation, **kwargs),
        {"x": x, "gamma": gamma, "beta": beta},
        kernel_backend,
        dtype,
        ("x", "gamma", "beta"),
    )


def _nan_input(shape=(2, 3, 5, 6)):
    x = make_input(shape)
    x[1, 2, 3, 4] = float("nan")
    return x


@per_backend
@pytest.mark.parametrize("op", ["gram", "style", "content", "tv_squared", "tv_l1", "tv_isotropic", "cin"])
def test_nan_propagates(kernel_backend, op):
    """A NaN in x gives NaN where the reference has NaN, and a NaN gradient at that pixel (never zeroed)."""
    x = _nan_input()
    fns = {
        "gram": lambda x: pk.gram_matrix(x),
        "style": lambda x: pk.style_loss(x, torch.zeros(3, 3, device=DEVICE), reduction="none"),
        "content": lambda x: pk.content_loss(x, torch.zeros_like(x), reduction="sum"),
        "tv_squared": lambda x: pk.tv_loss(x, reduction="none"),
        "tv_l1": lambda x: pk.tv_loss(x, kind="l1", reduction="none"),
        "tv_isotropic": lambda x: pk.tv_loss(x, kind="isotropic", reduction="none"),
        "cin": lambda x: pk.conditional_instance_norm(x, torch.ones(3, device=DEVICE), torch.zeros(3, device=DEVICE)),
    }
    ours = x.clone().requires_grad_()
    with pk.use_backend(kernel_backend):
        out = fns[op](ours)
    with pk.use_backend("reference"):
        expected = fns[op](x.double())
    assert torch.equal(out.isnan().cpu(), expected.isnan().cpu())
    assert out.isnan().any()
    (grad,) = torch.autograd.grad(out.nan_to_num().sum() if op == "gram" else out.sum(), ours)
    assert grad[1, 2, 3, 4].isnan()


@per_backend
def test_autocast_does_not_change_kernel_ops(kernel_backend):
    x = make_input((2, 4, 6, 5)).requires_grad_()
    target = torch.randn(4, 4, device=DEVICE)
    with pk.use_backend(kernel_backend):
        expected = pk.style_loss(x, target) + pk.tv_loss(x) + pk.instance_norm(x).square().mean()
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            got = pk.style_loss(x, target) + pk.tv_loss(x) + pk.instance_norm(x).square().mean()
    assert got.dtype == torch.float32
    assert_close(got, expected, torch.float32)


HALF_OPS = {
    "gram": (lambda x: pk.gram_matrix(x), ("x",), None),
    # a style weight as used in practice keeps the fp16 gradient (~1e-7 at weight 1) above fp16's subnormals
    "style": (lambda x: pk.style_loss(x, torch.eye(17, device=DEVICE) * 0.05, weight=1e4), ("x",), torch.float32),
    "content": (lambda x: pk.content_loss(x, torch.ones_like(x)), ("x",), torch.float32),
    # l1: a target far from G (sign(G - A) = -1, no near-ties to round either way); a shared broadcast target
    "style_l1": (
        lambda x: pk.style_loss(x, torch.full((17, 17), 0.2, device=DEVICE), weight=1e3, criterion="l1"),
        ("x",),
        torch.float32,
    ),
    "content_l1": (
        lambda x: pk.content_loss(x, torch.ones_like(x[:1]) * 0.25, weight=10.0, criterion="l1"),
        ("x",),
        torch.float32,
    ),
    "tv": (lambda x: pk.tv_loss(x, kind="isotropic"), ("x",), torch.float32),
    "cin": (
        lambda x: pk.conditional_instance_norm(
            x,
            torch.linspace(0.5, 2, 17, device=DEVICE),
            torch.linspace(-1, 1, 17, device=DEVICE) + 0.03,  # no 0 row
            activation="relu",
        ),
        ("x",),
        None,
    ),
}


@per_backend
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", list(HALF_OPS))
def test_half_precision(kernel_backend, op, layout, dtype):
    """fp16 / bf16 through the public ops on every device (the GPU pass also sweeps them in the tests above)."""
    fn, grads, out_dtype = HALF_OPS[op]
    check_against_reference(
        fn, {"x": make_input((3, 17, 7, 31), layout, dtype)}, kernel_backend, dtype, grads, out_dtype=out_dtype
    )


# --- criterion="l1" and broadcast content targets (issues 17 and 20) ----------------------------------------------
def _style_target_off_zero(x: torch.Tensor, rows: tuple[int, ...], index: torch.Tensor | None) -> torch.Tensor:
    """A style target of shape ``rows`` whose entries lie at least 0.1 max|G| away from the Gram entries of every
    sample that reads them, on a random side: sign(G - A) is then the same in every precision (a near-tie could
    round to either sign, and both answers would be right)."""
    with pk.use_backend("reference"):
        g = pk.gram_matrix(x.detach().double())  # (B, C, C)
    B = g.shape[0]
    n_rows = 1 if len(rows) == 2 else rows[0]
    margin = 0.1 * g.abs().max().clamp_min(1e-3)
    values = []
    for r in range(n_rows):
        if index is not None:
            readers = [b for b in range(B) if index[b] == r]
        else:
            readers = list(range(B)) if n_rows == 1 else [r]
        lo, hi = g[readers or list(range(B))].amin(0), g[readers or list(range(B))].amax(0)
        above = torch.randint(0, 2, lo.shape, device=g.device).bool()
        gap = margin * (1 + torch.rand(lo.shape, dtype=torch.float64, device=g.device))
        values.append(torch.where(above, hi + gap, lo - gap))
    return torch.stack(values).reshape(rows).float()


@per_backend_and_dtype
@pytest.mark.parametrize(
    "reduction,weight", [("mean", None), ("sum", 0.25), ("none", 3.0)], ids=["mean", "sum", "none"]
)
@pytest.mark.parametrize("target_kind", ["single", "per_sample", "indexed"])
@pytest.mark.parametrize("shape,layout", [(s, lay) for s, lay in zip(SHAPES, LAYOUTS * 2)], ids=case_id)
def test_style_loss_l1(kernel_backend, shape, layout, target_kind, reduction, weight, dtype):
    B, C = shape[:2]
    x = make_input(shape, layout, dtype)
    rows = {"single": (C, C), "per_sample": (B, C, C), "indexed": (4, C, C)}[target_kind]
    index = torch.tensor([2, 0, 2][:B], device=DEVICE) if target_kind == "indexed" else None
    target = _style_target_off_zero(x, rows, index)
    weight = weight if weight is not None else (float(C * C) if dtype == torch.float16 else 1.0)
    check_against_reference(
        lambda x, target: pk.style_loss(
            x, target, weight=weight, reduction=reduction, style_index=index, criterion="l1"
        ),
        {"x": x, "target": target},
        kernel_backend,
        dtype,
        ("x", "target"),
        out_dtype=torch.float32,
    )


@per_backend_and_dtype
@pytest.mark.parametrize("reduction,weight", [("mean", 1.0), ("sum", 0.5)], ids=["mean", "sum-w0.5"])
@pytest.mark.parametrize("shape,layout", CASES, ids=case_id)
def test_content_loss_l1(kernel_backend, shape, layout, reduction, weight, dtype):
    x = make_input(shape, layout, dtype)
    # a third of the elements tie (x == target: sign 0), in a target of another layout than x
    ties = torch.rand(shape, device=DEVICE) < 0.3
    target = make_input(shape, "sliced" if layout == "contiguous" else "contiguous")
    target.copy_(torch.where(ties, x.float(), target))
    check_against_reference(
        lambda x, target: pk.content_loss(x, target, weight=weight, reduction=reduction, criterion="l1"),
        {"x": x, "target": target},
        kernel_backend,
        dtype,
        ("x", "target"),
        out_dtype=torch.float32,
    )


# (x shape, target shape): every broadcast F.mse_loss accepts, rank 4 and others; the kernels get stride-0 views
BROADCASTS = [
    ((3, 5, 7, 6), (1, 5, 7, 6)),  # a shared target for a batch
    ((3, 5, 7, 6), (5, 1, 1)),  # one value per channel
    ((2, 5, 7, 6), (2, 1, 7, 6)),  # a target shared by the channels
    ((1, 5, 7, 6), (3, 5, 7, 6)),  # x broadcast: its gradient sums over the batch
    ((3, 1, 7, 6), (1, 5, 7, 1)),  # both broadcast
    ((2, 3, 5, 4, 6), (1, 3, 5, 4, 6)),  # rank 5, merged to a 4-D view
    ((2, 3, 2, 5, 4, 6), (2, 1, 2, 1, 4, 1)),  # rank 6 that no 4-D view holds (reshaped)
    ((6,), (3, 1)),  # rank 1 and 2
]


@per_backend_and_dtype
@pytest.mark.parametrize("criterion", ["l2", "l1"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("x_shape,t_shape", BROADCASTS, ids=[f"{shape_id(a)}-{shape_id(b)}" for a, b in BROADCASTS])
def test_content_loss_broadcast(kernel_backend, x_shape, t_shape, layout, criterion, dtype):
    x = make_input(x_shape, layout, dtype)
    target = make_input(t_shape, layout)
    check_against_reference(
        lambda x, target: pk.content_loss(x, target, reduction="mean", criterion=criterion),
        {"x": x, "target": target},
        kernel_backend,
        dtype,
        ("x", "target"),
        out_dtype=torch.float32,
    )


def test_content_loss_broadcast_reaches_the_kernels_as_stride_0_views():
    """The expanded target (and x) arrive at the kernel functions as stride-0 views, never copied; no warning
    (F.mse_loss warns about broadcasting; a shared target is intended usage here)."""
    seen = []

    def spy(name):
        def call(x, target, *args):
            seen.append((name, x.stride(), target.stride()))
            return getattr(torch_kernels, name)(x, target, *args)

        return call

    functions = {name: getattr(torch_kernels, name) for name in interface.KERNEL_FUNCTIONS}
    functions |= {name: spy(name) for name in ("content_loss_forward", "content_loss_backward")}
    backends.register_backend("content-spy", types.SimpleNamespace(**functions))
    try:
        x = torch.randn(1, 4, 5, 6, requires_grad=True)
        target = torch.randn(4, 5, 6)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pk.use_backend("content-spy"):
                loss_l1 = pk.content_loss(x.expand(3, -1, -1, -1), target, criterion="l1")
                loss_l2 = pk.content_loss(x, target.expand(3, -1, -1, -1))
                (loss_l1 + loss_l2).backward()
    finally:
        backends.unregister_backend("content-spy")
    assert sorted(name for name, *_ in seen) == ["content_loss_backward"] * 2 + ["content_loss_forward"] * 2
    for _, x_strides, t_strides in seen:
        assert x_strides[0] == 0 and t_strides[0] == 0
    with pk.use_backend("reference"):
        expected = pk.content_loss(x.detach().double().expand(3, -1, -1, -1), target.double(), criterion="l1")
    assert_close(loss_l1, expected, torch.float32)


@per_backend
@pytest.mark.parametrize("op", ["content", "style"])
def test_l1_gradient_sign_nan_and_zero(kernel_backend, op):
    """l1 gradients: sign(0) = 0 where x equals the target, NaN (never 0) where x is NaN."""
    x = make_input((2, 3, 5, 6))
    x[1, 2, 3, 4] = float("nan")
    if op == "content":
        target = x.detach().clone()
        target[0] += 1.0  # sample 0: x - t = -1; sample 1: exact ties but at the NaN
        target[1, 2, 3, 4] = 0.0

        def fn(x):
            return pk.content_loss(x, target, criterion="l1", reduction="sum")

    else:
        with pk.use_backend("reference"):
            target = pk.gram_matrix(x.detach()[:1])[0] + 0.5  # sample 0: sign -1 everywhere; sample 1: NaN Gram

        def fn(x):
            return pk.style_loss(x, target, criterion="l1", reduction="none")

    ours = x.clone().requires_grad_()
    with pk.use_backend(kernel_backend):
        out = fn(ours)
    with pk.use_backend("reference"):
        expected = fn(x.double())
    assert torch.equal(out.isnan().cpu(), expected.isnan().cpu()) and out.isnan().any()
    (grad,) = torch.autograd.grad(out.sum(), ours)
    if op == "content":
        assert torch.equal(grad[0], torch.full_like(grad[0], -1.0))  # x - t = -1
        assert grad[1, 2, 3, 4].isnan() and grad[1].isnan().sum() == 1  # the NaN, and exact ties: 0
        assert (grad[1].nan_to_num(5.0) == torch.where(grad[1].isnan(), 5.0, 0.0)).all()
    else:
        assert grad[1].isnan().all() and not grad[0].isnan().any()
