"""Johnson et al.: feed-forward style transfer (one style, or many with Dumoulin's conditional instance norm) and
perceptual-loss super-resolution. Training, checkpoints and inference.

Style loss of a batch of content images x with stylized outputs y = T(x, s) (s: a style row per sample):
    L = content_weight * mean (F_c(y) - F_c(x))^2 + style_weight * sum_l mean_ij (G_l(y_b) - A_l[s_b])^2
        + tv_weight * TV(y)
with VGG16 features (content ``relu2_2``, style ``relu1_2, relu2_2, relu3_3, relu4_3``), ``G = F F^T / (C H W)``
and the style Grams ``A`` (S, C, C) computed once and picked per sample by the fused style loss's
``style_index``. The default weights (content 1e5, style 1e10) are those of the PyTorch examples' fast neural
style, whose losses these equal. Super-resolution: LR = bicubic(gaussian_blur(HR, sigma 1)), loss = feature MSE on
``relu2_2`` (+ optional pixel MSE, TV).
"""

from __future__ import annotations

import csv
import math
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

import perceptual_kernels as pk

from . import _checks, images
from ._device import resolve_device
from .johnson_nets import SR_FACTORS, SuperResolutionNet, TransformNet, load_model, model_config, save_model
from .vgg import VGGFeatures

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
CONTENT_LAYER = "relu2_2"


# --- data ---------------------------------------------------------------------------------------------------
class ImageFolder(Dataset):
    """Every image under ``root`` (recursive, common formats), as a random ``crop`` x ``crop`` patch in [0, 1].

    Items are keyed by ``(epoch, index)`` (a plain ``index`` means epoch 0). Images smaller than the crop are
    upscaled first. The crop position of an item depends only on (seed, epoch, index), so a resumed run sees
    exactly the batches of an uninterrupted one. Unreadable files give a warning and ``None``.
    """

    def __init__(self, root: str | os.PathLike, crop: int = 256, seed: int = 0) -> None:
        self.root = _checks.input_folder("training data folder", root)
        self.crop, self.seed = _checks.integer("crop", crop, 1), _checks.seed(seed)
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under the training data folder {self.root}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | tuple[int, int]) -> torch.Tensor | None:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        try:
            img = images.load_image(self.files[index])
        except (ValueError, OSError) as exc:
            warnings.warn(f"skipping unreadable training image {self.files[index]}: {exc}", stacklevel=2)
            return None
        H, W = img.shape[-2:]
        if min(H, W) < self.crop:
            img = images.resize_long_side(img, math.ceil(max(H, W) * self.crop / min(H, W)))
            H, W = img.shape[-2:]
        g = torch.Generator().manual_seed(hash((self.seed, epoch, index)) % 2**63)
        top = int(torch.randint(0, H - self.crop + 1, (1,), generator=g))
        left = int(torch.randint(0, W - self.crop + 1, (1,), generator=g))
        return img[0, :, top : top + self.crop, left : left + self.crop].contiguous()


class _Stream(Sampler):
    """The keys ``(epoch, index)`` of the sample stream from ``position`` on: epoch e is the permutation of the
    files seeded by (seed, e); ``position`` counts the keys before it over all epochs."""

    def __init__(self, size: int, seed: int, position: int) -> None:
        self.size, self.seed, self.position = size, seed, position

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.position, self.size)
        while True:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
            yield from ((epoch, i) for i in order[offset:].tolist())
            epoch, offset = epoch + 1, 0


def _keep(sample: torch.Tensor | None) -> torch.Tensor | None:
    return sample


