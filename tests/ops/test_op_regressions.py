"""Regressions of the hostile-input review (issue 12), one test class per class of bug, on the ``cpu`` kernel
backend (the Triton pair of the fp16 tests is in tests/kernels/test_triton_tv_content_kernels.py). The table of
covered cases is tests/BAD_INPUTS.md."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _helpers import LAYOUTS, assert_close, dtype_id, make_input

import perceptual_kernels as pk
from perceptual_kernels import _ops
from perceptual_kernels.backends import unavailable_reason

ALL_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@pytest.fixture
def cpu_backend():
    if reason := unavailable_reason("cpu", torch.device("cpu"), torch.float32):
        pytest.skip(reason)
    return "cpu"


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _custom_op_calls(x: torch.Tensor, backend: str) -> dict[str, tuple]:
    """Every custom op with arguments for input x (B, 3, H, W) of any dtype and layout; the forward ops get an x
    that requires grad (so their autograd formula is checked too)."""
    B, C = x.shape[:2]
    acc, dt = _acc(x.dtype), x.dtype
    xg = x.detach().requires_grad_()
    rows = torch.randn(4, C, dtype=dt)
    index = torch.tensor([3, 0] * (B // 2) + [1] * (B % 2))
    stats = torch.rand(B, C, dtype=acc) + 0.5
    return {
        "gram": (_ops.gram, (xg, 0.1, dt, backend)),
        "gram_backward": (_ops.gram_backward, (torch.randn(B, C, C, dtype=dt), x, 0.1, backend)),
        "style_loss": (_ops.style_loss, (xg, torch.randn(4, C, C, dtype=dt), index, 0.1, backend)),
        "style_loss_backward": (
            _ops.style_loss_backward,
            (torch.rand(B, dtype=acc), torch.randn(B, C, C, dtype=acc), x, backend),
        ),
        "content_loss": (_ops.content_loss, (xg, torch.randn_like(x), backend)),
        "content_loss_backward": (
            _ops.content_loss_backward,
            (x, torch.randn_like(x), torch.tensor(0.3, dtype=acc), backend),
        ),
        "tv_loss": (_ops.tv_loss, (xg, "isotropic", 1e-3, backend)),
        "tv_loss_backward": (_ops.tv_loss_backward, (x, "squared", 1e-3, torch.rand(B, dtype=acc), backend)),
        "instance_norm": (_ops.instance_norm, (xg, rows, rows, index, 1e-5, True, backend)),
        "instance_norm_backward": (
            _ops.instance_norm_backward,
            (torch.randn_like(x), x, stats, stats, rows, rows, index, True, True, backend),
        ),
        "lpips_distance": (_ops.lpips_distance, (xg, torch.randn_like(x), torch.rand(C, dtype=acc), 1e-10, backend)),
        "lpips_distance_backward": (
            _ops.lpips_distance_backward,
            (x, torch.randn_like(x), torch.rand(C, dtype=acc), 1e-10, torch.rand(B, dtype=acc), True, False, backend),
        ),
    }


# --- 1. fake kernels agree with the real ones (shape, dtype, strides) ------------------------------------------
# every custom op of perceptual_kernels._ops, forward and backward (test_the_opcheck_sweep_covers_every_custom_op)
CUSTOM_OPS = (
    "gram",
    "gram_backward",
    "style_loss",
    "style_loss_backward",
    "content_loss",
    "content_loss_backward",
    "tv_loss",
    "tv_loss_backward",
    "instance_norm",
    "instance_norm_backward",
    "lpips_distance",
    "lpips_distance_backward",
)


def test_the_opcheck_sweep_covers_every_custom_op():
    defined = {name for name, value in vars(_ops).items() if isinstance(value, torch.library.CustomOpDef)}
    assert set(CUSTOM_OPS) == defined
    assert set(_custom_op_calls(torch.randn(3, 3, 5, 7), "reference")) == defined


@pytest.mark.triton
@pytest.mark.parametrize("op_name", CUSTOM_OPS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_fake_kernels_match_the_triton_kernels(dtype, layout, op_name):
    if reason := unavailable_reason("triton", torch.device("cpu"), dtype):
        pytest.skip(reason)
    x = make_input((3, 3, 5, 7), layout, dtype)
    op, args = _custom_op_calls(x, "triton")[op_name]
    result = torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))
    assert set(result.values()) == {"SUCCESS"}, f"{op_name}: {result}"


@pytest.mark.parametrize("op_name", CUSTOM_OPS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=dtype_id)
def test_fake_kernels_match_the_real_kernels(cpu_backend, dtype, layout, op_name):
    """opcheck's fake-tensor, schema and autograd-registration checks everywhere; its (slower) AOT-dispatch check
    too for fp32 contiguous and float64 channels_last."""
    x = make_input((3, 3, 5, 7), layout, dtype)
    full = (dtype, layout) in ((torch.float32, "contiguous"), (torch.float64, "channels_last"))
    utils = None if full else ("test_schema", "test_autograd_registration", "test_faketensor")
    op, args = _custom_op_calls(x, cpu_backend)[op_name]
    result = torch.library.opcheck(op, args, test_utils=utils) if utils else torch.library.opcheck(op, args)
    assert set(result.values()) == {"SUCCESS"}, f"{op_name}: {result}"


def _all_losses(x, target, content_target, gamma, beta, index):
    return (
        pk.style_loss(x, target, style_index=index)
        + pk.content_loss(x, content_target)
        + pk.tv_loss(x, kind="isotropic")
        + pk.gram_matrix(x).float().square().mean()
        + pk.conditional_instance_norm(x, gamma, beta, style_index=index).float().square().mean()
    )


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=dtype_id)
def test_inductor_matches_eager_for_every_dtype(cpu_backend, dtype):
    """The float64 case returned 1.9e30 for 0.33 when the fake kernels declared fp32 outputs."""
    torch._dynamo.reset()
    x = make_input((2, 3, 6, 5), "channels_last", dtype).requires_grad_()
    args = (
        x,
        torch.rand(4, 3, 3, dtype=dtype),
        torch.randn(2, 3, 6, 5, dtype=dtype),
        torch.randn(4, 3, dtype=dtype),
        torch.randn(4, 3, dtype=dtype),
        torch.tensor([1, 3]),
    )
    with pk.use_backend(cpu_backend):
        eager = _all_losses(*args)
        (eager_grad,) = torch.autograd.grad(eager, x)
        compiled = torch.compile(_all_losses, fullgraph=True)(*args)
        (compiled_grad,) = torch.autograd.grad(compiled, x)
    assert compiled.dtype == eager.dtype == _acc(dtype)
    tol = torch.float32 if dtype == torch.float64 else dtype  # inductor may reassociate the small epilogues
    assert_close(compiled, eager, tol, "loss")
    assert_close(compiled_grad, eager_grad, tol, "grad")


# --- 2. fp16 / bf16 gradients scaled in fp32 before the one cast -----------------------------------------------
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_fp16_content_gradient_does_not_overflow(backend):
    """x = +40000, t = -40000 on 16 elements: 2 (x - t) = 1.6e5 overflows fp16, the true gradient 1e4 fits."""
    if reason := unavailable_reason(backend, torch.device("cpu"), torch.float16):
        pytest.skip(reason)
    x = torch.full((1, 1, 4, 4), 40000.0, dtype=torch.float16, requires_grad=True)
    with pk.use_backend(backend):
        (grad,) = torch.autograd.grad(pk.content_loss(x, -x.detach()), x)
    assert torch.equal(grad.float(), torch.full((1, 1, 4, 4), 1e4))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("kind", ["squared", "l1", "isotropic"])
def test_fp16_tv_gradient_does_not_overflow(backend, kind):
    """Alternating +-30000 columns: the unscaled squared-TV gradient (2.4e5) overflows fp16, the mean's fits."""
    if reason := unavailable_reason(backend, torch.device("cpu"), torch.float16):
        pytest.skip(reason)
    x = torch.zeros(2, 3, 5, 6, dtype=torch.float16)
    x[..., ::2], x[..., 1::2] = 30000, -30000
    x.requires_grad_()
    with pk.use_backend(backend):
        (grad,) = torch.autograd.grad(pk.tv_loss(x, kind=kind, eps=1e-3), x)
    x64 = x.detach().double().requires_grad_()
    with pk.use_backend("reference"):
        (expected,) = torch.autograd.grad(pk.tv_loss(x64, kind=kind, eps=1e-3), x64)
    assert torch.isfinite(grad).all()
    assert_close(grad, expected, torch.float16, "grad")


