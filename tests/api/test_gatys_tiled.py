"""Exact tiled Gatys (``tile_size``): tile features, loss and gradient equal the whole image's; the optimisation
histories match the untiled ones (L-BFGS, two styles, multiscale, Adam, texture); two gloo processes match one.

Random VGG19 weights, fp32 on the compiled CPU kernels. Most tests use the layers up to relu3_1 (halo 12 px,
stride 4) so that small images hold several tiles none of whose crops covers the image; the deep layers
(relu5_1: halo 80 px, stride 16) are checked on tall and wide strips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from perceptual_kernels.api import cli, gatys, gatys_tiled, images
from perceptual_kernels.api.vgg import VGGFeatures, layer_names

CONTENT_LAYERS, STYLE_LAYERS = ("relu3_1",), ("relu1_1", "relu2_1", "relu3_1")
DEEP_CONTENT, DEEP_STYLE = gatys.DEFAULT_CONTENT_LAYERS, gatys.DEFAULT_STYLE_LAYERS
TILE = 24  # on a 48 x 64 image: 2 x 3 tiles, crops of at most 48 x 36
WORKTREE = Path(__file__).resolve().parents[2]


def _vgg(layers, pooling="max") -> VGGFeatures:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VGGFeatures(layers, arch="vgg19", weights="random", seed=0, pooling=pooling)


@pytest.fixture(scope="module")
def extractor():
    return _vgg([*CONTENT_LAYERS, *STYLE_LAYERS])


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    g = torch.Generator().manual_seed(1)
    content = torch.rand(1, 3, 48, 64, generator=g)
    styles = torch.rand(1, 3, 44, 56, generator=g), torch.rand(1, 3, 60, 40, generator=g)
    paths = [images.save_image(t, folder / f"{name}.png") for t, name in zip((content, *styles), "abc")]
    return [images.load_image(p) for p in paths], paths


def test_the_halo_is_the_reach_of_the_deepest_layer(extractor):
    names = layer_names("vgg19")
    strides, halo, align = gatys_tiled.geometry(names[: names.index("relu5_1") + 1], [*DEEP_CONTENT, *DEEP_STYLE])
    assert (halo, align, strides["relu5_1"], strides["relu4_2"]) == (80, 16, 16, 8)
    assert gatys_tiled.geometry(extractor.feature_names, extractor.layers)[1:] == (12, 4)
    assert gatys_tiled.geometry(names[: names.index("relu4_2") + 1], ["relu4_2"])[1:] == (40, 8)


@pytest.mark.parametrize(
    "shape,pooling,layers",
    [((1, 3, 205, 20), "max", (*DEEP_CONTENT, *DEEP_STYLE)), ((1, 3, 18, 190), "avg", ("relu4_2",))],
    ids=["tall-max-relu5_1", "wide-avg-relu4_2"],
)
def test_tile_features_equal_the_full_image_features(shape, pooling, layers):
    """At every layer used (up to relu5_1: halo 80; relu4_2 alone: halo 40 < half its 84 px receptive field, as
    the pooling windows are aligned), the core positions of each crop hold the whole image's features, also for
    sides that are not multiples of the stride; a halo one stride shorter does not (the check can fail)."""
    vgg = _vgg(layers, pooling)
    strides, halo, align = gatys_tiled.geometry(vgg.feature_names, vgg.layers)
    image = torch.rand(shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = vgg(image)
        for h, exact in ((halo, True), (halo - align, False)):
            tiles = gatys_tiled.plan_tiles(*shape[-2:], 32, h, align)
            assert len(tiles) > 3 and all(t.crop != (0, shape[2], 0, shape[3]) for t in tiles)
            worst = 0.0
            for tile in tiles:
                feats = vgg(tile.crop_of(image))
                for name, stride in strides.items():
                    core = tile.core_view(feats[name], stride, full[name].shape[-2:])
                    y0, y1, x0, x1 = (v // stride for v in tile.core)
                    expected = full[name][..., y0:y1, x0:x1]
                    assert core.shape == expected.shape
                    if core.numel():
                        worst = max(worst, float((core - expected).abs().max() / full[name].abs().max()))
            assert (worst <= 1e-5) if exact else (worst > 1e-4), (h, worst)


def _objectives(extractor, content, style, content_layers, style_layers, tile_size, **weights):
    layer_weights = [1.0 + i for i in range(len(style_layers))]
    args = (weights["content_weight"], weights["style_weight"], weights["tv_weight"], False)
    with torch.no_grad():
        targets = {name: extractor(content)[name] for name in content_layers}
    untiled = gatys._Objective(
        extractor,
        targets,
        gatys._grams(extractor, [style], [1.0], style_layers, False),
        dict(zip(style_layers, layer_weights)),
        *args,
    )
    tiled = gatys_tiled.TiledObjective(
        extractor, content, [style], [1.0], content_layers, style_layers, layer_weights, *args, tile_size
    )
    return untiled, tiled


def _loss_and_grad(objective, image):
    image = image.clone().requires_grad_()
    terms = objective(image)
    terms["loss"].backward()
    return {k: float(v.detach()) for k, v in terms.items()}, image.grad


@pytest.mark.parametrize("depth", ["relu3_1", "relu5_1"])
def test_tiled_loss_and_gradient_equal_the_untiled_ones(depth, extractor, pictures):
    """Loss terms to 1e-5, gradient to 1e-4 of its largest entry. Up to relu5_1 in float64: in fp32 the crops'
    features differ from the whole image's by rounding (1e-7), enough to flip a few ReLU / max-pooling kinks of
    random weights, which moves the gradient of a 24 px patch by up to 2e-3 of the maximum (the same run in float64
    agrees to 1e-8)."""
    (content, style, _), _ = pictures
    if depth == "relu3_1":
        vgg, layers, tile_size, dtype = extractor, (CONTENT_LAYERS, STYLE_LAYERS), TILE, torch.float32
    else:  # a 208 x 16 strip: 5 tiles of (at most) 48 rows, crops of at most 176 rows
        vgg, layers, tile_size = _vgg([*DEEP_CONTENT, *DEEP_STYLE]), (DEEP_CONTENT, DEEP_STYLE), 48
        dtype = torch.float64
        content = images.resize(content, (208, 16))
    vgg, content, style = vgg.to(dtype), content.to(dtype), style.to(dtype)
    image = torch.rand(content.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    untiled, tiled = _objectives(
        vgg, content, style, *layers, tile_size, content_weight=1.0, style_weight=1e6, tv_weight=0.1
    )
    height, width = content.shape[-2:]
    assert len(tiled.tiles) > 3 and all(t.crop != (0, height, 0, width) for t in tiled.tiles)
    (ours, grad), (expected, expected_grad) = _loss_and_grad(tiled, image), _loss_and_grad(untiled, image)
    for key in ("content", "style", "tv", "loss"):
        assert abs(ours[key] - expected[key]) <= 1e-5 * abs(expected[key]), key
    assert float((grad - expected_grad).abs().max()) <= 1e-4 * float(expected_grad.abs().max())


def _histories(content, style, extractor, **kwargs):
    kwargs = {
        "size": 64,
        "content_layers": CONTENT_LAYERS,
        "style_layers": STYLE_LAYERS,
        "extractor": extractor,
        "iterations": 10,
        "progress": False,
        "device": "cpu",
        **kwargs,
    }
    untiled = gatys.stylize(content, style, **kwargs)
    tiled = gatys.stylize(content, style, tile_size=TILE, **kwargs)
    return untiled, tiled


def _assert_same_history(history, expected, rtol=1e-4):
    assert len(history.loss) == len(expected.loss) and history.scale == expected.scale
    for key in ("loss", "content", "style", "tv"):
        for ours, theirs in zip(getattr(history, key), getattr(expected, key)):
            assert abs(ours - theirs) <= rtol * abs(theirs), (key, getattr(history, key), getattr(expected, key))


def test_ten_lbfgs_iterations_follow_the_untiled_run(extractor, pictures):
    (content, style, _), _ = pictures
    (image, expected), (tiled_image, history) = _histories(content, style, extractor, tv_weight=1e-2)
    _assert_same_history(history, expected)
    assert expected.loss[-1] < 0.5 * expected.loss[0]
    assert float((tiled_image - image).abs().mean()) <= 1e-4


def test_two_styles_multiscale_adam_and_options_follow_the_untiled_run(extractor, pictures, tmp_path):
    (content, style, style2), _ = pictures
    seen = []
    kwargs = dict(
        style_blend_weights=[0.7, 0.3],
        multiscale=[48, 64],
        iterations=5,
        optimizer="adam",
        init="noise",
        preserve_colors="mean_cov",
        style_layer_weights=[1, 2, 1],
        tv_weight=1e-2,
        callback=seen.append,
    )
    (image, expected), (tiled_image, history) = _histories(
        content, [style, style2], extractor, save_every=5, save_path=tmp_path / "s{iteration}.png", **kwargs
    )
    _assert_same_history(history, expected)
    assert history.scale == [48] * 5 + [64] * 5 and len(seen) == 20
    assert sorted(p.name for p in tmp_path.glob("s*.png")) == ["s10.png", "s5.png"]
    assert float((tiled_image - image).abs().mean()) <= 1e-4


def test_texture_follows_the_untiled_run(extractor, pictures):
    (_, style, _), _ = pictures
    kwargs = dict(style_layers=STYLE_LAYERS, extractor=extractor, iterations=3, progress=False, device="cpu")
    _, expected = gatys.synthesize_texture(style, (40, 56), style_size=48, **kwargs)
    _, history = gatys.synthesize_texture(style, (40, 56), style_size=48, tile_size=TILE, **kwargs)
    _assert_same_history(history, expected)


def test_ctrl_c_keeps_the_last_image(extractor, pictures, tmp_path):
    (content, style, _), _ = pictures

    def interrupt(info):
        if info["iteration"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _histories(content, style, extractor, iterations=3, callback=interrupt, save_path=tmp_path / "last.png")
    assert images.load_image(tmp_path / "last.png").shape == (1, 3, 48, 64)


@pytest.mark.parametrize(
    "tile_size,layers,error,text",
    [
        (22, STYLE_LAYERS, ValueError, "multiples of 4 px .* up to relu3_1.* smallest tile_size is 4"),
        (8, DEEP_STYLE, ValueError, "smallest tile_size is 16; each tile is read with a 80 px halo"),
        (0, STYLE_LAYERS, ValueError, "smallest tile_size is 4"),
        (32.0, STYLE_LAYERS, TypeError, "tile_size must be None or an int"),
        (True, STYLE_LAYERS, TypeError, "tile_size must be None or an int"),
    ],
    ids=["not_a_multiple", "deep_too_small", "zero", "float", "bool"],
)
def test_bad_tile_size(pictures, tile_size, layers, error, text):
    (content, style, _), _ = pictures
    with pytest.raises(error, match=text):
        gatys.stylize(
            content,
            style,
            content_layers=CONTENT_LAYERS,
            style_layers=layers,
            tile_size=tile_size,
            weights="random",
            progress=False,
        )


def test_cli_tile_size(pictures, tmp_path, capsys):
    _, (content_path, style_path, _) = pictures
    common = ["--weights", "random", "--iterations", "1", "--no-progress", "--device", "cpu", "--size", "64"]
    layers = ["--content-layers", "relu3_1", "--style-layers", "relu1_1,relu2_1,relu3_1"]
    out = tmp_path / "out.png"
    argv = ["stylize", str(content_path), str(style_path), "-o", str(out), *common, *layers]
    assert cli.main([*argv, "--tile-size", "24"]) == 0 and images.load_image(out).shape == (1, 3, 48, 64)
    assert cli.main([*argv, "--tile-size", "30"]) == 2
    assert "error: tile_size 30 cannot be tiled exactly" in capsys.readouterr().err


def test_two_gloo_processes_give_the_losses_of_one(pictures, tmp_path):
    """``torch.distributed.run --nproc-per-node 2`` (gloo): the tiles split over the ranks, the per-iteration
    losses those of one process (1e-5); the untiled path refuses a process group; the CLI runs under it."""
    _, (content_path, style_path, _) = pictures
    env = {**os.environ, "PYTHONPATH": str(WORKTREE), "OMP_NUM_THREADS": "1"}
    worker = Path(__file__).with_name("tiled_gatys_worker.py")
    for n in (1, 2):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n)]
        done = subprocess.run(
            [*command, str(worker), str(content_path), str(style_path), str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"history-{n}.json").read_text()) for n in (1, 2))
    for key in ("loss", "content", "style"):
        assert len(one[key]) == len(two[key]) == 4
        for a, b in zip(one[key], two[key]):
            assert abs(a - b) <= 1e-5 * abs(a), (key, one[key], two[key])
    assert one["refused"] == "" and "needs tile_size" in two["refused"]
    assert images.load_image(tmp_path / "cli.png").shape == (1, 3, 48, 64)


def test_memory_note_and_lbfgs_history(pictures):
    vgg = _vgg([*DEEP_CONTENT, *DEEP_STYLE])
    note = gatys_tiled.memory_note(vgg, 4096, 4096, 256, 20, torch.device("cpu"))
    assert "4096x4096: 256 tiles of 256 px (+80 px halo) over 1 process(es)" in note
    assert "403 MiB of activations" in note and "3.75 GiB of optimizer state" in note
    assert gatys_tiled.memory_note(vgg, 64, 64, None, 200, torch.device("cpu")) is None
    (content, style, _), _ = pictures
    with pytest.raises(ValueError, match="lbfgs_history"):
        gatys.stylize(content, style, lbfgs_history=0, weights="random", progress=False)
