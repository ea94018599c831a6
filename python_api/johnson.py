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
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

import perceptual_kernels as pk

from . import images
from ._device import resolve_device
from .johnson_nets import SuperResolutionNet, TransformNet, load_model, model_config, save_model
from .vgg import VGGFeatures

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
CONTENT_LAYER = "relu2_2"


# --- data ---------------------------------------------------------------------------------------------------
class ImageFolder(Dataset):
    """Every image under ``root`` (recursive, common formats), as a random ``crop`` x ``crop`` patch in [0, 1].

    Images smaller than the crop are upscaled first. The crop position of item i at epoch e depends only on
    (seed, e, i), so a resumed run sees exactly the batches of an uninterrupted one. Unreadable files give a
    warning and ``None`` (dropped by :func:`collate`).
    """

    def __init__(self, root: str | os.PathLike, crop: int = 256, seed: int = 0) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"training data folder {self.root} does not exist")
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {self.root}")
        self.crop, self.seed, self.epoch = crop, seed, 0

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor | None:
        try:
            img = images.load_image(self.files[index])
        except (ValueError, OSError) as exc:
            warnings.warn(f"skipping unreadable training image {self.files[index]}: {exc}", stacklevel=2)
            return None
        H, W = img.shape[-2:]
        if min(H, W) < self.crop:
            img = images.resize_long_side(img, math.ceil(max(H, W) * self.crop / min(H, W)))
            H, W = img.shape[-2:]
        g = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) % 2**63)
        top = int(torch.randint(0, H - self.crop + 1, (1,), generator=g))
        left = int(torch.randint(0, W - self.crop + 1, (1,), generator=g))
        return img[0, :, top:top + self.crop, left:left + self.crop].contiguous()


def collate(batch: list[torch.Tensor | None]) -> torch.Tensor | None:
    kept = [b for b in batch if b is not None]
    return torch.stack(kept) if kept else None


def _batches(data: ImageFolder, batch_size: int, workers: int, seed: int, start_step: int
             ) -> Iterator[tuple[int, torch.Tensor]]:
    """(step, batch) forever from ``start_step`` on: epoch e shuffles with (seed, e); a resumed run skips the
    batches already seen in its epoch, so step k always gets the same batch."""
    per_epoch = max(1, len(data) // batch_size)
    step = start_step
    while True:
        epoch, offset = divmod(step, per_epoch)
        data.epoch = epoch
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        order = order[:per_epoch * batch_size].view(per_epoch, batch_size)[offset:].flatten().tolist()
        loader = DataLoader(data, batch_size=batch_size, sampler=order, num_workers=workers, collate_fn=collate,
                            persistent_workers=False)
        for batch in loader:
            if batch is not None:
                yield step, batch
            step += 1


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


@dataclass
class TrainResult:
    model: torch.nn.Module
    model_path: Path
    losses: list[dict] = field(default_factory=list)


def _atomic_save(obj: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _save_checkpoint(path: Path, model, optimizer, step: int, config: TrainConfig, extra: dict) -> None:
    _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                  "torch_rng": torch.get_rng_state(), "config": asdict(config), "model_config": model_config(model),
                  **extra}, path)


def _load_checkpoint(path: Path, model, optimizer) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


# --- the training loop ---------------------------------------------------------------------------------------
def _train(model: torch.nn.Module, loss_fn, data: ImageFolder, config: TrainConfig, out_dir: Path,
           resume: bool, device: torch.device, metadata: dict, progress: bool) -> TrainResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / "checkpoint.pt"
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    step = _load_checkpoint(checkpoint, model, optimizer) if resume and checkpoint.exists() else 0
    if resume and not checkpoint.exists():
        warnings.warn(f"no checkpoint in {out_dir}: starting from step 0", stacklevel=3)
    log_path = out_dir / "losses.csv"
    new_log = step == 0 or not log_path.exists()
    log = open(log_path, "w" if new_log else "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "loss", "content", "style", "tv", "pixel", "seconds"])
    result = TrainResult(model, out_dir / "model.pth")
    bar = tqdm(total=config.iterations, initial=step, desc=f"train {config.task}", disable=not progress)
    start, sample = time.perf_counter(), None
    try:
        for step, batch in _batches(data, config.batch_size, config.workers, config.seed, step):
            if step >= config.iterations:
                break
            batch = batch.to(device)
            if device.type == "cuda":
                batch = batch.contiguous(memory_format=torch.channels_last)
            sample = batch[:1] if sample is None else sample
            terms = loss_fn(model, batch, step)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            done = step + 1
            if done % config.log_every == 0 or done == config.iterations:
                values = {k: float(v) for k, v in terms.items()}  # the logging sync
                if not math.isfinite(values["loss"]):
                    raise FloatingPointError(f"loss became {values['loss']} at step {done}")
                writer.writerow([done] + [values.get(k, 0.0) for k in ("loss", "content", "style", "tv", "pixel")]
                                + [round(time.perf_counter() - start, 3)])
                log.flush()
                result.losses.append({"step": done, **values})
                bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()})
            bar.update(1)
            if config.checkpoint_every and done % config.checkpoint_every == 0:
                _save_checkpoint(checkpoint, model, optimizer, done, config, {"metadata": metadata})
            if config.sample_every and done % config.sample_every == 0:
                _save_sample(model, sample, out_dir / "samples" / f"step{done}.png", config)
        step = config.iterations
    except KeyboardInterrupt:
        _save_checkpoint(checkpoint, model, optimizer, step, config, {"metadata": metadata})
        bar.write(f"interrupted: checkpoint at step {step} in {checkpoint}; resume with resume=True")
        raise
    finally:
        bar.close()
        log.close()
    _save_checkpoint(checkpoint, model, optimizer, step, config, {"metadata": metadata})
    save_model(model.eval(), result.model_path, metadata={**metadata, "steps": step, "config": asdict(config)})
    return result


