"""LPIPS-VGG (perceptual_kernels.api.metrics.lpips, the LPIPS module, evaluate-sr --lpips) against the ``lpips``
package on the same inputs and backbone weights, and its errors."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings

import pytest
import torch
from torch import nn

import perceptual_kernels as pk
from perceptual_kernels.api import cli, images, lpips_vgg, metrics

LPIPS_MISSING = "the lpips package is not installed (pip install lpips); the comparison needs it"
# torchvision's vgg16 ``features`` (cfg "D"): conv3x3 + ReLU, "M" = 2x2 max pooling
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*layers)


def _torchvision_stand_in() -> types.ModuleType:
    """A ``torchvision`` with just ``models.vgg16(pretrained=False).features`` (torchvision's module layout):
    what ``lpips.LPIPS(net='vgg', pnet_rand=True)`` calls. Used only where the installed torchvision cannot be
    imported: PyPI's torchvision 0.28.0 is a CUDA build whose ``_C`` needs libtorch_cuda, absent beside the CPU
    torch 2.13.0 ("operator torchvision::nms does not exist"). The backbone weights are copied into ours anyway;
    everything LPIPS itself does (scaling layer, normalisation, linear layers and their file, averaging) is the
    package's own code."""
    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")

    def vgg16(pretrained: bool = False, **_: object) -> nn.Module:
        if pretrained:
            raise RuntimeError("the torchvision stand-in has no pretrained weights")
        net = nn.Module()
        net.features = _vgg16_features()
        return net

    def unavailable(*_: object, **__: object) -> nn.Module:
        raise RuntimeError("the torchvision stand-in only builds vgg16")

    models.vgg16, models.alexnet, models.squeezenet1_1 = vgg16, unavailable, unavailable
    tv.models = models
    return tv


@pytest.fixture(scope="module")
def lpips_package():
    """The ``lpips`` package (skipped only when it is not installed), imported over the real torchvision when
    that imports, else over :func:`_torchvision_stand_in`."""
    if importlib.util.find_spec("lpips") is None:
        pytest.skip(LPIPS_MISSING)
    try:
        return importlib.import_module("lpips")
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
    saved = {
        name: mod
        for name, mod in sys.modules.items()
        if name == "torchvision" or name.startswith(("torchvision.", "lpips"))
    }
    for name in saved:
        del sys.modules[name]
    stand_in = _torchvision_stand_in()
    sys.modules["torchvision"], sys.modules["torchvision.models"] = stand_in, stand_in.models
    try:
        return importlib.import_module("lpips")
    finally:
        for name in ("torchvision", "torchvision.models"):
            sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def both_models(lpips_package):
    """(the package's LPIPS-VGG with a random backbone, ours with that backbone copied in)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        theirs = lpips_package.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
        ours = lpips_vgg.LPIPS(vgg_weights="random")
    slices = [getattr(theirs.net, f"slice{k}") for k in range(1, 6)]
    convs = {int(name): m for s in slices for name, m in s.named_children() if isinstance(m, nn.Conv2d)}
    with torch.no_grad():
        for index, module in enumerate(ours.vgg.features):
            if isinstance(module, nn.Conv2d):
                module.weight.copy_(convs[index].weight)
                module.bias.copy_(convs[index].bias)
    return theirs, ours


@pytest.mark.parametrize("size", [(1, 32, 32), (2, 21, 35), (2, 16, 48)], ids=lambda s: "x".join(map(str, s)))
def test_lpips_equals_the_lpips_package(both_models, size):
    theirs, ours = both_models
    B, H, W = size
    g = torch.Generator().manual_seed(H * W)
    x, y = (torch.rand(B, 3, H, W, generator=g) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        expected = theirs(x, y).reshape(B)
        got = ours(x, y)
        got_01 = ours((x + 1) / 2, (y + 1) / 2, normalize=True)
    assert got.shape == (B,) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(got_01, expected, rtol=1e-5, atol=0)


def test_lpips_gradient_equals_the_lpips_package(both_models):
    theirs, ours = both_models
    g = torch.Generator().manual_seed(1)
    x, y = (torch.rand(1, 3, 20, 18, generator=g) * 2 - 1 for _ in range(2))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(theirs(xa, y).sum(), xa)
    (got,) = torch.autograd.grad(ours(xb, y).sum(), xb)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_lpips_layer_weights_are_the_package_file(both_models):
    theirs, ours = both_models
    for k in range(5):
        torch.testing.assert_close(getattr(ours, f"lin{k}"), theirs.lins[k].model[1].weight.reshape(-1))


def test_metric_function_caches_the_model_and_runs_on_the_kernels(lpips_package, monkeypatch):
    calls = []
    real = pk.lpips_distance
    monkeypatch.setattr(pk, "lpips_distance", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.rand(1, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = metrics.lpips(x, x.flip(-1), normalize=True, vgg_weights="random")
        metrics.lpips(x, x, normalize=True, vgg_weights="random")
    assert d.shape == (1,) and float(d) > 0 and len(calls) == 10
    assert len([k for k in metrics._LPIPS_MODELS if k[0] == "random"]) == 1


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(lpips_vgg, "package_weights_path", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"lpips package is not installed \(pip install lpips\)"):
        lpips_vgg.LPIPS(vgg_weights="random")


def test_bad_weight_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="lin_weights="):
        lpips_vgg.load_linear_weights(tmp_path / "none.pth")
    torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, tmp_path / "short.pth")
    with pytest.raises(ValueError, match=r"'lin1.model.1.weight' must be a \(1, 128, 1, 1\) tensor, got missing"):
        lpips_vgg.load_linear_weights(tmp_path / "short.pth")


def test_weights_from_a_given_path(tmp_path):
    state = {
        f"lin{k}.model.1.weight": torch.full((1, c, 1, 1), 0.5 + k) for k, c in enumerate(lpips_vgg.LPIPS_CHANNELS)
    }
    torch.save(state, tmp_path / "lin.pth")
    weights = lpips_vgg.load_linear_weights(tmp_path / "lin.pth")
    assert [tuple(w.shape) for w in weights] == [(c,) for c in lpips_vgg.LPIPS_CHANNELS]
    assert float(weights[4][0]) == 4.5


def test_cli_evaluate_sr_reports_lpips(tmp_path, capsys):
    if lpips_vgg.package_weights_path() is None:
        pytest.skip(LPIPS_MISSING)
    g = torch.Generator().manual_seed(0)
    for name in ("a", "b"):
        images.save_image(torch.rand(1, 3, 34, 30, generator=g), tmp_path / "set" / f"{name}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = cli.main(["evaluate-sr", str(tmp_path / "set"), "--factor", "2", "--lpips", "--lpips-vgg", "random"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "LPIPS" in lines[0] and lines[-1].startswith("| mean |")
    values = [float(line.split("|")[4]) for line in lines[1:]]
    assert all(v > 0 for v in values) and values[-1] == pytest.approx(sum(values[:-1]) / 2, abs=1e-4)


@pytest.mark.parametrize(
    "extra,text",
    [([], "pip install lpips"), (["--lpips-weights", "{missing}"], "is not a file")],
    ids=["no_package", "missing_weights_file"],
)
def test_cli_evaluate_sr_lpips_errors_before_work(tmp_path, capsys, monkeypatch, extra, text):
    monkeypatch.setattr(lpips_vgg, "package_weights_path", lambda: None)
    monkeypatch.setattr(metrics, "evaluate_sr", lambda *a, **k: pytest.fail("the evaluation started"))
    images.save_image(torch.rand(1, 3, 16, 16), tmp_path / "set" / "a.png")
    extra = [e.format(missing=tmp_path / "missing.pth") for e in extra]
    assert cli.main(["evaluate-sr", str(tmp_path / "set"), "--lpips", "--lpips-vgg", "random", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and text in err[0], err
