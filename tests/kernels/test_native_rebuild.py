"""A built ``_C`` that cannot be used (torch upgraded after the build) warns once, at the first op that would
have run on it, naming the rebuild command for the way the package was installed; the op still runs (reference)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import perceptual_kernels as pk
from perceptual_kernels.backends import native


@pytest.fixture
def stale_build(monkeypatch):
    """Pretend _C was built against another torch (fresh load state, nothing warned yet in this process)."""
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_warned", False)
    monkeypatch.setattr(native, "LOAD_ERROR", None)
    monkeypatch.setattr(native, "build_info", lambda: {"torch": "1.0.0", "cuda": None, "cuda_arch_list": ""})
    monkeypatch.setattr(native.importlib.util, "find_spec", lambda name: object())  # a _C file exists


def test_first_op_warns_once_and_still_runs(stale_build):
    x = torch.randn(2, 3, 5, 7)
    with pytest.warns(RuntimeWarning, match=r"built against torch 1\.0\.0.*pip install --no-build-isolation"):
        loss = pk.tv_loss(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second op does not warn again
        again = pk.tv_loss(x)
    with pk.use_backend("reference"):
        assert torch.equal(loss, pk.tv_loss(x)) and torch.equal(again, loss)


def test_a_pure_python_install_does_not_warn(stale_build, monkeypatch):
    monkeypatch.setattr(native.importlib.util, "find_spec", lambda name: None)  # no _C file at all
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pk.tv_loss(torch.randn(1, 1, 3, 3))


@pytest.mark.parametrize(
    "direct_url, expected",
    [
        ({"url": "file:///src/pk", "dir_info": {"editable": True}}, "pip install --no-build-isolation -e /src/pk"),
        ({"url": "file:///src/pk", "dir_info": {}}, "--force-reinstall --no-deps /src/pk"),
        (None, "--no-binary perceptual-kernels perceptual-kernels"),
    ],
    ids=["editable", "from-a-folder", "from-an-index"],
)
def test_rebuild_command_follows_the_install(monkeypatch, direct_url, expected):
    class Dist:
        def read_text(self, name):
            return json.dumps(direct_url) if direct_url is not None else None

    monkeypatch.setattr(native.importlib.metadata, "distribution", lambda name: Dist())
    assert expected in native.rebuild_command()
