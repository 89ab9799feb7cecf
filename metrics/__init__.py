"""Evaluation metrics: a registry of streaming metric objects plus the per-image functions behind them.

    ctx = MetricContext(device="cpu", weights=FeatureWeights(...), cache_dir=..., test_set_id=...)
    m = build_metric("psnr", ctx)     # or "ssim", "l1", "l1_hole", "lpips", "fid", "arcface_cos", ...
    for batch in loader:
        m.update(pred, target, mask=m_occ)   # see each class for what update takes (attribute `kind`)
    m.compute()                       # {"psnr": 27.2}
    m.comparable                      # False when a feature network lacks its published weights

``build_metric`` takes everything from the context (``metrics.context``); ``get_metric(name, **kwargs)`` passes
kwargs to the class instead. ``available()`` lists the names; an unknown name raises ValueError listing them.
"""

from __future__ import annotations

from .base import Metric, PerImageMetric, mask_area, quantize
from .bins import DEFAULT_AREA_EDGES, bin_by_area, bin_metrics
from .context import FeatureWeights, MetricContext
from .fid import FID, FIDInception, FIDReference, GaussianStats, frechet_distance, reference_key
from .geometry import LandmarkNMEMetric, MaskIoUMetric, landmark_nme, mask_iou
from .identity import IdentityCosineMetric, embedding_cosine
from .image import L1HoleMetric, L1Metric, PSNRMetric, SSIMMetric, l1, l1_hole, psnr, ssim
from .perceptual import DiversityMetric, LPIPSMetric, diversity, load_lpips
from .score import DEFAULT_PSNR_MAX_DB, as_exported, score_batch

_REGISTRY: dict[str, type[Metric]] = {
    "l1": L1Metric,
    "l1_hole": L1HoleMetric,
    "psnr": PSNRMetric,
    "ssim": SSIMMetric,
    "lpips": LPIPSMetric,
    "fid": FID,
    "arcface_cos": IdentityCosineMetric,
    "mask_iou": MaskIoUMetric,
    "landmark_nme": LandmarkNMEMetric,
    "diversity": DiversityMetric,
}


def available(kind: str | None = None) -> list[str]:
    """Registered metric names, sorted; with ``kind``, those whose ``update`` takes that kind (e.g. "image")."""
    return sorted(n for n, cls in _REGISTRY.items() if kind is None or cls.kind == kind)


def metric_class(name: str) -> type[Metric]:
    """The class registered under ``name``; ValueError listing the names for an unknown one."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(available())}") from None


def get_metric(name: str, **kwargs) -> Metric:
    """A new metric object by registry name; kwargs go to its class (e.g. ``get_metric("fid", weights_path=...)``)."""
    return metric_class(name)(**kwargs)


def build_metric(name: str, ctx: MetricContext) -> Metric:
    """A new metric object by registry name, configured from ``ctx`` (its device, shared networks, settings)."""
    return metric_class(name).from_context(ctx)


def summarize(metrics) -> dict[str, dict[str, float | bool]]:
    """name -> {"value", "comparable", "higher_is_better"} for each metric's main value (for reports)."""
    out = {}
    for m in metrics:
        out[m.name] = {"value": m.compute()[m.name], "comparable": m.comparable,
                       "higher_is_better": m.higher_is_better}
    return out


__all__ = [
    "DEFAULT_AREA_EDGES", "DEFAULT_PSNR_MAX_DB", "DiversityMetric", "FID", "FIDInception", "FIDReference",
    "FeatureWeights", "GaussianStats", "IdentityCosineMetric", "L1HoleMetric", "L1Metric", "LPIPSMetric",
    "LandmarkNMEMetric", "MaskIoUMetric", "Metric", "MetricContext", "PSNRMetric", "PerImageMetric", "SSIMMetric",
    "as_exported", "available", "bin_by_area", "bin_metrics", "build_metric", "diversity", "embedding_cosine",
    "frechet_distance", "get_metric", "l1", "l1_hole", "landmark_nme", "load_lpips", "mask_area", "mask_iou",
    "metric_class", "psnr", "quantize", "reference_key", "score_batch", "ssim", "summarize",
]
