"""Johnson et al.: feed-forward style transfer (one style, or many with Dumoulin's conditional instance norm) and
perceptual-loss super-resolution: the training.

Style loss of a batch of content images x with stylized outputs y = T(x, s) (s: a style row per sample):
    L = content_weight * mean (F_c(y) - F_c(x))^2 + style_weight * sum_l mean_ij (G_l(y_b) - A_l[s_b])^2
        + tv_weight * TV(y)
with VGG16 features (content ``relu2_2``, style ``relu1_2, relu2_2, relu3_3, relu4_3``), ``G = F F^T / (C H W)``
and the style Grams ``A`` (S, C, C) computed once and picked per sample by the fused style loss's
``style_index``. The default weights (content 1e5, style 1e10) are those of the PyTorch examples' fast neural
style, whose losses these equal. Super-resolution: LR = bicubic(gaussian_blur(HR, sigma 1)), loss = feature MSE on
``relu2_2`` (+ optional pixel MSE, TV).

The other parts live beside this module and are re-exported here, so ``perceptual_kernels.api.johnson`` keeps
every name: :mod:`.johnson_data` (image folder, resumable sample stream, degradation), :mod:`.johnson_run`
(config, checkpoints, the loss log), :mod:`.johnson_infer` (style selection, :func:`stylize_feedforward`) and
:mod:`.johnson_nets` (the networks, :func:`load_model`).
"""

from __future__ import annotations

import contextlib
import csv
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

import perceptual_kernels as pk

from . import distributed, images, loop
from ._device import resolve_device
from .johnson_data import IMAGE_SUFFIXES, ImageFolder, _batches, _sharded_batches, degrade, gaussian_blur
from .johnson_infer import check_style, parse_style, stylize_feedforward
from .johnson_nets import (
    SR_FACTORS,
    SuperResolutionNet,
    TransformNet,
    load_model,
    model_config,
    save_model,
    sync_batch_norms,
)
from .johnson_run import (
    CONTENT_LAYER,
    RESUMABLE_FIELDS,
    STYLE_LAYERS,
    TrainConfig,
    TrainResult,
    _check_run,
    _checked_config,
    _open_log,
    _resume_state,
    _save_checkpoint,
)
from .vgg import VGGFeatures

__all__ = [
    "CONTENT_LAYER",
    "IMAGE_SUFFIXES",
    "RESUMABLE_FIELDS",
    "SR_FACTORS",
    "STYLE_LAYERS",
    "ImageFolder",
    "SuperResolutionNet",
    "TrainConfig",
    "TrainResult",
    "TransformNet",
    "check_style",
    "degrade",
    "gaussian_blur",
    "load_model",
    "model_config",
    "parse_style",
    "resolve_device",
    "save_model",
    "stylize_feedforward",
    "train_style",
    "train_super_resolution",
]


