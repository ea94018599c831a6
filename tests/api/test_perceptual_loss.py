"""PerceptualLoss (perceptual_kernels.api.perceptual_loss): the BasicSR-family formula (plain torch, random VGG19
weights) in loss and input gradient, the (perceptual, style) pair and the BasicSR constructor, the frozen VGG
(no parameters, no state-dict entries, eval mode), devices / dtypes / autocast / channels_last /
torch.compile / a DDP-wrapped generator, and the argument errors raised before any work."""

from __future__ import annotations

import warnings

import pytest
import torch
from _helpers import DEVICE
from plain_perceptual import plain_copy_of
from torch import nn

import perceptual_kernels as pk
from perceptual_kernels.api import BasicSRPerceptualLoss, PerceptualLoss
from perceptual_kernels.api.vgg import layer_names

SHAPE = (2, 3, 32, 24)  # batch > 1, H != W, conv5_4 / relu5_1 see 2 x 1
ESRGAN = {"conv5_4": 1.0}
BASICSR_STYLE = {"relu1_1": 0.1, "relu2_1": 0.1, "relu3_1": 1.0, "relu4_1": 1.0, "relu5_1": 1.0}
JOHNSON = {"relu2_2": 1.0}
SHALLOW = {"relu2_2": 1.0, "relu3_1": 0.5}  # cheap cases that need two layers
RTOL = 1e-5


def make_loss(layer_weights: dict[str, float], **options: object) -> PerceptualLoss:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights warn
        return PerceptualLoss(layer_weights, weights="random", **options).to(DEVICE)  # type: ignore[arg-type]


def images(input_range: tuple[int, int] = (0, 1), shape: tuple[int, ...] = SHAPE) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = input_range
    x = (torch.rand(shape, device=DEVICE) * (hi - lo) + lo).requires_grad_(True)
    return x, torch.rand(shape, device=DEVICE) * (hi - lo) + lo


def nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def plain_nhwc(plain):
    """The plain reference fed channels_last images, so that its convolutions run in the layout of
    ``PerceptualLoss(channels_last=True)`` (NCHW and NHWC convolutions round differently, ~1e-5 relative in the
    input gradient through 16 fp32 convs; that is not what the formula tests look at)."""
    return lambda x, target: plain(nhwc(x), nhwc(target))


