"""The Gatys loop: same losses as the plain-PyTorch loop, options, determinism, bad input, the CLI and demo."""

from __future__ import annotations

import warnings

import pytest
import torch
from plain_gatys import plain_stylize

from perceptual_kernels.api import cli, gatys, images
from perceptual_kernels.api.vgg import VGGFeatures

SIZE = 32  # relu5_1 needs 16 pixels
CONTENT_LAYERS, STYLE_LAYERS = ("relu4_2",), ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


@pytest.fixture(scope="module")
def extractor():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VGGFeatures([*CONTENT_LAYERS, *STYLE_LAYERS], arch="vgg19", weights="random", seed=0)


@pytest.fixture
def pictures(tmp_path):
    g = torch.Generator().manual_seed(1)
    content = torch.rand(1, 3, SIZE, SIZE + 8, generator=g)
    style = torch.rand(1, 3, SIZE + 4, SIZE, generator=g)
    paths = images.save_image(content, tmp_path / "content.png"), images.save_image(style, tmp_path / "style.png")
    return images.load_image(paths[0]), images.load_image(paths[1]), paths


def run(content, style, extractor, **kwargs):
    kwargs = {"size": SIZE + 8, "iterations": 3, "progress": False, "device": "cpu", "extractor": extractor, **kwargs}
    return gatys.stylize(content, style, **kwargs)


def test_same_losses_as_the_plain_pytorch_loop(extractor, pictures):
    content, style, _ = pictures
    _, history = run(content, style, extractor, iterations=6)
    _, plain_losses = plain_stylize(
        extractor, content, images.resize_long_side(style, SIZE + 8), CONTENT_LAYERS, STYLE_LAYERS, iterations=6
    )
    assert len(history.loss) == len(plain_losses) == 6
    for ours, plain in zip(history.loss, plain_losses):
        assert abs(ours - plain) <= 1e-3 * abs(plain)
    assert history.loss[-1] < history.loss[0]


