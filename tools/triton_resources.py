"""Registers, spills and shared memory of every Triton kernel variant, compiled for sm_90 on this machine (no GPU
needed). Writes ``benchmarks/results/triton_resources_sm90.md``. Run: ``python -m tools.triton_resources``."""

from __future__ import annotations

import pathlib

import torch
import triton

from tools.triton_aot import DTYPES, compile_for, kernel_calls


def main(arch: int = 90) -> None:
    rows = []
    for dtype in DTYPES:
        for layout in ("contiguous", "channels_last", "sliced"):
            for launch in kernel_calls(dtype, layout):
                r = compile_for(launch, arch)
                blocks = ", ".join(
                    f"{k}={v}" for k, v in r["constexprs"].items() if k.startswith("BLOCK") or k in ("MODE", "KIND")
                )
                dtype_name = str(dtype).removeprefix("torch.")
                rows.append(
                    f"| {r['kernel']} | {dtype_name} | {layout} | {blocks} | {r.get('num_warps', '')} | "
                    f"{r['registers']} | {r['local_bytes']} | {r['shared_bytes']} |"
                )
    out = pathlib.Path(__file__).parents[1] / "benchmarks" / "results" / f"triton_resources_sm{arch}.md"
    out.parent.mkdir(exist_ok=True)
    header = (
        f"# Triton kernels compiled for sm_{arch} (triton {triton.__version__}, torch {torch.__version__})\n\n"
        "Compiled on a CPU-only machine with `python -m tools.triton_resources`; input (2, 64, 16, 16), "
        "GPU launch configuration. `local` = spill bytes per thread.\n\n"
        "| kernel | dtype | layout | blocks | warps | registers | local | shared bytes |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    out.write_text(header + "\n".join(dict.fromkeys(rows)) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
