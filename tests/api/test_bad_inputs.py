"""Hostile input to the CLI and the Python API (tests/BAD_INPUTS.md, section "API and CLI").

CLI: every bad input exits with code 2 and one line ``error: <message naming the argument>``, no traceback, before
any work (the loops are replaced by a function that fails the test if it runs). API: ValueError / TypeError naming
the argument, before any work.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import warnings

import pytest
import torch
from _helpers import call_id, text_id, train_style_quietly, unique_ids, value_id

from perceptual_kernels.api import _checks, cli, demo, dip, gatys, images, johnson, metrics, vgg
from perceptual_kernels.api._device import resolve_device
from perceptual_kernels.api.johnson_nets import SuperResolutionNet, TransformNet, load_model, save_model

CROP = 32
TRAIN = [
    "--vgg-weights",
    "random",
    "--iterations",
    "2",
    "--batch-size",
    "2",
    "--crop",
    str(CROP),
    "--workers",
    "0",
    "--no-progress",
    "--device",
    "cpu",
    "--log-every",
    "1",
]
GATYS = ["--weights", "random", "--iterations", "1", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small images, a data folder, a folder of corrupt images, a file, trained 2-style and x2 SR models."""
    root = tmp_path_factory.mktemp("bad_inputs")
    g = torch.Generator().manual_seed(0)
    paths = {
        name: images.save_image(torch.rand(1, 3, 32, 32, generator=g), root / f"{name}.png")
        for name in ("content", "style", "style2")
    }
    for i in range(3):
        images.save_image(torch.rand(1, 3, 36, 40, generator=g), root / "data" / f"img{i}.png")
    (root / "corrupt").mkdir()
    for name in ("a.png", "b.jpg"):
        (root / "corrupt" / name).write_bytes(b"not an image")
    (root / "empty").mkdir()
    (root / "afile").write_text("not a folder")
    os.link(paths["content"], root / "hardlink.png")
    torch.manual_seed(0)
    save_model(TransformNet(num_styles=2, channels=4, residual_blocks=1), root / "multi.pth")
    save_model(SuperResolutionNet(factor=2, channels=4, residual_blocks=1), root / "sr.pth")
    return {
        **{k: str(v) for k, v in paths.items()},
        "root": str(root),
        "data": str(root / "data"),
        "corrupt": str(root / "corrupt"),
        "empty": str(root / "empty"),
        "afile": str(root / "afile"),
        "hardlink": str(root / "hardlink.png"),
        "multi": str(root / "multi.pth"),
        "sr": str(root / "sr.pth"),
    }


def forbid_work(monkeypatch) -> None:
    """Fail the test if an optimisation / training / inference loop starts: the checks must come first."""

    def work(*args, **kwargs):
        raise AssertionError("the work started before the bad input was found")

    for module, name in (
        (gatys, "_optimize"),
        (dip, "get_net"),
        (johnson, "_train"),
        (johnson, "stylize_feedforward"),
        (metrics, "evaluate_sr"),
    ):
        monkeypatch.setattr(module, name, work)


