"""Time per training step of ``train style`` (a multi-style CIN network) on 1 process and on N processes under
``torchrun`` (DistributedDataParallel; gloo on the CPU, NCCL on GPUs), at the same global batch.

    python benchmarks/ddp_step_time.py                       # CPU: 1 vs 2 processes, crop 128, batch 4
    python benchmarks/ddp_step_time.py --device cuda --runs 1x4,8x4 --crop 256 --batch-size 32 --steps 50

The per-step time is the median of the differences of the ``seconds`` column of ``losses.csv`` after the first
``--warmup`` steps (data loading, kernels and communication included). On a CPU the processes share its cores:
N processes of 1 thread are compared with one process of 1 thread and of all the threads. Prints a markdown
table and writes it to ``benchmarks/results/ddp_step_time_<device>.md``.
"""

from __future__ import annotations

import argparse
import csv
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile

import torch

from perceptual_kernels.api import images

ROOT = pathlib.Path(__file__).resolve().parents[1]


def step_seconds(run: pathlib.Path, warmup: int) -> float:
    with open(run / "losses.csv", newline="") as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
    return statistics.median(b - a for a, b in zip(seconds[warmup:], seconds[warmup + 1 :]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--runs", default="1x1,1x2,2x1", help="comma-separated PROCESSESxTHREADS (OMP_NUM_THREADS of each process)"
    )
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4, help="the global batch")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="ddp-bench-"))
    g = torch.Generator().manual_seed(0)
    for i in range(16):
        images.save_image(torch.rand(1, 3, args.crop + 8, args.crop + 8, generator=g), work / "data" / f"{i}.png")
    styles = [str(images.save_image(torch.rand(1, 3, 64, 64, generator=g), work / f"s{i}.png")) for i in range(2)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    rows = []
    for run in args.runs.split(","):
        n, threads = map(int, run.split("x"))
        out = work / f"run{run}"
        command = [
            *("-m", "perceptual_kernels.api.cli", "train", "style", str(work / "data"), *styles, "-o", str(out)),
            *("--iterations", str(args.steps), "--batch-size", str(args.batch_size), "--crop", str(args.crop)),
            *("--vgg-weights", "random", "--workers", "1", "--log-every", "1", "--checkpoint-every", "0"),
            *("--device", args.device, "--no-progress"),
        ]
        launcher = [sys.executable] if n == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += [] if n == 1 else ["--nproc-per-node", str(n)]
        subprocess.run([*launcher, *command], env={**env, "OMP_NUM_THREADS": str(threads)}, check=True)
        rows.append((n, threads, step_seconds(out, args.warmup)))
    base = rows[0][2]
    table = [
        f"Global batch {args.batch_size}, crop {args.crop}, {args.device}, {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), torch {torch.__version__}",
        "",
        "| processes | threads each | s / step | speed-up vs first row |",
        "|---|---|---|---|",
        *(f"| {n} | {t} | {s:.3f} | {base / s:.2f} |" for n, t, s in rows),
    ]
    text = "\n".join(table)
    print(text)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / f"ddp_step_time_{args.device.split(':')[0]}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
