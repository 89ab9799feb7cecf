"""The one scoring step, shared by training validation and evaluate.py (as stylegan3's ``calc_metric`` is called by
its training loop and by ``calc_metrics.py``): a validation number and an evaluation number of the same images are
the same number.

    batch = as_exported(batch)                 # inputs and truth as export_testset.py writes them (8 bits)
    out = method(batch)                        # any inpainting method's output, (N,3,H,W) in [0,1]
    score_batch(metrics, out, batch)           # out rounded to 8 bits, then every image metric updated
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from .base import Metric, quantize

# per-image PSNR cap (dB): an identical pair is +inf and would make the mean infinite (their count is reported)
DEFAULT_PSNR_MAX_DB = 100.0


def as_exported(batch: dict) -> dict:
    """A test batch as scripts/export_testset.py writes it: ``image`` and ``masked_image`` rounded to 8 bits (half up,
    as the PNG writer), so a model sees exactly the inputs another method reads from the exported folder."""
    return {**batch, "image": quantize(batch["image"]), "masked_image": quantize(batch["masked_image"])}


def score_batch(metrics: Iterable[Metric], output: Tensor, batch: dict) -> Tensor:
    """Round ``output`` (N,3,H,W) [0,1] to 8 bits as if written to PNG, then update every image metric with it against
    ``batch``'s ``image`` (truth), ``mask`` (N,1,H,W) {0,1} and ``landmarks`` (N,68,2). -> the rounded output."""
    out = quantize(output)
    for metric in metrics:
        metric.update(out, batch["image"], mask=batch.get("mask"), landmarks=batch.get("landmarks"))
    return out
