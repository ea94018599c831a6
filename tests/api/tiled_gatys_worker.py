"""Run under ``python -m torch.distributed.run --nproc-per-node N`` by test_gatys_tiled: a tiled stylize whose
history rank 0 writes to ``OUT/history-<world>.json``, the untiled call that must refuse a process group, and
the CLI's ``stylize --tile-size`` (rank 0 writes ``OUT/cli.png``).

usage: tiled_gatys_worker.py CONTENT STYLE OUT
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch

from perceptual_kernels.api import cli, distributed, gatys

CONTENT_LAYERS, STYLE_LAYERS = ["relu3_1"], ["relu1_1", "relu2_1", "relu3_1"]


def main(content: str, style: str, out: str) -> None:
    warnings.simplefilter("ignore")
    kwargs = dict(
        size=64,
        content_layers=CONTENT_LAYERS,
        style_layers=STYLE_LAYERS,
        weights="random",
        iterations=4,
        progress=False,
        device="cpu",
        tv_weight=1e-2,
    )
    _, history = gatys.stylize(content, style, tile_size=24, **kwargs)
    result = {"loss": history.loss, "content": history.content, "style": history.style, "refused": ""}
    try:
        gatys.stylize(content, style, **{**kwargs, "iterations": 1})
    except ValueError as exc:
        result["refused"] = str(exc)
    if distributed.is_main_process():
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        Path(out, f"history-{world}.json").write_text(json.dumps(result))
    layers = ["--content-layers", "relu3_1", "--style-layers", "relu1_1,relu2_1,relu3_1"]
    argv = ["stylize", content, style, "-o", str(Path(out, "cli.png")), "--size", "64", "--tile-size", "24", *layers]
    code = cli.main([*argv, "--weights", "random", "--iterations", "2", "--no-progress", "--device", "cpu"])
    sys.exit(code)


if __name__ == "__main__":
    main(*sys.argv[1:])
