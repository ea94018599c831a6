"""VGGFeatures (perceptual_kernels.api.vgg): layer names, truncation, weights loading in both key layouts and both
preprocessing formats, the offline hub / download paths, validation errors and Gatys weight normalisation.

Offline only: fake state dicts of the right shapes are saved to tmp_path; downloads are monkeypatched."""

from __future__ import annotations

import os
import re
import urllib.error

import pytest
import torch
from torch import nn

from perceptual_kernels.api import vgg

VGGFeatures = vgg.VGGFeatures
_REAL_DOWNLOAD = vgg._download

# torchvision's cfgs, written out independently of the module under test
CFG = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
CAFFE_MEAN_BGR = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)


def expected_names(arch):
    names, block, conv = [], 1, 0
    for v in CFG[arch]:
        if v == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 0
        else:
            conv += 1
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
    return names


def conv_entries(arch):
    """[(features index, name, out_channels, in_channels)] of every conv."""
    out, index, in_ch, names = [], 0, 3, expected_names(arch)
    for v in CFG[arch]:
        if v == "M":
            index += 1
        else:
            out.append((index, names[index], v, in_ch))
            in_ch, index = v, index + 2
    return out


def fake_state_dict(arch, layout="torchvision", upto=None, scale=1.0, zeros=False):
    """Conv weights (He-scaled normal times ``scale``) of ``arch`` up to the layer ``upto`` (all when None), in
    torchvision (``features.N.*`` plus a ``classifier.0.weight`` extra) or named (``convX_Y.*``) key layout."""
    depth = expected_names(arch).index(upto) + 1 if upto else len(expected_names(arch))
    sd = {}
    for index, name, out_ch, in_ch in conv_entries(arch):
        if index >= depth:
            break
        if zeros:
            w, b = torch.zeros(out_ch, in_ch, 3, 3), torch.zeros(out_ch)
        else:
            w = torch.randn(out_ch, in_ch, 3, 3) * (2.0 / (9 * in_ch)) ** 0.5 * scale
            b = torch.randn(out_ch) * 0.1 * scale
        prefix = f"features.{index}" if layout == "torchvision" else name
        sd[f"{prefix}.weight"], sd[f"{prefix}.bias"] = w, b
    if layout == "torchvision":
        sd["classifier.0.weight"] = torch.zeros(4, 8)  # extra keys are ignored
    return sd


def save(sd, path):
    torch.save(sd, path)
    return path


def reference_net(arch, sd, layout, depth, pooling="max"):
    """Hand-built nn.Sequential of torchvision's ``features[:depth]`` holding the weights of ``sd``."""
    names, modules = expected_names(arch), []
    convs = {index: (out_ch, in_ch) for index, _, out_ch, in_ch in conv_entries(arch)}
    for index in range(depth):
        name = names[index]
        if name.startswith("conv"):
            conv = nn.Conv2d(convs[index][1], convs[index][0], 3, padding=1)
            prefix = f"features.{index}" if layout == "torchvision" else name
            with torch.no_grad():
                conv.weight.copy_(sd[f"{prefix}.weight"])
                conv.bias.copy_(sd[f"{prefix}.bias"])
            modules.append(conv)
        elif name.startswith("relu"):
            modules.append(nn.ReLU())
        else:
            modules.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
    return nn.Sequential(*modules)


def reference_outputs(arch, sd, layout, layers, x, fmt, pooling="max"):
    names = expected_names(arch)
    depth = max(names.index(n) for n in layers) + 1
    net = reference_net(arch, sd, layout, depth, pooling)
    if fmt == "caffe":
        h = x[:, [2, 1, 0]] * 255.0 - CAFFE_MEAN_BGR
    else:
        h = (x - MEAN) / STD
    out = {}
    for index, module in enumerate(net):
        h = module(h)
        if names[index] in layers:
            out[names[index]] = h
    return {name: out[name] for name in layers}  # in the requested order


def assert_outputs_close(actual, expected):
    assert list(actual) == list(expected)
    for name in expected:
        scale = expected[name].abs().max().item() + 1e-6
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-5 * scale, msg=name)


