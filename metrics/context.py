"""The one context every metric is built from, as stylegan3's ``MetricOptions``: the device, the feature networks
(each built once, on first use, and shared by every metric that needs it), the folder of cached statistics, the
identity of the test set and the scoring settings.

    ctx = MetricContext(device="cpu", weights=FeatureWeights(fid_inception="pt_inception.pth"),
                        cache_dir=".cache/fid", test_set_id=reference_id(...))
    fid = build_metric("fid", ctx)           # = FID.from_context(ctx): ctx's Inception and FID reference

Every FID metric of one context shares one ``FIDReference`` (the test set's ground-truth statistics), so scoring
several methods computes the reference features once. Feature networks without weights get fixed seeds, so every
run builds the same random networks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from engine.config import path_field

from .fid import FIDInception, FIDReference
from .perceptual import load_lpips


@dataclass
class FeatureWeights:
    """Weights files of the feature networks (config section ``weights``); None: random weights (the metric is then
    not comparable with published numbers)."""

    fid_inception: str | None = path_field(kind="file")  # pytorch-fid's pt_inception-2015-12-05-6726825d.pth
    lpips_backbone: str | None = path_field(kind="file")  # torchvision alexnet-owt-7be5be79.pth (or vgg16)
    lpips_net: str = "alex"
    arcface: str | None = path_field(kind="file")  # arcface_torch backbone.pth
    arcface_arch: str = "r50"


@dataclass
class MetricContext:
    """What metrics are built from (``Metric.from_context``).

    Args:
        device: where the feature networks run.
        weights: their weights files.
        weights_key: the config section naming ``weights``, for one-line errors ("weights.fid_inception: ...").
        cache_dir: folder of cached reference statistics; None: no caching.
        test_set_id: the test set's identity (``metrics.reference.reference_id``): keys the cached statistics.
        image_size: side of the test images in pixels (None: unknown), checked by metrics with a minimum size.
        psnr_max_db: per-image PSNR cap (None: no cap).
        ssim_convention: a name of ``metrics.image.SSIM_CONVENTIONS``.
    """

    device: torch.device | str = "cpu"
    weights: FeatureWeights = field(default_factory=FeatureWeights)
    weights_key: str = "weights"
    cache_dir: str | os.PathLike | None = None
    test_set_id: str | None = None
    image_size: int | None = None
    psnr_max_db: float | None = None
    ssim_convention: str = "wang"

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self.cache_dir = None if self.cache_dir is None else Path(self.cache_dir)

    @cached_property
    def fid_inception(self) -> nn.Module:
        """pytorch-fid's Inception (``FIDInception``): images (N,3,H,W) in [0,1] -> (N,2048)."""
        key = f"{self.weights_key}.fid_inception"
        return FIDInception(self.weights.fid_inception, key=key).to(self.device)

    @cached_property
    def fid_reference(self) -> FIDReference:
        """The test set's FID reference statistics, shared by every FID metric of this context."""
        net = self.fid_inception
        return FIDReference(net.dim, net.identity, self.cache_dir, self.test_set_id)

    @cached_property
    def lpips_network(self) -> nn.Module:
        """LPIPS (an ``lpips.LPIPS``, ``metrics.perceptual.load_lpips``)."""
        key = f"{self.weights_key}.lpips_backbone"
        return load_lpips(self.weights.lpips_net, self.weights.lpips_backbone, key=key).to(self.device)

    @cached_property
    def arcface(self) -> nn.Module:
        """ArcFace (``models.arcface.ArcFace``): images (N,3,H,W) in [0,1], landmarks (N,68,2) -> (N,512)."""
        from models.arcface import ArcFace

        with torch.random.fork_rng():  # without weights: the same random network in every run
            torch.manual_seed(0)
            return ArcFace(self.weights.arcface_arch, self.weights.arcface,
                           what=f"{self.weights_key}.arcface").to(self.device)
