"""Turn a pytest-benchmark JSON into a markdown report (and a speed-up plot).

Usage (from the repository root)::

    python -m pytest benchmarks --benchmark-only --benchmark-json=OUT.json
    python -m benchmarks.report OUT.json [--out benchmarks/results/<machine>.md] [--plot PNG | --no-plot]

The markdown holds a header recording the machine, one table per op (rows = pass, case, size, dtype; columns =
median time per backend, the speed-up of each of our backends vs ``eager`` and vs ``compile``, and on a GPU the
floor time and the fraction of it each backend reaches), a table for the whole-loop benchmarks (``fused`` vs
``plain``), a table for anything else (e.g. the dispatch-overhead benchmarks) and a "how measured" paragraph.

For programmatic use: :func:`load` (read + validate), :func:`render` (markdown text), :func:`table_rows` (the op
table rows as dicts), :func:`loop_rows`, :func:`machine_slug`, :func:`write_report` and :func:`plot`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import re
import sys
import tempfile
from collections.abc import Iterable
from typing import Any

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"

BASELINES = ("eager", "compile")
BACKEND_ORDER = ("eager", "compile", "reference", "triton", "cuda", "cpu")
PASS_ORDER = ("fwd", "bwd", "fwdbwd")
DTYPE_ORDER = ("fp32", "tf32", "bf16", "fp16")
LOOP_PREFIXES = ("gatys-iteration", "johnson-step", "dip-iteration")
LOOP_VARIANTS = ("fused", "plain")

# Peak rates (the project's docs): copy bandwidth in B/s and dense FLOP/s per dtype. fp32 is the SIMT rate
# (torch's default "highest" fp32 matmul precision, which is what our Triton kernels follow); a row whose
# extra_info says it ran with tf32 allowed is held to the tf32 tensor-core rate instead.
_COMPUTE = {"fp32": 67e12, "tf32": 495e12, "bf16": 790e12, "fp16": 790e12}
GPU_PEAKS = {
    "H100": {"bandwidth": 3.0e12, "flops": _COMPUTE},
    "H200": {"bandwidth": 4.3e12, "flops": _COMPUTE},
}


class ReportError(ValueError):
    """The benchmark JSON cannot be turned into a report (no benchmarks, unreadable, wrong shape)."""


# ---------------------------------------------------------------------------------------------------- loading


def load(path: str | os.PathLike) -> dict:
    """Read a pytest-benchmark JSON file and check that it holds benchmarks (:class:`ReportError` otherwise)."""
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot read benchmark results {path}: {exc}") from exc
    try:
        results = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{path} is not JSON ({exc}); expected the file written by `pytest --benchmark-json=...`"
        ) from exc
    _check(results, str(path))
    return results


def _check(results: Any, where: str = "the results") -> None:
    if not isinstance(results, dict):
        raise ReportError(f"{where}: expected a pytest-benchmark JSON object, got {type(results).__name__}")
    benches = results.get("benchmarks")
    if not isinstance(benches, list) or not benches:
        raise ReportError(
            f"{where} has no benchmarks (empty or missing 'benchmarks' list): was pytest run with "
            f"--benchmark-only on a machine where the benchmarks ran (none skipped or deselected)?"
        )


# ---------------------------------------------------------------------------------------------------- helpers


def _median_ms(bench: dict) -> float | None:
    """CUDA-event median when the benchmark recorded one, else pytest-benchmark's wall-clock median."""
    extra = bench.get("extra_info") or {}
    gpu_ms = extra.get("gpu_ms")
    if isinstance(gpu_ms, (int, float)) and not isinstance(gpu_ms, bool) and math.isfinite(gpu_ms):
        return float(gpu_ms)
    median = (bench.get("stats") or {}).get("median")
    if isinstance(median, (int, float)) and not isinstance(median, bool) and math.isfinite(median):
        return float(median) * 1e3
    return None


def _params(name: str) -> list[str]:
    """``test_op[a-b-c]`` -> ``["a", "b", "c"]``."""
    m = re.search(r"\[(.*)\]\s*$", name or "")
    return m.group(1).split("-") if m else []


def _is_loop(bench: dict) -> bool:
    return str(bench.get("group") or "").startswith(LOOP_PREFIXES)


def _is_op(bench: dict) -> bool:
    extra = bench.get("extra_info") or {}
    return bool(extra.get("op")) and not _is_loop(bench)


def _backend(bench: dict) -> str:
    extra = bench.get("extra_info") or {}
    if extra.get("backend"):
        return str(extra["backend"])
    params = _params(bench.get("name", ""))
    return params[-1] if params else "?"


