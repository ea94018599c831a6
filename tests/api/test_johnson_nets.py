"""Johnson et al.'s transform / super-resolution nets and their model files (perceptual_kernels.api.johnson_nets)."""

from __future__ import annotations

import json
import pickle
import sys

import pytest
import torch
from _helpers import kwargs_id, shape_id, text_id
from torch import nn

from perceptual_kernels.api import johnson_nets as jn


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def conv(i: int, o: int, k: int, bias: bool = False) -> int:
    return i * o * k * k + (o if bias else 0)


def transform_params(c: int = 32, blocks: int = 5, styles: int = 1) -> int:
    """TransformNet's parameter count written out from the layer plan (bias-free convs before norms)."""
    convs = (
        conv(3, c, 9)
        + conv(c, 2 * c, 3)
        + conv(2 * c, 4 * c, 3)
        + blocks * 2 * conv(4 * c, 4 * c, 3)
        + conv(4 * c, 2 * c, 3)
        + conv(2 * c, c, 3)
        + conv(c, 3, 9, bias=True)
    )
    norm_channels = c + 2 * c + 4 * c + blocks * 2 * 4 * c + 2 * c + c
    return convs + 2 * styles * norm_channels


def sr_params(factor: int = 4, c: int = 64, blocks: int = 4) -> int:
    stages = factor.bit_length() - 1
    convs = conv(3, c, 9) + blocks * 2 * conv(c, c, 3) + stages * conv(c, c, 3) + conv(c, 3, 9, bias=True)
    return convs + 2 * c * (1 + 2 * blocks + stages)


def small_transform(num_styles: int | None = None, output: str = "sigmoid") -> jn.TransformNet:
    return jn.TransformNet(num_styles, channels=8, residual_blocks=2, output=output)