def random_vgg(layers, **kwargs):
    with pytest.warns(UserWarning, match="random, untrained"):
        return VGGFeatures(layers, weights="random", **kwargs)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test downloads anything: the download raises unless a test replaces it."""

    def offline(url, progress=True):
        raise urllib.error.URLError("no network in the tests")

    monkeypatch.setattr(vgg, "_download", offline)


@pytest.fixture
def hub_dir(monkeypatch, tmp_path):
    """torch.hub.set_dir(tmp_path / "hub") for the test, restored afterwards; returns its checkpoints folder."""
    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)  # restored on teardown
    torch.hub.set_dir(tmp_path / "hub")
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


# ----------------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("arch,count", [("vgg16", 31), ("vgg19", 37)])
def test_layer_names(arch, count):
    names = vgg.layer_names(arch)
    assert len(names) == count
    assert names == expected_names(arch)
    assert names[:6] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1", "conv2_1"]
    assert names[-1] == "pool5"
    assert all(re.fullmatch(r"(conv|relu)\d_\d|pool\d", n) for n in names)
    assert list(vgg.VGG_CONFIGS[arch]) == CFG[arch]
    # torchvision's features indices of the convs
    convs = [i for i, n in enumerate(names) if n.startswith("conv")]
    if arch == "vgg16":
        assert convs == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    else:
        assert convs == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
        assert names.index("relu5_4") == 35
    assert vgg.layer_names(arch) is not vgg.layer_names(arch)  # a fresh list each time


def test_unknown_arch_pooling_format():
    with pytest.raises(ValueError, match="vgg11"):
        vgg.layer_names("vgg11")
    with pytest.raises(ValueError, match="arch"):
        VGGFeatures(["relu1_1"], arch="vgg11", weights="random")
    with pytest.raises(ValueError, match="pooling"):
        VGGFeatures(["relu1_1"], weights="random", pooling="min")
    with pytest.raises(ValueError, match="weights_format"):
        VGGFeatures(["relu1_1"], weights="random", weights_format="keras")
    with pytest.raises(ValueError, match="weights_format"):
        VGGFeatures(["relu1_1"], weights="imagenet", weights_format="caffe")
    with pytest.raises(FileNotFoundError, match="no_such_file"):
        VGGFeatures(["relu1_1"], weights="no_such_file.pth")


def test_unknown_layer_lists_valid_names():
    with pytest.raises(ValueError) as info:
        VGGFeatures(["relu1_1", "relu5_4"], arch="vgg16", weights="random")
    message = str(info.value)
    assert "'relu5_4'" in message and "vgg16" in message
    assert all(name in message for name in expected_names("vgg16"))
    assert "conv3_4" not in message  # vgg19 only
    with pytest.raises(ValueError, match="conv1_1"):
        VGGFeatures(["relu9_9"], weights="random")


# ------------------------------------------------------------------------------------------------ structure
def test_truncation_and_state_dict_keys():
    model = random_vgg(["relu2_1"])
    assert len(model.features) == 7 == expected_names("vgg19").index("relu2_1") + 1
    assert model.feature_names == tuple(expected_names("vgg19")[:7])
    assert isinstance(model.features[-1], nn.ReLU)
    assert sorted(model.state_dict()) == sorted(f"features.{i}.{p}" for i in (0, 2, 5) for p in ("weight", "bias"))
    assert all(not m.inplace for m in model.features if isinstance(m, nn.ReLU))
    assert all(isinstance(m, nn.MaxPool2d) for m in model.features if "Pool" in type(m).__name__)
    full = random_vgg(["pool5"], arch="vgg16")
    assert len(full.features) == 31


def test_layers_order_and_duplicates():
    model = random_vgg(["relu2_1", "conv1_1", "relu2_1"])
    assert model.layers == ("relu2_1", "conv1_1")
    out = model(torch.rand(1, 3, 8, 8))
    assert list(out) == ["relu2_1", "conv1_1"]
    assert out["conv1_1"].shape == (1, 64, 8, 8) and out["relu2_1"].shape == (1, 128, 4, 4)


def test_frozen_eval_and_input_gradients():
    model = random_vgg(["relu1_2"])
    assert not model.training and all(not p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training and all(not m.training for m in model.modules())
    assert all(not p.requires_grad for p in model.parameters())
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    model(x)["relu1_2"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------------------- weights and outputs
@pytest.mark.parametrize(
    "arch,layers",
    [
        ("vgg19", ["conv1_1", "relu1_2", "pool1", "relu2_1", "relu3_4"]),
        ("vgg16", ["relu3_3", "relu1_1", "pool3"]),
    ],
    ids=["vgg19-conv1_1_to_relu3_4", "vgg16-relu3_3_relu1_1_pool3"],
)
@pytest.mark.parametrize("layout", ["torchvision", "named"])
@pytest.mark.parametrize("fmt", ["torchvision", "caffe"])
def test_outputs_match_hand_built_sequential(tmp_path, arch, layers, layout, fmt):
    deepest = max(layers, key=expected_names(arch).index)
    sd = fake_state_dict(arch, layout, upto=deepest)
    path = save(sd, tmp_path / "weights.pth")
    model = VGGFeatures(layers, arch=arch, weights=path, weights_format=fmt)
    assert model.weights_format == fmt and model.arch == arch and model.layers == tuple(layers)
    assert str(path) in model.weights_description
    x = torch.rand(2, 3, 32, 32)
    assert_outputs_close(model(x), reference_outputs(arch, sd, layout, layers, x, fmt))


def test_avg_pooling(tmp_path):
    layers = ["pool1", "relu2_2", "pool2"]
    sd = fake_state_dict("vgg19", upto="pool2")
    model = VGGFeatures(layers, weights=str(save(sd, tmp_path / "w.pth")), pooling="avg")
    assert model.pooling == "avg"
    pools = [m for m in model.features if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    assert len(pools) == 2 and all(isinstance(m, nn.AvgPool2d) for m in pools)
    x = torch.rand(1, 3, 16, 20)
    expected = reference_outputs("vgg19", sd, "torchvision", layers, x, "torchvision", pooling="avg")
    assert_outputs_close(model(x), expected)


@pytest.mark.parametrize("fmt", ["torchvision", "caffe"])
def test_channels_last(tmp_path, fmt):
    layers = ["relu1_1", "pool1", "relu2_1"]
    sd = fake_state_dict("vgg19", upto="relu2_1")
    model = VGGFeatures(layers, weights=save(sd, tmp_path / "w.pth"), weights_format=fmt)
    x = torch.rand(2, 3, 16, 16)
    out_cl = model(x.contiguous(memory_format=torch.channels_last))
    out = model(x)
    for name in layers:
        assert out_cl[name].is_contiguous(memory_format=torch.channels_last), (fmt, name)
        torch.testing.assert_close(out_cl[name], out[name], rtol=1e-5, atol=1e-5 * out[name].abs().max().item())


def test_pre_activation_conv_outputs_by_name(tmp_path):
    """``conv5_4`` is the conv output before its ReLU (SRGAN's VGG54 / ESRGAN); the stack ends at it."""
    sd = fake_state_dict("vgg19", upto="conv5_4")
    model = VGGFeatures(["conv5_4", "relu2_2", "conv2_2"], weights=save(sd, tmp_path / "w.pth"))
    assert isinstance(model.features[-1], nn.Conv2d) and model.feature_names[-1] == "conv5_4"
    x = torch.rand(1, 3, 16, 16)
    out = model(x)
    assert_outputs_close(
        out, reference_outputs("vgg19", sd, "torchvision", ["conv5_4", "relu2_2", "conv2_2"], x, "torchvision")
    )
    assert (out["conv5_4"] < 0).any() and (out["conv2_2"] < 0).any()  # not rectified
    torch.testing.assert_close(out["relu2_2"], torch.relu(out["conv2_2"]))  # the returned conv output is not clobbered


@pytest.mark.parametrize("fmt", ["torchvision", "caffe"])
def test_without_input_normalisation(tmp_path, fmt):
    """``normalize_input=False``: the images go to conv1_1 as they are, whatever the weights' format."""
    sd = fake_state_dict("vgg19", upto="relu2_1")
    path = save(sd, tmp_path / "w.pth")
    model = VGGFeatures(["relu1_1", "relu2_1"], weights=path, weights_format=fmt, normalize_input=False)
    assert not model.normalize_input and "normalize_input=False" in repr(model)
    assert VGGFeatures(["relu1_1"], weights=path, weights_format=fmt).normalize_input
    x = torch.rand(2, 3, 8, 12)
    net = reference_net("vgg19", sd, "torchvision", 7)
    torch.testing.assert_close(model(x)["relu2_1"], net(x), rtol=1e-5, atol=1e-5 * net(x).abs().max().item())
    with pytest.raises(TypeError, match="normalize_input must be True or False"):
        VGGFeatures(["relu1_1"], weights=path, normalize_input="no")


def test_state_dict_round_trip(tmp_path):
    model = random_vgg(["relu2_2"], arch="vgg16", seed=3)
    path = save(model.state_dict(), tmp_path / "mine.pth")
    again = VGGFeatures(["relu2_2"], arch="vgg16", weights=path)
    assert again.weights_format == "torchvision"  # Kaiming-scale weights are not taken as Caffe
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(again(x)["relu2_2"], model(x)["relu2_2"])


# -------------------------------------------------------------------------------------- input validation
def test_min_size():
    assert random_vgg(["relu1_1"]).min_size == 1
    assert random_vgg(["pool1"]).min_size == 2
    assert random_vgg(["relu2_1"]).min_size == 2
    assert random_vgg(["relu3_1"]).min_size == 4
    assert random_vgg(["relu1_1", "relu4_1"]).min_size == 8
    assert random_vgg(["relu5_1"]).min_size == 16
    model = random_vgg(["relu1_1", "pool5"], arch="vgg16")
    assert model.min_size == 32
    assert model(torch.rand(1, 3, 32, 33))["pool5"].shape == (1, 512, 1, 1)
    with pytest.raises(ValueError, match=r"'pool5'.*32"):
        model(torch.rand(1, 3, 31, 64))


def test_input_validation():
    model = random_vgg(["relu1_1", "relu4_1"])
    with pytest.raises(ValueError, match="relu4_1"):
        model(torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(1, 4, 16, 16))
    with pytest.raises(ValueError, match="floating"):
        model(torch.randint(0, 255, (1, 3, 16, 16), dtype=torch.uint8))


# ----------------------------------------------------------------------------------- wrong architectures
@pytest.mark.parametrize("layout,key", [("torchvision", "'features.16.weight'"), ("named", "'conv3_4.weight'")])
def test_vgg16_file_as_vgg19(tmp_path, layout, key):
    path = save(fake_state_dict("vgg16", layout, zeros=True), tmp_path / "vgg16.pth")
    with pytest.raises(ValueError) as info:
        VGGFeatures(["relu5_4"], arch="vgg19", weights=path)
    message = str(info.value)
    assert key in message and "(256, 256, 3, 3)" in message and "vgg16" in message, message
    # the shared part loads fine
    assert len(VGGFeatures(["relu3_3"], arch="vgg19", weights=path, weights_format="torchvision").features) == 16


def test_shape_mismatch_names_key_and_shapes(tmp_path):
    sd = fake_state_dict("vgg19", upto="relu1_2")
    sd["features.2.weight"] = torch.randn(32, 64, 3, 3)
    path = save(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"'features\.2\.weight'.*expected \(64, 64, 3, 3\), found \(32, 64, 3, 3\)"):
        VGGFeatures(["relu1_2"], weights=path)


def test_unrelated_state_dict(tmp_path):
    resnet_like = {
        "conv1.weight": torch.randn(64, 3, 7, 7),
        "bn1.weight": torch.ones(64),
        "layer1.0.conv1.weight": torch.randn(64, 64, 3, 3),
        "fc.weight": torch.randn(10, 512),
    }
    path = save(resnet_like, tmp_path / "resnet.pth")
    with pytest.raises(ValueError) as info:
        VGGFeatures(["relu1_1"], weights=path)
    message = str(info.value)
    assert "'features.0.weight'" in message and "(64, 3, 3, 3)" in message
    assert "conv1.weight" in message and "(64, 3, 7, 7)" in message
    with pytest.raises(ValueError, match="state dict"):
        VGGFeatures(["relu1_1"], weights=save([torch.zeros(1)], tmp_path / "list.pth"))


# ------------------------------------------------------------------------------------ imagenet / hub paths
def test_imagenet_from_hub_dir(hub_dir, monkeypatch):
    sd = fake_state_dict("vgg19", upto="relu2_1")
    save(sd, hub_dir / "vgg19-dcbb9e9d.pth")

    def must_not_download(url, progress=True):
        raise AssertionError("the file is in the hub dir: no download")

    monkeypatch.setattr(vgg, "_download", must_not_download)
    model = VGGFeatures(["relu1_1", "relu2_1"], weights="imagenet")
    assert model.weights_format == "torchvision"
    assert str(hub_dir / "vgg19-dcbb9e9d.pth") in model.weights_description
    x = torch.rand(1, 3, 16, 16)
    assert_outputs_close(
        model(x), reference_outputs("vgg19", sd, "torchvision", ["relu1_1", "relu2_1"], x, "torchvision")
    )


def test_imagenet_download_call(hub_dir, monkeypatch):
    sd = fake_state_dict("vgg16", upto="relu1_1")
    calls = []

    def fake_load_state_dict_from_url(url, **kwargs):
        calls.append((url, kwargs))
        return sd

    monkeypatch.setattr(vgg, "_download", _REAL_DOWNLOAD)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_load_state_dict_from_url)
    model = VGGFeatures(["relu1_1"], arch="vgg16", weights="imagenet", progress=False)
    assert calls == [
        (
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            {"progress": False, "check_hash": True, "weights_only": True},
        )
    ]
    x = torch.rand(1, 3, 4, 4)
    assert_outputs_close(model(x), reference_outputs("vgg16", sd, "torchvision", ["relu1_1"], x, "torchvision"))