def _batches(
    data: ImageFolder, batch_size: int, workers: int, seed: int, position: int
) -> Iterator[tuple[torch.Tensor, int]]:
    """(batch, stream position after it) forever: ``batch_size`` readable samples taken in stream order from
    ``position`` on, unreadable ones skipped (they use no training step). The same position always gives the same
    batches. ValueError naming the folder once every file has failed to load."""
    extra = {"prefetch_factor": max(2, -(-2 * batch_size // workers))} if workers else {}
    stream = _Stream(len(data), seed, position)
    loader = DataLoader(data, batch_size=None, sampler=stream, num_workers=workers, collate_fn=_keep, **extra)
    kept: list[torch.Tensor] = []
    unreadable: set[int] = set()
    for (_, index), sample in zip(stream, loader):  # the loader keeps the sampler's order
        position += 1
        if sample is None:
            unreadable.add(index)
            if len(unreadable) == len(data):
                raise ValueError(
                    f"no readable image in the training data folder {data.root}: all {len(data)} "
                    f"image files failed to load"
                )
            continue
        kept.append(sample)
        if len(kept) == batch_size:
            yield torch.stack(kept), position
            kept = []


# --- configuration, history, checkpoints ---------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Everything a run needs besides its data; saved with the checkpoints."""

    task: str = "style"  # "style" | "super_resolution"
    iterations: int = 40000
    batch_size: int = 4
    crop: int = 256
    lr: float = 1e-3
    content_weight: float = 1e5
    style_weight: float = 1e10
    tv_weight: float = 0.0
    pixel_weight: float = 0.0
    style_size: int | None = None
    style_layers: tuple[str, ...] = STYLE_LAYERS
    content_layer: str = CONTENT_LAYER
    factor: int = 4
    vgg_weights: str = "imagenet"
    seed: int = 0
    workers: int = 2
    checkpoint_every: int = 1000
    sample_every: int = 0
    log_every: int = 10
    autocast: bool = False


#: Config fields a resumed run may change; every other field must equal the checkpoint's (the batches, the loss
#: and the model depend on them).
RESUMABLE_FIELDS = ("iterations", "workers", "checkpoint_every", "sample_every", "log_every")


@dataclass
class TrainResult:
    model: torch.nn.Module
    model_path: Path
    losses: list[dict] = field(default_factory=list)


def _checked_config(config: TrainConfig | None, task: str, **defaults: object) -> TrainConfig:
    """A validated copy of ``config`` (or of the defaults) for ``task``; ValueError / TypeError naming the field."""
    if config is None:
        config = TrainConfig(**defaults)
    elif not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    c = replace(config, task=task)
    for name, minimum in (
        ("iterations", 1),
        ("batch_size", 1),
        ("crop", 1),
        ("workers", 0),
        ("checkpoint_every", 0),
        ("sample_every", 0),
        ("log_every", 1),
    ):
        _checks.integer(f"config.{name}", getattr(c, name), minimum)
    _checks.number("config.lr", c.lr, positive=True)
    for name in ("content_weight", "style_weight", "tv_weight", "pixel_weight"):
        _checks.loss_weight(f"config.{name}", getattr(c, name))
    if c.style_size is not None:
        _checks.integer("config.style_size", c.style_size, 1)
    if isinstance(c.style_layers, str) or not c.style_layers or not all(isinstance(n, str) for n in c.style_layers):
        raise ValueError(f"config.style_layers must be a non-empty sequence of VGG layer names, got {c.style_layers!r}")
    c.style_layers = tuple(c.style_layers)
    if not isinstance(c.vgg_weights, (str, os.PathLike)):
        raise TypeError(f"config.vgg_weights must be 'imagenet', 'caffe', 'random' or a path, got {c.vgg_weights!r}")
    c.vgg_weights = os.fspath(c.vgg_weights)  # a str in the checkpoint (weights_only loads no Path objects)
    _checks.seed(c.seed, "config.seed")
    if task == "super_resolution":
        if c.factor not in SR_FACTORS or isinstance(c.factor, bool):
            raise ValueError(f"config.factor must be one of {', '.join(map(str, SR_FACTORS))}, got {c.factor!r}")
        if c.crop % c.factor or c.crop // c.factor < SuperResolutionNet.min_size:
            raise ValueError(
                f"config.crop {c.crop} must be a multiple of the factor {c.factor} and at least "
                f"{c.factor * SuperResolutionNet.min_size} (low-resolution crops of "
                f">= {SuperResolutionNet.min_size} pixels)"
            )
    elif c.crop < TransformNet.min_size:
        raise ValueError(f"config.crop must be at least {TransformNet.min_size}, got {c.crop}")
    return c


def _check_run(data: ImageFolder, out_dir: str | os.PathLike, config: TrainConfig, protected: Sequence[object]) -> Path:
    """The output folder (writable, not inside the data folder) and a batch size the data can fill."""
    out = _checks.output_path(
        "out_dir", out_dir, [p for p in protected if isinstance(p, (str, os.PathLike))], folder=True
    )
    if out == data.root.resolve() or data.root.resolve() in out.parents:
        raise ValueError(
            f"out_dir {out_dir} is inside the training data folder {data.root}: its samples would "
            f"become training images; choose a folder outside it"
        )
    if config.batch_size > len(data):
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the {len(data)} images under "
            f"{data.root}; lower the batch size or add images"
        )
    return out


def _atomic_save(obj: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _save_checkpoint(
    path: Path, model, optimizer, step: int, position: int, config: TrainConfig, metadata: dict
) -> None:
    _atomic_save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "data_position": position,
            "torch_rng": torch.get_rng_state(),
            "config": asdict(config),
            "model_config": model_config(model),
            "metadata": metadata,
        },
        path,
    )


_CHECKPOINT_KEYS = ("model", "optimizer", "step", "data_position", "torch_rng", "config", "model_config", "metadata")


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _resume_state(
    out_dir: Path, config: TrainConfig, model: torch.nn.Module, metadata: dict, resume: bool
) -> dict | None:
    """The checkpoint to continue from (None: start at step 0), checked against this run before any work."""
    checkpoint = out_dir / "checkpoint.pt"
    if not resume:
        if checkpoint.exists():
            raise ValueError(
                f"{out_dir} already holds a training checkpoint ({checkpoint}): pass resume=True "
                f"(--resume) to continue it, or choose another output folder"
            )
        return None
    if not checkpoint.exists():
        warnings.warn(f"no checkpoint in {out_dir}: starting from step 0", stacklevel=3)
        return None
    state = _checks.load_torch_file(checkpoint, "training checkpoint")
    missing = [k for k in _CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{checkpoint} is not a valid training checkpoint of this version (no {', '.join(missing)})")
    step = int(state["step"])
    if step > config.iterations:
        raise ValueError(
            f"resume: {checkpoint} is at step {step}, past the target iterations="
            f"{config.iterations}; pass iterations >= {step} (a run is never shortened)"
        )
    if state["model_config"] != model_config(model):
        theirs, ours = state["model_config"], model_config(model)
        diff = ", ".join(
            f"{k}={theirs.get(k)!r} there, {ours.get(k)!r} here"
            for k in sorted({*theirs, *ours})
            if theirs.get(k) != ours.get(k)
        )
        raise ValueError(f"resume: {checkpoint} holds another network than this run builds ({diff})")
    ours = asdict(config)
    diff = [
        f"{k}={state['config'].get(k)!r} there, {ours[k]!r} here"
        for k in ours
        if k not in RESUMABLE_FIELDS and _plain(state["config"].get(k)) != _plain(ours[k])
    ]
    diff += [
        f"{k}={state['metadata'].get(k)!r} there, {metadata[k]!r} here"
        for k in ("styles", "factor")
        if k in metadata and state["metadata"].get(k) != metadata[k]
    ]
    if diff:
        raise ValueError(
            f"resume: {checkpoint} was made with other settings ({'; '.join(diff)}); only "
            f"{', '.join(RESUMABLE_FIELDS)} may change on resume"
        )
    return state


def _open_log(path: Path, step: int):
    """losses.csv for appending: a fresh one at step 0; on resume, rows after ``step`` (logged after the
    checkpoint) are dropped so the log matches the state the run continues from."""
    header = ["step", "loss", "content", "style", "tv", "pixel", "seconds"]
    rows = []
    if step and path.exists():
        with open(path, newline="") as f:
            rows = [r for r in list(csv.reader(f))[1:] if r and r[0].isdigit() and int(r[0]) <= step]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    os.replace(tmp, path)
    return open(path, "a", newline="")


class _HoldInterrupt:
    """Hold Ctrl-C (SIGINT) while the model and optimizer are updated, so that it lands between steps and a
    checkpoint written on interrupt is one consistent state. Nothing is held outside the main thread."""

    def __enter__(self) -> _HoldInterrupt:
        self.pending, self.previous = False, None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def _hold(self, signum, frame) -> None:
        self.pending = True

    def __exit__(self, *exc) -> None:
        if self.previous is None:
            return
        signal.signal(signal.SIGINT, self.previous)
        if self.pending and exc[0] is None:
            if self.previous is signal.default_int_handler:
                raise KeyboardInterrupt
            signal.raise_signal(signal.SIGINT)


# --- the training loop ---------------------------------------------------------------------------------------
def _train(
    model: torch.nn.Module,
    loss_fn,
    data: ImageFolder,
    config: TrainConfig,
    out_dir: Path,
    state: dict | None,
    device: torch.device,
    metadata: dict,
    progress: bool,
    protected: Sequence[object],
) -> TrainResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / "checkpoint.pt"
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    step = position = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        step, position = int(state["step"]), int(state["data_position"])
    log = _open_log(out_dir / "losses.csv", step)
    writer = csv.writer(log)
    result = TrainResult(model, out_dir / "model.pth")
    bar = tqdm(total=config.iterations, initial=step, desc=f"train {config.task}", disable=not progress)
    start, sample = time.perf_counter(), None
    batches = _batches(data, config.batch_size, config.workers, config.seed, position)
    try:
        while step < config.iterations:
            batch, next_position = next(batches)  # a Ctrl-C here leaves (step, position) as they were
            with _HoldInterrupt():
                batch = batch.to(device)
                if device.type == "cuda":
                    batch = batch.contiguous(memory_format=torch.channels_last)
                sample = batch[:1] if sample is None else sample
                terms = loss_fn(model, batch, step)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                optimizer.step()
                step, position = step + 1, next_position
                logged = step % config.log_every == 0 or step == config.iterations
                saved = bool(config.checkpoint_every) and step % config.checkpoint_every == 0
                if logged or saved:
                    values = {k: float(v) for k, v in terms.items()}  # the only host sync
                    if not math.isfinite(values["loss"]):
                        raise FloatingPointError(
                            f"the loss became {values['loss']} at step {step}; lower lr or the loss weights (the "
                            f"last checkpoint in {out_dir} is kept)"
                        )
                if logged:
                    writer.writerow(
                        [step]
                        + [values.get(k, 0.0) for k in ("loss", "content", "style", "tv", "pixel")]
                        + [round(time.perf_counter() - start, 3)]
                    )
                    log.flush()
                    result.losses.append({"step": step, **values})
                    bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()})
                bar.update(1)
                if saved:
                    _save_checkpoint(checkpoint, model, optimizer, step, position, config, metadata)
                if config.sample_every and step % config.sample_every == 0:
                    _save_sample(model, sample, out_dir / "samples" / f"step{step}.png", config, protected)
    except KeyboardInterrupt:
        _save_checkpoint(checkpoint, model, optimizer, step, position, config, metadata)
        bar.write(f"interrupted: checkpoint at step {step} in {checkpoint}; resume with resume=True")
        raise
    finally:
        batches.close()
        bar.close()
        log.close()
    _save_checkpoint(checkpoint, model, optimizer, step, position, config, metadata)
    save_model(model.eval(), result.model_path, metadata={**metadata, "steps": step, "config": asdict(config)})
    return result