def _save_sample(model, sample: torch.Tensor, path: Path, config: TrainConfig) -> None:
    with torch.no_grad():
        if config.task == "style" and getattr(model, "num_styles", None):
            n = model.num_styles  # every style side by side
            out = model(sample.expand(n, -1, -1, -1), style_index=torch.arange(n, device=sample.device))
            out = torch.cat(list(out), dim=-1).unsqueeze(0)
        elif config.task == "style":
            out = model(sample)
        else:
            out = model(degrade(sample, config.factor))
    images.save_image(out, path)


def train_style(data_dir: str | os.PathLike, styles: Sequence[str | os.PathLike | torch.Tensor],
                out_dir: str | os.PathLike, config: TrainConfig | None = None, *, resume: bool = False,
                device: str | torch.device | None = None, progress: bool = True) -> TrainResult:
    """Train a transform network on the images of ``data_dir`` for one style, or for several (one conditional
    instance norm row per style image, each sample drawing its style). Writes ``checkpoint.pt`` (every
    ``checkpoint_every`` steps, at the end and on Ctrl-C), ``losses.csv``, optional ``samples/`` and the final
    ``model.pth`` + ``model.json`` (see :func:`johnson_nets.load_model`)."""
    config = config or TrainConfig()
    config.task = "style"
    device = resolve_device(device)
    if not styles:
        raise ValueError("styles must name at least one style image")
    style_imgs = [images.as_image(s, "style") for s in styles]
    style_imgs = [images.resize_long_side(s, config.style_size) if config.style_size else s for s in style_imgs]
    data = ImageFolder(data_dir, config.crop, config.seed)
    vgg = VGGFeatures([*config.style_layers, config.content_layer], arch="vgg16", weights=config.vgg_weights,
                      seed=config.seed).to(device)
    with torch.no_grad():
        grams = {name: torch.cat([pk.gram_matrix(vgg(s.to(device))[name], out_dtype=torch.float32)
                                  for s in style_imgs]) for name in config.style_layers}
    num_styles = len(style_imgs)
    torch.manual_seed(config.seed)  # the initial weights
    model = TransformNet(num_styles=num_styles if num_styles > 1 else None)

    def loss_fn(net, x, step):
        g = torch.Generator().manual_seed(config.seed * 7919 + step)
        index = torch.randint(0, num_styles, (x.shape[0],), generator=g).to(x.device) if num_styles > 1 else None
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=config.autocast):
            y = net(x, style_index=index) if index is not None else net(x)
            fy = vgg(y)
            with torch.no_grad():
                fx = vgg(x)[config.content_layer]
        content = pk.content_loss(fy[config.content_layer], fx, weight=config.content_weight)
        style = sum(pk.style_loss(fy[n], grams[n] if num_styles > 1 else grams[n][0], weight=config.style_weight,
                                  style_index=index) for n in config.style_layers)
        zero = content.new_zeros(())
        tv = pk.tv_loss(y.float(), weight=config.tv_weight) if config.tv_weight else zero
        return {"loss": content + style + tv, "content": content, "style": style, "tv": tv}

    names = [s.name if isinstance(s, Path) else os.path.basename(str(s)) if not isinstance(s, torch.Tensor)
             else f"tensor{i}" for i, s in enumerate(styles)]
    return _train(model, loss_fn, data, config, Path(out_dir), resume, device,
                  {"styles": names, "vgg": vgg.weights_description}, progress)


