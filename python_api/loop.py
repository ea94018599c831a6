"""The parts every optimisation or training loop of the API repeats; each loop itself stays in its own module.

A loop reads top to bottom like this (the Gatys, Johnson and DIP loops do)::

    model = loop.channels_last(model.to(device), device)

    def keep() -> str:  # on Ctrl-C: save what was done, say where
        save(model, path)
        return f"interrupted at step {step}: kept {path}"

    with loop.progress(iterations, "train", enabled=progress, on_interrupt=keep) as bar:
        for step in range(iterations):
            loss = loss_fn(model, loop.channels_last(batch.to(device), device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
            loop.check_finite(float(loss), f"at step {step}", "lower lr")
            loop.show(bar, {"loss": float(loss)})

On Ctrl-C :func:`progress` calls ``on_interrupt`` and writes the line it returns under the bar, then lets the
``KeyboardInterrupt`` propagate: the API functions re-raise it, the CLI exits with 130. :class:`HoldInterrupt`
keeps a Ctrl-C out of the middle of an update, so that what is saved is one consistent state.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

import torch
from tqdm.auto import tqdm

T = TypeVar("T", bound=torch.Tensor | torch.nn.Module)


def channels_last(x: T, device: torch.device) -> T:
    """A module or a 4-D (B, C, H, W) tensor in channels_last memory format on CUDA (where the convolutions and
    the fused kernels are fastest that way), ``x`` unchanged on other devices."""
    if device.type != "cuda":
        return x
    if isinstance(x, torch.nn.Module):
        return x.to(memory_format=torch.channels_last)
    return x.contiguous(memory_format=torch.channels_last)


@contextmanager
def progress(
    total: int,
    desc: str,
    *,
    enabled: bool = True,
    initial: int = 0,
    leave: bool = False,
    on_interrupt: Callable[[], str | None] | None = None,
) -> Iterator[tqdm]:
    """A tqdm bar of ``total`` steps (starting at ``initial``), closed on the way out. On ``KeyboardInterrupt``
    ``on_interrupt()`` runs first (it saves what was done; the line it returns, if any, is written under the bar),
    then the interrupt propagates."""
    bar = tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=leave)
    try:
        yield bar
    except KeyboardInterrupt:
        message = on_interrupt() if on_interrupt is not None else None
        if message:
            bar.write(message)
        raise
    finally:
        bar.close()


def show(bar: tqdm, values: Mapping[str, float | str]) -> None:
    """Put the values (numbers to 4 significant digits) after the bar."""
    bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in values.items()})


def check_finite(
    loss: float, where: str, advice: str, *, name: str = "loss", terms: Mapping[str, float] | None = None
) -> None:
    """FloatingPointError ``"the {name} became {loss} {where} ({terms}); {advice}"`` when ``loss`` is NaN or
    infinite, so that a diverged run stops with a clear error instead of going on with NaN weights."""
    if math.isfinite(loss):
        return
    detail = f" ({', '.join(f'{k} {v:g}' for k, v in terms.items())})" if terms else ""
    raise FloatingPointError(f"the {name} became {loss} {where}{detail}; {advice}")


class HoldInterrupt:
    """Hold Ctrl-C (SIGINT) while a model and its optimizer are updated, so that it lands between steps and a
    state saved on interrupt is consistent; a held Ctrl-C is raised on leaving. Nothing is held outside the main
    thread (signals only reach it)."""

    def __enter__(self) -> HoldInterrupt:
        self.pending, self.previous = False, None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def _hold(self, signum: int, frame: object) -> None:
        self.pending = True

    def __exit__(self, *exc: object) -> None:
        if self.previous is None:
            return
        signal.signal(signal.SIGINT, self.previous)
        if self.pending and exc[0] is None:
            if self.previous is signal.default_int_handler:
                raise KeyboardInterrupt
            signal.raise_signal(signal.SIGINT)