@pytest.mark.parametrize(
    "error",
    [urllib.error.URLError("[Errno -3] Temporary failure in name resolution"), OSError("Network is unreachable")],
    ids=["dns_failure", "network_unreachable"],
)
def test_imagenet_offline_error(hub_dir, monkeypatch, error):
    def offline(url, progress=True):
        raise error

    monkeypatch.setattr(vgg, "_download", offline)
    with pytest.raises(RuntimeError) as info:
        VGGFeatures(["relu1_1"], weights="imagenet")
    message = str(info.value)
    assert "vgg19-dcbb9e9d.pth" in message
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
    assert os.path.join(torch.hub.get_dir(), "checkpoints") == str(hub_dir)
    assert str(hub_dir) in message
    assert "weights='random'" in message
    assert info.value.__cause__ is error


def test_caffe_keyword(hub_dir):
    with pytest.raises(RuntimeError) as info:
        VGGFeatures(["relu1_1"], arch="vgg16", weights="caffe")
    assert "vgg16-00b39a1b.pth" in str(info.value) and str(hub_dir) in str(info.value)
    sd = fake_state_dict("vgg16", upto="relu2_1")
    save(sd, hub_dir / "vgg16-00b39a1b.pth")
    model = VGGFeatures(["relu1_2", "relu2_1"], arch="vgg16", weights="caffe")
    assert model.weights_format == "caffe" and "vgg16-00b39a1b.pth" in model.weights_description
    x = torch.rand(1, 3, 8, 8)
    assert_outputs_close(model(x), reference_outputs("vgg16", sd, "torchvision", ["relu1_2", "relu2_1"], x, "caffe"))