def loss_and_grad(fn, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    out = fn(x, target)
    total = sum(t for t in out if t is not None) if isinstance(out, tuple) else out
    (grad,) = torch.autograd.grad(total, x)
    return total.detach(), grad


def assert_rel(actual: torch.Tensor, expected: torch.Tensor, what: str, rtol: float = RTOL) -> None:
    """Equal to ``rtol`` relative to the largest magnitude of ``expected`` (a scalar loss or a gradient)."""
    scale = expected.detach().abs().max().item()
    torch.testing.assert_close(actual.float(), expected.float(), rtol=rtol, atol=rtol * scale, msg=what)


# ------------------------------------------------------------------------------------- the BasicSR formula
@pytest.mark.parametrize("criterion", ["l1", "l2", "fro"])
@pytest.mark.parametrize("input_range", [(0, 1), (-1, 1)], ids=["0to1", "-1to1"])
@pytest.mark.parametrize(
    "layer_weights,style_weight", [(ESRGAN, 0.0), (BASICSR_STYLE, 1.0)], ids=["conv5_4", "relu_x_1+style"]
)
def test_matches_basicsr_formula(layer_weights, style_weight, input_range, criterion):
    loss = make_loss(layer_weights, criterion=criterion, style_weight=style_weight, input_range=input_range)
    plain = plain_copy_of(
        loss, layer_weights, criterion=criterion, style_weight=style_weight, range_norm=input_range == (-1, 1)
    )
    x, target = images(input_range)
    value, grad = loss_and_grad(loss, x, target)
    expected_value, expected_grad = loss_and_grad(plain_nhwc(plain), x, target)
    assert value.dtype == torch.float32 and value.dim() == 0
    assert_rel(value, expected_value, "loss")
    assert_rel(grad, expected_grad, "input gradient")


@pytest.mark.parametrize("criterion", ["l1", "fro"])
def test_pair_terms_match_and_disabled_terms_are_none(criterion):
    loss = make_loss(JOHNSON, criterion=criterion, style_weight=2.5, perceptual_weight=0.5, return_pair=True)
    plain = plain_copy_of(loss, JOHNSON, criterion=criterion, style_weight=2.5, perceptual_weight=0.5)
    x, target = images()
    (p, s), (pp, ps) = loss(x, target), plain_nhwc(plain)(x, target)
    assert_rel(p, pp, "perceptual term")
    assert_rel(s, ps, "style term")
    only_style = make_loss(JOHNSON, criterion=criterion, style_weight=2.5, perceptual_weight=0.0, return_pair=True)
    p0, s0 = only_style(x, target)
    assert p0 is None
    assert_rel(s0, ps, "style term alone")
    only_perceptual = make_loss(JOHNSON, criterion=criterion, return_pair=True)
    p1, s1 = only_perceptual(x, target)
    assert s1 is None
    assert_rel(p1, pp / 0.5, "perceptual term alone")
    summed = make_loss(JOHNSON, criterion=criterion, style_weight=2.5, perceptual_weight=0.5)(x, target)
    assert_rel(summed, pp + ps, "sum")


def test_style_criterion_is_separate():
    loss = make_loss(JOHNSON, criterion="l1", style_weight=1.0, style_criterion="l2", return_pair=True)
    p, s = loss(x := images()[0], t := images()[1])
    _, s_l2 = plain_nhwc(plain_copy_of(loss, JOHNSON, criterion="l2", style_weight=1.0))(x, t)
    p_l1, _ = plain_nhwc(plain_copy_of(loss, JOHNSON, criterion="l1", style_weight=1.0))(x, t)
    assert_rel(p, p_l1, "l1 perceptual term")
    assert_rel(s, s_l2, "l2 style term")


def test_vgg16_and_no_input_normalisation():
    layers = {"relu2_2": 1.0, "relu3_3": 0.5}
    loss = make_loss(layers, arch="vgg16", criterion="l2", normalize_input=False, style_weight=1.0)
    plain = plain_copy_of(loss, layers, "vgg16", criterion="l2", style_weight=1.0, use_input_norm=False)
    x, target = images()
    value, grad = loss_and_grad(loss, x, target)
    expected_value, expected_grad = loss_and_grad(plain_nhwc(plain), x, target)
    assert_rel(value, expected_value, "loss")
    assert_rel(grad, expected_grad, "input gradient")


def test_basicsr_constructor_is_a_one_import_swap():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # BasicSR's positional order: layer_weights, vgg_type, use_input_norm, range_norm, perceptual_weight,
        # style_weight, criterion
        loss = BasicSRPerceptualLoss(JOHNSON, "vgg19", True, True, 0.5, 2.0, "l1", weights="random").to(DEVICE)
    assert loss.input_range == (-1, 1) and loss.vgg.arch == "vgg19" and loss.vgg.normalize_input
    assert loss.return_pair and loss.style_criterion == "l1"
    plain = plain_copy_of(loss, JOHNSON, criterion="l1", perceptual_weight=0.5, style_weight=2.0, range_norm=True)
    x, target = images((-1, 1))
    (p, s), (pp, ps) = loss(x, target), plain_nhwc(plain)(x, target)
    assert_rel(p, pp, "perceptual term")
    assert_rel(s, ps, "style term")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = BasicSRPerceptualLoss({"conv5_4": 1.0}, weights="random")
    assert default.criterion == "l1" and default.style_weight == 0 and default.input_range == (0, 1)


def test_fro_at_equal_inputs_has_zero_gradient_and_nan_propagates():
    loss = make_loss(JOHNSON, criterion="fro", style_weight=1.0)
    x, _ = images()
    value, grad = loss_and_grad(loss, x, x.detach().clone())
    assert value.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))  # torch.norm's subgradient, no NaN
    bad = x.detach().clone()
    bad[0, 1, 3, 4] = float("nan")
    assert loss(bad, x.detach()).isnan()


def test_batched_target_pass_equals_two_passes():
    layers = SHALLOW
    two = make_loss(layers, criterion="l1", style_weight=1.0)
    one = make_loss(layers, criterion="l1", style_weight=1.0, batched_target=True)
    x, target = images()
    value, grad = loss_and_grad(two, x, target)
    batched_value, batched_grad = loss_and_grad(one, x, target)
    assert_rel(batched_value, value, "loss")
    assert_rel(batched_grad, grad, "input gradient")


# ---------------------------------------------------------------------------------------------- frozen VGG
def test_vgg_frozen_eval_and_out_of_parameters_and_state_dict():
    loss = make_loss({"relu3_1": 1.0, "relu2_2": 0.5}, style_weight=1.0)
    assert list(loss.parameters()) == []
    assert loss.state_dict() == {}
    buffers = dict(loss.vgg.features.named_buffers())
    assert "10.weight" in buffers and len(buffers) == 2 * 5 and all(not b.requires_grad for b in buffers.values())
    loss.train()
    assert loss.training and not loss.vgg.training and not any(m.training for m in loss.vgg.modules())
    graph = []  # whether each VGG pass records autograd history: x's does, the target's (no_grad) does not
    loss.vgg.features[-1].register_forward_hook(lambda m, args, out: graph.append(out.requires_grad))
    x, target = images()
    loss(x, target.requires_grad_(True)).backward()
    assert graph == [True, False] and target.grad is None
    assert x.grad is not None and all(b.grad is None for b in buffers.values())
    loss.load_state_dict({})  # nothing to load (strict)
    assert "normalize_input" not in repr(loss.vgg)


