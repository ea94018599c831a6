"""The BasicSR-family VGG perceptual + style loss written from its published formula in plain torch (torchvision
``features`` indices, ``nn.L1Loss`` / ``nn.MSELoss`` / ``torch.norm(p="fro")``, ``bmm`` Gram over C*H*W): the
baseline ``PerceptualLoss`` is tested and benchmarked against. Written independently of the module under test.
"""

from __future__ import annotations

import torch
from torch import nn

# torchvision's cfgs and the ``features`` index of each named layer used by the tests and benchmarks
CFG = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
FEATURE_INDEX = {
    "vgg19": {"relu1_1": 1, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu4_1": 20, "relu5_1": 29, "conv5_4": 34},
    "vgg16": {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "conv5_3": 28},
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def plain_features(arch: str, device: torch.device | str | None = None) -> nn.Sequential:
    """torchvision's ``vgg*.features`` layout (conv3x3 pad 1, ReLU, 2x2 max pooling); weights to be loaded
    (``device="meta"`` skips the initialisation, for ``load_state_dict(..., assign=True)``)."""
    layers: list[nn.Module] = []
    channels = 3
    for v in CFG[arch]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(v), 3, padding=1, device=device), nn.ReLU(inplace=False)]
            channels = int(v)
    return nn.Sequential(*layers)


def gram(f: torch.Tensor) -> torch.Tensor:
    n, c, h, w = f.size()
    flat = f.view(n, c, h * w)
    return flat.bmm(flat.transpose(1, 2)) / (c * h * w)


class PlainPerceptualLoss(nn.Module):
    """``perceptual = pw * sum_k w_k crit(f_k(x), f_k(gt))``, ``style = sw * sum_k w_k crit(G(f_k(x)), G(f_k(gt)))``;
    returns ``(perceptual, style)`` with None for a term whose weight is 0, as BasicSR does."""

    def __init__(
        self,
        features: nn.Sequential,
        layer_weights: dict[str, float],
        arch: str = "vgg19",
        *,
        criterion: str = "l1",
        perceptual_weight: float = 1.0,
        style_weight: float = 0.0,
        range_norm: bool = False,
        use_input_norm: bool = True,
    ) -> None:
        super().__init__()
        self.index = {k: FEATURE_INDEX[arch][k] for k in layer_weights}
        self.features = features[: max(self.index.values()) + 1]
        self.features.requires_grad_(False).eval()
        self.layer_weights, self.criterion = layer_weights, criterion
        self.perceptual_weight, self.style_weight = perceptual_weight, style_weight
        self.range_norm, self.use_input_norm = range_norm, use_input_norm
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.loss = {"l1": nn.L1Loss(), "l2": nn.MSELoss()}.get(criterion)

    def extract(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.range_norm:
            x = (x + 1) / 2
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        wanted = {i: k for k, i in self.index.items()}
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x.clone()
        return out

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.criterion == "fro":
            return torch.norm(a - b, p="fro")
        return self.loss(a, b)

    def forward(self, x: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        fx, fgt = self.extract(x), self.extract(gt.detach())
        perceptual = style = None
        if self.perceptual_weight > 0:
            perceptual = sum(self.distance(fx[k], fgt[k]) * w for k, w in self.layer_weights.items())
            perceptual = perceptual * self.perceptual_weight
        if self.style_weight > 0:
            style = sum(self.distance(gram(fx[k]), gram(fgt[k])) * w for k, w in self.layer_weights.items())
            style = style * self.style_weight
        return perceptual, style


def plain_copy_of(
    loss: nn.Module, layer_weights: dict[str, float], arch: str = "vgg19", **options
) -> PlainPerceptualLoss:
    """The plain loss on the same VGG weights as a ``PerceptualLoss`` (whose weights are ``vgg.features`` buffers)."""
    features = plain_features(arch, device="meta")
    weights = {name: t.clone() for name, t in loss.vgg.features.named_buffers()}
    features[: len(loss.vgg.features)].load_state_dict(weights, assign=True)
    return PlainPerceptualLoss(features, layer_weights, arch, **options).to(next(iter(weights.values())).device)