@pytest.fixture
def no_work(monkeypatch):
    forbid_work(monkeypatch)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the CLI; a traceback fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def expect_error(argv: list[str], capsys, *fragments: str) -> str:
    code, _, err = run_cli(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# --- CLI: numbers ----------------------------------------------------------------------------------------------
NUMBER_CASES = [
    # (command line with {placeholders}, fragments of the first line)
    ("stylize {content} {style} -o {out} --size 0", ["--size", ">= 1", "0"]),
    ("stylize {content} {style} -o {out} --size -5", ["--size", ">= 1", "-5"]),
    ("stylize {content} {style} -o {out} --size abc", ["--size", "expected an integer", "abc"]),
    ("stylize {content} {style} -o {out} --lr 0", ["--lr", "> 0"]),
    ("stylize {content} {style} -o {out} --lr nan", ["--lr", "finite"]),
    ("stylize {content} {style} -o {out} --iterations -1", ["--iterations", ">= 0"]),
    ("stylize {content} {style} -o {out} --style-weight 1e300", ["--style-weight", "float32"]),
    ("stylize {content} {style} -o {out} --style-weight inf", ["--style-weight", "finite"]),
    ("stylize {content} {style} -o {out} --content-weight -1", ["--content-weight", ">= 0"]),
    ("stylize {content} {style} -o {out} --tv-weight nan", ["--tv-weight", "finite"]),
    ("stylize {content} {style} -o {out} --style-scale 0", ["--style-scale", "> 0"]),
    ("stylize {content} {style} -o {out} --style-scale inf", ["--style-scale", "finite"]),
    ("stylize {content} {style} -o {out} --multiscale 64,32", ["multiscale", "increasing"]),
    ("stylize {content} {style} -o {out} --multiscale 0,32", ["--multiscale", ">= 1"]),
    ("stylize {content} {style} -o {out} --style-blend-weights nan", ["--style-blend-weights", "finite"]),
    ("stylize {content} {style} -o {out} --style-blend-weights 0", ["style_blend_weights", "all zero"]),
    ("stylize {content} {style} -o {out} --style-layer-weights 1,2", ["style_layer_weights", "5 values"]),
    ("stylize {content} {style} -o {out} --style-layers relu1_1,,relu2_1", ["--style-layers", "empty entries"]),
    ("stylize {content} {style} -o {out} --seed -1", ["--seed", "0, 4294967295"]),
    ("stylize {content} {style} -o {out} --save-every -1", ["--save-every", ">= 0"]),
    ("stylize {content} {style} -o {out} --device cuda:99", ["device 'cuda:99'"]),
    ("stylize {content} {style} -o {out} --device bogus", ["device 'bogus'", "not a device name"]),
    ("texture {style} -o {out} --size 0", ["--size", ">= 1"]),
    ("texture {style} -o {out} --size 32,32,32", ["--size", "height,width", "3 values"]),
    ("texture {style} -o {out} --style-size 0", ["--style-size", ">= 1"]),
    ("dip denoise {content} -o {out} --iterations 0", ["--iterations", ">= 1"]),
    ("dip denoise {content} -o {out} --log-every 0", ["--log-every", ">= 1"]),
    ("dip denoise {content} -o {out} --lr 0", ["--lr", "> 0"]),
    ("dip denoise {content} -o {out} --reg-noise-std nan", ["--reg-noise-std", "finite"]),
    ("dip denoise {content} -o {out} --add-noise -1", ["--add-noise", ">= 0"]),
    ("dip sr {content} -o {out} --factor 0", ["--factor", ">= 1"]),
    ("dip sr {content} -o {out} --factor 2.5", ["--factor", "expected an integer"]),
    ("train style {data} {style} -o {outdir} --lr 0", ["--lr", "> 0"]),
    ("train style {data} {style} -o {outdir} --crop 0", ["--crop", ">= 1"]),
    ("train style {data} {style} -o {outdir} --crop 4", ["config.crop", "at least 5"]),
    ("train style {data} {style} -o {outdir} --batch-size 0", ["--batch-size", ">= 1"]),
    ("train style {data} {style} -o {outdir} --batch-size 4", ["batch_size 4", "3 images"]),
    ("train style {data} {style} -o {outdir} --log-every 0", ["--log-every", ">= 1"]),
    ("train style {data} {style} -o {outdir} --iterations 0", ["--iterations", ">= 1"]),
    ("train style {data} {style} -o {outdir} --workers -1", ["--workers", ">= 0"]),
    ("train style {data} {style} -o {outdir} --style-weight nan", ["--style-weight", "finite"]),
    ("train style {data} {style} -o {outdir} --style-size 0", ["--style-size", ">= 1"]),
    ("train style {data} {style} -o {outdir} --device cuda:99", ["device 'cuda:99'"]),
    ("train sr {data} -o {outdir} --factor 0", ["--factor", "invalid choice"]),
    ("train sr {data} -o {outdir} --factor 4 --crop 30", ["config.crop 30", "multiple of the factor 4"]),
    ("transfer {multi} {content} -o {out} --style abc", ["style 'abc'", "style index"]),
    ("transfer {multi} {content} -o {out} --style 0:nan,1:1", ["weight of style 0", "finite"]),
    ("transfer {multi} {content} -o {out} --style 0:-1,1:2", ["weight of style 0", ">= 0"]),
    ("transfer {multi} {content} -o {out} --style 0:0,1:0", ["sum to a positive number"]),
    ("transfer {multi} {content} -o {out} --style 0:x,1:1", ["weight 'x' of style 0", "not a number"]),
    ("transfer {multi} {content} -o {out} --style 0:1,0:1", ["style 0 is given twice"]),
    ("transfer {multi} {content} -o {out} --style 0:1:2", ["'0:1:2'", "not a number"]),
    ("transfer {multi} {content} -o {out} --style 5", ["2 styles"]),
    ("transfer {multi} {content} -o {out}", ["2 styles"]),
    ("transfer {multi} {content} -o {out} --style 0 --all-styles", ["not both"]),
    ("transfer {sr} {content} -o {out} --style 0", ["single style"]),
    ("transfer {sr} {content} -o {out} --all-styles", ["single style"]),
    ("evaluate-sr {data} --factor 0", ["--factor", ">= 1"]),
    ("evaluate-sr {data} --model {sr} --factor 4", ["--factor 4", "x2 model"]),
    ("evaluate-sr {data} --model {multi}", ["style transfer model"]),
    ("demo -o {outdir} --size 0", ["--size", ">= 16"]),
    ("demo -o {outdir} --iterations -1", ["--iterations", ">= 0"]),
    ("bench --device bogus", ["device 'bogus'"]),
    ("frobnicate", ["invalid choice: 'frobnicate'"]),
    ("stylize {content}", ["required", "-o/--output"]),
]


DEFAULTS = {
    "stylize": GATYS,
    "texture": GATYS,
    "train": TRAIN,
    "dip": ["--iterations", "1", "--no-progress"],
    "demo": ["--size", "16", "--iterations", "1"],
}


def _argv(template: str, files: dict, tmp_path) -> list[str]:
    """The command line of ``template``, plus the fast defaults of its command that it does not set itself."""
    argv = template.format(out=tmp_path / "out.png", outdir=tmp_path / "run", **files).split()
    extra, i = DEFAULTS.get(argv[0], []), 0
    while i < len(extra):
        takes_value = i + 1 < len(extra) and not extra[i + 1].startswith("--")
        if extra[i] not in argv:
            argv += extra[i : i + 1 + takes_value]
        i += 1 + takes_value
    return argv


@pytest.mark.parametrize("template, fragments", NUMBER_CASES, ids=[c[0] for c in NUMBER_CASES])
def test_cli_bad_values_fail_before_work(template, fragments, files, tmp_path, capsys, no_work):
    expect_error(_argv(template, files, tmp_path), capsys, *fragments)
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
@pytest.mark.parametrize(
    "command",
    [
        "stylize {content} {style} -o {out}",
        "dip denoise {content} -o {out}",
        "train style {data} {style} -o {outdir}",
        "transfer {multi} {content} -o {out}",
        "evaluate-sr {data} --model {sr}",
        "demo -o {outdir}",
        "bench",
    ],
)
def test_cli_cuda_without_cuda(command, files, tmp_path, capsys, no_work):
    expect_error(_argv(command, files, tmp_path) + ["--device", "cuda"], capsys, "CUDA is not available")


# --- CLI: paths --------------------------------------------------------------------------------------------------
PATH_CASES = [
    ("stylize {content} {style} -o {content}", ["-o", "same file as the input"]),
    ("stylize {content} {style} -o {hardlink}", ["-o", "same file as the input", "content.png"]),
    ("stylize {content} {style} -o {root}/out.gifx", ["-o", "unsupported suffix '.gifx'"]),
    ("stylize {content} {style} -o {root}/noext", ["-o", "unsupported suffix ''"]),
    ("stylize {content} {style} -o {afile}/out.png", ["-o", "is a file, not a folder"]),
    ("stylize {content} {style} -o {data}", ["-o", "is a folder"]),
    ("stylize {content} {style} -o {out} --save-every 1 --save-path {style}", ["save_path", "same file"]),
    (
        "stylize {content} {style} -o {out} --save-every 1 --save-path {root}/x{{iteration:q}}.png",
        ["save_path", "{iteration}"],
    ),
    ("stylize {content} {style} -o {out} --init {out}", ["-o", "same file as the input"]),
    ("stylize {content} {style} -o {out} --init {root}/nothere.png", ["init must be one of"]),
    ("stylize {root}/missing.png {style} -o {out}", ["no such image file", "missing.png"]),
    ("stylize {afile} {style} -o {out}", ["cannot read image", "afile"]),
    ("texture {style} -o {style}", ["-o", "same file as the input"]),
    ("dip denoise {content} -o {content}", ["-o", "same file as the input"]),
    ("dip inpaint {content} {style} -o {hardlink}", ["-o", "same file as the input"]),
    ("dip denoise {content} -o {out} --ground-truth {out}", ["-o", "same file as the input"]),
    ("dip denoise {content} -o {out} --output-kind best", ["--output-kind best", "--ground-truth"]),
    ("dip denoise {content} -o {out} --add-noise 25 --ground-truth {style}", ["--add-noise", "--ground-truth"]),
    ("dip denoise {content} -o {root}/out.txt", ["-o", "unsupported suffix"]),
    ("train style {data} {style} -o {afile}", ["out_dir", "is a file"]),
    ("train style {data} {style} -o {data}/run", ["inside the training data folder"]),
    ("train style {afile} {style} -o {outdir}", ["training data folder", "is a file"]),
    ("train style {root}/missing {style} -o {outdir}", ["training data folder", "does not exist"]),
    ("train style {empty} {style} -o {outdir}", ["no images", "empty"]),
    ("train style {corrupt} {style} -o {outdir} --batch-size 1", ["no readable image", "corrupt", "all 2 image files"]),
    ("transfer {multi} {content} -o {content} --style 0", ["-o", "same file as the input"]),
    ("transfer {multi} {data} -o {data} --style 0", ["-o", "same file as the input"]),
    ("transfer {multi} {data} -o {afile} --style 0", ["-o", "is a file, expected a folder"]),
    ("transfer {multi} {root}/missing.png -o {out}", ["IMAGE", "does not exist"]),
    ("transfer {root}/missing.pth {content} -o {out}", ["model config not found", "missing.json"]),
    ("transfer {multi} {content} -o {root}/o.xyz --style 0", ["unsupported suffix '.xyz'"]),
    ("evaluate-sr {afile}", ["DATA", "is a file, expected a folder"]),
    ("evaluate-sr {root}/missing", ["DATA", "does not exist"]),
    ("evaluate-sr {empty}", ["no images", "empty"]),
    ("demo -o {afile}", ["output", "is a file, expected a folder"]),
]


@pytest.mark.parametrize("template, fragments", PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_cli_bad_paths_fail_before_work(template, fragments, files, tmp_path, capsys, monkeypatch):
    if "corrupt" not in template:  # an all-corrupt folder is found while fetching the first batch
        forbid_work(monkeypatch)
    before = {p: os.path.getmtime(p) for p in (files["content"], files["style"], files["hardlink"])}
    expect_error(_argv(template, files, tmp_path), capsys, *fragments)
    assert not (tmp_path / "out.png").exists()
    assert before == {p: os.path.getmtime(p) for p in before}


def test_cli_unwritable_output_folder(files, tmp_path, capsys, monkeypatch):
    """A folder the process cannot write (the check uses os.access, which root passes: simulated here)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        _checks.os, "access", lambda p, mode: False if os.path.abspath(p) == str(locked) else real_access(p, mode)
    )
    forbid_work(monkeypatch)
    expect_error(
        ["stylize", files["content"], files["style"], "-o", str(locked / "o.png"), *GATYS], capsys, "-o", "not writable"
    )
    expect_error(
        ["train", "style", files["data"], files["style"], "-o", str(locked / "run"), *TRAIN],
        capsys,
        "out_dir",
        "not writable",
    )
    expect_error(["demo", "-o", str(locked / "demo")], capsys, "output", "not writable")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_cli_read_only_folder(files, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    forbid_work(monkeypatch)
    expect_error(
        ["stylize", files["content"], files["style"], "-o", str(locked / "o.png"), *GATYS], capsys, "not writable"
    )


def test_cli_missing_output_folders_are_created(files, tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "o.png"
    code, _, _ = run_cli(["stylize", files["content"], files["style"], "-o", str(out), "--size", "16", *GATYS], capsys)
    assert code == 0 and out.is_file()


def test_cli_transfer_folder_outputs_that_collide(files, tmp_path, capsys, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(files["content"], src / "a.png")
    shutil.copy(files["content"], src / "a.jpg")
    forbid_work(monkeypatch)
    expect_error(
        ["transfer", files["multi"], str(src), "-o", str(tmp_path / "dst"), "--style", "0"], capsys, "one file", "a.png"
    )


# --- model files -------------------------------------------------------------------------------------------------
def _model_copy(files, tmp_path, weights_bytes: bytes | None = None, **config) -> str:
    """A copy of the 2-style model, with other weight bytes and / or config values."""
    document = json.loads(open(files["multi"].replace(".pth", ".json")).read())
    document["config"].update(config)
    (tmp_path / "m.json").write_text(json.dumps(document))
    shutil.copy(files["multi"], tmp_path / "m.pth")
    if weights_bytes is not None:
        (tmp_path / "m.pth").write_bytes(weights_bytes)
    return str(tmp_path / "m.pth")


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_truncated_and_malicious_model_files(files, tmp_path, capsys):
    whole = open(files["multi"], "rb").read()
    model = _model_copy(files, tmp_path, whole[: len(whole) // 2])
    line = expect_error(
        ["transfer", model, files["content"], "-o", str(tmp_path / "o.png"), "--style", "0"],
        capsys,
        "m.pth is not a valid model weights file",
    )
    marker = tmp_path / "code-ran"
    torch.save({"w": _RunsCode(str(marker))}, tmp_path / "m.pth")
    line += expect_error(
        ["transfer", model, files["content"], "-o", str(tmp_path / "o.png"), "--style", "0"],
        capsys,
        "not a valid model weights file",
        "could run code",
    )
    assert not marker.exists() and "weights_only=False" not in line and "weights_only` set to `False" not in line
    with pytest.raises(ValueError, match="not a valid model weights file"):
        load_model(model)
    (tmp_path / "m.json").write_text("{not json")
    expect_error(
        ["transfer", model, files["content"], "-o", str(tmp_path / "o.png")], capsys, "not a valid JSON model config"
    )


def test_absurd_model_config_is_checked_against_the_weights_first(files, tmp_path, capsys):
    model = _model_copy(files, tmp_path, channels=10**6)  # would be 1 PB of weights if built
    expect_error(
        ["transfer", model, files["content"], "-o", str(tmp_path / "o.png"), "--style", "0"],
        capsys,
        "weights do not fit the config",
        "down.0.conv.weight",
    )
    model = _model_copy(files, tmp_path, channels=10**9)  # sizes that overflow
    with pytest.raises(ValueError, match="does not describe a network that fits"):
        load_model(model)
    model = _model_copy(files, tmp_path, residual_blocks=10**9)
    with pytest.raises(ValueError, match="residual_blocks=1000000000 does not fit"):
        load_model(model)
    model = _model_copy(files, tmp_path, channels=-3)
    with pytest.raises(ValueError, match="channels must be an integer >= 1"):
        load_model(model)


def test_safetensors_truncated(tmp_path):
    path = save_model(TransformNet(channels=4, residual_blocks=1), tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="m.safetensors is not a valid model weights file"):
        load_model(path)


@pytest.mark.parametrize("name", ["evil.pth", "short.pth"])
def test_vgg_weights_file_errors_never_advise_weights_only_false(tmp_path, name):
    marker = tmp_path / "code-ran"
    torch.save({"features.0.weight": _RunsCode(str(marker))}, tmp_path / "evil.pth")
    (tmp_path / "short.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=f"{name} is not a valid VGG weights file") as info:
        vgg.VGGFeatures(["relu1_1"], weights=str(tmp_path / name))
    assert "weights_only" not in str(info.value)
    assert not marker.exists()


def test_nan_weights_give_an_error_not_a_black_image(files, tmp_path, capsys):
    model, _ = load_model(files["multi"])
    with torch.no_grad():
        model.out_conv.bias.fill_(float("nan"))
    path = save_model(model, tmp_path / "nan.pth")
    expect_error(
        ["transfer", str(path), files["content"], "-o", str(tmp_path / "o.png"), "--style", "0"],
        capsys,
        "non-finite values",
        "o.png",
    )
    assert not (tmp_path / "o.png").exists()


# --- style mixes in the API --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "style, error, text",
    [
        ({0: float("nan"), 1: 1.0}, ValueError, "finite"),
        ({0: float("inf"), 1: 1.0}, ValueError, "finite"),
        ({0: -0.5, 1: 1.5}, ValueError, ">= 0"),
        ({0: 0.0, 1: 0.0}, ValueError, "positive"),
        ({}, ValueError, "positive"),
        ({2: 1.0}, ValueError, "2 styles"),
        ({-1: 1.0}, ValueError, ">= 0"),
        ({0.5: 1.0}, TypeError, "integer"),
        ({0: "1"}, TypeError, "number"),
        (1.0, TypeError, "integer"),
        (True, TypeError, "integer"),
        ("1,0", ValueError, "style index"),
    ],
    ids=[
        "nan_weight",
        "inf_weight",
        "negative_weight",
        "zero_weights",
        "empty_mix",
        "index_out_of_range",
        "negative_index",
        "float_index",
        "string_weight",
        "float",
        "bool",
        "string_with_comma",
    ],
)
def test_api_style_selection(files, style, error, text):
    model, _ = load_model(files["multi"])
    with pytest.raises(error, match=text):
        johnson.stylize_feedforward(model, torch.rand(1, 3, 8, 8), style=style, device="cpu")


def test_api_style_mix_is_used_as_given(files):
    model, _ = load_model(files["multi"])
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(
        johnson.stylize_feedforward(model, x, style={1: 2.0, 0: 0.0}, device="cpu"),
        johnson.stylize_feedforward(model, x, style=1, device="cpu"),
    )
    assert johnson.parse_style(" 1 ") == 1 and johnson.parse_style("0:1, 1:3") == {0: 1.0, 1: 3.0}


# --- the Python API: checks before work --------------------------------------------------------------------------
@pytest.fixture
def picture():
    return torch.rand(1, 3, 32, 32)


API_CASES = [
    (lambda p: gatys.stylize(p, p, size=0), ValueError, "size must be an integer >= 1"),
    (lambda p: gatys.stylize(p, p, size=32.0), TypeError, "size must be an integer"),
    (lambda p: gatys.stylize(p, p, lr=0), ValueError, "lr must be > 0"),
    (lambda p: gatys.stylize(p, p, iterations=-1), ValueError, "iterations"),
    (lambda p: gatys.stylize(p, p, style_weight=float("nan")), ValueError, "style_weight must be a finite"),
    (lambda p: gatys.stylize(p, p, content_weight=1e39), ValueError, "content_weight must be at most"),
    (lambda p: gatys.stylize(p, p, style_scale=float("nan")), ValueError, "style_scale must be a finite"),
    (lambda p: gatys.stylize(p, p, multiscale=[0, 32]), ValueError, r"multiscale\[0\]"),
    (lambda p: gatys.stylize(p, p, multiscale=[32, 32]), ValueError, "strictly increasing"),
    (lambda p: gatys.stylize(p, p, save_every=2), ValueError, "save_every > 0 needs save_path"),
    (lambda p: gatys.stylize(p, p, seed=-1), ValueError, "seed"),
    (lambda p: gatys.stylize(p, p, style_blend_weights=[float("nan")]), ValueError, "finite"),
    (lambda p: gatys.stylize(p, p, device="cuda:99"), ValueError, "cuda:99"),
    (lambda p: gatys.stylize(p, p, callback=3), TypeError, "callback"),
    (lambda p: gatys.synthesize_texture(p, 0), ValueError, "size must be an integer >= 1"),
    (lambda p: gatys.synthesize_texture(p, (32, 32, 32)), ValueError, "height, width"),
    (lambda p: gatys.synthesize_texture(p, 32, style_size=0), ValueError, "style_size must be an integer >= 1"),
    (lambda p: gatys.synthesize_texture(p, 32, lr=0.0), ValueError, "lr must be > 0"),
    (lambda p: dip.denoise(p, iterations=0), ValueError, "iterations must be an integer >= 1"),
    (lambda p: dip.denoise(p, log_every=0), ValueError, "log_every must be an integer >= 1"),
    (lambda p: dip.denoise(p, lr=float("inf")), ValueError, "lr must be a finite"),
    (lambda p: dip.denoise(p, ema_weight=1.0), ValueError, "ema_weight"),
    (lambda p: dip.denoise(p, reg_noise_std=-1), ValueError, "reg_noise_std"),
    (lambda p: dip.denoise(p, input_kind="grid"), ValueError, "input_kind"),
    (lambda p: dip.denoise(p, save_path="x.txt"), ValueError, "save_path x.txt has an unsupported suffix"),
    (lambda p: dip.super_resolve(p, 0), ValueError, "factor must be an integer >= 1"),
    (lambda p: dip.super_resolve(p, float("nan")), ValueError, "factor"),
    (lambda p: dip.super_resolve(p, float("inf")), ValueError, "factor"),
    (
        lambda p: dip.inpaint(p, torch.ones(1, 3, 32, 32), ground_truth=torch.rand(1, 3, 8, 8)),
        ValueError,
        "ground_truth",
    ),
    (lambda p: dip.add_noise(p, float("nan")), ValueError, "sigma must be a finite"),
    (lambda p: metrics.psnr(p, torch.full_like(p, float("nan"))), ValueError, "NaN or Inf"),
    (lambda p: metrics.psnr(p, p, peak=0), ValueError, "peak"),
    (lambda p: johnson.ImageFolder("/nonexistent-folder"), FileNotFoundError, "does not exist"),
    (lambda p: johnson.parse_style("1.5"), ValueError, "style '1.5'"),
    (lambda p: resolve_device("bogus"), ValueError, "not a device name"),
    (lambda p: resolve_device(3), TypeError, "device must be"),
    (lambda p: images.save_image(p, ""), TypeError, "non-empty path"),
]


@pytest.mark.parametrize(
    "call, error, text", API_CASES, ids=unique_ids(f"{call_id(call)}-{text_id(text)}" for call, _, text in API_CASES)
)
def test_api_bad_arguments_fail_before_work(call, error, text, picture, no_work):
    with pytest.raises(error, match=text):
        call(picture)


def test_api_explicit_empty_values_are_not_replaced_by_defaults(files, tmp_path, no_work):
    with pytest.raises(FileNotFoundError, match="weights=''"):
        demo.run(tmp_path / "demo", size=16, iterations=1, weights="")
    assert not (tmp_path / "demo").exists()


def test_api_dip_save_path_never_an_input(files, no_work):
    with pytest.raises(ValueError, match="save_path .* is the same file as the input"):
        dip.denoise(files["content"], save_path=files["hardlink"])
    with pytest.raises(ValueError, match="save_path .* is the same file as the input"):
        dip.inpaint(files["content"], files["style"], save_path=files["style"])


TRAIN_CONFIG_CASES = [
    ("crop", 0, "config.crop must be an integer >= 1"),
    ("lr", 0.0, "config.lr must be > 0"),
    ("lr", float("nan"), "config.lr must be a finite"),
    ("log_every", 0, "config.log_every"),
    ("batch_size", 0, "config.batch_size"),
    ("iterations", 0, "config.iterations"),
    ("style_weight", float("inf"), "config.style_weight"),
    ("style_size", 0, "config.style_size"),
    ("seed", -1, "config.seed"),
    ("style_layers", (), "config.style_layers"),
    ("checkpoint_every", -1, "config.checkpoint_every"),
    ("batch_size", 4, "batch_size 4 is larger than the 3 images"),
]


@pytest.mark.parametrize(
    "field, value, text",
    TRAIN_CONFIG_CASES,
    ids=unique_ids(f"{field}={value_id(value)}" for field, value, _ in TRAIN_CONFIG_CASES),
)
def test_api_train_config_checked_before_work(field, value, text, files, tmp_path, no_work):
    config = johnson.TrainConfig(**{"crop": CROP, "vgg_weights": "random", "workers": 0, field: value})
    with pytest.raises((ValueError, TypeError), match=text):
        johnson.train_style(files["data"], [files["style"]], tmp_path / "run", config, device="cpu", progress=False)
    assert not (tmp_path / "run").exists()


def test_api_train_sr_config(files, tmp_path, no_work):
    with pytest.raises(ValueError, match="config.factor must be one of 2, 4, 8"):
        johnson.train_super_resolution(files["data"], tmp_path / "sr", johnson.TrainConfig(factor=3, crop=30))
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        johnson.train_super_resolution(files["data"], tmp_path / "sr", {"crop": 32})


# --- training: consistent checkpoints, resume targets, corrupt images -------------------------------------------
def train(data, styles, out, **kwargs):
    """4 steps, no periodic checkpoint (the checkpoint written at the end and on Ctrl-C is what is tested)."""
    return train_style_quietly(data, styles, out, **{"iterations": 4, "checkpoint_every": 0, **kwargs})


def checkpoint(out) -> dict:
    return torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)


def adam_steps(state: dict) -> int:
    return int(state["optimizer"]["state"][0]["step"])


@pytest.fixture(scope="module")
def uninterrupted(files, tmp_path_factory):
    return train(files["data"], [files["style"]], tmp_path_factory.mktemp("full") / "run")


def test_ctrl_c_while_fetching_a_batch_saves_a_consistent_checkpoint(files, uninterrupted, tmp_path, monkeypatch):
    original, calls = johnson.ImageFolder.__getitem__, []

    def interrupt_on_the_fifth_fetch(self, key):
        calls.append(key)
        if len(calls) == 5:  # the first sample of step 3's batch
            raise KeyboardInterrupt
        return original(self, key)

    monkeypatch.setattr(johnson.ImageFolder, "__getitem__", interrupt_on_the_fifth_fetch)
    with pytest.raises(KeyboardInterrupt):
        train(files["data"], [files["style"]], tmp_path / "run")
    state = checkpoint(tmp_path / "run")
    assert state["step"] == 2 == adam_steps(state) and state["data_position"] == 4
    monkeypatch.setattr(johnson.ImageFolder, "__getitem__", original)
    resumed = train(files["data"], [files["style"]], tmp_path / "run", resume=True)
    assert [r["step"] for r in resumed.losses] == [3, 4]
    assert [r["loss"] for r in resumed.losses] == [r["loss"] for r in uninterrupted.losses[2:]]
    for (name, a), b in zip(uninterrupted.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    rows = (tmp_path / "run" / "losses.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "1", "2", "3", "4"]


def test_ctrl_c_during_the_optimizer_step_lands_after_it(files, tmp_path, monkeypatch):
    original, calls = torch.optim.Adam.step, []

    def step_then_interrupt(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C right after the update of step 2
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(files["data"], [files["style"]], tmp_path / "run")
    state = checkpoint(tmp_path / "run")
    assert state["step"] == 2 == adam_steps(state) and calls == [1, 1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resume_refuses_a_target_it_has_passed(files, tmp_path):
    out = tmp_path / "run"
    train(files["data"], [files["style"]], out, iterations=3)
    saved = {name: (out / name).read_bytes() for name in ("checkpoint.pt", "model.pth", "model.json", "losses.csv")}
    with pytest.raises(ValueError, match="at step 3, past the target iterations=2"):
        train(files["data"], [files["style"]], out, iterations=2, resume=True)
    assert saved == {name: (out / name).read_bytes() for name in saved}
    same = train(files["data"], [files["style"]], out, iterations=3, resume=True)  # reached: nothing to train
    assert same.losses == [] and checkpoint(out)["step"] == 3 == adam_steps(checkpoint(out))
    assert (out / "losses.csv").read_bytes() == saved["losses.csv"]


def test_resume_with_other_settings_is_refused_in_one_line(files, tmp_path):
    out = tmp_path / "run"
    train(files["data"], [files["style"]], out, iterations=1)
    with pytest.raises(ValueError) as info:
        train(files["data"], [files["style"], files["style2"]], out, iterations=2, resume=True)
    assert "num_styles=None there, 2 here" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="batch_size=2 there, 3 here"):
        train(files["data"], [files["style"]], out, iterations=2, batch_size=3, resume=True)
    with pytest.raises(ValueError, match="already holds a training checkpoint"):
        train(files["data"], [files["style"]], out, iterations=2)
    (out / "checkpoint.pt").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="checkpoint.pt is not a valid training checkpoint"):
        train(files["data"], [files["style"]], out, iterations=2, resume=True)


def test_corrupt_images_use_no_training_steps(files, tmp_path, capsys):
    data = tmp_path / "mixed"
    shutil.copytree(files["data"], data)
    for i in range(3):
        (data / f"bad{i}.png").write_bytes(b"corrupt")
    folder = johnson.ImageFolder(data, crop=CROP)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream = johnson._batches(folder, 2, 0, 0, 0)
        batches = [next(stream) for _ in range(6)]
        stream.close()
        later = johnson._batches(folder, 2, 0, 0, batches[2][1])  # resume after the third batch
        assert all(torch.equal(a[0], next(later)[0]) for a in batches[3:])
        later.close()
    assert all(batch.shape == (2, 3, CROP, CROP) for batch, _ in batches)
    positions = [p for _, p in batches]
    assert positions == sorted(positions) and positions[-1] > 12  # skipped samples advanced the stream only
    code, out, _ = run_cli(["train", "style", str(data), files["style"], "-o", str(tmp_path / "run"), *TRAIN], capsys)
    assert code == 0 and "at step 2" in out and "nan" not in out
    rows = (tmp_path / "run" / "losses.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2"] and "nan" not in "".join(rows)


def test_cli_train_summary_without_training_steps(files, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert run_cli(["train", "style", files["data"], files["style"], "-o", out, *TRAIN], capsys)[0] == 0
    code, printed, _ = run_cli(["train", "style", files["data"], files["style"], "-o", out, *TRAIN, "--resume"], capsys)
    assert code == 0 and "no training step was left" in printed and "nan" not in printed
    code, _, err = run_cli(
        ["train", "style", files["data"], files["style"], "-o", out, *TRAIN, "--resume", "--iterations", "1"], capsys
    )
    assert code == 2 and err.startswith("error: resume:") and "past the target iterations=1" in err


def test_cli_huge_loss_is_an_error(files, tmp_path, capsys, monkeypatch):
    """A loss that overflows (weights inside the float32 range, product outside) stops with an error."""
    real = gatys._Objective.__call__

    def overflowing(self, image):
        terms = real(self, image)
        terms["loss"] = terms["loss"] * float("inf")
        return terms

    monkeypatch.setattr(gatys._Objective, "__call__", overflowing)
    expect_error(
        ["stylize", files["content"], files["style"], "-o", str(tmp_path / "o.png"), "--size", "16", *GATYS],
        capsys,
        "the loss became",
        "iteration 0",
    )
    assert not (tmp_path / "o.png").exists()


def test_cli_training_loss_overflow_is_an_error(files, tmp_path, capsys, monkeypatch):
    real = johnson.pk.content_loss
    monkeypatch.setattr(johnson.pk, "content_loss", lambda *args, **kwargs: real(*args, **kwargs) * float("inf"))
    out = tmp_path / "run"
    expect_error(
        ["train", "style", files["data"], files["style"], "-o", str(out), *TRAIN],
        capsys,
        "the loss became inf at step 1",
    )
    assert not (out / "model.pth").exists() and not (out / "checkpoint.pt").exists()


def test_load_model_on_a_missing_device(files):
    if torch.cuda.is_available():
        pytest.skip("checks the message of a machine without CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_model(files["multi"], map_location="cuda")
