"""Training data of the Johnson et al. networks: an image folder of random crops, the resumable sample stream
that batches it, and the low-resolution images of super-resolution (blur, then bicubic downsampling)."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from . import _checks, images
from .images import IMAGE_SUFFIXES


class ImageFolder(Dataset):
    """Every image under ``root`` (recursive, common formats), as a random ``crop`` x ``crop`` patch in [0, 1].

    Items are keyed by ``(epoch, index)`` (a plain ``index`` means epoch 0). Images smaller than the crop are
    upscaled first. The crop position of an item depends only on (seed, epoch, index), so a resumed run sees
    exactly the batches of an uninterrupted one. Unreadable files give a warning and ``None``.
    """

    def __init__(self, root: str | os.PathLike, crop: int = 256, seed: int = 0) -> None:
        self.root = _checks.input_folder("training data folder", root)
        self.crop, self.seed = _checks.integer("crop", crop, 1), _checks.seed(seed)
        self.files = images.image_files(self.root, recursive=True)
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


def _chunks(size: int, seed: int, position: int, batch_size: int, skip: frozenset[int]):
    """(keys, stream position after them) of the global batches from ``position`` on: ``batch_size`` keys each,
    in stream order, leaving out the files in ``skip`` (known unreadable; their keys still count in the
    position)."""
    keys: list[tuple[int, int]] = []
    for key in _Stream(size, seed, position):
        position += 1
        if key[1] in skip:
            continue
        keys.append(key)
        if len(keys) == batch_size:
            yield keys, position
            keys = []


class _Part(Sampler):
    """One rank's keys: ``part`` of every global batch of :func:`_chunks`."""

    def __init__(self, chunks, part: slice) -> None:
        self.chunks, self.part = chunks, part

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for keys, _ in self.chunks:
            yield from keys[self.part]


def _sharded_batches(
    data: ImageFolder,
    batch_size: int,
    workers: int,
    seed: int,
    position: int,
    rank: int,
    world_size: int,
    sum_ints: Callable[[list[int]], list[int]],
) -> Iterator[tuple[torch.Tensor, int]]:
    """Rank ``rank``'s part of each batch of :func:`_batches` (the global one) and the global stream position
    after the whole batch. With W ranks (``batch_size`` a multiple of W, b = batch_size / W) rank r gets the
    samples ``r*b .. r*b + b - 1`` of every global batch, so the ranks' parts together are exactly the batches one
    process sees, and each rank loads only its own samples. ``sum_ints(flags)`` sums a list of ints over the
    ranks (a collective, once per batch): the ranks add their unreadable-sample flags, so when a file turns out
    unreadable every rank knows it, and the batch is built again from the same position without that file (as
    :func:`_batches` skips it; its key still counts in the position)."""
    b = batch_size // world_size
    part = slice(rank * b, rank * b + b)
    extra = {"prefetch_factor": max(2, -(-2 * b // workers))} if workers else {}
    unreadable: set[int] = set()
    while True:  # one pass per set of known unreadable files
        skip = frozenset(unreadable)
        sampler = _Part(_chunks(len(data), seed, position, batch_size, skip), part)
        loader = iter(
            DataLoader(data, batch_size=None, sampler=sampler, num_workers=workers, collate_fn=_keep, **extra)
        )
        try:
            for keys, end in _chunks(len(data), seed, position, batch_size, skip):
                own = [next(loader) for _ in range(b)]
                flags = [0] * batch_size
                for j, sample in enumerate(own):
                    flags[part.start + j] = int(sample is None)
                bad = {keys[j][1] for j, f in enumerate(sum_ints(flags)) if f}
                if bad:
                    unreadable |= bad
                    if len(unreadable) == len(data):
                        raise ValueError(
                            f"no readable image in the training data folder {data.root}: all {len(data)} "
                            f"image files failed to load"
                        )
                    break  # the same position again, without the files found unreadable
                yield torch.stack(own), end
                position = end
        finally:
            del loader  # stops its workers


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