def _order(value: str, order: Iterable[str]) -> tuple[int, str]:
    order = tuple(order)
    return (order.index(value), "") if value in order else (len(order), str(value))


def _backend_key(name: str) -> tuple[int, str]:
    return _order(name, BACKEND_ORDER)


def _peaks(device_name: str) -> dict | None:
    for key, peaks in GPU_PEAKS.items():
        if key.lower() in (device_name or "").lower():
            return peaks
    return None


def floor_ms(extra: dict) -> float | None:
    """Lowest time the op could take on its GPU (ms): max(flops / peak FLOP/s, bytes / bandwidth).

    ``None`` off the GPU, on a GPU without known peaks, or when neither flops nor bytes are recorded."""
    if extra.get("device") != "cuda":
        return None
    peaks = _peaks(str(extra.get("device_name") or ""))
    if peaks is None:
        return None
    flops = float(extra.get("flops") or 0.0)
    nbytes = float(extra.get("bytes") or 0.0)
    if flops <= 0 and nbytes <= 0:
        return None
    dtype = str(extra.get("dtype") or "fp32")
    if dtype == "fp32" and (
        extra.get("tf32") is True or str(extra.get("matmul_precision", "")).lower() in ("high", "medium")
    ):
        dtype = "tf32"
    peak_flops = peaks["flops"].get(dtype, peaks["flops"]["fp32"])
    return max(flops / peak_flops, nbytes / peaks["bandwidth"]) * 1e3


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:#.3g}"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _fmt_fraction(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def cell(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


# ---------------------------------------------------------------------------------------------------- rows


def table_rows(results: dict) -> list[dict]:
    """One dict per op table row: the op benchmarks (those whose extra_info names an ``op``) grouped by
    (op, pass, case, size, dtype, device). Keys: ``op``, ``pass``, ``case``, ``size``, ``dtype``, ``device``,
    ``device_name``, ``times_ms`` {backend: median ms}, ``speedup_vs_eager`` / ``speedup_vs_compile``
    {our backend: baseline ms / our ms, None when either is absent}, ``floor_ms`` (GPU only, else None),
    ``floor_fraction`` {backend: floor / measured, None off a known GPU}, ``mem_bytes`` {backend: bytes}.
    Ordered by op, then pass, case (first-seen order), size, dtype. Our backends = all but eager and compile."""
    _check(results)
    grouped: dict[tuple, dict] = {}
    case_seen: dict[str, int] = {}
    for bench in results["benchmarks"]:
        if not _is_op(bench):
            continue
        ms = _median_ms(bench)
        if ms is None:
            continue
        extra = bench["extra_info"]
        case = str(extra.get("case", ""))
        case_seen.setdefault(case, len(case_seen))
        key = (
            str(extra["op"]),
            str(extra.get("pass", "")),
            case,
            extra.get("size", ""),
            str(extra.get("dtype", "")),
            str(extra.get("device", "")),
        )
        row = grouped.setdefault(
            key,
            {
                "op": key[0],
                "pass": key[1],
                "case": key[2],
                "size": key[3],
                "dtype": key[4],
                "device": key[5],
                "device_name": str(extra.get("device_name", "")),
                "times_ms": {},
                "mem_bytes": {},
                "floor_ms": None,
                "_extra": extra,
            },
        )
        backend = _backend(bench)
        # the same configuration measured twice (merged runs): keep the faster one
        if backend not in row["times_ms"] or ms < row["times_ms"][backend]:
            row["times_ms"][backend] = ms
            if extra.get("mem_bytes") is not None:
                row["mem_bytes"][backend] = extra["mem_bytes"]
        if row["floor_ms"] is None:
            row["floor_ms"] = floor_ms(extra)

    rows = []
    for row in grouped.values():
        row.pop("_extra")
        times = row["times_ms"]
        ours = sorted((b for b in times if b not in BASELINES), key=_backend_key)
        row["times_ms"] = {b: times[b] for b in sorted(times, key=_backend_key)}
        for base in BASELINES:
            row[f"speedup_vs_{base}"] = {
                b: (times[base] / times[b] if base in times and times[b] > 0 else None) for b in ours
            }
        floor = row["floor_ms"]
        row["floor_fraction"] = {
            b: (floor / t if floor is not None and t > 0 else None) for b, t in row["times_ms"].items()
        }
        rows.append(row)

    def sort_key(r):
        size = r["size"]
        return (
            r["op"],
            _order(r["pass"], PASS_ORDER),
            case_seen.get(r["case"], 0),
            (0, size, "") if isinstance(size, (int, float)) else (1, 0, str(size)),
            _order(r["dtype"], DTYPE_ORDER),
            r["device"],
        )

    return sorted(rows, key=sort_key)


