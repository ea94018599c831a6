"""A torchrun worker for test_distributed.py: the CLI's ``main`` with two test hooks set by the environment.

``PK_TEST_WRITES``: a folder where each rank writes, at exit, ``rank<R>.txt`` listing the paths under
``PK_TEST_OUT`` it opened for writing, created, renamed or removed (Python audit events).
``PK_TEST_INTERRUPT``: ``"C:R:S"``: in command C (from 0), rank R sends itself SIGINT when step S is logged (a
Ctrl-C on one rank; ``--log-every 1``).
The arguments may hold several CLI commands separated by ``::``, run one after the other in one launch (one
process group for all: torch cannot make a second one from the same torchrun environment).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from perceptual_kernels.api import cli, distributed, loop

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


logged = [0]  # steps logged by the current command


def interrupt_at(rank: int, step: int) -> None:
    """From now on, rank ``rank`` sends itself SIGINT when the current command logs its ``step``-th step."""
    show = loop.show

    def show_then_interrupt(bar, values):
        show(bar, values)
        logged[0] += 1
        if RANK == rank and logged[0] == step:
            os.kill(os.getpid(), signal.SIGINT)

    loop.show = show_then_interrupt


if __name__ == "__main__":
    sys.addaudithook(audit)
    command, rank, step = map(int, (os.environ.get("PK_TEST_INTERRUPT") or "-1:0:0").split(":"))
    commands, code = " ".join(sys.argv[1:]).split(" :: "), 0
    teardown, distributed.teardown = distributed.teardown, lambda: None  # one group for all the commands
    for i, args in enumerate(commands):
        logged[0] = 0
        if i == command:
            interrupt_at(rank, step)
        code = cli.main(args.split())
        if code:
            break
    teardown()
    Path(os.environ["PK_TEST_WRITES"], f"rank{RANK}.txt").write_text("\n".join(touched))
    sys.exit(code)
