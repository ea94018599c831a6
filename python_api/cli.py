"""``perceptual-kernels`` command: stylize, texture, info, demo."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import perceptual_kernels as pk

from . import demo, gatys, images


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _add_common(p: argparse.ArgumentParser) -> None:
    """Options shared by ``stylize`` and ``texture``."""
    p.add_argument("-o", "--output", required=True, help="output image path (png, jpg, ...)")
    p.add_argument("--style-layers", type=_names, default=list(gatys.DEFAULT_STYLE_LAYERS),
                   help="comma-separated VGG layers for the style loss")
    p.add_argument("--style-layer-weights", type=_floats, default=None, help="one weight per style layer")
    p.add_argument("--style-blend-weights", type=_floats, default=None, help="one weight per style image")
    p.add_argument("--style-weight", type=float, default=1e6)
    p.add_argument("--tv-weight", type=float, default=0.0)
    p.add_argument("--optimizer", choices=gatys.OPTIMIZERS, default="lbfgs")
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--lr", type=float, default=None, help="default: 1 for L-BFGS, 0.02 for Adam")
    p.add_argument("--arch", choices=("vgg16", "vgg19"), default="vgg19")
    p.add_argument("--weights", default="imagenet",
                   help='"imagenet", "caffe", "random" or a path to a VGG state dict')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--backend", default=None, choices=pk.backends.BACKENDS, help="force a kernel backend")
    p.add_argument("--autocast", action="store_true", help="run the VGG pass in bf16 (losses stay fp32)")
    p.add_argument("--save-every", type=int, default=0, help="write the image every N iterations")
    p.add_argument("--save-path", default=None, help="intermediate image path; may contain {iteration}")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perceptual-kernels", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stylize", help="Gatys style transfer of CONTENT in the style of STYLE(s)")
    p.add_argument("content")
    p.add_argument("styles", nargs="+")
    _add_common(p)
    p.add_argument("--size", type=int, default=512, help="long side of the output")
    p.add_argument("--style-scale", type=float, default=1.0)
    p.add_argument("--multiscale", type=_ints, default=None, help="increasing long sides, e.g. 256,512")
    p.add_argument("--content-layers", type=_names, default=list(gatys.DEFAULT_CONTENT_LAYERS))
    p.add_argument("--content-weight", type=float, default=1.0)
    p.add_argument("--init", default="content", help='"content", "noise" or an image path')
    p.add_argument("--preserve-colors", choices=gatys.COLOR_METHODS, default=None)
    p.add_argument("--pooling", choices=("max", "avg"), default="max")

    p = sub.add_parser("texture", help="Gatys texture synthesis from STYLE(s)")
    p.add_argument("styles", nargs="+")
    _add_common(p)
    p.add_argument("--size", type=_ints, default=[256], help="side, or height,width")
    p.add_argument("--style-size", type=int, default=None, help="long side of the style image")
    p.add_argument("--pooling", choices=("max", "avg"), default="avg")

    sub.add_parser("info", help="versions, devices, backends and the backend each op uses")

    p = sub.add_parser("demo", help="offline demo on generated images: stylize, texture, a table of losses")
    p.add_argument("-o", "--output", default="perceptual-kernels-demo", help="output folder")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--weights", default=None, help='default: "imagenet" when cached, else "random"')
    p.add_argument("--device", default=None)
    return parser


def _common_kwargs(args: argparse.Namespace) -> dict:
    return dict(style_blend_weights=args.style_blend_weights, style_layers=args.style_layers,
                style_layer_weights=args.style_layer_weights, style_weight=args.style_weight,
                tv_weight=args.tv_weight, optimizer=args.optimizer, iterations=args.iterations, lr=args.lr,
                arch=args.arch, weights=args.weights, pooling=args.pooling, seed=args.seed, device=args.device,
                autocast=args.autocast, progress=not args.no_progress, save_every=args.save_every,
                save_path=args.save_path)


def _check_output(output: str, inputs: Sequence[str]) -> None:
    """Fail before any work when the output would overwrite an input."""
    out = Path(output).resolve()
    for path in inputs:
        if os.path.exists(path) and Path(path).resolve() == out:
            raise ValueError(f"output {output} is the input {path}; choose another path")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; bad input prints ``error: ...`` and returns 2, Ctrl-C returns 130."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "info":
        pk.info()
        return 0
    if args.command == "demo":
        demo.run(Path(args.output), size=args.size, iterations=args.iterations, weights=args.weights,
                 device=args.device)
        return 0
    inputs = [*getattr(args, "styles", []), getattr(args, "content", "")]
    _check_output(args.output, inputs)
    with pk.use_backend(args.backend):
        if args.command == "stylize":
            image, history = gatys.stylize(
                args.content, args.styles, size=args.size, style_scale=args.style_scale,
                multiscale=args.multiscale, content_layers=args.content_layers,
                content_weight=args.content_weight, init=args.init, preserve_colors=args.preserve_colors,
                **_common_kwargs(args))
        else:
            size = args.size[0] if len(args.size) == 1 else tuple(args.size[:2])
            image, history = gatys.synthesize_texture(args.styles, size, style_size=args.style_size,
                                                      **_common_kwargs(args))
    saved = images.save_image(image, args.output, protected=[p for p in inputs if p])
    print(f"wrote {saved} ({len(history.loss)} iterations, final loss {history.loss[-1]:.4g}, "
          f"{history.time[-1]:.1f} s)" if history.loss else f"wrote {saved}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
