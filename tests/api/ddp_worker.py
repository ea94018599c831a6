"""A torchrun worker for test_distributed.py: the CLI's ``main`` with two test hooks set by the environment.

``PK_TEST_WRITES``: a folder where each rank writes, at exit, ``rank<R>.txt`` listing the paths under
``PK_TEST_OUT`` it opened for writing, created, renamed or removed (Python audit events).
``PK_TEST_INTERRUPT``: ``"R:S"``: rank R sends itself SIGINT when step S is logged (a Ctrl-C on one rank).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from perceptual_kernels.api import cli, loop

RANK = int(os.environ["RANK"])
OUT = Path(os.environ["PK_TEST_OUT"]).resolve()
touched: list[str] = []


def audit(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], (str, os.PathLike)):
        mode, flags = args[1] or "r", args[2] or 0
        writing = any(c in str(mode) for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        paths = [args[0]] if writing else []
    elif event in ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.replace"):
        paths = [a for a in args[:2] if isinstance(a, (str, os.PathLike))]
    else:
        return
    touched.extend(
        str(p) for p in paths if OUT in (Path(os.fspath(p)).resolve(), *Path(os.fspath(p)).resolve().parents)
    )


def interrupt_at(rank: int, step: int) -> None:
    show, logged = loop.show, [0]

    def show_then_interrupt(bar, values):  # called once per logged step (log_every 1)
        show(bar, values)
        logged[0] += 1
        if RANK == rank and logged[0] == step:
            os.kill(os.getpid(), signal.SIGINT)

    loop.show = show_then_interrupt


if __name__ == "__main__":
    sys.addaudithook(audit)
    if os.environ.get("PK_TEST_INTERRUPT"):
        interrupt_at(*map(int, os.environ["PK_TEST_INTERRUPT"].split(":")))
    code = cli.main(sys.argv[1:])
    Path(os.environ["PK_TEST_WRITES"], f"rank{RANK}.txt").write_text("\n".join(touched))
    sys.exit(code)
