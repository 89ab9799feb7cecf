"""Identity similarity: cosine between face-recognition embeddings of the output and of the ground truth (the
paper's "Cos ID", with ArcFace features)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import PerImageMetric

Embedder = Callable[..., Tensor]


def embedding_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of matching rows. a, b: (N,D) (normalised again here, in float64). Returns (N,) in [-1,1]."""
    a = F.normalize(a.to(torch.float64), dim=1)
    b = F.normalize(b.to(torch.float64), dim=1)
    return (a * b).sum(dim=1)


class IdentityCosineMetric(PerImageMetric):
    """Mean per-image cosine between embed(pred) and embed(target) (higher = identity kept).

    Args:
        embed: callable ``(images (N,3,H,W) in [0,1], landmarks (N,68,2) or None) -> (N,512)`` L2-normalised
            embeddings, e.g. ``models.arcface.ArcFace``; called under torch.no_grad.
        pretrained: whether embed carries the published weights; default: ``embed.pretrained`` if it has that
            attribute, else False. Decides ``comparable``.
        device: where the images are sent before embed (None: left where they are).
    ``update(pred, target, mask=None, landmarks=None)``: the same landmarks (those of the ground truth) align both
    images, since the output keeps the input's geometry.
    """

    name = "arcface_cos"

    def __init__(self, embed: Embedder, pretrained: bool | None = None,
                 device: str | torch.device | None = None) -> None:
        self.embed = embed
        self.pretrained = bool(getattr(embed, "pretrained", False)) if pretrained is None else bool(pretrained)
        self.device = None if device is None else torch.device(device)
        super().__init__()

    @classmethod
    def from_context(cls, ctx) -> IdentityCosineMetric:
        return cls(embed=ctx.arcface)

    @property
    def comparable(self) -> bool:
        return self.pretrained

    @torch.no_grad()
    def per_image(self, pred, target, mask=None, landmarks=None):
        if self.device is not None:
            pred, target = pred.to(self.device), target.to(self.device)
            landmarks = None if landmarks is None else landmarks.to(self.device)
        return embedding_cosine(self.embed(pred, landmarks), self.embed(target, landmarks))