@pytest.mark.parametrize("op", ["content", "tv"])
def test_fp16_gradient_does_not_underflow_under_loss_scaling(cpu_backend, op):
    """GradScaler-style: a 2^16-scaled loss over many elements. The per-element gradient before the upstream
    scale (2 d / N ~ 2e-9) is below fp16's smallest subnormal; scaled first, it is well inside fp16's range."""
    x = (torch.randn(1, 4, 256, 256) * 1e-3).half().requires_grad_()
    target = torch.zeros_like(x)
    loss = {"content": lambda v: pk.content_loss(v, target), "tv": lambda v: pk.tv_loss(v)}[op]
    with pk.use_backend(cpu_backend):
        (grad,) = torch.autograd.grad(loss(x) * 65536.0, x)
    x64 = x.detach().double().requires_grad_()
    with pk.use_backend("reference"):
        (expected,) = torch.autograd.grad(loss(x64) * 65536.0, x64)
    assert (grad != 0).float().mean() > 0.99
    assert_close(grad, expected, torch.float16, "grad")


# --- 3. double backward: refused with a clear error, never a silently wrong Hessian ------------------------------
def _first_order_losses(t_content, t_style):
    probe = torch.randn(t_content.shape, dtype=t_content.dtype)
    return {
        "content_loss": lambda x: pk.content_loss(x, t_content),
        "tv_loss": lambda x: pk.tv_loss(x, kind="isotropic"),
        "style_loss": lambda x: pk.style_loss(x, t_style),
        "gram_matrix": lambda x: pk.gram_matrix(x).square().sum(),
        "instance_norm": lambda x: (pk.instance_norm(x) * probe).sum(),
    }