# -------------------------------------------------------------------------------------- format detection
@pytest.mark.parametrize("name", ["vgg19-d01eb7cb.pth", "my_Caffe_vgg.pth"])
def test_caffe_detected_by_file_name(tmp_path, name):
    sd = fake_state_dict("vgg19", upto="relu1_2")  # torchvision-like magnitude: the name decides
    model = VGGFeatures(["relu1_2"], weights=save(sd, tmp_path / name))
    assert model.weights_format == "caffe"
    assert "detected from the file name" in model.weights_description
    x = torch.rand(1, 3, 4, 4)
    assert_outputs_close(model(x), reference_outputs("vgg19", sd, "torchvision", ["relu1_2"], x, "caffe"))


def test_format_detected_by_magnitude(tmp_path):
    small = save(fake_state_dict("vgg19", "named", upto="relu1_1", scale=0.01), tmp_path / "a.pth")
    model = VGGFeatures(["relu1_1"], weights=small)
    assert model.weights_format == "caffe" and "magnitude" in model.weights_description
    normal = save(fake_state_dict("vgg19", "named", upto="relu1_1"), tmp_path / "b.pth")
    model = VGGFeatures(["relu1_1"], weights=normal)
    assert model.weights_format == "torchvision" and "magnitude" in model.weights_description
    forced = VGGFeatures(["relu1_1"], weights=small, weights_format="torchvision")
    assert forced.weights_format == "torchvision" and "given by weights_format" in forced.weights_description