def test_seed_makes_runs_repeatable(extractor, pictures):
    content, style, _ = pictures
    a, _ = run(content, style, extractor, init="noise", seed=3)
    b, _ = run(content, style, extractor, init="noise", seed=3)
    c, _ = run(content, style, extractor, init="noise", seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_options(extractor, pictures, tmp_path):
    content, style, _ = pictures
    seen = []
    image, history = run(
        content,
        [style, style.flip(-1)],
        extractor,
        style_blend_weights=[0.7, 0.3],
        multiscale=[SIZE, SIZE + 8],
        optimizer="adam",
        preserve_colors="luminance",
        style_layer_weights=[1, 1, 2, 2, 1],
        tv_weight=1.0,
        callback=seen.append,
        save_every=2,
        save_path=tmp_path / "step{iteration}.png",
    )
    assert image.shape == (1, 3, SIZE, SIZE + 8) and 0 <= image.min() and image.max() <= 1
    assert history.scale == [SIZE] * 3 + [SIZE + 8] * 3 and len(seen) == 6 and seen[-1]["iteration"] == 5
    assert sorted(p.name for p in tmp_path.glob("step*.png")) == ["step2.png", "step4.png", "step6.png"]
    assert all(t2 >= t1 for t1, t2 in zip(history.time, history.time[1:]))


def test_texture(extractor, pictures):
    _, style, _ = pictures
    texture, history = gatys.synthesize_texture(
        style, (SIZE, SIZE + 16), iterations=3, extractor=extractor, progress=False, device="cpu"
    )
    assert texture.shape == (1, 3, SIZE, SIZE + 16) and history.content == [0.0] * 3


def test_ctrl_c_keeps_the_last_image(extractor, pictures, tmp_path):
    content, style, _ = pictures

    def interrupt(info):
        if info["iteration"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(content, style, extractor, callback=interrupt, save_path=tmp_path / "last.png")
    assert images.load_image(tmp_path / "last.png").shape == (1, 3, SIZE, SIZE + 8)


@pytest.mark.parametrize(
    "kwargs,error,text",
    [
        ({"style_layers": ("relu9_1",)}, ValueError, "relu9_1"),
        ({"size": 8}, ValueError, "smaller than"),
        ({"style_blend_weights": [1.0, 2.0]}, ValueError, "style_blend_weights needs 1"),
        ({"optimizer": "sgd"}, ValueError, "optimizer must be one of"),
        ({"init": "zeros"}, ValueError, "init must be one of"),
        ({"preserve_colors": "yes"}, ValueError, "preserve_colors"),
    ],
    ids=[
        "style_layers=relu9_1",
        "size=8",
        "style_blend_weights=1.0_2.0",
        "optimizer=sgd",
        "init=zeros",
        "preserve_colors=yes",
    ],
)
def test_bad_input(pictures, kwargs, error, text):
    content, style, _ = pictures
    with pytest.raises(error, match=text), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gatys.stylize(content, style, iterations=1, progress=False, weights="random", **kwargs)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        gatys.stylize(tmp_path / "nope.png", tmp_path / "nope.png", weights="random", progress=False)


def test_cli_stylize_texture_and_errors(pictures, tmp_path, capsys):
    _, _, (content_path, style_path) = pictures
    common = ["--weights", "random", "--iterations", "2", "--no-progress", "--device", "cpu"]
    out = tmp_path / "out.png"
    assert cli.main(["stylize", str(content_path), str(style_path), "-o", str(out), "--size", "32", *common]) == 0
    assert images.load_image(out).shape == (1, 3, 26, 32)  # content 32x40 at long side 32
    assert cli.main(["texture", str(style_path), "-o", str(tmp_path / "t.png"), "--size", "32,48", *common]) == 0
    assert images.load_image(tmp_path / "t.png").shape == (1, 3, 32, 48)
    before = content_path.read_bytes()
    assert cli.main(["stylize", str(content_path), str(style_path), "-o", str(content_path), *common]) == 2
    assert content_path.read_bytes() == before
    assert cli.main(["stylize", str(tmp_path / "missing.png"), str(style_path), "-o", str(out), *common]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["stylize", "texture"])
def test_cli_ctrl_c_writes_the_current_image_to_the_output(pictures, tmp_path, monkeypatch, command):
    """Ctrl-C without --save-path keeps the image of the last finished iteration at -o, and exits with 130."""
    _, _, (content_path, style_path) = pictures
    stop = {"at": 2}

    def interrupt_after(info):
        if info["iteration"] + 1 == stop["at"]:
            raise KeyboardInterrupt

    real_optimize = gatys._optimize
    monkeypatch.setattr(gatys, "_optimize", lambda *a, **k: real_optimize(*a, **{**k, "callback": interrupt_after}))
    out = tmp_path / "out.png"
    inputs = [str(content_path), str(style_path)] if command == "stylize" else [str(style_path)]
    args = [command, *inputs, "-o", str(out), "--size", "32", "--weights", "random", "--iterations", "5"]
    assert cli.main([*args, "--no-progress", "--device", "cpu"]) == 130
    assert images.load_image(out).shape[-1] == 32
    assert not list(tmp_path.glob("*.tmp*"))


def test_cli_info_and_demo(tmp_path, capsys):
    assert cli.main(["info"]) == 0
    assert (
        cli.main(["demo", "-o", str(tmp_path / "demo"), "--size", "32", "--iterations", "2", "--weights", "random"])
        == 0
    )
    names = {p.name for p in (tmp_path / "demo").iterdir()}
    assert {"content.png", "style.png", "stylized.png", "texture.png", "report.md"} <= names
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "random" in report and "| stylize | 32 | 2 |" in report


@pytest.mark.triton
def test_loop_on_the_triton_kernels_matches_reference(extractor, pictures):
    """The same 3 iterations with the losses on the Triton kernels (interpreter on CPU) and on the reference."""
    import perceptual_kernels as pk
    from perceptual_kernels.backends import unavailable_reason

    content, style, _ = pictures
    if reason := unavailable_reason("triton", content.device, torch.float32):
        pytest.skip(reason)
    with pk.use_backend("triton"):
        _, ours = run(content, style, extractor, tv_weight=10.0)
    with pk.use_backend("reference"):
        _, ref = run(content, style, extractor, tv_weight=10.0)
    for a, b in zip(ours.loss, ref.loss):
        assert abs(a - b) <= 1e-3 * abs(b)


def test_bench_quick_table():
    from perceptual_kernels.api import bench

    table = bench.run("cpu", quick=True, min_run_time=0.01)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == [
        "gram_matrix",
        "style_loss",
        "content_loss",
        "tv_loss",
        "conditional_instance_norm",
    ]
    assert all(r.rstrip(" |").endswith("x") for r in rows)