def _loop_variant(bench: dict) -> str | None:
    extra = bench.get("extra_info") or {}
    for key in ("variant", "loop"):
        if extra.get(key) in LOOP_VARIANTS:
            return extra[key]
    for token in _params(bench.get("name", "")):
        if token in LOOP_VARIANTS:
            return token
    m = re.search(r"(?<![a-z])(fused|plain)(?![a-z])", bench.get("name", ""))
    return m.group(1) if m else None


def loop_rows(results: dict) -> list[dict]:
    """One dict per loop group (gatys-iteration / johnson-step / dip-iteration): ``loop`` (the prefix),
    ``group``, ``times_ms`` {variant: median ms} and ``ratio`` = plain / fused (None when either is missing)."""
    _check(results)
    grouped: dict[str, dict] = {}
    for bench in results["benchmarks"]:
        if not _is_loop(bench):
            continue
        variant, ms = _loop_variant(bench), _median_ms(bench)
        if variant is None or ms is None:
            continue
        group = str(bench["group"])
        row = grouped.setdefault(
            group, {"loop": next(p for p in LOOP_PREFIXES if group.startswith(p)), "group": group, "times_ms": {}}
        )
        if variant not in row["times_ms"] or ms < row["times_ms"][variant]:
            row["times_ms"][variant] = ms
    for row in grouped.values():
        t = row["times_ms"]
        row["ratio"] = t["plain"] / t["fused"] if "plain" in t and t.get("fused") else None
    return [grouped[g] for g in sorted(grouped, key=lambda g: (_order(grouped[g]["loop"], LOOP_PREFIXES), _natural(g)))]


def _natural(text: str) -> list:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text)]


def _other_rows(results: dict) -> list[dict]:
    rows = []
    for bench in results["benchmarks"]:
        if _is_op(bench) or _is_loop(bench):
            continue
        ms = _median_ms(bench)
        if ms is not None:
            rows.append({"group": str(bench.get("group") or ""), "name": str(bench.get("name", "")), "ms": ms})
    return rows


# ---------------------------------------------------------------------------------------------------- machine


def _gpu_names(results: dict) -> list[str]:
    names = []
    for bench in results.get("benchmarks", []):
        extra = bench.get("extra_info") or {}
        if extra.get("device") == "cuda" and extra.get("device_name") and extra["device_name"] not in names:
            names.append(str(extra["device_name"]))
    return names


def _cpu_name(results: dict) -> str:
    cpu = (results.get("machine_info") or {}).get("cpu") or {}
    return str(
        cpu.get("brand_raw")
        or cpu.get("brand")
        or (results.get("machine_info") or {}).get("processor")
        or "unknown CPU"
    )


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm|c)\)", " ", text, flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def machine_slug(results: dict) -> str:
    """File-name slug of the machine: the GPU name when any row ran on CUDA, else the CPU brand."""
    gpus = _gpu_names(results)
    return _slug(gpus[0] if gpus else _cpu_name(results))


def _versions(results: dict, key: str) -> str:
    """Distinct values of extra_info[key]: "none" when recorded as None, "not recorded" when no row has it."""
    seen, recorded = [], False
    for bench in results.get("benchmarks", []):
        extra = bench.get("extra_info") or {}
        if key in extra:
            recorded = True
            if extra[key] is not None and str(extra[key]) not in seen:
                seen.append(str(extra[key]))
    if seen:
        return ", ".join(seen)
    return "none" if recorded else "not recorded"


# ---------------------------------------------------------------------------------------------------- render


def _row_label(row: dict, with_device: bool = False) -> str:
    parts = [row["pass"], row["case"], str(row["size"]), row["dtype"]]
    if with_device:
        parts.append(row["device"])
    return " ".join(p for p in parts if p)


