"""Deep Image Prior: quality bars on the paper's images at reduced size, loop behaviour, bad input, the CLI."""

from __future__ import annotations

import warnings

import pytest
import torch
from _helpers import shared_image

from perceptual_kernels.api import cli, dip, images, metrics

SMALL_NET = {"channels_down": (32,) * 4, "channels_up": (32,) * 4, "channels_skip": (4,) * 4}


def center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    H, W = img.shape[-2:]
    top, left = (H - size) // 2, (W - size) // 2
    return img[..., top : top + size, left : left + size]


def test_denoising_f16_beats_the_noisy_input():
    """F16, sigma 25, a 128x128 crop, a 4-scale 32-channel skip net, 400 steps (the paper: 512, 5x128, 3000)."""
    clean = center_crop(images.load_image(shared_image("dip/F16_GT.png")), 128)
    noisy = dip.add_noise(clean, 25, seed=0)
    result = dip.denoise(
        noisy, ground_truth=clean, iterations=400, net_kwargs=SMALL_NET, log_every=50, progress=False, device="cpu"
    )
    noisy_psnr = metrics.psnr(noisy, clean)
    gain = metrics.psnr(result.average, clean) - noisy_psnr
    print(
        f"F16 sigma 25 128px: noisy {noisy_psnr:.2f} dB, average {noisy_psnr + gain:.2f} dB, "
        f"best {result.best_psnr:.2f} dB"
    )
    assert gain >= 4.0


def test_inpainting_kate_beats_the_masked_input():
    clean = center_crop(images.load_image(shared_image("dip/kate.png")), 128)
    mask = center_crop(images.load_image(shared_image("dip/kate_mask.png")), 128)
    m = dip.load_mask(mask, (128, 128), torch.device("cpu"))
    masked = clean * m
    result = dip.inpaint(
        masked,
        mask,
        ground_truth=clean,
        iterations=300,
        log_every=50,
        progress=False,
        device="cpu",
        net_kwargs={**SMALL_NET, "channels_skip": (32,) * 4},
    )
    masked_psnr, ours = metrics.psnr(masked, clean), metrics.psnr(result.average, clean)
    print(f"kate inpainting 128px: masked {masked_psnr:.2f} dB, average {ours:.2f} dB")
    assert ours > masked_psnr + 3.0


def test_super_resolution_shapes_psnr_history_and_seed():
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(1, 3, 32, 48, generator=g)
    lr = torch.nn.functional.avg_pool2d(hr, 4)
    kwargs = dict(
        ground_truth=hr,
        iterations=20,
        log_every=10,
        progress=False,
        device="cpu",
        net_kwargs={"channels_down": (8,) * 3, "channels_up": (8,) * 3, "channels_skip": (2,) * 3},
    )
    a = dip.super_resolve(lr, 4, **kwargs)
    b = dip.super_resolve(lr, 4.0, **kwargs)
    assert a.output.shape == (1, 3, 32, 48) and torch.equal(a.output, b.output)
    assert a.history.iteration == [10, 20] and len(a.history.psnr) == 2 and a.best is not None
    assert a.best_psnr == max(a.history.psnr + a.history.psnr_average)


def test_odd_sizes_are_padded_and_cropped_back():
    img = torch.rand(1, 3, 30, 21)
    with pytest.warns(UserWarning, match="cropping the output back to 30x21"):
        result = dip.denoise(
            img,
            iterations=2,
            log_every=1,
            progress=False,
            device="cpu",
            net_kwargs={"channels_down": (8,) * 3, "channels_up": (8,) * 3, "channels_skip": (2,) * 3},
        )
    assert result.output.shape == result.average.shape == (1, 3, 30, 21)


def test_backtracking_restores_parameters_when_the_loss_jumps():
    target = torch.rand(1, 3, 16, 16)
    calls = []

    def data_term(out):
        calls.append(1)
        loss = torch.nn.functional.mse_loss(out, target)
        return loss * 1e6 if len(calls) == 10 else loss

    result = dip.fit(
        data_term,
        (16, 16),
        task="denoise",
        iterations=20,
        log_every=5,
        progress=False,
        net_kwargs={"channels_down": (8,) * 2, "channels_up": (8,) * 2, "channels_skip": (2,) * 2},
    )
    assert result.history.backtracks == [9] and result.history.iteration == [5, 15, 20]


@pytest.mark.parametrize(
    "call,error,text",
    [
        (lambda: dip.super_resolve(torch.rand(1, 3, 8, 8), 2.5, iterations=1), ValueError, "factor must be an integer"),
        (
            lambda: dip.inpaint(torch.rand(1, 3, 16, 16), torch.ones(1, 3, 8, 8), iterations=1),
            ValueError,
            "must have one size",
        ),
        (
            lambda: dip.denoise(torch.rand(1, 3, 16, 16), ground_truth=torch.rand(1, 3, 8, 8)),
            ValueError,
            "must have one size",
        ),
    ],
    ids=["super_resolve-fractional_factor", "inpaint-mask_size", "denoise-ground_truth_size"],
)
def test_bad_input(call, error, text):
    with pytest.raises(error, match=text):
        call()


def test_non_binary_mask_is_thresholded_with_a_warning():
    with pytest.warns(UserWarning, match="not binary"):
        m = dip.load_mask(torch.full((1, 3, 4, 4), 0.7), (4, 4), torch.device("cpu"))
    assert torch.equal(m, torch.ones(1, 1, 4, 4))


def test_cli(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    clean = images.save_image(torch.rand(1, 3, 32, 32, generator=g), tmp_path / "clean.png")
    mask = images.save_image((torch.rand(1, 3, 32, 32, generator=g) > 0.3).float(), tmp_path / "mask.png")
    common = ["--iterations", "4", "--log-every", "2", "--no-progress", "--device", "cpu", "--net", "hourglass"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (
            cli.main(
                [
                    "dip",
                    "denoise",
                    str(clean),
                    "--add-noise",
                    "25",
                    "-o",
                    str(tmp_path / "d.png"),
                    "--output-kind",
                    "best",
                    *common,
                ]
            )
            == 0
        )
        assert "PSNR" in capsys.readouterr().out
        assert cli.main(["dip", "inpaint", str(clean), str(mask), "-o", str(tmp_path / "i.png"), *common]) == 0
        assert cli.main(["dip", "sr", str(clean), "--factor", "2", "-o", str(tmp_path / "s.png"), *common]) == 0
        assert images.load_image(tmp_path / "s.png").shape == (1, 3, 64, 64)
        assert cli.main(["dip", "sr", str(clean), "--factor", "2.5", "-o", str(tmp_path / "x.png"), *common]) == 2
        assert cli.main(["dip", "denoise", str(clean), "-o", str(clean), *common]) == 2


def test_ctrl_c_keeps_the_running_average(tmp_path):
    def interrupt(info):
        if info["iteration"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dip.denoise(
            torch.rand(1, 3, 16, 16),
            iterations=10,
            log_every=2,
            progress=False,
            device="cpu",
            callback=interrupt,
            save_path=tmp_path / "partial.png",
            net_kwargs={"channels_down": (8,) * 2, "channels_up": (8,) * 2, "channels_skip": (2,) * 2},
        )
    assert images.load_image(tmp_path / "partial.png").shape == (1, 3, 16, 16)
