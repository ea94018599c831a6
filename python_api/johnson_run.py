"""A Johnson et al. training run besides its loop: the settings (:class:`TrainConfig`, checked before any work),
the run folder's ``checkpoint.pt`` (atomic saves; resume checked against the run) and its ``losses.csv``."""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from . import _checks
from .johnson_data import ImageFolder
from .johnson_nets import SR_FACTORS, SuperResolutionNet, TransformNet, model_config

STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
CONTENT_LAYER = "relu2_2"


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
