"""Deep Image Prior (Ulyanov et al., CVPR 2018): denoising, inpainting and super-resolution.

A randomly initialised network ``f_theta`` with a fixed noise input ``z`` is fitted to the corrupted image ``x0``
by minimising only a data term; the architecture is the prior and early stopping the regulariser:
    denoise:  ||f(z) - x0||^2          inpaint: ||(f(z) - x0) * m||^2          super-resolve: ||d(f(z)) - x0||^2
with ``d`` the Lanczos-2 antialiased downsampler. The data terms are the fused ``content_loss`` (feature MSE) and
the optional DIP-TV term the fused ``tv_loss``. Each step perturbs ``z`` by ``reg_noise_std`` noise, Adam updates
theta, and an exponential moving average of the outputs (0.99) is kept. Every ``log_every`` steps (the only
host syncs) the loss is read: if it jumped (the data PSNR fell by more than 5 dB since the last check) the
parameters of that check are restored, as in the authors' code; with a ground truth the PSNR of the output and of
the average are recorded and the best iterate is kept. Defaults are the authors' per-task settings.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

import perceptual_kernels as pk

from . import _checks, images, loop, metrics
from ._device import resolve_device
from .dip_nets import Downsampler, get_net, get_noise, task_defaults
from .images import ImageLike

TASK_ITERATIONS = {"denoise": 3000, "inpaint": 6000, "sr4": 2000, "sr8": 4000}


@dataclass
class DIPHistory:
    """Values at the logged iterations: data loss, PSNR of the output and of the running average (with a ground
    truth), seconds since the start, and the iterations where a backtrack restored earlier parameters."""

    iteration: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    psnr_average: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    backtracks: list[int] = field(default_factory=list)


@dataclass
class DIPResult:
    """``output``: the last output; ``average``: the exponential moving average of outputs; ``best``: the logged
    iterate with the highest PSNR against the ground truth (None without one). Images (1, 3, H, W) in [0, 1]."""

    output: torch.Tensor
    average: torch.Tensor
    best: torch.Tensor | None
    best_psnr: float | None
    history: DIPHistory


def _padded(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def fit(
    data_term: Callable[[torch.Tensor], torch.Tensor],
    out_size: tuple[int, int],
    *,
    task: str,
    iterations: int,
    lr: float = 0.01,
    reg_noise_std: float = 1.0 / 30,
    net: str = "skip",
    net_kwargs: dict | None = None,
    input_depth: int = 32,
    input_kind: str = "noise",
    ema_weight: float = 0.99,
    tv_weight: float = 0.0,
    ground_truth: torch.Tensor | None = None,
    log_every: int = 100,
    backtrack: bool = True,
    seed: int = 0,
    device: torch.device | None = None,
    autocast: bool = False,
    compile: bool = False,
    callback: Callable[[dict], object] | None = None,
    progress: bool = True,
    save_path: str | os.PathLike | None = None,
    protected: Sequence[str | os.PathLike] = (),
) -> DIPResult:
    """The DIP optimisation loop shared by the tasks: ``data_term(output)`` gives the loss of an output cropped to
    ``out_size``; the network runs on the size padded up to its downsampling multiple (said in a warning).
    ``net``: "skip" (with the authors' settings for ``task``, overridden by ``net_kwargs``), "unet" or
    "hourglass" (built from ``net_kwargs`` alone). On Ctrl-C the running average is written to ``save_path``
    (when given, never over a ``protected`` input) before the interrupt propagates."""
    iterations = _checks.integer("iterations", iterations, 1)
    lr = _checks.number("lr", lr, positive=True)
    reg_noise_std = _checks.number("reg_noise_std", reg_noise_std, 0.0)
    ema_weight = _checks.number("ema_weight", ema_weight, 0.0)
    if ema_weight >= 1:
        raise ValueError(f"ema_weight must be in [0, 1), got {ema_weight:g}")
    tv_weight = _checks.number("tv_weight", tv_weight, 0.0)
    log_every = _checks.integer("log_every", log_every, 1)
    input_depth = _checks.integer("input_depth", input_depth, 1)
    seed = _checks.seed(seed)
    if input_kind not in ("noise", "meshgrid"):
        raise ValueError(f"input_kind must be 'noise' or 'meshgrid', got {input_kind!r}")
    _checks.callback(callback)
    if save_path is not None:
        _checks.output_path("save_path", save_path, protected, images.SAVE_FORMATS)
    device = torch.device("cpu") if device is None else device
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    kwargs = {**(task_defaults(task) if net == "skip" else {}), **(net_kwargs or {})}
    kwargs.pop("input_depth", None)
    depth = 2 if input_kind == "meshgrid" else input_depth
    model = get_net(net, depth, 3, **kwargs).to(device)
    H, W = out_size
    multiple = model.multiple
    smallest = _padded(getattr(model, "min_size", 1), multiple)
    size = (max(_padded(H, multiple), smallest), max(_padded(W, multiple), smallest))
    if size != (H, W):
        warnings.warn(
            f"DIP: the {net} network needs sides divisible by {multiple} and at least {smallest}: "
            f"running at {size[0]}x{size[1]} and cropping the output back to {H}x{W}",
            stacklevel=3,
        )
    z = get_noise(depth, size, input_kind, generator=g).to(device)
    model, z = loop.channels_last(model, device), loop.channels_last(z, device)
    forward = torch.compile(model) if compile else model
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history, average = DIPHistory(), None
    best = best_psnr = None
    checkpoint = copy.deepcopy(model.state_dict())
    last_psnr = None
    start = time.perf_counter()
    output = None

    def keep_average() -> str | None:  # on Ctrl-C
        if save_path is None or average is None:
            return None
        saved = images.save_image(average.clamp(0, 1), save_path, protected=protected)
        return f"interrupted: kept the running average in {saved}"

    with loop.progress(iterations, f"dip {task}", enabled=progress, on_interrupt=keep_average) as bar:
        for it in range(iterations):
            z_in = z + reg_noise_std * torch.randn_like(z) if reg_noise_std > 0 else z
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                raw = forward(z_in)
            output = raw[..., :H, :W].float()
            loss = data_term(output)
            if tv_weight:
                loss = loss + pk.tv_loss(output, weight=tv_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
            output = output.detach()
            average = output if average is None else average * ema_weight + output * (1 - ema_weight)
            if (it + 1) % log_every and it + 1 != iterations:
                continue
            value = loss.item()  # the logging sync
            loop.check_finite(value, f"at iteration {it + 1}", "lower lr or tv_weight", name="DIP loss")
            data_psnr = -10 * math.log10(max(value, 1e-30))
            if backtrack and last_psnr is not None and data_psnr < last_psnr - 5:
                model.load_state_dict(checkpoint)  # in place: Adam keeps its moments, as in the authors' code
                history.backtracks.append(it)
                continue
            checkpoint, last_psnr = copy.deepcopy(model.state_dict()), data_psnr
            history.iteration.append(it + 1)
            history.loss.append(value)
            history.time.append(time.perf_counter() - start)
            postfix = {"loss": f"{value:.3g}"}
            if ground_truth is not None:
                p = metrics.psnr(output.clamp(0, 1), ground_truth)
                pa = metrics.psnr(average.clamp(0, 1), ground_truth)
                history.psnr.append(p)
                history.psnr_average.append(pa)
                postfix.update(psnr=f"{p:.2f}", psnr_avg=f"{pa:.2f}")
                if best_psnr is None or max(p, pa) > best_psnr:
                    best_psnr, best = max(p, pa), (output if p >= pa else average).clamp(0, 1).clone()
            loop.show(bar, postfix)
            if callback is not None:
                callback({"iteration": it + 1, "output": output, "average": average, "loss": value})
    return DIPResult(output.clamp(0, 1), average.clamp(0, 1), best, best_psnr, history)


def _common(
    ground_truth: ImageLike | None, device: str | torch.device | None, *inputs: object
) -> tuple[torch.device, torch.Tensor | None, list]:
    """The device, the ground truth image and the input paths a save_path must not overwrite."""
    device = resolve_device(device)
    protected = [p for p in (*inputs, ground_truth) if isinstance(p, (str, os.PathLike))]
    return (
        device,
        (images.as_image(ground_truth, "ground_truth", device) if ground_truth is not None else None),
        protected,
    )


def denoise(
    noisy: ImageLike,
    *,
    iterations: int = TASK_ITERATIONS["denoise"],
    lr: float = 0.01,
    reg_noise_std: float = 1.0 / 30,
    ground_truth: ImageLike | None = None,
    device: str | torch.device | None = None,
    **kwargs,
) -> DIPResult:
    """Denoise ``noisy`` by fitting ``||f(z) - x0||^2`` (authors' defaults: 3000 steps, lr 0.01, reg noise 1/30).
    Other keyword arguments go to :func:`fit` (net, net_kwargs, tv_weight, log_every, seed, callback, ...)."""
    device, gt, protected = _common(ground_truth, device, noisy)
    x0 = images.as_image(noisy, "noisy", device)
    if gt is not None and gt.shape != x0.shape:
        raise ValueError(f"ground_truth {tuple(gt.shape)} and noisy {tuple(x0.shape)} must have one size")
    return fit(
        lambda out: pk.content_loss(out, x0),
        tuple(x0.shape[-2:]),
        task="denoise",
        iterations=iterations,
        lr=lr,
        reg_noise_std=reg_noise_std,
        ground_truth=gt,
        device=device,
        protected=protected,
        **kwargs,
    )


def load_mask(mask: ImageLike, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """A (1, 1, H, W) binary mask (1 = known pixel; white in a mask file). Non-binary masks are thresholded at
    0.5 with a warning; a size other than the image's is an error."""
    m = images.as_image(mask, "mask", device).mean(dim=1, keepdim=True)
    if tuple(m.shape[-2:]) != tuple(size):
        raise ValueError(f"mask is {tuple(m.shape[-2:])} but the image is {tuple(size)}: they must have one size")
    binary = (m > 0.5).float()
    if (m - binary).abs().max() > 1 / 255:
        warnings.warn("mask is not binary: thresholded at 0.5 (white = known)", stacklevel=2)
    return binary


def inpaint(
    image: ImageLike,
    mask: ImageLike,
    *,
    iterations: int = TASK_ITERATIONS["inpaint"],
    lr: float = 0.01,
    reg_noise_std: float = 0.03,
    ground_truth: ImageLike | None = None,
    device: str | torch.device | None = None,
    **kwargs,
) -> DIPResult:
    """Fill the unknown pixels (mask 0) by fitting ``||(f(z) - x0) * m||^2`` (authors' defaults: 6000 steps, lr
    0.01, reg noise 0.03, skip net with 128 skip channels and nearest upsampling). The data term is the mean over
    all pixels, like the authors' ``MSELoss`` on masked images."""
    device, gt, protected = _common(ground_truth, device, image, mask)
    x0 = images.as_image(image, "image", device)
    m = load_mask(mask, tuple(x0.shape[-2:]), device)
    if gt is not None and gt.shape != x0.shape:
        raise ValueError(f"ground_truth {tuple(gt.shape)} and image {tuple(x0.shape)} must have one size")
    known = x0 * m
    return fit(
        lambda out: pk.content_loss(out * m, known),
        tuple(x0.shape[-2:]),
        task="inpaint",
        iterations=iterations,
        lr=lr,
        reg_noise_std=reg_noise_std,
        ground_truth=gt,
        device=device,
        protected=protected,
        **kwargs,
    )


def super_resolve(
    low_res: ImageLike,
    factor: int,
    *,
    iterations: int | None = None,
    lr: float = 0.01,
    reg_noise_std: float = 0.03,
    ground_truth: ImageLike | None = None,
    device: str | torch.device | None = None,
    **kwargs,
) -> DIPResult:
    """Upscale ``low_res`` by the integer ``factor`` by fitting ``||d(f(z)) - x0||^2`` with ``d`` the Lanczos-2
    downsampler (authors' defaults: 2000 steps for x4, 4000 for x8, lr 0.01, reg noise 0.03)."""
    if (
        isinstance(factor, bool)
        or not isinstance(factor, (int, float))
        or not math.isfinite(factor)
        or not float(factor).is_integer()
        or int(factor) < 1
    ):
        raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
    factor = int(factor)
    device, gt, protected = _common(ground_truth, device, low_res)
    x0 = images.as_image(low_res, "low_res", device)
    out_size = (x0.shape[-2] * factor, x0.shape[-1] * factor)
    if gt is not None and tuple(gt.shape[-2:]) != out_size:
        raise ValueError(f"ground_truth is {tuple(gt.shape[-2:])}, expected {out_size} (low_res x {factor})")
    down = Downsampler(factor).to(device)
    if iterations is None:
        iterations = TASK_ITERATIONS["sr8"] if factor >= 8 else TASK_ITERATIONS["sr4"]
    return fit(
        lambda out: pk.content_loss(down(out), x0),
        out_size,
        task="sr",
        iterations=iterations,
        lr=lr,
        reg_noise_std=reg_noise_std,
        ground_truth=gt,
        device=device,
        protected=protected,
        **kwargs,
    )


def add_noise(image: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """``image + N(0, (sigma/255)^2)`` clipped to [0, 1] (the paper's sigma is on the 0-255 scale)."""
    images._as_batch("image", image)  # the type / shape check
    sigma, seed = _checks.number("sigma", sigma, 0.0), _checks.seed(seed)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(image.shape, generator=g).to(image.device) * (sigma / 255.0)
    return (image + noise).clamp(0, 1)