def test_to_device_and_dtype_move_the_vgg():
    loss = make_loss(JOHNSON, criterion="l2")
    loss64 = loss.to(torch.float64)
    assert all(b.dtype == torch.float64 for b in loss64.vgg.features.buffers())
    x, target = images()
    value = loss64(x.double(), target.double())
    assert value.dtype == torch.float64
    moved = make_loss(JOHNSON).to(torch.device(DEVICE))
    assert all(b.device.type == DEVICE.type for b in moved.buffers())


def test_autocast_bf16_vgg_fp32_loss():
    loss = make_loss(BASICSR_STYLE, criterion="l1", style_weight=1.0, return_pair=True)
    x, target = images()
    p32, s32 = loss(x, target)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        p16, s16 = loss(x, target)
        features = loss.vgg(x)
    assert features["relu3_1"].dtype == torch.bfloat16  # the VGG ran in bf16
    assert p16.dtype == torch.float32 and s16.dtype == torch.float32
    assert_rel(p16, p32, "bf16 perceptual term", rtol=3e-2)
    assert_rel(s16, s32, "bf16 style term", rtol=1e-1)
    (p16 + s16).backward()
    assert x.grad is not None and x.grad.dtype == torch.float32 and bool(x.grad.isfinite().all())


@pytest.mark.parametrize("input_layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("channels_last", [True, False], ids=["nhwc-vgg", "nchw-vgg"])
def test_vgg_layout_option(channels_last, input_layout):
    """``channels_last=True`` runs the VGG in NHWC whatever the inputs' layout, False in the inputs' own layout;
    either equals the plain formula run in that layout."""
    loss = make_loss(SHALLOW, criterion="l2", style_weight=1.0, channels_last=channels_last)
    plain = plain_copy_of(loss, SHALLOW, criterion="l2", style_weight=1.0)
    seen = []
    loss.vgg.features[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x, target = images()
    if input_layout == "channels_last":
        x, target = nhwc(x), nhwc(target)
    value, grad = loss_and_grad(loss, x, target)
    vgg_nhwc = channels_last or input_layout == "channels_last"
    assert len(seen) == 2 and all(t.is_contiguous(memory_format=torch.channels_last) == vgg_nhwc for t in seen)
    expected_value, expected_grad = loss_and_grad(
        plain_nhwc(plain) if vgg_nhwc else plain, x.contiguous(), target.contiguous()
    )
    assert_rel(value, expected_value, "loss")
    assert_rel(grad, expected_grad, "input gradient")


def test_torch_compile_matches_eager():
    loss = make_loss(JOHNSON, criterion="fro", style_weight=1.0)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    x, target = images(shape=(2, 3, 20, 24))
    value, grad = loss_and_grad(loss, x, target)
    compiled_value, compiled_grad = loss_and_grad(compiled, x, target)
    assert_rel(compiled_value, value, "compiled loss")
    assert_rel(compiled_grad, grad, "compiled input gradient")


def test_ddp_wrapped_generator(tmp_path):
    import torch.distributed as dist

    generator = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)).to(DEVICE)
    plain_generator = nn.Sequential(*[m for m in __import__("copy").deepcopy(generator)])
    loss = make_loss(JOHNSON, criterion="l1", style_weight=1.0)
    source, target = images()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(generator)
        loss(ddp(source.detach()), target).backward()
    finally:
        dist.destroy_process_group()
    loss(plain_generator(source.detach()), target).backward()
    for a, b in zip(generator.parameters(), plain_generator.parameters()):
        assert_rel(a.grad, b.grad, "generator gradient")
    assert list(loss.parameters()) == []


# ------------------------------------------------------------------------------------------------ lazy exports
def test_reachable_from_perceptual_kernels_nn():
    assert pk.nn.PerceptualLoss is PerceptualLoss and pk.nn.BasicSRPerceptualLoss is BasicSRPerceptualLoss
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        pk.nn.Nope  # noqa: B018


def test_core_import_does_not_import_the_api():
    import subprocess
    import sys

    code = "import sys, perceptual_kernels; print('perceptual_kernels.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ---------------------------------------------------------------------------------------------- bad arguments
