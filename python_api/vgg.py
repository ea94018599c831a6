"""VGG16 / VGG19 feature extractor for perceptual (style / content) losses.

:class:`VGGFeatures` rebuilds the ``features`` stack of torchvision's ``vgg16`` / ``vgg19`` (conv3x3 pad 1 + ReLU,
2x2 pooling after each block), truncated after the deepest requested layer, and returns the requested layers by
name (``conv1_1``, ``relu1_1``, ..., ``pool5``). The layer names map 1:1 to the indices of torchvision's
``features`` Sequential, so ``features.N.weight`` state-dict keys load directly (``self.features[N]`` is the
module named ``layer_names(arch)[N]``).

Weights (the ``weights`` argument):

* ``"imagenet"``: torchvision's ImageNet files, from ``<torch.hub.get_dir()>/checkpoints`` or downloaded there;
* ``"caffe"``: the Caffe-converted VGG files used by the PyTorch neural-style ports, found in the same folder;
* a path to a state dict (torchvision ``features.N.*`` keys or named ``conv1_1.*`` keys);
* ``"random"``: seeded Kaiming-normal weights, for runs without any download (untrained features).

The preprocessing that goes with the weights happens inside :meth:`VGGFeatures.forward`, which takes RGB images
in [0, 1] (``normalize_input=False`` skips it: the images go to ``conv1_1`` as they are).
"""

from __future__ import annotations

import http.client
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from . import _checks

__all__ = [
    "CAFFE_FILES",
    "CAFFE_MAGNITUDE_THRESHOLD",
    "CAFFE_MEAN_BGR",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TORCHVISION_FILES",
    "TORCHVISION_URL_ROOT",
    "VGG_CONFIGS",
    "VGGFeatures",
    "layer_names",
]

# torchvision's cfgs "D" (vgg16) and "E" (vgg19): conv output channels, "M" = 2x2 pooling
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

TORCHVISION_URL_ROOT = "https://download.pytorch.org/models/"
TORCHVISION_FILES = {"vgg16": "vgg16-397923af.pth", "vgg19": "vgg19-dcbb9e9d.pth"}
CAFFE_FILES = {"vgg16": "vgg16-00b39a1b.pth", "vgg19": "vgg19-d01eb7cb.pth"}

# Format detection of a state-dict file whose name does not say "caffe": the file is taken as Caffe weights when
# the mean absolute value of conv1_1's weights is below this. Filters trained on 0-255 inputs are expected to be
# about two orders of magnitude smaller than filters trained on standardised inputs (torchvision's conv1_1:
# mean |w| ~ 0.2); 0.02 sits a decade below that, and below Kaiming-normal (fan_out) init (mean |w| ~ 0.047), so
# untrained / randomly initialised files are not taken as Caffe. Caveat: some real Caffe conversions have conv1_1
# magnitudes close to torchvision's, so this heuristic cannot always tell; pass ``weights_format`` when in doubt.
CAFFE_MAGNITUDE_THRESHOLD = 0.02

_WEIGHTS_FORMATS = ("torchvision", "caffe")
_POOLINGS = ("max", "avg")


def _check_arch(arch: str) -> tuple[int | str, ...]:
    try:
        return VGG_CONFIGS[arch]
    except (KeyError, TypeError):
        raise ValueError(f"unknown VGG arch {arch!r}; expected one of {sorted(VGG_CONFIGS)}") from None


def layer_names(arch: str) -> list[str]:
    """Names of the ``features`` entries of torchvision's ``arch`` ("vgg16": 31, "vgg19": 37), in index order:
    ``conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ..., pool5``."""
    names: list[str] = []
    block, conv = 1, 0
    for v in _check_arch(arch):
        if v == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 0
        else:
            conv += 1
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
    return names


def _conv_shapes(arch: str) -> dict[int, tuple[int, int]]:
    """``features`` index -> (out_channels, in_channels) of each conv."""
    shapes, index, in_ch = {}, 0, 3
    for v in _check_arch(arch):
        if v == "M":
            index += 1
        else:
            shapes[index] = (int(v), in_ch)
            in_ch = int(v)
            index += 2
    return shapes


