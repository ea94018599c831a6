"""Every op on every kernel backend against the float64 reference: forward and every gradient.

Inputs: fresh random seeds, odd sizes (C in {1, 3, 17, 64}, H, W in {1, 2, 7, 31}), B in {1, 3},
contiguous / channels_last / sliced, every kernel dtype of the device.
"""

from __future__ import annotations

import itertools

import pytest
import torch
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


# --- LPIPS layer distance ---------------------------------------------------------------------------------------
# C in {3, 17, 64} (C = 1 separately: there n = f / |f| is a constant sign and the gradient is ~eps, pure rounding)
LPIPS_SHAPES = [(2, 3, 1, 1), (3, 3, 17, 3), (2, 17, 3, 17), (2, 64, 3, 1)]
# (shape, f0 layout, f1 layout): f1 in another layout than f0 (each kernel reads each tensor with its own strides)
LPIPS_CASES = [
    (shape, layout, "sliced" if layout == "contiguous" else "contiguous")
    for shape, layout in itertools.product(LPIPS_SHAPES, LAYOUTS)
]


def _lpips_weight(C: int) -> torch.Tensor:
    return torch.rand(C, device=DEVICE) + 0.05  # positive, as the published (clamped) weights


@per_backend_and_dtype
@pytest.mark.parametrize("shape,layout,f1_layout", LPIPS_CASES, ids=case_id)
def test_lpips_distance(kernel_backend, shape, layout, f1_layout, dtype):
    f0, f1 = make_input(shape, layout, dtype), make_input(shape, f1_layout, dtype)
    weight = _lpips_weight(shape[1])
    check_against_reference(
        lambda f0, f1, weight: pk.lpips_distance(f0, f1, weight),
        {"f0": f0, "f1": f1, "weight": weight},
        kernel_backend,
        dtype,
        ("f0", "f1"),
        out_dtype=torch.float32,
    )


@per_backend
@pytest.mark.parametrize("grads", [("f0",), ("f1",)], ids=["f0_only", "f1_only"])
def test_lpips_distance_one_side(kernel_backend, grads):
    f0, f1 = make_input((2, 17, 3, 5)), make_input((2, 17, 3, 5), "channels_last")
    check_against_reference(
        lambda f0, f1, weight: pk.lpips_distance(f0, f1, weight),
        {"f0": f0, "f1": f1, "weight": _lpips_weight(17)},
        kernel_backend,
        torch.float32,
        grads,
    )


@per_backend
def test_lpips_distance_one_channel(kernel_backend):
    """C = 1: n = f / (|f| + eps) is sign(f) up to eps, so the distance is 0 or 4 w per pixel and the exact
    gradient is ~eps-small; the kernels must give that distance and a gradient lost in rounding."""
    f0, f1 = make_input((3, 1, 17, 3)), make_input((3, 1, 17, 3), "sliced")
    weight = _lpips_weight(1)
    ours = f0.clone().requires_grad_()
    with pk.use_backend(kernel_backend):
        out = pk.lpips_distance(ours, f1, weight)
    with pk.use_backend("reference"):
        expected = pk.lpips_distance(f0.double(), f1.double(), weight.double())
    assert_close(out, expected, torch.float32, "forward")
    (grad,) = torch.autograd.grad(out.sum(), ours)
    assert bool((grad.abs() <= 1e-5 / f0.abs().clamp_min(1e-3)).all()), grad.abs().max()


@per_backend
def test_lpips_distance_zero_feature_vector(kernel_backend):
    """A pixel whose features are all 0 (common after a ReLU) has the true derivative I / eps there, not the
    lpips package's NaN (its sqrt(sum f^2) has an infinite derivative at 0): ours matches the reference."""
    f0, f1 = make_input((2, 5, 3, 4)).abs(), make_input((2, 5, 3, 4)).abs()
    f0[1, :, 2, 3] = 0
    f1[0, :, 0, 0] = 0
    check_against_reference(
        lambda f0, f1, weight: pk.lpips_distance(f0, f1, weight, eps=1e-3),  # eps: a gradient fp32 can hold
        {"f0": f0, "f1": f1, "weight": _lpips_weight(5)},
        kernel_backend,
        torch.float32,
        ("f0", "f1"),
    )


@per_backend
@pytest.mark.parametrize("where", ["f0", "f1", "weight"])
def test_lpips_distance_nan_propagates(kernel_backend, where):
    """A NaN gives NaN for its sample (never zeroed) and NaN gradients at its pixel."""
    inputs = {"f0": make_input((2, 3, 5, 6)), "f1": make_input((2, 3, 5, 6)), "weight": _lpips_weight(3)}
    if where == "weight":
        inputs["weight"][1] = float("nan")
    else:
        inputs[where][1, 2, 3, 4] = float("nan")
    ours = {k: v.clone().requires_grad_(k != "weight") for k, v in inputs.items()}
    with pk.use_backend(kernel_backend):
        out = pk.lpips_distance(**ours)
    with pk.use_backend("reference"):
        expected = pk.lpips_distance(**{k: v.double() for k, v in inputs.items()})
    assert torch.equal(out.isnan().cpu(), expected.isnan().cpu())
    assert out[1].isnan()
    grad0, grad1 = torch.autograd.grad(out.sum(), [ours["f0"], ours["f1"]])
    assert grad0[1, :, 3, 4].isnan().all() and grad1[1, :, 3, 4].isnan().all()
    if where != "weight":
        assert not grad0[0].isnan().any(), "a NaN of sample 1 leaked into sample 0"


def test_lpips_distance_reference_is_the_formula():
    f0, f1 = torch.randn(2, 5, 3, 4, dtype=torch.float64), torch.randn(2, 5, 3, 4, dtype=torch.float64)
    w = torch.rand(5, dtype=torch.float64)
    n0 = f0 / (f0.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    n1 = f1 / (f1.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    expected = torch.stack([sum(w[c] * (n0[b, c] - n1[b, c]) ** 2 for c in range(5)).mean() for b in range(2)])
    with pk.use_backend("reference"):
        torch.testing.assert_close(pk.lpips_distance(f0, f1, w), expected, rtol=1e-12, atol=0)


@per_backend
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_lpips_distance_half_precision(kernel_backend, layout, dtype):
    """fp16 / bf16 features on every backend (the CPU interpreter pass sweeps Triton in fp32 above)."""
    shape = (2, 17, 5, 7)
    check_against_reference(
        lambda f0, f1, weight: pk.lpips_distance(f0, f1, weight),
        {
            "f0": make_input(shape, layout, dtype),
            "f1": make_input(shape, "contiguous", dtype),
            "weight": _lpips_weight(17),
        },
        kernel_backend,
        dtype,
        ("f0", "f1"),
        out_dtype=torch.float32,
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_lpips_distance_cpu_is_bitwise_equal_for_any_thread_count(layout):
    if reason := pk.backends.unavailable_reason("cpu", torch.device("cpu"), torch.float32):
        pytest.skip(reason)
    f0, f1 = (
        make_input((3, 33, 19, 70), layout, device=torch.device("cpu")),
        make_input((3, 33, 19, 70), device=torch.device("cpu")),
    )
    weight = torch.rand(33)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            a, b = f0.clone().requires_grad_(), f1.clone().requires_grad_()
            with pk.use_backend("cpu"):
                d = pk.lpips_distance(a, b, weight)
            results.append((d, *torch.autograd.grad((d * torch.arange(1.0, 4.0)).sum(), [a, b])))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(x, y) for x, y in zip(results[0], other))
