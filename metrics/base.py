"""Metric objects: a small common interface and a streaming per-image accumulator.

Every metric is an object with ``update(...)``, ``compute() -> dict[str, float]``, ``reset()`` and ``merge(other)``
(combine the partial state of another instance, e.g. gathered from another rank). Attributes read by reports:

- ``name``: the registry name and the key of ``compute()``'s main value.
- ``kind``: what ``update`` takes as ``pred``/``target``: ``"image"`` (N,3,H,W in [0,1]), ``"mask"`` (N,1,H,W in
  {0,1}), ``"landmarks"`` (N,68,2 pixels) or ``"variations"`` (K variations of one input, see DiversityMetric).
- ``higher_is_better``: direction of the main value.
- ``comparable``: False when the value rests on a feature network without its published pretrained weights, so the
  number cannot be compared with published ones.
- ``by_area``: reports also group its per-image values by occlusion-mask area (``metrics.bins``).

Every metric is built from one ``metrics.context.MetricContext`` by ``from_context`` (``metrics.build_metric``),
which takes the device, shared feature networks and settings the metric needs from it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def _to_float64(values: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def quantize(images: Tensor) -> Tensor:
    """Round to 8 bits as a PNG writer does (``data.io.write_image``), and back to [0, 1].

    floor(255 x + 0.5) / 255 on x clamped to [0, 1]: halves round up, as PNG writers do (``torch.round`` would round
    them to even). For float32 input the result equals ``read_image(write_image(x))`` bit for bit.

    Args:
        images: float tensor of any shape, values nominally in [0, 1].
    Returns:
        same shape and dtype, values in {0, 1/255, ..., 1}.
    """
    return torch.floor(images.clamp(0, 1) * 255 + 0.5) / 255


def mask_area(mask: Tensor) -> Tensor:
    """Fraction of pixels set in each mask.

    Args:
        mask: (N,1,H,W) or (N,H,W), values in {0,1} (anything > 0.5 counts as set).
    Returns:
        (N,) float64 in [0,1].
    """
    m = (mask > 0.5).reshape(mask.shape[0], -1)
    return m.to(torch.float64).mean(dim=1)


class Metric:
    """Base class; subclasses set the class attributes and implement update/compute/reset/merge."""

    name: str = ""
    kind: str = "image"
    higher_is_better: bool = True
    by_area: bool = False

    @classmethod
    def from_context(cls, ctx) -> Metric:
        """A new instance configured from a ``metrics.context.MetricContext`` (default: no settings needed)."""
        return cls()

    @property
    def comparable(self) -> bool:
        return True

    def update(self, *args, **kwargs):  # pragma: no cover - interface
        raise NotImplementedError

    def compute(self) -> dict[str, float]:  # pragma: no cover - interface
        raise NotImplementedError

    def reset(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def merge(self, other: Metric) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, comparable={self.comparable})"


class PerImageMetric(Metric):
    """A metric defined per image and averaged over images, streamed in float64.

    Subclasses implement ``per_image(pred, target, mask=None, landmarks=None) -> (N,)``. ``update`` adds those values
    to a float64 sum and count (NaN values mean "undefined for this image" and are not counted; +inf is counted and
    makes the mean inf) and keeps the per-image values and, when an occlusion mask is given, its area fraction, so
    results can be grouped by mask area (``metrics.bins``). Kept per image: two float64 numbers, nothing else.
    """

    def __init__(self) -> None:
        self.reset()

    def per_image(self, pred: Tensor, target: Tensor, mask: Tensor | None = None,
                  landmarks: Tensor | None = None) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def area_of(self, pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor | None:
        """Occlusion-area fraction per image used for binning; None when unknown."""
        return None if mask is None else mask_area(mask)

    def reset(self) -> None:
        self._sum = 0.0
        self._count = 0
        self._values: list[np.ndarray] = []
        self._areas: list[np.ndarray] = []

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None,
               landmarks: Tensor | None = None) -> Tensor:
        """Add a batch. Returns the (N,) per-image values (float64)."""
        values = self.per_image(pred, target, mask=mask, landmarks=landmarks)
        v = _to_float64(values)
        area = self.area_of(pred, target, mask)
        a = np.full_like(v, np.nan) if area is None else _to_float64(area)
        if a.shape != v.shape:
            raise ValueError(f"{self.name}: {v.size} values but {a.size} mask areas")
        self._add(v, a)
        return values

    def _add(self, v: np.ndarray, a: np.ndarray) -> None:
        counted = v[~np.isnan(v)]
        self._sum += math.fsum(counted.tolist())
        self._count += int(counted.size)
        self._values.append(v)
        self._areas.append(a)

    def merge(self, other: PerImageMetric) -> None:
        self._add(other.values, other.areas)

    @property
    def count(self) -> int:
        """Number of images counted in the mean (NaN values excluded)."""
        return self._count

    @property
    def values(self) -> np.ndarray:
        """(n_images,) float64 per-image values in update order (NaN: undefined for that image)."""
        return np.concatenate(self._values) if self._values else np.zeros(0)

    @property
    def areas(self) -> np.ndarray:
        """(n_images,) float64 occlusion-area fractions in [0,1] (NaN where no mask was given)."""
        return np.concatenate(self._areas) if self._areas else np.zeros(0)

    def compute(self) -> dict[str, float]:
        """{name: mean over counted images}; NaN when nothing was counted."""
        return {self.name: self._sum / self._count if self._count else math.nan}
