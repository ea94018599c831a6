"""Registers, spills and shared memory of every CUDA kernel in ``csrc/cuda/*.cuh``, compiled standalone with
``nvcc -Xptxas -v`` for sm_80 and sm_90 (no GPU and no torch headers needed: the .cuh files include none).
Writes ``benchmarks/results/cuda_ptxas.md``. Run: ``python -m tools.cuda_resources``."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARCHS = (80, 90)
_FUNCTION = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
_USAGE = re.compile(r"Used (\d+) registers")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_SMEM = re.compile(r"(\d+) bytes smem")
_STACK = re.compile(r"(\d+) bytes stack frame")


def nvcc() -> str | None:
    """Path of nvcc (PATH, then CUDA_HOME / CUDA_PATH), or None."""
    import os

    found = shutil.which("nvcc")
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if not found and home and (pathlib.Path(home) / "bin" / "nvcc").exists():
            found = str(pathlib.Path(home) / "bin" / "nvcc")
    return found


def demangle(names: list[str]) -> dict[str, str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt:
        return {n: n for n in names}
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out))


def short_name(demangled: str) -> str:
    """``void perceptual_kernels::cuda::ns::kernel<float, 2>(float const*, ...)`` -> ``ns::kernel<float, 2>``."""
    name = demangled.removeprefix("void ").replace("perceptual_kernels::cuda::", "")
    depth = 0
    for i, ch in enumerate(name):
        depth += {"<": 1, ">": -1}.get(ch, 0)
        if ch == "(" and depth == 0:
            return name[:i]
    return name


def compile_report(source: pathlib.Path, archs: tuple[int, ...] = ARCHS) -> list[dict]:
    """Compile one .cuh standalone (every kernel instantiated under PK_STANDALONE_INSTANTIATE); one dict per
    (kernel, arch): registers, spill store / load bytes, stack frame and static shared memory bytes."""
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            nvcc(),
            "-std=c++17",
            "-O3",
            "-x",
            "cu",
            "-DPK_STANDALONE_INSTANTIATE",
            "-Xptxas",
            "-v",
            *gencode,
            "-c",
            str(source),
            "-o",
            str(pathlib.Path(tmp) / "kernels.o"),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nvcc failed on {source.name}:\n{proc.stderr[-4000:]}")
    rows, current = [], None
    for line in proc.stderr.splitlines():
        if m := _FUNCTION.search(line):
            current = {"file": source.name, "kernel": m.group(1), "arch": m.group(2)}
            rows.append(current)
        elif current is not None:
            if m := _STACK.search(line):
                current["stack"] = int(m.group(1))
            if m := _SPILL.search(line):
                current["spill_stores"], current["spill_loads"] = int(m.group(1)), int(m.group(2))
            if m := _USAGE.search(line):
                current["registers"] = int(m.group(1))
                current["smem"] = int(m.group(1)) if (m := _SMEM.search(line)) else 0
    names = demangle([r["kernel"] for r in rows])
    for r in rows:
        r["kernel"] = short_name(names[r["kernel"]])
    return rows


def sources() -> list[pathlib.Path]:
    """The kernel headers: every ``csrc/cuda/<op>.cuh`` that has a launcher ``<op>.cu`` (not common.cuh)."""
    return sorted(p for p in (ROOT / "csrc" / "cuda").glob("*.cuh") if p.with_suffix(".cu").exists())


def main() -> None:
    version = subprocess.run([nvcc(), "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    lines = [
        "# CUDA kernels: ptxas resource usage (sm_80, sm_90)",
        "",
        f"Compiled standalone on a CPU-only machine with `python -m tools.cuda_resources` ({version}). "
        "Registers per thread; spills and stack in bytes per thread; static shared memory per block.",
        "",
        "| file | kernel | arch | registers | spill stores | spill loads | stack | smem |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for source in sources():
        for r in compile_report(source):
            kernel = r["kernel"].replace("|", "\\|")
            lines.append(
                f"| {r['file']} | `{kernel}` | {r['arch']} | {r.get('registers', '')} | "
                f"{r.get('spill_stores', 0)} | {r.get('spill_loads', 0)} | {r.get('stack', 0)} | "
                f"{r.get('smem', 0)} |"
            )
    out = ROOT / "benchmarks" / "results" / "cuda_ptxas.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
