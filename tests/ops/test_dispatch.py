"""Backend choice: automatic order, use_backend, PERCEPTUAL_KERNELS_BACKEND, info()."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import perceptual_kernels as pk
from perceptual_kernels.backends import forced_backend, native, select

cpu = torch.device("cpu")


def test_cpu_tensors_default_to_the_compiled_cpu_backend():
    expected = "reference" if native.load() is None else "cpu"
    assert select(cpu, torch.float32) == expected
    assert select(cpu, torch.float64) == expected


def test_without_extension_cpu_tensors_fall_back_to_reference(monkeypatch):
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setattr(native, "LOAD_ERROR", "perceptual_kernels._C is not built (test)")
    monkeypatch.setattr(native, "_tried", True)
    assert select(cpu, torch.float32) == "reference"
    with pk.use_backend("cpu"), pytest.raises(pk.BackendUnavailableError, match="not built"):
        pk.gram_matrix(torch.randn(1, 2, 3, 3))


def test_use_backend_nests_and_restores():
    assert forced_backend() is None
    with pk.use_backend("reference"):
        assert forced_backend() == "reference"
        with pk.use_backend(None):
            assert not forced_backend()
        assert forced_backend() == "reference"
    assert forced_backend() is None


def test_environment_variable_forces_a_backend(monkeypatch):
    monkeypatch.setenv("PERCEPTUAL_KERNELS_BACKEND", "cuda")
    with pytest.raises(pk.BackendUnavailableError, match="cuda"):
        pk.gram_matrix(torch.randn(1, 2, 3, 3))
    with pk.use_backend(None):  # the context manager wins over the environment
        pk.gram_matrix(torch.randn(1, 2, 3, 3))
    monkeypatch.setenv("PERCEPTUAL_KERNELS_BACKEND", "fast")
    with pytest.raises(ValueError, match="PERCEPTUAL_KERNELS_BACKEND must be one of"):
        pk.gram_matrix(torch.randn(1, 2, 3, 3))


def test_triton_on_cpu_needs_the_interpreter():
    code = (
        "import torch, perceptual_kernels as pk\n"
        "from perceptual_kernels.backends import unavailable_reason as r\n"
        "print(r('triton', torch.device('cpu'), torch.float32))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "TRITON_INTERPRET": "0"},
    ).stdout
    assert "TRITON_INTERPRET=1" in out


def test_info_reports_versions_backends_and_ops(capsys):
    report = pk.info()
    printed = capsys.readouterr().out
    assert report["torch"] == torch.__version__ and torch.__version__ in printed
    assert report["backends"]["cpu"]["reference"] == "available"
    assert set(report["ops"]["cpu"]) == set(pk.functional.__all__)
    if native.load() is None:
        assert "not built" in report["backends"]["cpu"]["cpu"]
        assert report["ops"]["cpu"]["style_loss"] == "reference"
    else:
        assert report["backends"]["cpu"]["cpu"] == "available"
        assert report["ops"]["cpu"]["style_loss"] == "cpu"
        assert report["extension"]["built_against_torch"] == torch.__version__
        assert "tv_forward" in report["extension"]["ops"]["cpu"] and "_C cpu kernels" in printed
