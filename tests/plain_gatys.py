"""The Gatys loss written the way the usual PyTorch examples write it (``bmm`` Gram + ``F.mse_loss``): the
baseline the fused loop is tested and benchmarked against."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gram(y: torch.Tensor) -> torch.Tensor:
    b, ch, h, w = y.size()
    features = y.view(b, ch, w * h)
    return features.bmm(features.transpose(1, 2)) / (ch * h * w)


def plain_loss(extractor, image, content_targets, style_targets, content_weight, style_weight, tv_weight=0.0):
    feats = extractor(image)
    content = sum(F.mse_loss(feats[n], t) for n, t in content_targets.items())
    style = sum(F.mse_loss(gram(feats[n]), t.expand(image.shape[0], -1, -1)) for n, t in style_targets.items())
    tv = ((image[:, :, 1:] - image[:, :, :-1]) ** 2).sum() + ((image[:, :, :, 1:] - image[:, :, :, :-1]) ** 2).sum()
    return content_weight * content + style_weight * style + tv_weight * tv / image.numel()


def plain_stylize(
    extractor, content, style, content_layers, style_layers, iterations, content_weight=1.0, style_weight=1e6
):
    """L-BFGS from the content image, one iteration per step, like ``gatys.stylize``."""
    with torch.no_grad():
        content_targets = {n: extractor(content)[n] for n in content_layers}
        style_targets = {n: gram(extractor(style)[n])[0] for n in style_layers}
    image = content.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([image], lr=1.0, max_iter=1, history_size=100, tolerance_grad=-1.0, tolerance_change=-1.0)
    losses = []

    def closure():
        opt.zero_grad()
        loss = plain_loss(extractor, image, content_targets, style_targets, content_weight, style_weight)
        loss.backward()
        losses.append(loss.item())
        return loss

    for _ in range(iterations):
        opt.step(closure)
    return image.detach(), losses
