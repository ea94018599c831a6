"""Build and run the CUDA-on-CPU emulator harnesses (cuda_on_cpu.h, harness_*.cpp) from Python.

A harness is one executable per kernel header, compiled with ``g++ -fsanitize=address,undefined`` and cached in
``$PK_EMU_CACHE`` (default ``/tmp/pk_cuda_emulator``) under the hash of its sources and flags. ``run`` writes each
input tensor's storage span to a file, runs the harness once per fiber order and returns, per order, the output
tensors rebuilt with the strides asked for. A tensor travels as (span, pad): the bytes from its first to its
last element and the byte offset of its first element from a 256-byte boundary (its alignment on a GPU).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

import torch

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = pathlib.Path(os.environ.get("PK_EMU_CACHE", "/tmp/pk_cuda_emulator"))
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
FLAGS = ["-std=c++17", "-O1", "-g", "-fdata-sections", "-ffp-contract=off", f"-I{HERE / 'include'}"]
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
ORDERS = ("fwd", "rev")
# asan: fibers switch stacks (annotated); no leak check (the harness exits through _Exit on errors)
ENV = {"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:detect_stack_use_after_return=0", "UBSAN_OPTIONS": ""}


class EmulatorError(RuntimeError):
    """A harness run failed: an emulator error, a sanitizer report or a crash (the message has its stderr)."""


def _sources(main: pathlib.Path) -> list[pathlib.Path]:
    return [main, HERE / "cuda_on_cpu.h", HERE / "harness.h", HERE / "shared.ld", *sorted(HERE.glob("include/*.h"))] + [
        *sorted((ROOT / "csrc" / "cuda").glob("*.cuh"))
    ]


def build(main: pathlib.Path, extra_flags: tuple[str, ...] = ()) -> pathlib.Path:
    """The harness executable of ``main`` (a .cpp), compiled once per content hash."""
    flags = [*FLAGS, *SANITIZE, *extra_flags]
    digest = hashlib.sha256(" ".join(flags).encode())
    for p in _sources(main):
        digest.update(p.name.encode() + p.read_bytes())
    exe = CACHE / f"{main.stem}-{digest.hexdigest()[:16]}"
    if exe.exists():
        return exe
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = exe.with_suffix(f".tmp{os.getpid()}")
    cmd = ["g++", *flags, str(main), "-o", str(tmp), f"-Wl,-T,{HERE / 'shared.ld'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EmulatorError(f"compiling {main.name} failed:\n{proc.stderr[-6000:]}")
    tmp.replace(exe)
    return exe


def span(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(the 1-D storage span from t's first to its last element, t's byte offset from a 256-byte boundary)."""
    assert all(s >= 0 for s in t.stride()), "negative strides are not supported"
    n = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride())) if t.numel() else 0
    flat = t.as_strided((n,), (1,), t.storage_offset())
    return flat, (t.storage_offset() * t.element_size()) % 256


@dataclasses.dataclass
class Out:
    """An output tensor the harness writes: shape, strides, dtype and the byte offset of its first element."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    pad: int = 0

    @staticmethod
    def like(t: torch.Tensor, dtype: torch.dtype | None = None) -> Out:
        """The output torch.empty_like(t) would be (t's memory format when dense, else contiguous)."""
        e = torch.empty_like(t, dtype=dtype)
        return Out(tuple(e.shape), e.stride(), e.dtype)

    @staticmethod
    def contiguous(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Out:
        e = torch.empty(shape, dtype=dtype)
        return Out(tuple(e.shape), e.stride(), dtype)

    def numel_span(self) -> int:
        return 1 + sum((s - 1) * st for s, st in zip(self.shape, self.stride)) if all(self.shape) else 0


def _raw(t: torch.Tensor) -> bytes:
    t = t.contiguous()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def run(
    exe: pathlib.Path,
    op: str,
    inputs: dict[str, torch.Tensor],
    outputs: dict[str, Out],
    orders: tuple[str, ...] = ORDERS,
    timeout: float = 600,
    **values: object,
) -> dict[str, dict[str, torch.Tensor]]:
    """Runs op under each fiber order: {order: {output name: tensor}}. values: ints, floats or int lists."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="pk_emu_"))
    try:
        args = [str(exe), op, "orders=" + ",".join(orders)]
        for k, v in values.items():
            v = ",".join(str(int(e)) for e in v) if isinstance(v, (tuple, list, torch.Size)) else v
            args.append(f"{k}={int(v) if isinstance(v, bool) else v}")
        for name, t in inputs.items():
            flat, pad = span(t)
            path = tmp / f"in_{name}.bin"
            path.write_bytes(_raw(flat))
            args.append(f"in:{name}={path}:{pad}")
        for name, o in outputs.items():
            nbytes = o.numel_span() * torch.empty((), dtype=o.dtype).element_size()
            args.append(f"out:{name}={tmp / ('out_' + name)}:{nbytes}:{o.pad}")
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env={**os.environ, **ENV})
        if proc.returncode != 0:
            raise EmulatorError(f"{op} failed (exit {proc.returncode}):\n{proc.stderr[-8000:]}")
        results: dict[str, dict[str, torch.Tensor]] = {}
        for order in orders:
            results[order] = {}
            for name, o in outputs.items():
                data = (tmp / f"out_{name}.{order}").read_bytes()
                raw_dtype = torch.int16 if o.dtype in (torch.float16, torch.bfloat16) else o.dtype
                flat = torch.frombuffer(bytearray(data), dtype=raw_dtype) if data else torch.empty(0, dtype=raw_dtype)
                if raw_dtype != o.dtype:
                    flat = flat.view(o.dtype)
                results[order][name] = flat.as_strided(o.shape, o.stride)
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bits(t: torch.Tensor) -> torch.Tensor:
    """t's bit pattern as integers (NaN-safe exact comparison)."""
    raw = {8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()]
    return t.contiguous().view(raw)


def run_orders(exe: pathlib.Path, op: str, inputs, outputs, orders: tuple[str, ...] = ORDERS, **values):
    """run(), then assert that every fiber order gave bitwise the same outputs; returns the first order's."""
    results = run(exe, op, inputs, outputs, orders, **values)
    first = results[orders[0]]
    for order in orders[1:]:
        for name in outputs:
            same = torch.equal(bits(first[name]), bits(results[order][name]))
            assert same, f"{op}: output {name} differs between fiber orders {orders[0]} and {order}"
    return first