@pytest.mark.parametrize("op", ["content_loss", "tv_loss", "style_loss", "gram_matrix", "instance_norm"])
def test_double_backward_is_refused_by_the_kernels(cpu_backend, op):
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    loss = _first_order_losses(torch.randn(2, 3, 5, 6), torch.rand(3, 3))[op]
    with pk.use_backend(cpu_backend):
        (grad,) = torch.autograd.grad(loss(x), x, create_graph=True)  # first order alone is fine
        with pytest.raises(RuntimeError, match=f"perceptual_kernels.{op}: higher-order gradients"):
            torch.autograd.grad(grad.square().sum(), x)
    with pk.use_backend("reference"):
        (expected,) = torch.autograd.grad(loss(x), x)
    assert_close(grad, expected, torch.float32, "first-order gradient under create_graph")


def test_style_target_gradient_keeps_its_dependence_on_x(cpu_backend):
    """d(dL/dA)/dx goes through D = G(x) - A: recomputed through the Gram op under create_graph, so the second
    derivative is exact (float64, against the reference)."""
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    target = torch.rand(3, 3, dtype=torch.float64, requires_grad=True)
    results = []
    for backend in (cpu_backend, "reference"):
        with pk.use_backend(backend):
            (grad_target,) = torch.autograd.grad(pk.style_loss(x, target), target, create_graph=True)
            results.append(torch.autograd.grad(grad_target.square().sum(), x)[0])
    assert_close(results[0], results[1], torch.float64, "d(dL/dA)/dx")


