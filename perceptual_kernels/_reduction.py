"""Loss reductions with ``F.mse_loss`` semantics: the one definition the public ops and the reference share."""

from __future__ import annotations

import torch

REDUCTIONS = ("mean", "sum", "none")


def reduce_loss(per_sample: torch.Tensor, reduction: str, weight: float, count: int) -> torch.Tensor:
    """``"mean"``: ``w * sum / count``; ``"sum"``: ``w * sum``; ``"none"``: ``w * per_sample`` (unreduced)."""
    if reduction == "none":
        return per_sample * weight
    return per_sample.sum() * (weight / count if reduction == "mean" else weight)
