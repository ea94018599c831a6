"""benchmarks/report.py: markdown tables (speed-ups, floor fraction, missing backends, loops), the PNG, errors."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

from benchmarks import report  # noqa: E402

H100 = "NVIDIA H100 80GB HBM3"


def _op(
    op,
    pas,
    case,
    size,
    dtype,
    backend,
    *,
    median_s,
    device="cpu",
    device_name="cpu",
    gpu_ms=None,
    flops=0.0,
    nbytes=0.0,
):
    extra = {
        "op": op,
        "pass": pas,
        "case": case,
        "size": size,
        "dtype": dtype,
        "backend": backend,
        "device": device,
        "device_name": device_name,
        "shape": f"(1, 64, {size}, {size})",
        "flops": flops,
        "bytes": nbytes,
        "mem_bytes": 1 << 20,
        "torch": "2.13.0",
        "triton": "3.9.0",
        "cuda": "12.8" if device == "cuda" else None,
    }
    if gpu_ms is not None:
        extra["gpu_ms"] = gpu_ms
    group = f"{op}-{pas}-{case}-{size}-{dtype}"
    return {
        "group": group,
        "name": f"test_op[{group}-{backend}]",
        "fullname": "benchmarks/test_ops.py::x",
        "params": None,
        "extra_info": extra,
        "stats": {"min": median_s, "max": median_s, "mean": median_s, "median": median_s, "rounds": 5},
    }


def _plain(group, name, median_s):
    return {
        "group": group,
        "name": name,
        "extra_info": {},
        "stats": {"min": median_s, "max": median_s, "mean": median_s, "median": median_s, "rounds": 5},
    }


def fake_results() -> dict:
    gpu = {"device": "cuda", "device_name": H100}
    benches = [
        # style_loss on the H100. fp32: floor = max(6.7e9 / 67e12, 1.5e8 / 3e12) s = max(0.1, 0.05) ms = 0.1 ms.
        # The wall-clock medians (1 s) must be ignored in favour of gpu_ms.
        _op(
            "style_loss",
            "fwdbwd",
            "relu1_1",
            512,
            "fp32",
            "eager",
            median_s=1.0,
            gpu_ms=2.0,
            flops=6.7e9,
            nbytes=1.5e8,
            **gpu,
        ),
        _op(
            "style_loss",
            "fwdbwd",
            "relu1_1",
            512,
            "fp32",
            "compile",
            median_s=1.0,
            gpu_ms=1.0,
            flops=6.7e9,
            nbytes=1.5e8,
            **gpu,
        ),
        _op(
            "style_loss",
            "fwdbwd",
            "relu1_1",
            512,
            "fp32",
            "triton",
            median_s=1.0,
            gpu_ms=0.5,
            flops=6.7e9,
            nbytes=1.5e8,
            **gpu,
        ),
        _op(
            "style_loss",
            "fwdbwd",
            "relu1_1",
            512,
            "fp32",
            "reference",
            median_s=1.0,
            gpu_ms=4.0,
            flops=6.7e9,
            nbytes=1.5e8,
            **gpu,
        ),
        # bf16, no compile: floor = max(7.9e9 / 790e12, 3e8 / 3e12) s = max(0.01, 0.1) ms = 0.1 ms (memory-bound)
        _op(
            "style_loss",
            "fwdbwd",
            "relu1_1",
            512,
            "bf16",
            "eager",
            median_s=1.0,
            gpu_ms=0.8,
            flops=7.9e9,
            nbytes=3e8,
            **gpu,
        ),
        _op(
            "style_loss",
            "fwdbwd",
            "relu1_1",
            512,
            "bf16",
            "triton",
            median_s=1.0,
            gpu_ms=0.4,
            flops=7.9e9,
            nbytes=3e8,
            **gpu,
        ),
        # tv_loss on the CPU: no floor, pytest-benchmark medians
        _op("tv_loss", "fwd", "b4c3", 256, "fp32", "eager", median_s=0.004),
        _op("tv_loss", "fwd", "b4c3", 256, "fp32", "compile", median_s=0.002),
        _op("tv_loss", "fwd", "b4c3", 256, "fp32", "reference", median_s=0.001),
        _op("tv_loss", "fwdbwd", "b4c3", 256, "fp32", "eager", median_s=0.010),
        _op("tv_loss", "fwdbwd", "b4c3", 256, "fp32", "triton", median_s=0.0025),
        # loops: only group + test name
        _plain("gatys-iteration-256-cuda", "test_gatys_iteration[fused-256]", 0.100),
        _plain("gatys-iteration-256-cuda", "test_gatys_iteration[plain-256]", 0.250),
        _plain("johnson-step-b4-256-1styles-cuda", "test_johnson_training_step[fused-4-256-1]", 0.300),
        # neither an op nor a loop (the dispatch-overhead benchmarks)
        _plain("gram_matrix", "test_overhead[gram_matrix-custom_op]", 20e-6),
    ]
    return {
        "machine_info": {
            "node": "box",
            "python_version": "3.11.7",
            "cpu": {"brand_raw": "Intel(R) Xeon(R) Platinum 8480+"},
        },
        "commit_info": {},
        "benchmarks": benches,
        "datetime": "2025-01-02T03:04:05.000000+00:00",
        "version": "5.2.3",
    }


def section(markdown: str, title: str) -> str:
    parts = markdown.split(f"\n## {title}\n", 1)
    assert len(parts) == 2, f"no section {title!r} in\n{markdown}"
    return parts[1].split("\n## ", 1)[0]


def table(markdown: str, title: str) -> list[dict]:
    """The first markdown table of a section, as one dict per row keyed by the header."""
    lines = [ln for ln in section(markdown, title).splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    header, body = cells[0], cells[2:]
    assert all(len(row) == len(header) for row in body)
    return [dict(zip(header, row)) for row in body]


def find(rows, **match):
    hits = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(hits) == 1, (match, rows)
    return hits[0]


@pytest.fixture
def results():
    return fake_results()


@pytest.fixture
def results_file(tmp_path, results):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return path


def test_header_records_machine(results):
    md = report.render(results)
    head = md.split("\n## ", 1)[0]
    assert H100 in head and "Intel(R) Xeon(R) Platinum 8480+" in head
    assert "torch 2.13.0" in head and "triton 3.9.0" in head and "CUDA 12.8" in head
    assert "2025-01-02T03:04:05" in head
    assert "## How measured" in md and "CUDA-event" in md and "pytest-benchmark" in md


def test_gpu_table_speedups_and_floor(results):
    rows = table(report.render(results), "style_loss")
    fp32 = find(rows, dtype="fp32")
    assert (fp32["pass"], fp32["case"], fp32["size"]) == ("fwdbwd", "relu1_1", "512")
    # gpu_ms is used, not the 1 s wall-clock median
    assert [fp32[f"{b} (ms)"] for b in ("eager", "compile", "reference", "triton")] == ["2.00", "1.00", "4.00", "0.500"]
    assert fp32["triton vs eager"] == "4.00x" and fp32["triton vs compile"] == "2.00x"
    assert fp32["reference vs eager"] == "0.50x" and fp32["reference vs compile"] == "0.25x"
    assert "eager vs eager" not in fp32 and "compile vs eager" not in fp32
    assert fp32["floor (ms)"] == "0.100"
    assert fp32["triton % floor"] == "20.0%" and fp32["eager % floor"] == "5.0%"
    assert fp32["reference % floor"] == "2.5%" and fp32["compile % floor"] == "10.0%"

    bf16 = find(rows, dtype="bf16")
    assert bf16["compile (ms)"] == "-" and bf16["reference (ms)"] == "-"
    assert bf16["triton vs eager"] == "2.00x" and bf16["triton vs compile"] == "-"
    assert bf16["reference vs eager"] == "-"
    assert bf16["floor (ms)"] == "0.100" and bf16["triton % floor"] == "25.0%"
    assert bf16["compile % floor"] == ""  # not measured: nothing to compare


def test_cpu_table_missing_backends(results):
    md = report.render(results)
    rows = table(md, "tv_loss")
    assert "floor (ms)" not in rows[0] and not any("% floor" in k for k in rows[0])
    fwd, fwdbwd = find(rows, **{"pass": "fwd"}), find(rows, **{"pass": "fwdbwd"})
    assert rows.index(fwd) < rows.index(fwdbwd)
    assert fwd["eager (ms)"] == "4.00" and fwd["reference (ms)"] == "1.00" and fwd["triton (ms)"] == "-"
    assert fwd["reference vs eager"] == "4.00x" and fwd["reference vs compile"] == "2.00x"
    assert fwd["triton vs eager"] == "-" and fwd["triton vs compile"] == "-"
    assert fwdbwd["compile (ms)"] == "-" and fwdbwd["reference (ms)"] == "-"
    assert fwdbwd["triton vs eager"] == "4.00x" and fwdbwd["triton vs compile"] == "-"


def test_loops_and_other_tables(results):
    md = report.render(results)
    loops = table(md, "Loops")
    gatys = find(loops, group="gatys-iteration-256-cuda")
    assert gatys["loop"] == "gatys-iteration"
    assert (gatys["fused (ms)"], gatys["plain (ms)"], gatys["plain / fused"]) == ("100", "250", "2.50x")
    johnson = find(loops, group="johnson-step-b4-256-1styles-cuda")
    assert johnson["plain (ms)"] == "-" and johnson["plain / fused"] == "-"
    # loop groups are not op tables
    assert "\n## gatys" not in md
    other = find(table(md, "Other benchmarks"), group="gram_matrix")
    assert other["median (ms)"] == "0.0200"


def test_table_rows_api(results):
    rows = report.table_rows(results)
    assert [(r["op"], r["pass"], r["dtype"]) for r in rows] == [
        ("style_loss", "fwdbwd", "fp32"),
        ("style_loss", "fwdbwd", "bf16"),
        ("tv_loss", "fwd", "fp32"),
        ("tv_loss", "fwdbwd", "fp32"),
    ]
    r = rows[0]
    assert r["times_ms"] == {"eager": 2.0, "compile": 1.0, "reference": 4.0, "triton": 0.5}
    assert r["speedup_vs_eager"] == {"reference": 0.5, "triton": 4.0}
    assert r["speedup_vs_compile"] == {"reference": 0.25, "triton": 2.0}
    assert r["floor_ms"] == pytest.approx(0.1)
    assert r["floor_fraction"]["triton"] == pytest.approx(0.2)
    assert rows[2]["floor_ms"] is None and rows[2]["floor_fraction"]["eager"] is None
    assert [lr["ratio"] for lr in report.loop_rows(results)] == [pytest.approx(2.5), None]


def test_floor_h200_and_unknown_gpu(results):
    for bench in results["benchmarks"][:6]:
        bench["extra_info"]["device_name"] = "NVIDIA H200"
    bf16 = report.table_rows(results)[1]
    assert bf16["floor_ms"] == pytest.approx(3e8 / 4.3e12 * 1e3)
    for bench in results["benchmarks"][:6]:
        bench["extra_info"]["device_name"] = "NVIDIA A100-SXM4-80GB"
    rows = report.table_rows(results)
    assert rows[0]["floor_ms"] is None and rows[0]["floor_fraction"]["triton"] is None
    fp32 = find(table(report.render(results), "style_loss"), dtype="fp32")
    assert fp32["floor (ms)"] == "" and fp32["triton % floor"] == ""  # unknown GPU: left empty


def test_machine_slug(results):
    assert report.machine_slug(results) == "nvidia-h100-80gb-hbm3"
    cpu_only = {
        **results,
        "benchmarks": [b for b in results["benchmarks"] if (b["extra_info"] or {}).get("device") != "cuda"],
    }
    assert report.machine_slug(cpu_only) == "intel-xeon-platinum-8480"


def test_cli_writes_markdown_and_png(tmp_path, results_file):
    pytest.importorskip("matplotlib", reason="matplotlib not installed: the PNG is not checked")
    out = tmp_path / "out" / "h100.md"
    assert report.main([str(results_file), "--out", str(out)]) == 0
    assert out.read_text().startswith("# Benchmarks on " + H100)
    png = out.with_suffix(".png")  # default: next to the markdown, same stem
    data = png.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    explicit = tmp_path / "plots" / "speedups.png"
    assert report.main([str(results_file), "--out", str(out), "--plot", str(explicit)]) == 0
    assert explicit.stat().st_size > 1000
    assert sorted(p.name for p in out.parent.iterdir()) == ["h100.md", "h100.png"]  # no temp files left


def test_default_output_path(tmp_path, monkeypatch, results):
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path / "results")
    md_path, png_path = report.write_report(results, make_plot=False)
    assert md_path == tmp_path / "results" / "nvidia-h100-80gb-hbm3.md" and png_path is None
    assert md_path.read_text() == report.render(results)


def test_empty_json_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"machine_info": {}, "benchmarks": [], "datetime": "x"}))
    with pytest.raises(report.ReportError, match="no benchmarks"):
        report.load(empty)
    with pytest.raises(ValueError, match="no benchmarks"):
        report.render({"benchmarks": []})
    out = tmp_path / "never.md"
    assert report.main([str(empty), "--out", str(out)]) == 2
    assert "no benchmarks" in capsys.readouterr().err and not out.exists()
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(report.ReportError, match="not JSON"):
        report.load(bad)


def test_module_entry_point(tmp_path, results_file):
    out = tmp_path / "r.md"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.report", str(results_file), "--out", str(out), "--no-plot"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "## style_loss" in out.read_text() and not out.with_suffix(".png").exists()