def _save_sample(model, sample: torch.Tensor, path: Path, config: TrainConfig, protected: Sequence[object]) -> None:
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
    data = ImageFolder(data_dir, config.crop, config.seed)
    out = _check_run(data, out_dir, config, styles)
    num_styles = len(styles)
    names = [
        os.path.basename(os.fspath(s)) if not isinstance(s, torch.Tensor) else f"tensor{i}"
        for i, s in enumerate(styles)
    ]
    metadata = {"styles": names}
    torch.manual_seed(config.seed)  # the initial weights
    model = TransformNet(num_styles=num_styles if num_styles > 1 else None)
    state = _resume_state(out, config, model, metadata, resume)
    style_imgs = [images.as_image(s, "style") for s in styles]
    style_imgs = [images.resize_long_side(s, config.style_size) if config.style_size else s for s in style_imgs]
    vgg = _vgg([*config.style_layers, config.content_layer], config, device)
    with torch.no_grad():
        grams = {
            name: torch.cat([pk.gram_matrix(vgg(s.to(device))[name], out_dtype=torch.float32) for s in style_imgs])
            for name in config.style_layers
        }

    def loss_fn(net, x, step):
        g = torch.Generator().manual_seed(config.seed * 7919 + step)
        index = torch.randint(0, num_styles, (x.shape[0],), generator=g).to(x.device) if num_styles > 1 else None
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
        model, loss_fn, data, config, out, state, device, {**metadata, "vgg": vgg.weights_description}, progress, styles
    )


