"""Scores grouped by the occlusion mask's area fraction (as LaMa's evaluator reports by mask size)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .base import PerImageMetric

DEFAULT_AREA_EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 1.0)


def bin_label(lo: float, hi: float, last: bool) -> str:
    return f"[{lo:g},{hi:g}]" if last else f"[{lo:g},{hi:g})"


def bin_by_area(scores: Mapping[str, Sequence[float] | np.ndarray], areas: Sequence[float] | np.ndarray,
                edges: Sequence[float] = DEFAULT_AREA_EDGES) -> dict[str, dict[str, float]]:
    """Average each per-image score inside mask-area bins.

    Bins are [edges[i], edges[i+1]) with the last one closed, e.g. [0,0.1) ... [0.4,1]. Images whose area is NaN or
    outside [edges[0], edges[-1]] are left out; NaN scores (undefined for that image) are left out of that metric.

    Args:
        scores: metric name -> (N,) per-image values, all in the same image order as ``areas``.
        areas: (N,) occlusion-area fractions in [0,1] (``metrics.base.mask_area``).
        edges: increasing bin edges.
    Returns:
        bin label -> {"count": images in the bin, <metric>: mean (NaN if none)} in bin order.
    """
    a = np.asarray(areas, dtype=np.float64).reshape(-1)
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or len(e) < 2 or np.any(np.diff(e) <= 0):
        raise ValueError(f"bin edges must increase, got {list(edges)}")
    values = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in scores.items()}
    for k, v in values.items():
        if v.shape != a.shape:
            raise ValueError(f"{k}: {v.size} scores but {a.size} areas")
    out: dict[str, dict[str, float]] = {}
    for i in range(len(e) - 1):
        last = i == len(e) - 2
        inside = (a >= e[i]) & ((a <= e[i + 1]) if last else (a < e[i + 1]))
        row: dict[str, float] = {"count": int(inside.sum())}
        for k, v in values.items():
            sel = v[inside & ~np.isnan(v)]
            row[k] = float(sel.mean()) if sel.size else float("nan")
        out[bin_label(e[i], e[i + 1], last)] = row
    return out


def bin_metrics(metrics: Iterable[PerImageMetric], edges: Sequence[float] = DEFAULT_AREA_EDGES
                ) -> dict[str, dict[str, float]]:
    """``bin_by_area`` for per-image metrics updated with the same images and masks, in the same order.

    The areas come from the first metric that recorded masks; every metric must hold the same number of images.
    """
    metrics = list(metrics)
    if not metrics:
        return {}
    areas = next((m.areas for m in metrics if m.areas.size and not np.isnan(m.areas).all()), None)
    if areas is None:
        raise ValueError("no metric recorded occlusion masks: pass mask=m to update() to bin by mask area")
    return bin_by_area({m.name: m.values for m in metrics}, areas, edges)