@pytest.mark.parametrize("op", ["content_loss", "tv_loss", "style_loss", "gram_matrix", "instance_norm"])
def test_reference_backend_supports_double_backward(op):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    loss = _first_order_losses(torch.randn(2, 3, 4, 5, dtype=torch.float64), torch.rand(3, 3, dtype=torch.float64))
    with pk.use_backend("reference"):
        assert torch.autograd.gradgradcheck(loss[op], (x,))


# --- 4. a NaN / Inf never leaks into rows or samples that did not use it -----------------------------------------
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_unselected_nan_style_row_does_not_touch_the_output(backend):
    if reason := unavailable_reason(backend, torch.device("cpu"), torch.float32):
        pytest.skip(reason)
    x = torch.randn(2, 3, 4, 4)
    gamma, beta = torch.randn(3, 3), torch.randn(3, 3)
    gamma[1], beta[1] = float("nan"), float("inf")
    index = torch.tensor([0, 2])
    with pk.use_backend(backend):
        y = pk.conditional_instance_norm(x, gamma, beta, style_index=index)
    with pk.use_backend("reference"):
        expected = pk.conditional_instance_norm(x, gamma[[0, 2]], beta[[0, 2]], style_index=torch.tensor([0, 1]))
    assert torch.isfinite(y).all()
    assert_close(y, expected, torch.float32, "y")


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_nan_sample_reaches_only_its_own_table_rows(backend):
    if reason := unavailable_reason(backend, torch.device("cpu"), torch.float32):
        pytest.skip(reason)
    x = torch.randn(3, 3, 4, 4)
    x[0, 1, 2, 2] = float("nan")
    index = torch.tensor([0, 2, 2])
    gamma, beta = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    targets = torch.rand(4, 3, 3, requires_grad=True)
    with pk.use_backend(backend):
        y = pk.conditional_instance_norm(x, gamma, beta, style_index=index)
        loss = y.square().sum() + pk.style_loss(x, targets, style_index=index, reduction="sum")
        grads = torch.autograd.grad(loss, (gamma, beta, targets))
    for grad in grads:
        assert grad[0].isnan().any(), "the row of the NaN sample carries the NaN"
        assert torch.isfinite(grad[1:]).all(), "rows no NaN sample used stay finite"
        assert (grad[[1, 3]] == 0).all()


# --- 5. thread count: what holds (README "Precision policy") -----------------------------------------------------
def _run_ops(x: torch.Tensor, gamma: torch.Tensor, probe: torch.Tensor) -> list[torch.Tensor]:
    """The ops' outputs and their summed input gradient, with no torch reduction of ours in between (torch's own
    sums may depend on the thread count)."""
    x = x.detach().requires_grad_()
    outs = [
        pk.content_loss(x, x.detach().flip(-1)),
        pk.tv_loss(x, kind="isotropic", reduction="none"),
        pk.instance_norm(x, gamma, gamma, activation="relu"),
    ]
    grad_outputs = [torch.ones(()), torch.ones(x.shape[0]), probe]
    return outs + list(torch.autograd.grad(outs, x, grad_outputs))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_content_tv_instance_norm_are_bitwise_equal_for_any_thread_count(cpu_backend, layout):
    x = make_input((2, 64, 96, 80), layout)
    gamma, probe = torch.rand(64) + 0.5, torch.randn(x.shape)
    threads = torch.get_num_threads()
    try:
        with pk.use_backend(cpu_backend):
            torch.set_num_threads(1)
            single = _run_ops(x, gamma, probe)
            torch.set_num_threads(2)
            multi = _run_ops(x, gamma, probe)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(single, multi):
        assert torch.equal(a, b)


def test_gram_and_style_are_bitwise_reproducible_at_a_fixed_thread_count(cpu_backend):
    x = torch.randn(2, 64, 128, 96, dtype=torch.float64, requires_grad=True)
    target = torch.rand(64, 64, dtype=torch.float64)
    with pk.use_backend(cpu_backend):
        runs = [(pk.gram_matrix(x.detach()), *torch.autograd.grad(pk.style_loss(x, target), x)) for _ in range(3)]
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(run, runs[0]))


