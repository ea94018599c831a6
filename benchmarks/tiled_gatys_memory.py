"""Peak resident memory and time per iteration of Gatys stylize, untiled and tiled, each run in its own process.

VGG19 with random weights, the default layers (relu4_2 content, relu1_1..relu5_1 style), random content and
style images of ``size`` x ``size``, L-BFGS. The child prints one JSON line: peak RSS (``ru_maxrss``), RSS after
the model is built, and the seconds of every iteration (the first one after the targets are computed).

    python benchmarks/tiled_gatys_memory.py --size 1024 --iterations 3                 # untiled
    python benchmarks/tiled_gatys_memory.py --size 1024 --iterations 3 --tile-size 256
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--tile-size", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--lbfgs-history", type=int, default=100)
    args = parser.parse_args()

    import torch

    from perceptual_kernels.api import gatys, gatys_tiled
    from perceptual_kernels.api.vgg import VGGFeatures

    warnings.simplefilter("ignore")
    layers = [*gatys.DEFAULT_CONTENT_LAYERS, *gatys.DEFAULT_STYLE_LAYERS]
    extractor = VGGFeatures(layers, weights="random", seed=0)
    g = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, args.size, args.size, generator=g)
    style = torch.rand(1, 3, args.size, args.size, generator=g)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stamps: list[float] = []
    start = time.perf_counter()
    gatys.stylize(
        content,
        style,
        size=args.size,
        iterations=args.iterations,
        extractor=extractor,
        progress=False,
        device="cpu",
        tile_size=args.tile_size,
        lbfgs_history=args.lbfgs_history,
        callback=lambda info: stamps.append(time.perf_counter()),
    )
    times = [b - a for a, b in zip([start, *stamps], stamps)]
    estimate = gatys_tiled.memory_estimate(extractor, args.size, args.size, args.tile_size, args.lbfgs_history)
    print(
        json.dumps(
            {
                "size": args.size,
                "tile_size": args.tile_size,
                "threads": torch.get_num_threads(),
                "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "base_rss": base_rss,
                "seconds": times,
                "estimate": estimate,
            }
        )
    )


if __name__ == "__main__":
    main()