# --- the training loop ---------------------------------------------------------------------------------------
def _train(
    model: torch.nn.Module,
    loss_fn,
    data: ImageFolder,
    config: TrainConfig,
    out_dir: Path,
    state: dict | None,
    group: distributed.Group,
    metadata: dict,
    progress: bool,
    protected: Sequence[object],
) -> TrainResult:
    """Adam on ``loss_fn(net, batch, step, part)`` (a dict of loss terms with "loss"; ``part``: the slice of the
    global batch this rank holds) from ``state`` (a checkpoint, or None: step 0) to ``config.iterations``;
    checkpoints, log rows and samples as the config says.

    Data-parallel over the ranks of ``group`` (DistributedDataParallel): each rank trains on its part of every
    global batch; the loss terms are means over the samples, so DDP's average of the ranks' gradients is the
    gradient of the global batch's loss. The logged terms are the means over the ranks. Rank 0 alone writes
    (log, samples, checkpoints, the model); a stop request on any rank (SIGINT, or the SIGTERM torchrun sends on
    Ctrl-C) stops every rank at the same step, with a checkpoint."""
    device, main = group.device, group.is_main
    checkpoint = out_dir / "checkpoint.pt"
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    model = loop.channels_last(model.to(device), device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    step = position = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        step, position = int(state["step"]), int(state["data_position"])
    net = model
    if group.distributed:
        sync_batch_norms(model)  # batch statistics of the global batch, as one process computes them
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    part = slice(
        group.rank * config.batch_size // group.world_size, (group.rank + 1) * config.batch_size // group.world_size
    )
    result = TrainResult(model, out_dir / "model.pth")
    start, sample = time.perf_counter(), None

    def keep_checkpoint() -> str | None:  # on Ctrl-C (every rank, at the same step)
        if main:
            _save_checkpoint(checkpoint, model, optimizer, step, position, config, metadata)
        group.barrier()  # no rank exits (and makes torchrun stop the others) before the checkpoint is written
        return f"interrupted: checkpoint at step {step} in {checkpoint}; resume with resume=True" if main else None

    if group.distributed:
        batches = _sharded_batches(
            data, config.batch_size, config.workers, config.seed, position, group.rank, group.world_size, group.sum_ints
        )
    else:
        batches = _batches(data, config.batch_size, config.workers, config.seed, position)
    # under torchrun (even one process: its Ctrl-C arrives as SIGTERM) the ranks stop on an agreed flag
    agreed = group.distributed or distributed.launched_by_torchrun()
    stop = distributed.StopRequest() if agreed else contextlib.nullcontext()
    hold = contextlib.nullcontext if agreed else loop.HoldInterrupt
    with (
        stop as request,
        _open_log(out_dir / "losses.csv", step) if main else contextlib.nullcontext() as log,
        contextlib.closing(batches),  # type: ignore[type-var]
        loop.progress(
            config.iterations,
            f"train {config.task}",
            enabled=progress and main,
            initial=step,
            leave=True,
            on_interrupt=keep_checkpoint,
        ) as bar,
    ):
        writer = csv.writer(log) if log is not None else None
        while step < config.iterations:
            if request is not None and group.any(request.requested):
                raise KeyboardInterrupt  # on every rank: keep_checkpoint runs, then the interrupt propagates
            batch, next_position = next(batches)  # a Ctrl-C here leaves (step, position) as they were
            with hold():
                batch = loop.channels_last(batch.to(device), device)
                sample = batch[:1] if sample is None else sample
                terms = loss_fn(net, batch, step, part)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                optimizer.step()
                step, position = step + 1, next_position
                logged = step % config.log_every == 0 or step == config.iterations
                saved = bool(config.checkpoint_every) and step % config.checkpoint_every == 0
                if logged or saved:
                    means = group.mean(torch.stack([v.detach().float() for v in terms.values()]))
                    values = dict(zip(terms, means.tolist()))  # the only host sync
                    loop.check_finite(
                        values["loss"],
                        f"at step {step}",
                        f"lower lr or the loss weights (the last checkpoint in {out_dir} is kept)",
                    )
                if logged:
                    if writer is not None and log is not None:
                        writer.writerow(
                            [step]
                            + [values.get(k, 0.0) for k in ("loss", "content", "style", "tv", "pixel")]
                            + [round(time.perf_counter() - start, 3)]
                        )
                        log.flush()
                    result.losses.append({"step": step, **values})
                    loop.show(bar, values)
                bar.update(1)
                if saved and main:
                    _save_checkpoint(checkpoint, model, optimizer, step, position, config, metadata)
                if config.sample_every and step % config.sample_every == 0 and main:
                    _save_sample(model, sample, out_dir / "samples" / f"step{step}.png", config, protected)
    if main:
        _save_checkpoint(checkpoint, model, optimizer, step, position, config, metadata)
        save_model(model.eval(), result.model_path, metadata={**metadata, "steps": step, "config": asdict(config)})
    else:
        model.eval()
    group.barrier()  # the files exist on every rank's return
    return result


def _save_sample(model, sample: torch.Tensor, path: Path, config: TrainConfig, protected: Sequence[object]) -> None:
    """The model's output for ``sample`` in eval mode (batch norms use their running statistics: a sample neither
    changes them nor, on rank 0 alone, waits for the other ranks' batch statistics)."""
    training = model.training
    model.eval()
    try:
        _write_sample(model, sample, path, config, protected)
    finally:
        model.train(training)


def _write_sample(model, sample: torch.Tensor, path: Path, config: TrainConfig, protected: Sequence[object]) -> None:
    with torch.no_grad():
        if config.task == "style" and getattr(model, "num_styles", None):
            n = model.num_styles  # every style side by side
            out = model(sample.expand(n, -1, -1, -1), style_index=torch.arange(n, device=sample.device))
            out = torch.cat(list(out), dim=-1).unsqueeze(0)
        elif config.task == "style":
            out = model(sample)
        else:
            out = model(degrade(sample, config.factor))
    images.save_image(out, path, protected=[p for p in protected if isinstance(p, (str, os.PathLike))])


# --- the two tasks: their losses ------------------------------------------------------------------------------
def train_style(
    data_dir: str | os.PathLike,
    styles: Sequence[str | os.PathLike | torch.Tensor],
    out_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a transform network on the images of ``data_dir`` for one style, or for several (one conditional
    instance norm row per style image, each sample drawing its style). Writes ``checkpoint.pt`` (every
    ``checkpoint_every`` steps, at the end and on Ctrl-C), ``losses.csv``, optional ``samples/`` and the final
    ``model.pth`` + ``model.json`` (see :func:`johnson_nets.load_model`).

    Every argument is checked before any work. A fresh run (``resume=False``) refuses a folder that already
    holds a checkpoint. ``resume=True`` continues from the checkpoint: its step must not be past
    ``config.iterations`` (a run is never shortened; equal means nothing is left to train and the final model is
    written again from the checkpoint), and only the :data:`RESUMABLE_FIELDS` of the config may differ from it.
    Unreadable data files are skipped without using a training step; ValueError when none is readable."""
    config = _checked_config(config, "style")
    device = resolve_device(device)
    if isinstance(styles, (str, os.PathLike, torch.Tensor)) or not styles:
        raise ValueError("styles must be a non-empty sequence of style images (paths or tensors)")
    group = distributed.process_group(device)  # one process without torchrun
    device = group.device
    data, out = group.together(lambda: _data_and_run(data_dir, out_dir, config, styles, group.world_size))
    num_styles = len(styles)
    names = [
        os.path.basename(os.fspath(s)) if not isinstance(s, torch.Tensor) else f"tensor{i}"
        for i, s in enumerate(styles)
    ]
    metadata = {"styles": names}
    torch.manual_seed(config.seed)  # the initial weights
    model = TransformNet(num_styles=num_styles if num_styles > 1 else None)
    state = group.on_main(lambda: _resume_state(out, config, model, metadata, resume))
    style_imgs = group.together(lambda: [images.as_image(s, "style") for s in styles])
    style_imgs = [images.resize_long_side(s, config.style_size) if config.style_size else s for s in style_imgs]
    vgg = _vgg([*config.style_layers, config.content_layer], config, device)
    with torch.no_grad():  # on every rank: the same Grams, no communication
        grams = {
            name: torch.cat([pk.gram_matrix(vgg(s.to(device))[name], out_dtype=torch.float32) for s in style_imgs])
            for name in config.style_layers
        }

    def loss_fn(net, x, step, part):
        g = torch.Generator().manual_seed(config.seed * 7919 + step)
        index = None
        if num_styles > 1:  # drawn for the global batch, this rank's part taken: the same on any number of ranks
            index = torch.randint(0, num_styles, (config.batch_size,), generator=g)[part].to(x.device)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=config.autocast):
            y = net(x, style_index=index) if index is not None else net(x)
            fy = vgg(y)
            with torch.no_grad():
                fx = vgg(x)[config.content_layer]
        content = pk.content_loss(fy[config.content_layer], fx, weight=config.content_weight)
        style = sum(
            pk.style_loss(
                fy[n], grams[n] if num_styles > 1 else grams[n][0], weight=config.style_weight, style_index=index
            )
            for n in config.style_layers
        )
        zero = content.new_zeros(())
        tv = pk.tv_loss(y.float(), weight=config.tv_weight) if config.tv_weight else zero
        return {"loss": content + style + tv, "content": content, "style": style, "tv": tv}

    return _train(
        model, loss_fn, data, config, out, state, group, {**metadata, "vgg": vgg.weights_description}, progress, styles
    )


def _data_and_run(data_dir, out_dir, config: TrainConfig, protected, world_size: int) -> tuple[ImageFolder, Path]:
    """The training data and the checked output folder; the global batch must split evenly over the ranks."""
    data = ImageFolder(data_dir, config.crop, config.seed)
    out = _check_run(data, out_dir, config, protected)
    if config.batch_size % world_size:
        raise ValueError(
            f"config.batch_size {config.batch_size} (the global batch) does not split evenly over the "
            f"{world_size} processes (WORLD_SIZE): use a multiple of {world_size}"
        )
    return data, out


def _vgg(layers: list[str], config: TrainConfig, device: torch.device) -> VGGFeatures:
    """The loss network; ValueError when the training crop is smaller than its deepest layer needs."""
    vgg = VGGFeatures(layers, arch="vgg16", weights=config.vgg_weights, seed=config.seed)
    if config.crop < vgg.min_size:
        raise ValueError(
            f"config.crop {config.crop} is smaller than the {vgg.min_size} pixels the VGG layers "
            f"{', '.join(layers)} need"
        )
    return vgg.to(device)


def train_super_resolution(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a x``config.factor`` super-resolution network with the feature loss on ``relu2_2`` (Johnson et al.),
    plus optional pixel MSE (``pixel_weight``) and TV. HR crops of ``config.crop`` (a multiple of the factor).
    Checks, resume and unreadable files as in :func:`train_style`."""
    config = _checked_config(config, "super_resolution", content_weight=1.0, style_weight=0.0, crop=288)
    device = resolve_device(device)
    group = distributed.process_group(device)  # one process without torchrun
    device = group.device
    data, out = group.together(lambda: _data_and_run(data_dir, out_dir, config, (), group.world_size))
    torch.manual_seed(config.seed)  # the initial weights
    model = SuperResolutionNet(factor=config.factor)
    metadata = {"factor": config.factor}
    state = group.on_main(lambda: _resume_state(out, config, model, metadata, resume))
    vgg = _vgg([config.content_layer], config, device)

    def loss_fn(net, hr, step, part):
        lr = degrade(hr, config.factor)
        with torch.autocast(hr.device.type, dtype=torch.bfloat16, enabled=config.autocast):
            sr = net(lr)
            fs = vgg(sr)[config.content_layer]
            with torch.no_grad():
                fh = vgg(hr)[config.content_layer]
        content = pk.content_loss(fs, fh, weight=config.content_weight)
        zero = content.new_zeros(())
        pixel = pk.content_loss(sr.float(), hr, weight=config.pixel_weight) if config.pixel_weight else zero
        tv = pk.tv_loss(sr.float(), weight=config.tv_weight) if config.tv_weight else zero
        return {"loss": content + pixel + tv, "content": content, "pixel": pixel, "tv": tv}

    return _train(
        model, loss_fn, data, config, out, state, group, {**metadata, "vgg": vgg.weights_description}, progress, ()
    )