# --- torch.compile as the first call of a process, and with dynamic shapes ---------------------------------------
def test_fullgraph_compile_as_the_first_call_of_a_process():
    """The backend choice (it reads the extension's build info) used to run inside the Dynamo trace."""
    code = textwrap.dedent("""
        import torch, perceptual_kernels as pk
        x = torch.randn(2, 3, 8, 8, requires_grad=True)
        f = torch.compile(lambda x: pk.style_loss(x, torch.eye(3)) + pk.tv_loss(x) + pk.content_loss(x, x.detach()),
                          fullgraph=True, backend="aot_eager")
        loss = f(x)
        loss.backward()
        print(float(loss), bool(torch.isfinite(x.grad).all()))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "True"


def test_dynamic_shapes_compile_and_match_eager():
    torch._dynamo.reset()
    fn = torch.compile(
        lambda x, t: (
            pk.style_loss(x, t, weight=2.0) + pk.tv_loss(x, eps=1e-6) + pk.content_loss(x, x.detach() * 0.5, weight=0.5)
        ),
        fullgraph=True,
        dynamic=True,
        backend="aot_eager",
    )
    for shape in ((2, 3, 8, 8), (3, 3, 5, 9)):
        x = torch.randn(shape, requires_grad=True)
        target = torch.rand(3, 3)
        compiled = fn(x, target)
        (compiled_grad,) = torch.autograd.grad(compiled, x)
        eager = (
            pk.style_loss(x, target, weight=2.0)
            + pk.tv_loss(x, eps=1e-6)
            + pk.content_loss(x, x.detach() * 0.5, weight=0.5)
        )
        (eager_grad,) = torch.autograd.grad(eager, x)
        assert_close(compiled, eager, torch.float32, "loss")
        assert_close(compiled_grad, eager_grad, torch.float32, "grad")


# --- torch.func transforms and meta tensors ---------------------------------------------------------------------
def test_torch_func_grad_vmap_and_jacrev_match_autograd():
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    target, gamma = torch.rand(3, 3), torch.rand(3) + 0.5

    def loss(v):
        return (
            pk.style_loss(v, target)
            + pk.content_loss(v, v.detach() * 0.3)
            + pk.tv_loss(v)
            + pk.instance_norm(v, gamma, gamma).square().mean()
        )

    (expected,) = torch.autograd.grad(loss(x), x)
    assert_close(torch.func.grad(loss)(x.detach()), expected, torch.float32, "func.grad")
    per_sample = torch.vmap(lambda v: pk.gram_matrix(v[None])[0])(x.detach())
    assert_close(per_sample, pk.gram_matrix(x.detach()), torch.float32, "vmap")
    jac = torch.func.jacrev(lambda v: pk.tv_loss(v, reduction="none"))(x.detach())
    assert jac.shape == (2, 2, 3, 5, 6) and (jac[0, 1] == 0).all()


def test_forced_kernel_backend_inside_torch_func_is_a_clear_error(cpu_backend):
    with pk.use_backend(cpu_backend):
        with pytest.raises(pk.BackendUnavailableError, match="inside a torch.func transform"):
            torch.func.grad(lambda v: pk.tv_loss(v))(torch.randn(1, 1, 3, 3))


def test_meta_tensors_propagate_shapes_and_dtypes():
    x = torch.empty(2, 3, 5, 7, device="meta", dtype=torch.float16)
    index = torch.zeros(2, dtype=torch.long, device="meta")
    table = torch.empty(4, 3, device="meta")
    assert pk.gram_matrix(x).shape == (2, 3, 3)
    loss = pk.style_loss(x, torch.empty(4, 3, 3, device="meta"), style_index=index)
    assert loss.shape == () and loss.dtype == torch.float32
    assert pk.content_loss(x, x, reduction="none").shape == x.shape
    assert pk.tv_loss(x, reduction="none").shape == (2,)
    y = pk.conditional_instance_norm(x, table, table, style_index=index, activation="relu")
    assert y.shape == x.shape and y.dtype == torch.float16 and y.device.type == "meta"


# --- modules check their options when built, not at the first forward --------------------------------------------
@pytest.mark.parametrize(
    "build,error,message",
    [
        (lambda: pk.nn.GramMatrix(normalize="c"), ValueError, "normalize must be one of"),
        (lambda: pk.nn.GramMatrix(out_dtype=torch.int32), TypeError, "out_dtype must be a floating"),
        (lambda: pk.nn.StyleLoss("features"), TypeError, "target_features must be a torch.Tensor"),
        (lambda: pk.nn.StyleLoss(target_gram=torch.rand(3, 4)), ValueError, r"target_gram must be \(C, C\)"),
        (lambda: pk.nn.StyleLoss(torch.rand(1, 3, 4, 4), weight=float("nan")), ValueError, "weight must be a finite"),
        (lambda: pk.nn.StyleLoss(torch.rand(1, 3, 4, 4), reduction="avg"), ValueError, "reduction must be one of"),
        (lambda: pk.nn.ContentLoss(None), TypeError, "target must be a torch.Tensor"),
        (lambda: pk.nn.ContentLoss(torch.rand(1, 3, 4, 4), weight="1"), TypeError, "weight must be a real number"),
        (lambda: pk.nn.TotalVariation(kind="tv"), ValueError, "kind must be one of"),
        (lambda: pk.nn.TotalVariation(eps=0), ValueError, "eps must be a finite positive"),
        (lambda: pk.nn.InstanceNorm2d(0), ValueError, "num_features must be >= 1"),
        (lambda: pk.nn.InstanceNorm2d(8, activation="gelu"), ValueError, "activation must be one of"),
        (lambda: pk.nn.ConditionalInstanceNorm2d(2.5, 8), TypeError, "num_styles must be an int"),
        (lambda: pk.nn.ConditionalInstanceNorm2d(True, 8), TypeError, "num_styles must be an int"),
    ],
    ids=[
        "gram-normalize",
        "gram-out_dtype",
        "style-features",
        "style-gram-shape",
        "style-weight",
        "style-reduction",
        "content-target",
        "content-weight",
        "tv-kind",
        "tv-eps",
        "in-features",
        "in-activation",
        "cin-float-styles",
        "cin-bool-styles",
    ],
)
def test_modules_refuse_bad_options_when_built(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_numpy_scalars_are_real_numbers_and_tensors_are_refused_clearly():
    x = torch.randn(2, 3, 4, 4)
    expected = pk.content_loss(x, x * 0, weight=0.5)
    assert torch.equal(pk.content_loss(x, x * 0, weight=np.float32(0.5)), expected)
    assert torch.equal(pk.tv_loss(x, weight=np.int64(2)), pk.tv_loss(x, weight=2))
    with pytest.raises(TypeError, match="weight must be a real number .* got a Tensor"):
        pk.content_loss(x, x * 0, weight=torch.tensor(0.5))
    with pytest.raises(TypeError, match="weight must be a real number, got bool"):
        pk.style_loss(x, torch.eye(3), weight=np.bool_(True))


@pytest.mark.parametrize(
    "call",
    [
        lambda x: pk.instance_norm(x, eps=1e-50),
        lambda x: pk.tv_loss(x, kind="isotropic", eps=1e-45),
        lambda x: pk.gram_matrix(x, normalize=1e-50),
        lambda x: pk.style_loss(x, torch.eye(3), normalize=1e-40),
    ],
    ids=["in-eps", "tv-eps", "gram-normalize", "style-normalize"],
)
def test_values_that_float32_would_silently_round_away_are_refused(call):
    """An explicit eps of 1e-50 would become 0 in the fp32 kernels (inf / NaN on constant planes)."""
    with pytest.raises(ValueError, match="not representable in float32"):
        call(torch.zeros(1, 3, 4, 4))
    call(torch.zeros(1, 3, 4, 4, dtype=torch.float64))  # float64 accumulates in float64: accepted
