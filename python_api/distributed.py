"""torch.distributed for the loops: the process group from the ``torchrun`` environment, rank-0 work, agreement
between ranks (errors, stop requests) and teardown. Only torch.distributed collectives are used.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` set) a loop runs
in :func:`process_group`, which initialises NCCL for CUDA devices (each rank on ``cuda:LOCAL_RANK``) and gloo
otherwise, once per process: the group stays for the next loop (torch cannot initialise a second default group
from the same torchrun environment after destroying the first) until :func:`teardown`, which the CLI calls at
the end of a command and ``atexit`` calls otherwise. Without those variables it is one process (rank 0 of 1) and
nothing is initialised. A group the caller initialised already is used as it is::

    group = distributed.process_group(device)
    device = group.device
    state = group.on_main(load_checkpoint)  # read on rank 0, the same object on every rank
    with distributed.StopRequest() as stop:
        for step in ...:
            if group.any(stop.requested):  # every rank stops at the same step
                break
    if group.is_main:
        save(...)
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

#: The variables torchrun sets for every worker; all of them present means "launched by torchrun".
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """True when the torchrun environment (:data:`TORCHRUN_VARIABLES`) is set."""
    return all(v in os.environ for v in TORCHRUN_VARIABLES)


@dataclass(frozen=True)
class Group:
    """This process's place in the run: ``rank`` of ``world_size`` and the device it computes on."""

    rank: int
    world_size: int
    device: torch.device
    cpu_group: Any = None  # a gloo group for the small host-side collectives (None: one process)

    @property
    def is_main(self) -> bool:
        """Rank 0: the rank that logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (an all-reduce MAX over the gloo group)."""
        if not self.distributed:
            return bool(flag)
        t = torch.tensor([int(bool(flag))])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.cpu_group)
        return bool(t.item())

    def sum_ints(self, values: Sequence[int]) -> list[int]:
        """The element-wise sum over the ranks of a list of ints (the same length on every rank)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.int64)
        dist.all_reduce(t, group=self.cpu_group)
        return t.tolist()

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean over the ranks of a tensor on ``device`` (all-reduce SUM / world_size; a new tensor)."""
        if not self.distributed:
            return t
        t = t.detach().clone()
        dist.all_reduce(t)
        return t / self.world_size

    def on_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on rank 0 only; every rank gets its result (pickled, broadcast), or raises the exception
        it raised there (so that no rank is left waiting in a collective)."""
        if not self.distributed:
            return fn()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = (True, fn())
            except Exception as exc:  # re-raised on every rank below
                box[0] = (False, exc)
        dist.broadcast_object_list(box, src=0, group=self.cpu_group)
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def together(self, fn: Callable[[], T]) -> T:
        """``fn()`` on every rank; when it raises on any rank, every rank raises: its own exception, or a
        RuntimeError naming the first failed rank and its message."""
        if not self.distributed:
            return fn()
        try:
            value, error = fn(), None
        except Exception as exc:
            value, error = None, exc
        errors: list[Any] = [None] * self.world_size
        dist.all_gather_object(errors, None if error is None else f"{type(error).__name__}: {error}", self.cpu_group)
        if error is not None:
            raise error
        failed = next((r for r, e in enumerate(errors) if e is not None), None)
        if failed is not None:
            raise RuntimeError(f"rank {failed} of {self.world_size} failed: {errors[failed]}")
        return value  # type: ignore[return-value]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.cpu_group)


def rank_device(device: torch.device) -> torch.device:
    """The device of this rank under torchrun: ``cuda`` (no index) becomes ``cuda:LOCAL_RANK``; an explicit CUDA
    index is refused when several ranks share the node (they would all use that one GPU)."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type != "cuda":
        return device
    if device.index is None:
        return torch.device("cuda", local)
    if int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
        raise ValueError(
            f"device {device}: under torchrun with several processes per node pass device 'cuda' (or none): "
            f"each rank uses cuda:LOCAL_RANK"
        )
    return device


def process_group(device: torch.device) -> Group:
    """This process's :class:`Group`: the initialised default group (the caller's, or one made from the
    torchrun environment on first use: NCCL for CUDA, gloo otherwise), or rank 0 of 1 without torchrun."""
    if not dist.is_available() or (not dist.is_initialized() and not launched_by_torchrun()):
        return Group(0, 1, device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device}: torch.distributed runs here on cpu (gloo) or cuda (NCCL) devices")
    device = rank_device(device)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(teardown)
    world = dist.get_world_size()
    cpu_group = None
    if world > 1:
        cpu_group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    return Group(dist.get_rank(), world, device, cpu_group)


def teardown() -> None:
    """Destroy the default process group, if there is one (the end of a torchrun command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """Rank 0 of the initialised group, or of the torchrun environment; True for a lone process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


class _SumOverRanks(torch.autograd.Function):
    """y = sum over the ranks of x; the gradient of x is the sum over the ranks of the gradients of y."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over the ranks of the default group, differentiable (every rank must call it, in the same
    order, forward and backward); ``x`` itself with one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _SumOverRanks.apply(x)


class StopRequest:
    """Turn SIGINT and SIGTERM into a request to stop at the next step instead of an exception: torchrun's agent
    answers a Ctrl-C by sending SIGTERM to every worker, and a rank interrupted alone must not leave the others
    waiting in a collective. Check ``requested`` with :meth:`Group.any` once per step so that all ranks stop at
    the same step. Handlers are installed in the main thread only and restored on exit."""

    def __enter__(self) -> StopRequest:
        self.requested, self.previous = False, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._request)
        return self

    def _request(self, signum: int, frame: object) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