VGG19 = ", ".join(layer_names("vgg19"))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"layer_weights": {"conv6_1": 1.0}}, ValueError, f"unknown vgg19 layer name.*'conv6_1'.*{VGG19}"),
        ({"layer_weights": {"relu3_4": 1.0}, "arch": "vgg16"}, ValueError, "unknown vgg16 layer name.*'relu3_4'"),
        ({"layer_weights": {}}, ValueError, "layer_weights is empty; valid vgg19 layer names"),
        ({"layer_weights": ["conv5_4"]}, TypeError, "layer_weights must be a dict"),
        ({"layer_weights": {"conv5_4": -1.0}}, ValueError, r"layer_weights\['conv5_4'\]"),
        ({"layer_weights": {"conv5_4": float("nan")}}, ValueError, r"layer_weights\['conv5_4'\]"),
        ({"layer_weights": {"conv5_4": 1e39}}, ValueError, r"layer_weights\['conv5_4'\] must be at most"),
        ({"arch": "vgg11"}, ValueError, "unknown VGG arch 'vgg11'"),
        ({"criterion": "l3"}, ValueError, r"criterion must be one of \['l1', 'l2', 'fro'\], got 'l3'"),
        ({"criterion": "L1"}, ValueError, "criterion must be one of"),
        ({"style_criterion": "cosine", "style_weight": 1.0}, ValueError, "style_criterion must be one of"),
        ({"perceptual_weight": float("inf")}, ValueError, "perceptual_weight"),
        ({"style_weight": -0.5}, ValueError, "style_weight"),
        ({"perceptual_weight": 0.0}, ValueError, "both 0"),
        ({"input_range": (0, 255)}, ValueError, r"input_range must be \(0, 1\) or \(-1, 1\)"),
        ({"input_range": "0-1"}, ValueError, "input_range must be"),
        ({"input_range": "01"}, ValueError, "input_range must be"),
        ({"input_range": (0, 1, 2)}, ValueError, "input_range must be"),
        ({"normalize_input": 1}, TypeError, "normalize_input must be True or False"),
        ({"return_pair": "yes"}, TypeError, "return_pair must be True or False"),
        ({"batched_target": None}, TypeError, "batched_target must be True or False"),
        ({"channels_last": "nhwc"}, TypeError, "channels_last must be True or False"),
        ({"pooling": "min"}, ValueError, "unknown pooling 'min'"),
        ({"weights": "/no/such/file.pth"}, FileNotFoundError, "neither 'imagenet'"),
    ],
    ids=lambda v: None if isinstance(v, dict) else "",
)
def test_bad_constructor_arguments(kwargs, error, match):
    kwargs = {"layer_weights": ESRGAN, "weights": "random", **kwargs}
    with pytest.raises(error, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        PerceptualLoss(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"vgg_type": "vgg19_bn"}, "vgg_type must be 'vgg19' or 'vgg16'"),
        ({"range_norm": 1}, "range_norm must be True or False"),
        ({"criterion": "huber"}, "criterion must be one of"),
    ],
)
def test_bad_basicsr_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        BasicSRPerceptualLoss(ESRGAN, weights="random", **kwargs)


def _fail(*args, **kwargs):
    raise AssertionError("the VGG ran before the inputs were checked")


@pytest.mark.parametrize(
    "make_inputs,error,match",
    [
        (lambda: (torch.rand(2, 3, 32, 24), torch.rand(2, 3, 24, 32)), ValueError, "same shape"),
        (lambda: (torch.rand(2, 3, 32, 24), torch.rand(1, 3, 32, 24)), ValueError, "same shape"),
        (lambda: (torch.rand(2, 1, 32, 24), torch.rand(2, 1, 32, 24)), ValueError, r"x must be RGB images"),
        (lambda: (torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)), ValueError, "too small for layer 'conv5_4'"),
        (lambda: (torch.rand(3, 32, 24), torch.rand(3, 32, 24)), ValueError, r"\(B, 3, H, W\)"),
        (lambda: (torch.rand(2, 3, 32, 24), torch.ones(2, 3, 32, 24, dtype=torch.uint8)), ValueError, "target must"),
        (lambda: (torch.rand(2, 3, 32, 24), "gt.png"), TypeError, "target must be a tensor"),
    ],
    ids=["hw-swapped", "batch", "gray", "too-small", "3d", "uint8-target", "not-a-tensor"],
)
def test_bad_forward_inputs_before_any_work(make_inputs, error, match):
    loss = make_loss(ESRGAN)
    loss.vgg.forward = _fail  # the checks run before the VGG
    x, target = make_inputs()
    with pytest.raises(error, match=match):
        loss(x.to(DEVICE), target.to(DEVICE) if isinstance(target, torch.Tensor) else target)