def render(results: dict, *, source: str | None = None) -> str:
    """The markdown report for a loaded pytest-benchmark JSON (see the module docstring)."""
    _check(results)
    gpus = _gpu_names(results)
    machine = results.get("machine_info") or {}
    title = gpus[0] if gpus else _cpu_name(results)
    lines = [f"# Benchmarks on {title}", ""]
    lines.append(f"- CPU: {_cpu_name(results)}")
    lines.append(f"- GPU: {', '.join(gpus) if gpus else 'none (CPU run)'}")
    lines.append(
        f"- torch {_versions(results, 'torch')}; triton {_versions(results, 'triton')}; "
        f"CUDA {_versions(results, 'cuda')}; Python {machine.get('python_version', 'unknown')}"
    )
    lines.append(f"- date: {results.get('datetime', 'unknown')}")
    if source:
        lines.append(f"- from: `{source}`")
    lines.append("")

    rows = table_rows(results)
    ops: dict[str, list[dict]] = {}
    for row in rows:
        ops.setdefault(row["op"], []).append(row)
    for op, op_rows in ops.items():
        backends = sorted({b for r in op_rows for b in r["times_ms"]}, key=_backend_key)
        ours = [b for b in backends if b not in BASELINES]
        devices = {r["device"] for r in op_rows}
        on_gpu = "cuda" in devices
        header = ["pass", "case", "size", "dtype"] + (["device"] if len(devices) > 1 else [])
        header += [f"{b} (ms)" for b in backends]
        for base in BASELINES:
            header += [f"{b} vs {base}" for b in ours]
        if on_gpu:
            header += ["floor (ms)"] + [f"{b} % floor" for b in backends]
        with_mem = any(r["mem_bytes"] for r in op_rows)
        if with_mem:
            header += [f"{b} mem (MB)" for b in backends]
        table = []
        for r in op_rows:
            cells = [r["pass"], r["case"], str(r["size"]), r["dtype"]] + ([r["device"]] if len(devices) > 1 else [])
            cells += [_fmt_ms(r["times_ms"].get(b)) for b in backends]
            for base in BASELINES:
                cells += [_fmt_ratio(r[f"speedup_vs_{base}"].get(b)) for b in ours]
            if on_gpu:
                cells += ["" if r["floor_ms"] is None else _fmt_ms(r["floor_ms"])]
                cells += [_fmt_fraction(r["floor_fraction"].get(b)) for b in backends]
            if with_mem:
                cells += [
                    "-" if r["mem_bytes"].get(b) is None else f"{r['mem_bytes'][b] / 2**20:.1f}" for b in backends
                ]
            table.append(cells)
        lines += [f"## {op}", ""] + _md_table(header, table) + [""]

    loops = loop_rows(results)
    if loops:
        lines += [
            "## Loops",
            "",
            "Whole iterations / training steps: our fused ops (`fused`) vs the same loss written with "
            "plain PyTorch (`plain`); ratio = plain / fused (> 1: fused is faster).",
            "",
        ]
        lines += _md_table(
            ["loop", "group", "fused (ms)", "plain (ms)", "plain / fused"],
            [
                [
                    r["loop"],
                    r["group"],
                    _fmt_ms(r["times_ms"].get("fused")),
                    _fmt_ms(r["times_ms"].get("plain")),
                    _fmt_ratio(r["ratio"]),
                ]
                for r in loops
            ],
        )
        lines.append("")

    others = _other_rows(results)
    if others:
        lines += ["## Other benchmarks", ""]
        lines += _md_table(
            ["group", "test", "median (ms)"], [[r["group"], r["name"], _fmt_ms(r["ms"])] for r in others]
        )
        lines.append("")

    if not rows and not loops and not others:
        lines += ["No benchmark recorded a usable median.", ""]

    lines += [
        "## How measured",
        "",
        "Times are medians in milliseconds. On the CPU they are pytest-benchmark's wall-clock medians over "
        "its rounds; on the GPU they are medians of CUDA-event timings (`gpu_ms`, recorded by the "
        "benchmark itself; wall-clock time would add the host's launch and synchronisation overhead), "
        "falling back to the wall-clock median where a benchmark recorded none. "
        "`X vs eager` / `X vs compile` = that baseline's time / X's time (> 1: X is faster); `eager` is the "
        "plain PyTorch code, `compile` its `torch.compile`; `-` = not measured. "
        "The floor is max(FLOPs / peak FLOP/s for the dtype, bytes / copy bandwidth) with the op's useful "
        "FLOPs and the fewest bytes it must move (H100: 3.0 TB/s, H200: 4.3 TB/s; fp32 67, tf32 495, "
        "bf16/fp16 790 TFLOP/s dense); `% floor` = floor / measured time, left empty off the GPU or on a GPU "
        "without known peak rates.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- writing


def _atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def plot(results: dict, path: str | os.PathLike) -> pathlib.Path:
    """Bar chart of the speed-up vs eager per row (one subplot per op, bars per backend; plus a loops subplot
    with plain / fused), written atomically as a PNG. Raises ImportError without matplotlib."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg  # the Agg backend, without touching pyplot's
    from matplotlib.figure import Figure

    rows = table_rows(results)
    ops: dict[str, list[dict]] = {}
    for row in rows:
        ops.setdefault(row["op"], []).append(row)
    loops = [r for r in loop_rows(results) if r["ratio"] is not None]
    panels = len(ops) + (1 if loops else 0)
    fig = Figure(
        figsize=(max(6.0, 0.9 * max([len(v) for v in ops.values()] + [len(loops), 4])), 3.2 * max(1, panels)),
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(1, panels), 1, squeeze=False)[:, 0]
    for ax, (op, op_rows) in zip(axes, ops.items()):
        many_devices = len({r["device"] for r in op_rows}) > 1
        backends = sorted({b for r in op_rows for b in r["times_ms"] if b != "eager"}, key=_backend_key)
        width = 0.8 / max(1, len(backends))
        for i, backend in enumerate(backends):
            values = []
            for r in op_rows:
                t, base = r["times_ms"].get(backend), r["times_ms"].get("eager")
                values.append(base / t if t and base else math.nan)
            ax.bar(
                [x + (i - (len(backends) - 1) / 2) * width for x in range(len(op_rows))], values, width, label=backend
            )
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(op_rows)))
        ax.set_xticklabels([_row_label(r, many_devices) for r in op_rows], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("speed-up vs eager")
        ax.set_title(op)
        if backends:
            ax.legend(fontsize=8)
        if not any(r["times_ms"].get("eager") for r in op_rows):
            ax.text(0.5, 0.5, "no eager baseline", transform=ax.transAxes, ha="center")
    if loops:
        ax = axes[len(ops)]
        ax.bar(range(len(loops)), [r["ratio"] for r in loops], 0.6, color="tab:green")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(loops)))
        ax.set_xticklabels([r["group"] for r in loops], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("plain / fused")
        ax.set_title("loops")
    if panels == 0:
        axes[0].text(0.5, 0.5, "no op or loop benchmarks to plot", ha="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    path = pathlib.Path(path)
    _atomic_write_bytes(path, buf.getvalue())
    return path


def _new_results_path(slug: str, replace: bool) -> pathlib.Path:
    """``RESULTS_DIR/<slug>.md``, or the first ``<slug>-<n>.md`` that no markdown or PNG uses yet."""
    path, n = RESULTS_DIR / f"{slug}.md", 1
    while not replace and (path.exists() or path.with_suffix(".png").exists()):
        n += 1
        path = RESULTS_DIR / f"{slug}-{n}.md"
    return path


def write_report(
    results: dict,
    out: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
    *,
    make_plot: bool = True,
    source: str | None = None,
    replace: bool = False,
) -> tuple[pathlib.Path, pathlib.Path | None]:
    """Write the markdown (default ``benchmarks/results/<machine>.md``) and, when ``make_plot``, the PNG (default:
    same stem, ``.png``). Returns (markdown path, PNG path or None). The default never replaces a results file
    (they are committed): it writes ``<machine>-2.md``, ``-3`` ... unless ``replace``. The PNG is skipped with a
    warning on stderr when matplotlib is missing and no ``plot_path`` was asked for; asked for, the ImportError
    propagates."""
    _check(results)
    md_path = pathlib.Path(out) if out is not None else _new_results_path(machine_slug(results), replace)
    _atomic_write_bytes(md_path, render(results, source=source).encode("utf-8"))
    png_path = None
    if make_plot:
        target = pathlib.Path(plot_path) if plot_path is not None else md_path.with_suffix(".png")
        try:
            png_path = plot(results, target)
        except ImportError as exc:
            if plot_path is not None:
                raise
            print(f"warning: no plot written ({exc}); `pip install matplotlib` for it", file=sys.stderr)
    return md_path, png_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="pytest-benchmark JSON (pytest ... --benchmark-json=RESULTS.json)")
    parser.add_argument(
        "--out", help="markdown file (default benchmarks/results/<machine>.md, or <machine>-2.md ... if it exists)"
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="replace an existing benchmarks/results/<machine>.md instead of writing <machine>-2.md",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--plot", help="PNG file (default: next to the markdown, same stem)")
    group.add_argument("--no-plot", action="store_true", help="write no PNG")
    args = parser.parse_args(argv)
    try:
        results = load(args.results)
        md_path, png_path = write_report(
            results,
            args.out,
            args.plot,
            make_plot=not args.no_plot,
            source=pathlib.Path(args.results).name,
            replace=args.replace,
        )
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"error: cannot write the plot ({exc}); `pip install matplotlib` or pass --no-plot", file=sys.stderr)
        return 2
    print(f"wrote {md_path}" + (f" and {png_path}" if png_path else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