# ------------------------------------------------------------------------------------------ random weights
def test_random_weights_warning_and_seed():
    a = random_vgg(["relu2_1"], seed=1)
    b = random_vgg(["relu2_1"], seed=1)
    c = random_vgg(["relu2_1"], seed=2)
    assert a.weights_format == "random" and "seed 1" in a.weights_description
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert not torch.equal(a.features[0].weight, c.features[0].weight)
    assert all(torch.count_nonzero(m.bias) == 0 for m in a.features if isinstance(m, nn.Conv2d))
    w = a.features[5].weight  # Kaiming normal, fan_out: std sqrt(2 / (128 * 9))
    assert abs(w.std().item() / (2 / (128 * 9)) ** 0.5 - 1) < 0.05
    # independent of the global RNG and of the truncation depth
    torch.manual_seed(123)
    deeper = random_vgg(["relu3_1"], seed=1)
    assert torch.equal(deeper.features[0].weight, a.features[0].weight)
    # torchvision preprocessing
    x = torch.rand(1, 3, 4, 4)
    sd = {k: v for k, v in a.state_dict().items()}
    assert_outputs_close(a(x), reference_outputs("vgg19", sd, "torchvision", ["relu2_1"], x, "torchvision"))


# ----------------------------------------------------------------------------------- weight normalisation
def _channel_means(t):
    return t.double().mean(dim=(0, 2, 3))


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_normalize_weights(pooling):
    layers = ["relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1"]
    model = random_vgg(layers, pooling=pooling)
    with torch.no_grad():
        model.features[0].bias[5] = -1e4  # a dead filter: mean activation 0, left unchanged
    dead_weight = model.features[0].weight[5].clone()
    images = torch.rand(2, 3, 32, 32)
    before = model(images)
    model.normalize_weights_(images)
    after = model(images)
    assert torch.equal(model.features[0].weight[5], dead_weight)
    assert "mean activation 1" in model.weights_description
    for name in layers:
        means, means_before = _channel_means(after[name]), _channel_means(before[name])
        alive = means_before > 0
        # filters active at a handful of positions only (mean ~1e-7 of the busiest) carry float32 cancellation
        # noise: check them loosely
        busy = means_before > 1e-4 * means_before.max()
        assert busy.sum() > 0
        torch.testing.assert_close(means[busy], torch.ones_like(means[busy]), rtol=1e-4, atol=0)
        torch.testing.assert_close(means[alive], torch.ones_like(means[alive]), rtol=1e-2, atol=0)
        assert torch.all(means[~alive] == 0)
        # the function is unchanged up to a positive per-filter scale
        ratio = (_channel_means(after[name]) / _channel_means(before[name]).clamp_min(1e-300)).view(1, -1, 1, 1)
        torch.testing.assert_close(
            after[name].double(),
            before[name].double() * ratio * alive.view(1, -1, 1, 1),
            rtol=1e-4,
            atol=1e-4 * after[name].abs().max().item(),
        )


def test_normalize_weights_deepest_conv_and_caffe(tmp_path):
    sd = fake_state_dict("vgg16", upto="conv2_1")
    model = VGGFeatures(["conv2_1"], arch="vgg16", weights=save(sd, tmp_path / "caffe.pth"))
    assert model.weights_format == "caffe"
    images = torch.rand(3, 3, 16, 16)
    means_before = _channel_means(torch.relu(model(images)["conv2_1"]))
    model.normalize_weights_(images)
    means = _channel_means(torch.relu(model(images)["conv2_1"]))
    nonzero = means > 0
    # as in the test above: nearly dead filters (mean ~1e-4 of the busiest) carry float32 cancellation noise
    busy = means_before > 1e-4 * means_before.max()
    torch.testing.assert_close(means[busy], torch.ones_like(means[busy]), rtol=1e-4, atol=0)
    torch.testing.assert_close(means[nonzero], torch.ones_like(means[nonzero]), rtol=1e-2, atol=0)
    with pytest.raises(ValueError, match="images"):
        model.normalize_weights_(torch.rand(3, 16, 16))
