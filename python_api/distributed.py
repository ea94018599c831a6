"""The torch.distributed process group of a ``torchrun`` launch: start it from the environment, ask who we are,
sum tensors over the ranks, tear it down.

``torchrun --nproc-per-node N ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_from_env` starts the default group from them (NCCL when CUDA is available, gloo on
CPUs). Without those variables (a plain ``python`` run) nothing is started and every helper answers for one
process, so code written with them runs unchanged either way.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["active", "all_reduce_sum_", "device", "init_from_env", "is_main", "rank", "teardown", "world_size"]

_started_here = False


def launched() -> bool:
    """True when the environment describes a launch of more than one process (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> bool:
    """Start the default process group from the torchrun environment when it describes several processes and no
    group exists yet; returns whether a group is active afterwards. NCCL with CUDA (each rank on cuda:LOCAL_RANK),
    gloo otherwise."""
    global _started_here
    if dist.is_available() and not dist.is_initialized() and launched():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
        _started_here = True
    return active()


def teardown() -> None:
    """Destroy the default group if :func:`init_from_env` started it."""
    global _started_here
    if _started_here and dist.is_initialized():
        dist.destroy_process_group()
    _started_here = False


def active() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that writes files and shows progress."""
    return rank() == 0


def device() -> torch.device:
    """This rank's default device: cuda:LOCAL_RANK under an NCCL group, else CUDA when available, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cuda")


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks in place (every rank gets the same values); unchanged for one process."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
