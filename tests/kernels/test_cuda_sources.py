"""Every CUDA kernel in csrc/cuda/*.cuh compiles standalone (no torch headers) for sm_80 and sm_90 with nvcc,
with zero register spills. Needs nvcc, not a GPU; skipped where nvcc is absent. The resource table is
benchmarks/results/cuda_ptxas.md (``python -m tools.cuda_resources``)."""

from __future__ import annotations

import re

import pytest

from tools import cuda_resources

pytestmark = pytest.mark.skipif(cuda_resources.nvcc() is None, reason="nvcc not found (CUDA toolkit absent)")
SOURCES = cuda_resources.sources()


def test_every_op_has_cuda_sources():
    launchers = {p.stem for p in (cuda_resources.ROOT / "csrc" / "cuda").glob("*.cu")}
    assert {p.stem for p in SOURCES} == launchers == {"gram", "content", "tv", "instance_norm", "lpips"}


@pytest.mark.parametrize("source", SOURCES, ids=[p.name for p in SOURCES])
def test_kernels_compile_for_sm80_and_sm90_without_spills(source):
    text = source.read_text()
    assert not re.search(r"#include\s*[<\"](torch|ATen|c10)/", text), "a .cuh must not include torch headers"
    rows = cuda_resources.compile_report(source)
    assert {r["arch"] for r in rows} == {"sm_80", "sm_90"}, "no kernel was instantiated"
    for r in rows:
        assert r.get("spill_stores", 0) == 0 and r.get("spill_loads", 0) == 0, f"register spills: {r}"