def gaussian_blur(img: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Separable Gaussian blur (radius 3 sigma), reflection padding."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(img.shape[1], 1, 1, 1)
    img = F.conv2d(F.pad(img, (radius, radius, 0, 0), mode="reflect"), k, groups=img.shape[1])
    return F.conv2d(F.pad(img, (0, 0, radius, radius), mode="reflect"), k.transpose(2, 3), groups=img.shape[1])


def degrade(hr: torch.Tensor, factor: int) -> torch.Tensor:
    """Johnson et al.'s LR images: Gaussian blur (sigma 1) then bicubic downsampling by ``factor``."""
    H, W = hr.shape[-2:]
    lr = F.interpolate(gaussian_blur(hr), size=(H // factor, W // factor), mode="bicubic", antialias=True,
                       align_corners=False)
    return lr.clamp(0, 1)


def train_super_resolution(data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                           config: TrainConfig | None = None, *, resume: bool = False,
                           device: str | torch.device | None = None, progress: bool = True) -> TrainResult:
    """Train a x``config.factor`` super-resolution network with the feature loss on ``relu2_2`` (Johnson et al.),
    plus optional pixel MSE (``pixel_weight``) and TV. HR crops of ``config.crop`` (a multiple of the factor)."""
    config = config or TrainConfig(content_weight=1.0, style_weight=0.0, crop=288)
    config.task = "super_resolution"
    if config.crop % config.factor:
        raise ValueError(f"crop {config.crop} must be a multiple of the factor {config.factor}")
    device = resolve_device(device)
    data = ImageFolder(data_dir, config.crop, config.seed)
    vgg = VGGFeatures([config.content_layer], arch="vgg16", weights=config.vgg_weights, seed=config.seed).to(device)
    torch.manual_seed(config.seed)  # the initial weights
    model = SuperResolutionNet(factor=config.factor)

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

    return _train(model, loss_fn, data, config, Path(out_dir), resume, device,
                  {"factor": config.factor, "vgg": vgg.weights_description}, progress)


# --- inference -----------------------------------------------------------------------------------------------
def parse_style(spec: str | int | None) -> int | dict[int, float] | None:
    """``"3"`` -> 3; ``"0:0.5,3:0.5"`` -> {0: 0.5, 3: 0.5} (a convex mix); None stays None."""
    if spec is None or isinstance(spec, int):
        return spec
    if ":" not in spec:
        return int(spec)
    mix = {}
    for part in spec.split(","):
        index, weight = part.split(":")
        mix[int(index)] = float(weight)
    return mix


def stylize_feedforward(model: torch.nn.Module | str | os.PathLike, image: torch.Tensor | str | os.PathLike, *,
                        style: int | dict[int, float] | str | None = None, all_styles: bool = False,
                        device: str | torch.device | None = None, autocast: bool = False) -> torch.Tensor:
    """Run a trained model on one image (1, 3, H, W) in [0, 1] (a super-resolution model upscales it).

    Multi-style models take ``style`` (an index, or {index: weight} mixing gamma/beta rows, weights normalised to
    sum 1: Dumoulin's interpolation) or ``all_styles=True`` (all N styles in one batched pass, (N, 3, H, W)).
    """
    if not isinstance(model, torch.nn.Module):
        model, _ = load_model(model)
    device = resolve_device(device)
    model = model.to(device).eval()
    x = image if isinstance(image, torch.Tensor) else images.load_image(image)
    x = (x.unsqueeze(0) if x.dim() == 3 else x).to(device)
    num_styles = getattr(model, "num_styles", None)
    style = parse_style(style) if isinstance(style, str) else style
    kwargs: dict = {}
    if num_styles:
        if all_styles:
            x = x.expand(num_styles, -1, -1, -1)
            kwargs["style_index"] = torch.arange(num_styles, device=device)
        elif isinstance(style, dict):
            weights = torch.zeros(1, num_styles, device=device)
            for index, w in style.items():
                if not 0 <= index < num_styles:
                    raise ValueError(f"style index {index} out of range for a {num_styles}-style model")
                weights[0, index] = w
            if weights.sum() <= 0:
                raise ValueError(f"style mix weights must sum to a positive number, got {style}")
            kwargs["style_weights"] = weights / weights.sum()
        elif style is not None or num_styles > 1:
            if style is None or not 0 <= style < num_styles:
                raise ValueError(f"this model has {num_styles} styles: pass style=0..{num_styles - 1}, a mix or "
                                 f"all_styles=True (got {style!r})")
            kwargs["style_index"] = torch.tensor([style], device=device)
    elif style is not None or all_styles:
        raise ValueError("this model has a single style (or is a super-resolution model): no style selection")
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        return model(x, **kwargs).float().clamp(0, 1)