def _hub_checkpoints_dir() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def cached_weights_path(arch: str, weights: str = "imagenet") -> str:
    """Where ``weights="imagenet"`` / ``"caffe"`` files for ``arch`` are looked up (the torch hub checkpoints)."""
    _check_arch(arch)
    files = {"imagenet": TORCHVISION_FILES, "caffe": CAFFE_FILES}
    if weights not in files:
        raise ValueError(f"weights must be 'imagenet' or 'caffe', got {weights!r}")
    return os.path.join(_hub_checkpoints_dir(), files[weights][arch])


def _download(url: str, progress: bool = True) -> dict[str, torch.Tensor]:
    """Download (into the hub checkpoints folder) and load a torchvision state dict. Module-level so that tests
    can monkeypatch it."""
    return torch.hub.load_state_dict_from_url(url, progress=progress, check_hash=True, weights_only=True)


def _load_file(path: str) -> Any:
    """A VGG state-dict file, loaded with ``weights_only=True``; ValueError saying it is not a valid one (never
    advising to load it with ``weights_only=False``)."""
    return _checks.load_torch_file(path, "VGG weights file")


def _as_state_dict(obj: Any, source: str) -> dict[str, Any]:
    """The state dict in a loaded file: a plain mapping, or one under "state_dict"; a DataParallel "module."
    prefix is dropped."""
    if (
        isinstance(obj, Mapping)
        and isinstance(obj.get("state_dict"), Mapping)
        and not any(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{source} does not hold a state dict (a mapping of names to tensors) but a {type(obj).__name__}"
        )
    sd = dict(obj)
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


_NAMED_KEY = re.compile(r"^conv\d+_\d+\.(weight|bias)$")


def _key_layout(sd: Mapping[str, Any]) -> str:
    """ "torchvision" (``features.N.*`` keys) or "named" (``conv1_1.*`` keys); torchvision when neither."""
    keys = [k for k in sd if isinstance(k, str)]
    if any(k.startswith("features.") for k in keys):
        return "torchvision"
    if any(_NAMED_KEY.match(k) for k in keys):
        return "named"
    return "torchvision"


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _state_dict_problem(sd: Mapping[str, Any], arch: str, depth: int, layout: str) -> str | None:
    """The first missing / mis-shaped conv key among ``features[:depth]`` of ``arch``, or None when all fit."""
    names = layer_names(arch)
    for index, (out_ch, in_ch) in _conv_shapes(arch).items():
        if index >= depth:
            break
        for param, shape in (("weight", (out_ch, in_ch, 3, 3)), ("bias", (out_ch,))):
            key = f"features.{index}.{param}" if layout == "torchvision" else f"{names[index]}.{param}"
            what = f"{key!r}" + (f" ({names[index]}.{param})" if layout == "torchvision" else "")
            value = sd.get(key)
            if value is None:
                return f"missing key {what}, expected shape {_shape_str(shape)}"
            if not isinstance(value, torch.Tensor):
                return f"key {what} holds a {type(value).__name__}, expected a tensor of shape {_shape_str(shape)}"
            if tuple(value.shape) != shape:
                return f"key {what} has the wrong shape: expected {_shape_str(shape)}, found {_shape_str(value.shape)}"
            if not value.is_floating_point():
                return f"key {what} has dtype {value.dtype}, expected a floating-point tensor"
    return None


def _validate_state_dict(sd: Mapping[str, Any], arch: str, depth: int, source: str) -> str:
    """Check that ``sd`` holds every conv of ``features[:depth]`` of ``arch`` with the right shapes; returns the
    key layout. ValueError naming the key, the expected and the found shape otherwise."""
    layout = _key_layout(sd)
    problem = _state_dict_problem(sd, arch, depth, layout)
    if problem is None:
        return layout
    hint = ""
    for other in VGG_CONFIGS:
        if other != arch and _state_dict_problem(sd, other, len(layer_names(other)), layout) is None:
            hint = f" It looks like a {other} state dict: pass arch={other!r} or use a {arch} file."
            break
    if not hint and not any(isinstance(k, str) and (k.startswith("features.") or _NAMED_KEY.match(k)) for k in sd):
        sample = [
            f"{k!r} {_shape_str(v.shape)}" if isinstance(v, torch.Tensor) else repr(k) for k, v in list(sd.items())[:4]
        ]
        hint = (
            f" It has no VGG keys at all ({len(sd)} keys, e.g. {', '.join(sample) or 'none'}); it does not "
            f"look like a VGG state dict."
        )
    deepest = layer_names(arch)[depth - 1]
    raise ValueError(f"{source} does not fit {arch} up to {deepest} ({layout} key layout): {problem}.{hint}")


def _detect_format(path: str, conv1_weight: torch.Tensor) -> tuple[str, str]:
    """(format, how it was decided) for a state-dict file given without ``weights_format``."""
    name = os.path.basename(path)
    if "caffe" in name.lower() or name in CAFFE_FILES.values():
        return "caffe", "detected from the file name"
    magnitude = float(conv1_weight.detach().abs().float().mean())
    if magnitude < CAFFE_MAGNITUDE_THRESHOLD:
        return "caffe", (
            f"detected from the magnitude of conv1_1's weights (mean |w| = {magnitude:.3g} < "
            f"{CAFFE_MAGNITUDE_THRESHOLD}); pass weights_format='torchvision' if that is wrong"
        )
    return "torchvision", (
        f"detected from the magnitude of conv1_1's weights (mean |w| = {magnitude:.3g} >= "
        f"{CAFFE_MAGNITUDE_THRESHOLD}); pass weights_format='caffe' if that is wrong"
    )


class VGGFeatures(nn.Module):
    """Frozen VGG16 / VGG19 feature extractor returning the requested layers of one forward pass.

    Args:
        layers: layer names of ``layer_names(arch)`` (duplicates are dropped); only the modules up to the
            deepest of them are built.
        arch: "vgg16" or "vgg19".
        weights: "imagenet" (torchvision), "caffe" (Caffe-converted files), "random" (seeded Kaiming-normal,
            untrained; warns) or a path to a state dict.
        pooling: "max" (torchvision) or "avg" (2x2 average pooling, as in Gatys et al.).
        weights_format: for a state-dict path, "torchvision" or "caffe" preprocessing; detected when None (see
            ``CAFFE_MAGNITUDE_THRESHOLD``).
        seed: seed of the "random" weights.
        progress: show a progress bar when downloading.
        normalize_input: apply the weights' preprocessing (ImageNet mean / std, or Caffe's BGR, 0-255 and mean
            subtraction) in ``forward``; False feeds the images to ``conv1_1`` unchanged (cast to the weights'
            dtype), as BasicSR's ``use_input_norm=False``.

    ``forward(x)`` takes RGB images in [0, 1], (B, 3, H, W) with H, W >= ``min_size``, and returns
    ``{name: tensor}`` in the order of ``layers``. The parameters are frozen and the module stays in eval mode
    (``train()`` keeps it there); gradients still flow to ``x``. ``self.features[N]`` is the module named
    ``layer_names(arch)[N]``, so ``state_dict()`` has torchvision's ``features.N.*`` keys.
    """

    def __init__(
        self,
        layers: Sequence[str],
        arch: str = "vgg19",
        weights: str | os.PathLike = "imagenet",
        *,
        pooling: str = "max",
        weights_format: str | None = None,
        seed: int = 0,
        progress: bool = True,
        normalize_input: bool = True,
    ) -> None:
        super().__init__()
        _checks.flag("normalize_input", normalize_input)
        all_names = layer_names(arch)  # ValueError for an unknown arch
        seed = _checks.seed(seed)
        if pooling not in _POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; expected one of {list(_POOLINGS)}")
        if weights_format is not None and weights_format not in _WEIGHTS_FORMATS + ("random",):
            raise ValueError(
                f"unknown weights_format {weights_format!r}; expected None or one of {list(_WEIGHTS_FORMATS)}"
            )
        if isinstance(layers, str):
            layers = [layers]
        requested = list(dict.fromkeys(layers))
        if not requested:
            raise ValueError(f"no layers requested; valid {arch} layer names: {', '.join(all_names)}")
        unknown = [name for name in requested if name not in all_names]
        if unknown:
            raise ValueError(
                f"unknown {arch} layer name(s) {', '.join(map(repr, unknown))}; valid {arch} layer "
                f"names: {', '.join(all_names)}"
            )
        self._arch, self._pooling, self._layers = arch, pooling, tuple(requested)
        self._indices = {name: all_names.index(name) for name in requested}
        depth = max(self._indices.values()) + 1
        self._feature_names = tuple(all_names[:depth])

        state_dict, fmt, description = self._resolve_weights(weights, weights_format, arch, depth, seed, progress)

        modules: list[nn.Module] = []
        conv_shapes = _conv_shapes(arch)
        for index, name in enumerate(self._feature_names):
            if name.startswith("conv"):
                out_ch, in_ch = conv_shapes[index]
                modules.append(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1))
            elif name.startswith("relu"):
                modules.append(nn.ReLU(inplace=False))  # the requested relu outputs are returned and reused
            elif pooling == "max":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                modules.append(nn.AvgPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*modules)

        with torch.no_grad():
            if state_dict is None:  # random
                generator = torch.Generator().manual_seed(int(seed))
                for module in self.features:
                    if isinstance(module, nn.Conv2d):
                        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", generator=generator)
                        nn.init.zeros_(module.bias)
            else:
                layout = _key_layout(state_dict)
                for index, module in enumerate(self.features):
                    if isinstance(module, nn.Conv2d):
                        prefix = f"features.{index}" if layout == "torchvision" else self._feature_names[index]
                        module.weight.copy_(state_dict[f"{prefix}.weight"])
                        module.bias.copy_(state_dict[f"{prefix}.bias"])

        if fmt == "caffe":
            mean, scale = [m / 255.0 for m in CAFFE_MEAN_BGR], [1 / 255.0] * 3  # applied after RGB -> BGR
        else:
            mean, scale = list(IMAGENET_MEAN), list(IMAGENET_STD)
        self.register_buffer("input_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self._weights_format, self._weights_description = fmt, description
        self._normalize_input = normalize_input

        self.requires_grad_(False)
        super().train(False)
        if fmt == "random":
            warnings.warn(
                f"VGGFeatures: weights='random' gives untrained {arch} features (Kaiming-normal, seed "
                f"{seed}); results reflect random, untrained features, not ImageNet-trained ones",
                UserWarning,
                stacklevel=2,
            )

    # ----------------------------------------------------------------------------------------------- weights
    @staticmethod
    def _resolve_weights(
        weights: str | os.PathLike, weights_format: str | None, arch: str, depth: int, seed: int, progress: bool
    ) -> tuple[dict[str, Any] | None, str, str]:
        """(validated state dict or None for random, format, description)."""
        keyword = weights if isinstance(weights, str) and weights in ("imagenet", "caffe", "random") else None
        if keyword is not None:
            implied = {"imagenet": "torchvision", "caffe": "caffe", "random": "random"}[keyword]
            if weights_format is not None and weights_format != implied:
                raise ValueError(
                    f"weights={keyword!r} are {implied} weights; weights_format={weights_format!r} "
                    f"contradicts that (weights_format is for state-dict paths)"
                )
        elif weights_format == "random":
            raise ValueError("weights_format='random' only goes with weights='random'")

        if keyword == "random":
            return (
                None,
                "random",
                (f"random Kaiming-normal (fan_out, relu) conv weights with zero biases, seed {seed} (untrained)"),
            )
        checkpoints = _hub_checkpoints_dir()
        if keyword == "imagenet":
            file_name = TORCHVISION_FILES[arch]
            path = cached_weights_path(arch, "imagenet")
            url = TORCHVISION_URL_ROOT + file_name
            if os.path.isfile(path):
                sd, source = _load_file(path), path
            else:
                try:
                    sd = _download(url, progress)
                except (OSError, http.client.HTTPException) as e:  # URLError, socket / connection errors
                    raise RuntimeError(
                        f"the torchvision ImageNet {arch} weights {file_name!r} are not in {checkpoints} and could "
                        f"not be downloaded from {url} ({type(e).__name__}: {e}). Without network access, "
                        f"download {url} elsewhere and put it in the torch hub checkpoints folder {checkpoints} "
                        f"(os.path.join(torch.hub.get_dir(), 'checkpoints')), i.e. at {path}; or pass "
                        f"weights='random' for a run without downloads (untrained features)."
                    ) from e
                source = f"{path} (downloaded from {url})"
            sd = _as_state_dict(sd, source)
            _validate_state_dict(sd, arch, depth, source)
            return sd, "torchvision", f"torchvision ImageNet {arch} weights from {source}"
        if keyword == "caffe":
            file_name = CAFFE_FILES[arch]
            path = cached_weights_path(arch, "caffe")
            if not os.path.isfile(path):
                raise RuntimeError(
                    f"the Caffe-converted {arch} weights {file_name!r} (the file used by the PyTorch neural-style "
                    f"ports, torchvision key layout, BGR / 0-255 inputs) are not in the torch hub checkpoints "
                    f"folder {checkpoints} (os.path.join(torch.hub.get_dir(), 'checkpoints')). There is no "
                    f"automatic download: put the file at {path}, or pass its path as weights=..., or use "
                    f"weights='imagenet' (torchvision) / weights='random' (untrained, no download)."
                )
            sd = _as_state_dict(_load_file(path), path)
            _validate_state_dict(sd, arch, depth, path)
            return sd, "caffe", f"Caffe-converted ImageNet {arch} weights from {path}"

        # a path to a state dict
        if not isinstance(weights, (str, os.PathLike)):
            raise TypeError(f"weights must be 'imagenet', 'caffe', 'random' or a path, not {type(weights).__name__}")
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"weights={path!r} is neither 'imagenet', 'caffe' nor 'random', nor an existing state-dict file"
            )
        sd = _as_state_dict(_load_file(path), path)
        layout = _validate_state_dict(sd, arch, depth, path)
        prefix = "features.0" if layout == "torchvision" else "conv1_1"
        if weights_format is not None:
            fmt, how = weights_format, "given by weights_format"
        else:
            fmt, how = _detect_format(path, sd[f"{prefix}.weight"])
        keys = "features.N.*" if layout == "torchvision" else "conv1_1.*"
        return sd, fmt, f"{arch} weights from {path} ({keys} keys); {fmt} format {how}"

    # ------------------------------------------------------------------------------------------- properties
    @property
    def layers(self) -> tuple[str, ...]:
        """The requested layer names, in the order of the returned dict."""
        return self._layers

    @property
    def arch(self) -> str:
        return self._arch

    @property
    def pooling(self) -> str:
        return self._pooling

    @property
    def weights_format(self) -> str:
        """ "torchvision", "caffe" or "random" (random weights use torchvision preprocessing)."""
        return self._weights_format

    @property
    def weights_description(self) -> str:
        """A sentence saying which weights (file, or seed) are in use."""
        return self._weights_description

    @property
    def normalize_input(self) -> bool:
        """Whether ``forward`` applies the weights' preprocessing (False: images go to ``conv1_1`` as they are)."""
        return self._normalize_input

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the built modules: ``feature_names[N]`` names ``features[N]``."""
        return self._feature_names

    @property
    def min_size(self) -> int:
        """Smallest H and W for which every requested layer has a non-empty output."""
        return max(self._layer_min_size(name) for name in self._layers)

    def _layer_min_size(self, name: str) -> int:
        index = self._indices[name]
        return 2 ** sum(1 for n in self._feature_names[: index + 1] if n.startswith("pool"))

    def extra_repr(self) -> str:
        return (
            f"arch={self._arch!r}, layers={list(self._layers)}, pooling={self._pooling!r}, "
            f"weights_format={self._weights_format!r}" + ("" if self._normalize_input else ", normalize_input=False")
        )

    def train(self, mode: bool = True) -> VGGFeatures:
        """Stays in eval mode and frozen whatever ``mode`` is (VGG's features have no train-time behaviour)."""
        return super().train(False)

    # ---------------------------------------------------------------------------------------------- forward
    def _check_input(self, x: torch.Tensor, what: str = "x") -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what} must be a tensor, not {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{what} must be RGB images of shape (B, 3, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{what} must be a floating-point tensor with values in [0, 1], got {x.dtype}")
        H, W = x.shape[-2:]
        too_small = [name for name in self._layers if min(H, W) < self._layer_min_size(name)]
        if too_small:
            name = max(too_small, key=self._layer_min_size)
            need = self._layer_min_size(name)
            raise ValueError(
                f"{what} of size {H}x{W} is too small for layer {name!r} of {self._arch}, which needs "
                f"H and W >= {need} ({need.bit_length() - 1} poolings before it); the requested layers "
                f"need at least {self.min_size}x{self.min_size}"
            )

    def _preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB -> the network's input (only the dtype cast when ``normalize_input`` is False); keeps
        channels_last."""
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        x = x.to(dtype=self.features[0].weight.dtype)  # features[0] is conv1_1
        if not self._normalize_input:
            return x
        if self._weights_format == "caffe":
            x = x.flip(1)  # RGB -> BGR; (x - mean / 255) * 255 == 255 x - mean
        x = (x - self.input_mean) / self.input_scale
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: features}`` for the requested layers (in the order of ``layers``) of RGB images ``x`` in
        [0, 1], (B, 3, H, W); the weights' preprocessing is applied here."""
        self._check_input(x)
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        h = self._preprocess(x)
        wanted = {index: name for name, index in self._indices.items()}
        found: dict[str, torch.Tensor] = {}
        for index, module in enumerate(self.features):
            h = module(h)
            if index in wanted:
                found[wanted[index]] = h.contiguous(memory_format=torch.channels_last) if channels_last else h
        return {name: found[name] for name in self._layers}

    # ----------------------------------------------------------------------------- Gatys weight normalisation
    @torch.no_grad()
    def normalize_weights_(self, images: torch.Tensor) -> None:
        """Gatys et al. (2016) weight normalisation: rescale each conv's filters and biases so that the mean
        activation (after its ReLU) of every filter over ``images`` and positions is 1.

        Layers are processed in order, each one's statistics measured after the previous ones were rescaled.
        When filter c of a conv is divided by its mean activation m_c, the next conv's weights for input channel
        c are multiplied by m_c, so (ReLU and max / average pooling commuting with positive per-channel scales)
        every layer's output only changes by a positive per-filter factor: the network's function is unchanged
        up to per-layer scale. Filters whose mean activation is 0 are left unchanged (factor 1)."""
        self._check_input(images, "images")
        h = self._preprocess(images)
        previous_mean: torch.Tensor | None = None  # mean activations the previous conv's filters were divided by
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                if previous_mean is not None:  # undo the previous layer's rescaling at this conv's input
                    module.weight.mul_(previous_mean.to(module.weight.dtype).view(1, -1, 1, 1))
                h = torch.relu(module(h))
                mean = h.double().mean(dim=(0, 2, 3))
                mean = torch.where(mean > 0, mean, torch.ones_like(mean))  # dead filters: unchanged
                module.weight.div_(mean.to(module.weight.dtype).view(-1, 1, 1, 1))
                module.bias.div_(mean.to(module.bias.dtype))
                h = h / mean.to(h.dtype).view(1, -1, 1, 1)  # == relu(rescaled conv(h))
                previous_mean = mean
            elif not isinstance(module, nn.ReLU):  # the ReLU was applied with its conv
                h = module(h)
        self._weights_description += f"; filters rescaled to mean activation 1 on {images.shape[0]} image(s)"
