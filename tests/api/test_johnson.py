"""Johnson training and inference on a tiny image folder: losses fall, resume equals an uninterrupted run, style
mixing, saved models reload, unreadable files are skipped, the CLI."""

from __future__ import annotations

import warnings

import pytest
import torch
from _helpers import tiny_train_config, train_style_quietly

from perceptual_kernels.api import cli, images, johnson

CROP = 32


@pytest.fixture
def data_dir(tmp_path):
    g = torch.Generator().manual_seed(0)
    root = tmp_path / "data"
    for i in range(5):
        sub = root / ("nested" if i % 2 else "")
        images.save_image(torch.rand(1, 3, 40 + i, 44, generator=g), sub / f"img{i}.png")
    (root / "broken.jpg").write_bytes(b"not an image")
    return root


@pytest.fixture
def style_paths(tmp_path):
    g = torch.Generator().manual_seed(1)
    return [images.save_image(torch.rand(1, 3, 32, 32, generator=g), tmp_path / f"style{i}.png") for i in range(2)]


config = tiny_train_config
train = train_style_quietly


def optimizer_steps(state: dict) -> int:
    """The number of Adam steps a checkpoint's optimizer state has taken."""
    return int(state["optimizer"]["state"][0]["step"])


def test_style_training_loss_falls_and_outputs(data_dir, style_paths, tmp_path):
    result = train(data_dir, style_paths[:1], tmp_path / "run", iterations=30, batch_size=4)
    losses = [row["loss"] for row in result.losses]
    assert len(losses) == 30 and sum(losses[-5:]) < sum(losses[:5])
    run = tmp_path / "run"
    assert {"checkpoint.pt", "losses.csv", "model.pth", "model.json"} <= {p.name for p in run.iterdir()}
    assert len((run / "losses.csv").read_text().splitlines()) == 31


def test_unreadable_files_are_skipped_with_a_warning(data_dir):
    data = johnson.ImageFolder(data_dir, crop=CROP)
    broken = [i for i, p in enumerate(data.files) if p.name == "broken.jpg"][0]
    with pytest.warns(UserWarning, match="skipping unreadable"):
        assert data[broken] is None
    assert len(data) == 6 and data[(broken + 1) % 6].shape == (3, CROP, CROP)
    assert torch.equal(data[(broken + 1) % 6], data[0, (broken + 1) % 6])  # an int key is epoch 0


def test_resume_gives_the_same_next_steps(data_dir, style_paths, tmp_path):
    full = train(data_dir, style_paths, tmp_path / "full")
    train(data_dir, style_paths, tmp_path / "part", iterations=3)
    resumed = train(data_dir, style_paths, tmp_path / "part", resume=True)
    assert [r["step"] for r in resumed.losses] == [4, 5, 6]
    assert [r["loss"] for r in resumed.losses] == [r["loss"] for r in full.losses[3:]]
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_multi_style_model_mixing_and_reload(data_dir, style_paths, tmp_path):
    result = train(data_dir, style_paths, tmp_path / "multi", iterations=2)
    model, metadata = johnson.load_model(result.model_path)
    assert metadata["styles"] == ["style0.png", "style1.png"] and model.num_styles == 2
    x = torch.rand(1, 3, 24, 20)
    mixed = johnson.stylize_feedforward(model, x, style="0:0.25,1:0.75", device="cpu")
    rows = johnson.stylize_feedforward(model, x, all_styles=True, device="cpu")
    assert rows.shape == (2, 3, 24, 20) and mixed.shape == (1, 3, 24, 20)
    # Dumoulin's interpolation: the mix equals a model whose gamma / beta are the convex mix of the rows
    single, _ = johnson.load_model(result.model_path)
    for module in single.modules():
        if hasattr(module, "gamma") and isinstance(module.gamma, torch.nn.Parameter):
            with torch.no_grad():
                module.gamma[0] = 0.25 * module.gamma[0] + 0.75 * module.gamma[1]
                module.beta[0] = 0.25 * module.beta[0] + 0.75 * module.beta[1]
    assert torch.allclose(mixed, johnson.stylize_feedforward(single, x, style=0, device="cpu"), atol=1e-6)
    with pytest.raises(ValueError, match="2 styles"):
        johnson.stylize_feedforward(model, x, device="cpu")


def test_super_resolution_training_and_degradation(data_dir, tmp_path):
    hr = torch.rand(2, 3, 32, 32)
    assert johnson.degrade(hr, 4).shape == (2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = johnson.train_super_resolution(
            data_dir,
            tmp_path / "sr",
            config(factor=4, pixel_weight=1.0, content_weight=1.0, style_weight=0.0, iterations=3),
            device="cpu",
            progress=False,
        )
    model, metadata = johnson.load_model(result.model_path)
    assert metadata["factor"] == 4
    assert johnson.stylize_feedforward(model, torch.rand(1, 3, 9, 7), device="cpu").shape == (1, 3, 36, 28)


def test_ctrl_c_saves_a_checkpoint(data_dir, style_paths, tmp_path, monkeypatch):
    calls = []
    original = johnson._save_sample

    def interrupt(*args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(johnson, "_save_sample", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(data_dir, style_paths[:1], tmp_path / "stop", sample_every=2, checkpoint_every=0)
    state = torch.load(tmp_path / "stop" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2 == optimizer_steps(state) and calls == [1]
    monkeypatch.setattr(johnson, "_save_sample", original)


def test_cli_train_transfer(data_dir, style_paths, tmp_path):
    out = tmp_path / "cli"
    common = [
        "--iterations",
        "2",
        "--batch-size",
        "2",
        "--crop",
        str(CROP),
        "--vgg-weights",
        "random",
        "--workers",
        "0",
        "--no-progress",
        "--device",
        "cpu",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["train", "style", str(data_dir), *map(str, style_paths), "-o", str(out), *common]) == 0
    image = images.save_image(torch.rand(1, 3, 20, 24), tmp_path / "in.png")
    assert (
        cli.main(["transfer", str(out / "model.pth"), str(image), "-o", str(tmp_path / "o.png"), "--style", "1"]) == 0
    )
    assert (
        cli.main(["transfer", str(out / "model.pth"), str(image), "-o", str(tmp_path / "all.png"), "--all-styles"]) == 0
    )
    assert images.load_image(tmp_path / "all.png").shape == (1, 3, 20, 48)
    assert cli.main(["transfer", str(out / "model.pth"), str(image), "-o", str(image), "--style", "0"]) == 2
    assert (
        cli.main(["transfer", str(out / "model.pth"), str(image), "-o", str(tmp_path / "x.png"), "--style", "7"]) == 2
    )


def test_cli_evaluate_sr_bicubic(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    for name in ("a", "b"):
        images.save_image(torch.rand(1, 3, 34, 30, generator=g), tmp_path / "set" / f"{name}.png")
    assert cli.main(["evaluate-sr", str(tmp_path / "set"), "--factor", "2"]) == 0
    out = capsys.readouterr().out
    assert "| a |" in out and "| mean |" in out and "bicubic" in out