def randomize_norms(net: nn.Module) -> None:
    """Give every norm distinct affine parameters (they start at gamma = 1, beta = 0)."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("gamma", "norm.weight", "norm1.weight", "norm2.weight")):
                p.uniform_(0.5, 1.5)
            elif name.endswith(("beta", "norm.bias", "norm1.bias", "norm2.bias")):
                p.uniform_(-0.5, 0.5)


# ---------------------------------------------------------------------------------------------------------------
# TransformNet
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 3, 33, 47), (2, 3, 64, 64), (1, 3, 5, 6)], ids=shape_id)
@pytest.mark.parametrize("output", ["sigmoid", "tanh"])
def test_transform_shape_and_range(shape, output):
    net = jn.TransformNet(output=output)
    y = net(torch.rand(shape))
    assert y.shape == shape
    assert y.min() >= 0 and y.max() <= 1 and torch.isfinite(y).all()


def test_transform_channels_last_matches_contiguous():
    net = small_transform()
    randomize_norms(net)
    x = torch.rand(2, 3, 33, 47)
    y = net(x)
    y_cl = net(x.to(memory_format=torch.channels_last))
    assert y_cl.shape == y.shape
    torch.testing.assert_close(y_cl, y, rtol=1e-4, atol=1e-5)


def test_transform_input_checks():
    net = small_transform()
    with pytest.raises(ValueError, match="at least 5x5"):
        net(torch.rand(1, 3, 4, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.rand(1, 1, 16, 16))
    with pytest.raises(TypeError):
        net(torch.zeros(1, 3, 16, 16, dtype=torch.long))


@pytest.mark.parametrize(
    "kwargs",
    [{"output": "relu"}, {"channels": 0}, {"residual_blocks": 2.5}, {"num_styles": 0}, {"num_styles": True}],
    ids=kwargs_id,
)
def test_transform_constructor_checks(kwargs):
    with pytest.raises(ValueError):
        jn.TransformNet(**kwargs)


def test_style_index_and_weights_select_rows():
    net = small_transform(num_styles=4)
    randomize_norms(net)
    x = torch.rand(2, 3, 21, 18)
    y = net(x, style_index=torch.tensor([3, 1]))
    # one sample at a time, by index, by one-hot weights and by a Python int
    torch.testing.assert_close(y[:1], net(x[:1], style_index=torch.tensor([3])), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y[1:], net(x[1:], style_index=1), rtol=1e-5, atol=1e-6)
    one_hot = torch.nn.functional.one_hot(torch.tensor([3, 1]), 4).float()
    torch.testing.assert_close(net(x, style_weights=one_hot), y, rtol=1e-5, atol=1e-6)
    # different styles give different images
    assert not torch.allclose(net(x, style_index=0), net(x, style_index=3), atol=1e-3)


def test_conditional_row_equals_plain_instance_norm_net():
    """Style s of a 4-style net == a single-style (affine InstanceNorm2d) net whose weight / bias are row s."""
    net = small_transform(num_styles=4)
    randomize_norms(net)
    plain = small_transform()
    state = {}
    for key, value in net.state_dict().items():
        if key.endswith(".gamma"):
            key, value = key[: -len("gamma")] + "weight", value[2]
        elif key.endswith(".beta"):
            key, value = key[: -len("beta")] + "bias", value[2]
        state[key] = value
    plain.load_state_dict(state)
    x = torch.rand(1, 3, 19, 24)
    torch.testing.assert_close(plain(x), net(x, style_index=2), rtol=1e-5, atol=1e-6)


def test_convex_mix_equals_model_with_mixed_parameters():
    net = small_transform(num_styles=4)
    randomize_norms(net)
    w = torch.tensor([0.0, 0.3, 0.0, 0.7])
    mixed = small_transform(num_styles=1)
    state = {
        key: (w @ value)[None] if key.endswith((".gamma", ".beta")) else value
        for key, value in net.state_dict().items()
    }
    mixed.load_state_dict(state)
    x = torch.rand(2, 3, 17, 22)
    y = net(x, style_weights=w.expand(2, 4))
    torch.testing.assert_close(y, mixed(x), rtol=1e-5, atol=1e-6)
    # and it is neither endpoint
    assert not torch.allclose(y, net(x, style_index=1), atol=1e-4)
    assert not torch.allclose(y, net(x, style_index=3), atol=1e-4)


def test_style_selection_errors():
    x = torch.rand(1, 3, 16, 16)
    multi = small_transform(num_styles=4)
    with pytest.raises(ValueError, match="4 styles"):
        multi(x)
    with pytest.raises(ValueError, match="not both"):
        multi(x, style_index=torch.tensor([0]), style_weights=torch.full((1, 4), 0.25))
    with pytest.raises(ValueError):
        multi(x, style_index=torch.tensor([4]))
    with pytest.raises(ValueError):
        multi(x, style_weights=torch.full((1, 3), 1 / 3))
    with pytest.raises(ValueError, match="num_styles=None"):
        small_transform()(x, style_index=torch.tensor([0]))


def test_single_style_needs_no_selection():
    net = small_transform(num_styles=1)
    randomize_norms(net)
    x = torch.rand(2, 3, 15, 20)
    y = net(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, net(x, style_index=torch.zeros(2, dtype=torch.long)))


@pytest.mark.parametrize("num_styles", [None, 3], ids=["single_style", "3_styles"])
def test_transform_gradient_reaches_every_parameter(num_styles):
    net = small_transform(num_styles=num_styles)
    randomize_norms(net)
    kwargs = {} if num_styles is None else {"style_weights": torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3]])}
    x = torch.rand(2, 3, 18, 13, requires_grad=True)
    (net(x, **kwargs) * torch.randn(2, 3, 18, 13)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------
# SuperResolutionNet
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 4, 8], ids=["x2", "x4", "x8"])
@pytest.mark.parametrize("norm", ["batch", "instance"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_super_resolution_shape_and_range(factor, norm, training):
    net = jn.SuperResolutionNet(factor, channels=16, residual_blocks=2, norm=norm)
    x = torch.rand(2, 3, 9, 7)
    net.train(training)
    y = net(x)
    assert y.shape == (2, 3, 9 * factor, 7 * factor)
    assert y.min() >= 0 and y.max() <= 1 and torch.isfinite(y).all()
    if not training:  # eval mode: channels_last input gives the same output
        y_cl = net(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(y_cl, y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("factor", [1, 3, 16, 4.0, True], ids=["1", "3", "16", "float_4.0", "True"])
def test_super_resolution_refuses_bad_factors(factor):
    with pytest.raises(ValueError, match="factor"):
        jn.SuperResolutionNet(factor)


def test_super_resolution_default_x4_x8_and_errors():
    assert jn.SuperResolutionNet(4)(torch.rand(1, 3, 6, 5)).shape == (1, 3, 24, 20)
    assert jn.SuperResolutionNet(8)(torch.rand(1, 3, 5, 6)).shape == (1, 3, 40, 48)
    with pytest.raises(ValueError, match="norm"):
        jn.SuperResolutionNet(4, norm="layer")
    with pytest.raises(ValueError, match="at least 5x5"):
        jn.SuperResolutionNet(4)(torch.rand(1, 3, 4, 8))


def test_super_resolution_gradient_reaches_every_parameter():
    net = jn.SuperResolutionNet(4, channels=8, residual_blocks=2)
    (net(torch.rand(2, 3, 7, 6)) * torch.randn(2, 3, 28, 24)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


PARAMETER_COUNTS = {
    # name: (the net, the parameter count written out from the papers' architectures)
    "TransformNet()": (lambda: jn.TransformNet(), lambda: transform_params()),
    "TransformNet(num_styles=32)": (lambda: jn.TransformNet(num_styles=32), lambda: transform_params(styles=32)),
    "SuperResolutionNet(4)": (lambda: jn.SuperResolutionNet(4), lambda: sr_params(4)),
    "SuperResolutionNet(8)": (lambda: jn.SuperResolutionNet(8), lambda: sr_params(8)),
}


@pytest.mark.parametrize("name", list(PARAMETER_COUNTS), ids=text_id)
def test_parameter_counts(capsys, name):
    net, expected = (make() for make in PARAMETER_COUNTS[name])
    with capsys.disabled():
        print(f"\n  {name}: {n_params(net):,} parameters")
    assert n_params(net) == expected, name


def test_each_extra_style_costs_3200_parameters():
    # Dumoulin et al.: each extra style costs ~3K parameters (2 * sum of normalised channels)
    assert transform_params(styles=2) - transform_params(styles=1) == 3200


# ---------------------------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "net",
    [jn.TransformNet(), jn.TransformNet(4, 16, 3, "tanh"), jn.SuperResolutionNet(8, 32, 2, "instance")],
    ids=["transform", "transform-4_styles-tanh", "super_resolution-x8-instance"],
)
def test_config_round_trip(net):
    config = jn.model_config(net)
    assert json.loads(json.dumps(config)) == config
    rebuilt = jn.build_model(config)
    assert type(rebuilt) is type(net) and jn.model_config(rebuilt) == config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "gan"},
        {},
        [],
        {"kind": "transform", "width": 3},
        {"kind": "transform", "channels": -1},
        {"kind": "super_resolution", "factor": 3},
        {"kind": "transform", "output": ["x"]},
    ],
    ids=lambda bad: kwargs_id(bad) if isinstance(bad, dict) and bad else "empty_dict" if bad == {} else "list",
)
def test_build_model_refuses_bad_configs(bad):
    with pytest.raises(ValueError):
        jn.build_model(bad)


def test_config_defaults_and_errors():
    assert jn.model_config(jn.build_model({"kind": "transform"})) == jn.model_config(jn.TransformNet())
    with pytest.raises(TypeError):
        jn.model_config(nn.Conv2d(3, 3, 1))


# ---------------------------------------------------------------------------------------------------------------
# model files
# ---------------------------------------------------------------------------------------------------------------


def suffixes() -> list:
    """Weight-file suffixes to test: a torch file always, safetensors when the package is installed."""
    try:
        import safetensors  # noqa: F401

        st = ".safetensors"
    except ImportError:
        st = pytest.param(".safetensors", marks=pytest.mark.skip(reason="safetensors not installed"))
    return [".pth", st]


@pytest.mark.parametrize("suffix", suffixes())
def test_save_load_round_trip_transform(tmp_path, suffix):
    net = small_transform(num_styles=3)
    randomize_norms(net)
    path = jn.save_model(net, tmp_path / f"candy{suffix}", metadata={"styles": ["candy.jpg", "mosaic.jpg", "x"]})
    assert path == tmp_path / f"candy{suffix}" and path.is_file()
    assert (tmp_path / "candy.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["candy.json", f"candy{suffix}"]  # no temp files left

    loaded, metadata = jn.load_model(path)
    assert metadata == {"styles": ["candy.jpg", "mosaic.jpg", "x"]}
    assert not loaded.training and jn.model_config(loaded) == jn.model_config(net)
    x = torch.rand(2, 3, 19, 23)
    index = torch.tensor([2, 0])
    assert torch.equal(loaded(x, style_index=index), net.eval()(x, style_index=index))
    # the .json path works too
    again, _ = jn.load_model(tmp_path / "candy.json")
    assert torch.equal(again(x, style_index=index), loaded(x, style_index=index))


@pytest.mark.parametrize("suffix", suffixes())
def test_save_load_round_trip_super_resolution(tmp_path, suffix):
    net = jn.SuperResolutionNet(4, channels=8, residual_blocks=2)
    net(torch.rand(4, 3, 8, 8))  # a training step's forward: non-trivial batch-norm running statistics
    net.eval()
    path = jn.save_model(net, tmp_path / f"sr{suffix}")
    loaded, metadata = jn.load_model(str(path))
    assert metadata == {}
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.rand(1, 3, 7, 9)
    assert torch.equal(loaded(x), net(x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit deprecations raised by importing dynamo
def test_compiled_model_saves_like_the_plain_one(tmp_path):
    net = small_transform()
    compiled = torch.compile(net)  # not run: only the wrapper (state-dict keys prefixed "_orig_mod.") matters
    assert jn.model_config(compiled) == jn.model_config(net)
    loaded, _ = jn.load_model(jn.save_model(compiled, tmp_path / "m.pth"))
    assert loaded.state_dict().keys() == net.state_dict().keys()


def test_save_overwrites_and_config_contents(tmp_path):
    path = tmp_path / "m.pth"
    jn.save_model(small_transform(), path, metadata={"a": 1})
    jn.save_model(jn.SuperResolutionNet(2, channels=8, residual_blocks=1), path, metadata={"b": 2})
    document = json.loads((tmp_path / "m.json").read_text())
    assert document["config"] == {
        "kind": "super_resolution",
        "factor": 2,
        "channels": 8,
        "residual_blocks": 1,
        "norm": "batch",
    }
    assert document["metadata"] == {"b": 2} and document["weights"] == "m.pth"
    assert isinstance(jn.load_model(path)[0], jn.SuperResolutionNet)


def test_save_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="JSON"):
        jn.save_model(small_transform(), tmp_path / "m.pth", metadata={"x": object()})
    with pytest.raises(ValueError, match=".json"):
        jn.save_model(small_transform(), tmp_path / "m.json")
    with pytest.raises(TypeError):
        jn.save_model(nn.Linear(2, 2), tmp_path / "m.pth")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ImportError, match="pip install safetensors"):
        jn.save_model(small_transform(), tmp_path / "m.safetensors")


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        jn.load_model(tmp_path / "nothing.pth")
    path = jn.save_model(small_transform(), tmp_path / "m.pth")
    path.unlink()
    with pytest.raises(FileNotFoundError, match="m.pth"):
        jn.load_model(path)


def test_weights_that_do_not_fit_the_config(tmp_path):
    path = jn.save_model(jn.TransformNet(channels=8, residual_blocks=2), tmp_path / "m.pth")
    config_path = tmp_path / "m.json"
    document = json.loads(config_path.read_text())
    document["config"]["channels"] = 16
    config_path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"'down\.0\.conv\.weight' has shape \(8, 3, 9, 9\), expected \(16, 3, 9, 9\)"):
        jn.load_model(path)
    document["config"].update(channels=8, residual_blocks=3)
    config_path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"missing key 'residual\.2\.conv1\.weight'"):
        jn.load_model(path)
    document["config"].update(residual_blocks=1)
    config_path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"unexpected key 'residual\.1\.conv1\.weight'"):
        jn.load_model(path)
    document["config"] = {"kind": "pix2pix"}
    config_path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="unknown model kind"):
        jn.load_model(path)
    config_path.write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        jn.load_model(path)


class Payload:
    """A picklable non-tensor object: torch.load(weights_only=True) must refuse it."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_torch_files_are_loaded_weights_only(tmp_path, monkeypatch):
    path = jn.save_model(small_transform(), tmp_path / "m.pth")
    state = torch.load(path, weights_only=True)
    state["evil"] = Payload()
    torch.save(state, path)
    with pytest.raises(ValueError, match="not a valid model weights file.*could run code") as info:
        jn.load_model(path)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError) and "weights_only" not in str(info.value)

    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    path = jn.save_model(small_transform(), tmp_path / "m.pth")
    monkeypatch.setattr(torch, "load", spy)
    jn.load_model(path)
    assert calls and all(call.get("weights_only") is True for call in calls)


def test_non_state_dict_torch_file(tmp_path):
    path = jn.save_model(small_transform(), tmp_path / "m.pth")
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="state dict"):
        jn.load_model(path)