def _vgg(layers: list[str], config: TrainConfig, device: torch.device) -> VGGFeatures:
    """The loss network; ValueError when the training crop is smaller than its deepest layer needs."""
    vgg = VGGFeatures(layers, arch="vgg16", weights=config.vgg_weights, seed=config.seed)
    if config.crop < vgg.min_size:
        raise ValueError(
            f"config.crop {config.crop} is smaller than the {vgg.min_size} pixels the VGG layers "
            f"{', '.join(layers)} need"
        )
    return vgg.to(device)


def gaussian_blur(img: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Separable Gaussian blur (radius 3 sigma), reflection padding."""
    img = images._as_batch("img", img, channels=None)[0]
    sigma = _checks.number("sigma", sigma, positive=True)
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(img.shape[1], 1, 1, 1)
    img = F.conv2d(F.pad(img, (radius, radius, 0, 0), mode="reflect"), k, groups=img.shape[1])
    return F.conv2d(F.pad(img, (0, 0, radius, radius), mode="reflect"), k.transpose(2, 3), groups=img.shape[1])


def degrade(hr: torch.Tensor, factor: int) -> torch.Tensor:
    """Johnson et al.'s LR images: Gaussian blur (sigma 1) then bicubic downsampling by ``factor``."""
    factor = _checks.integer("factor", factor, 1)
    H, W = images._as_batch("hr", hr, channels=None)[0].shape[-2:]
    if min(H, W) < 4 or min(H, W) < factor:  # reflection padding of the blur needs 4 pixels
        raise ValueError(f"hr of size {H}x{W} is too small to blur and downsample by {factor}")
    lr = F.interpolate(
        gaussian_blur(hr), size=(H // factor, W // factor), mode="bicubic", antialias=True, align_corners=False
    )
    return lr.clamp(0, 1)


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
    data = ImageFolder(data_dir, config.crop, config.seed)
    out = _check_run(data, out_dir, config, ())
    torch.manual_seed(config.seed)  # the initial weights
    model = SuperResolutionNet(factor=config.factor)
    metadata = {"factor": config.factor}
    state = _resume_state(out, config, model, metadata, resume)
    vgg = _vgg([config.content_layer], config, device)

    def loss_fn(net, hr, step):
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
        model, loss_fn, data, config, out, state, device, {**metadata, "vgg": vgg.weights_description}, progress, ()
    )


# --- inference -----------------------------------------------------------------------------------------------
_STYLE_FORMS = '"K" (a style index) or a mix "I:W,I:W,..." (non-negative weights with a positive sum)'


def _check_mix(mix: Mapping[object, object], spec: object) -> dict[int, float]:
    """{index: weight} with int indices >= 0 and finite non-negative weights summing to > 0."""
    out = {}
    for index, weight in mix.items():
        index = _checks.integer(f"style index in {spec!r}", index, 0)
        out[index] = _checks.number(f"weight of style {index} in {spec!r}", weight, 0.0)
    if not out or sum(out.values()) <= 0:
        raise ValueError(f"style mix {spec!r}: the weights must sum to a positive number")
    return out


def parse_style(spec: str | int | Mapping[int, float] | None) -> int | dict[int, float] | None:
    """``"3"`` -> 3; ``"0:0.5,3:0.5"`` -> {0: 0.5, 3: 0.5} (a mix, normalised when used); None stays None.
    ValueError naming the part that is not an index or a valid weight, or a repeated index."""
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        return _check_mix(spec, dict(spec))
    if not isinstance(spec, str):
        return _checks.integer("style", spec, 0)
    if ":" not in spec:
        if not re.fullmatch(r"\s*\d+\s*", spec):
            raise ValueError(f"style {spec!r} is not {_STYLE_FORMS}")
        return int(spec)
    mix: dict[object, object] = {}
    for part in spec.split(","):
        index, sep, weight = part.partition(":")
        if not re.fullmatch(r"\s*\d+\s*", index) or not sep:
            raise ValueError(f"style {spec!r}: {part.strip()!r} is not INDEX:WEIGHT; expected {_STYLE_FORMS}")
        if int(index) in mix:
            raise ValueError(f"style {spec!r}: style {int(index)} is given twice")
        try:
            mix[int(index)] = float(weight)
        except ValueError:
            raise ValueError(
                f"style {spec!r}: the weight {weight.strip()!r} of style {int(index)} is not a number"
            ) from None
    return _check_mix(mix, spec)


def check_style(
    model: torch.nn.Module, style: int | Mapping[int, float] | str | None = None, all_styles: bool = False
) -> int | dict[int, float] | None:
    """The style selection for ``model``, checked (see :func:`stylize_feedforward`): an index or a mix in range,
    none for a single-style or super-resolution model, not both ``style`` and ``all_styles``."""
    style = parse_style(style)
    num_styles = getattr(model, "num_styles", None)
    if not isinstance(all_styles, bool):
        raise TypeError(f"all_styles must be a bool, got {all_styles!r}")
    if not num_styles:
        if style is not None or all_styles:
            raise ValueError("this model has a single style (or is a super-resolution model): no style selection")
        return None
    if all_styles:
        if style is not None:
            raise ValueError("give style or all_styles, not both")
        return None
    indices = list(style) if isinstance(style, dict) else [style]
    if style is None and num_styles > 1 or any(i is not None and i >= num_styles for i in indices):
        raise ValueError(
            f"this model has {num_styles} styles: pass style=0..{num_styles - 1}, a mix or "
            f"all_styles=True (got {style!r})"
        )
    return style


def stylize_feedforward(
    model: torch.nn.Module | str | os.PathLike,
    image: torch.Tensor | str | os.PathLike,
    *,
    style: int | dict[int, float] | str | None = None,
    all_styles: bool = False,
    device: str | torch.device | None = None,
    autocast: bool = False,
) -> torch.Tensor:
    """Run a trained model on one image (1, 3, H, W) in [0, 1] (a super-resolution model upscales it).

    Multi-style models take ``style`` (an index, or {index: weight} mixing gamma/beta rows, weights normalised to
    sum 1: Dumoulin's interpolation; a string as :func:`parse_style` reads it) or ``all_styles=True`` (all N
    styles in one batched pass, (N, 3, H, W)). Every argument is checked before the network runs.
    """
    device = resolve_device(device)
    if not isinstance(model, torch.nn.Module):
        model, _ = load_model(model)
    style = check_style(model, style, all_styles)
    x = image if isinstance(image, torch.Tensor) else images.load_image(image)
    x = images._as_batch("image", x)[0]
    model = model.to(device).eval()
    x = x.to(device)
    num_styles = getattr(model, "num_styles", None)
    kwargs: dict = {}
    if all_styles:
        x = x.expand(num_styles, -1, -1, -1)
        kwargs["style_index"] = torch.arange(num_styles, device=device)
    elif isinstance(style, dict):
        weights = torch.zeros(1, num_styles, device=device)
        for index, w in style.items():
            weights[0, index] = w
        kwargs["style_weights"] = weights / weights.sum()
    elif style is not None:
        kwargs["style_index"] = torch.tensor([style], device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        return model(x, **kwargs).float().clamp(0, 1)
