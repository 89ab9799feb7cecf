"""Controllability metrics: does N_G follow the 3D prior I_3D, and does an edit of the coefficients reach the output?

Three measures, each a ratio of float64 sums over the test images (a ratio of mean errors: stable where one image's
own denominator is near 0):

- **edit fidelity** of an edit e (synthetic test sets, where the edited truth can be rendered exactly):
  1 - sum L1_hole(out_e, truth_e) / sum L1_hole(out_keep, truth_e). 1 = the output is the edited truth, 0 = the edit
  is ignored (out_e = out_keep), < 0 = worse than ignoring it.
- **edit transfer** of an edit e (synthetic test sets; a diagnostic next to edit fidelity, which also counts how
  well out_keep reconstructs the face): 1 - sum L1_hole(out_e - out_keep, truth_e - truth_keep) /
  sum L1_hole(0, truth_e - truth_keep): how exactly the output *changes* as the truth changes, whatever the
  reconstruction error of out_keep. 1 = exact change, 0 = no change, < 0 = changes where the truth does not.
- **prior reliance**: sum L1_hole(out with a constant grey I_3D, gt) / sum L1_hole(out with the true I_3D, gt).
  ~1 = N_G ignores I_3D; > 1 = the prior helps.
- **landmark edit fidelity** of an edit e (real test sets, no edited truth): mouth landmarks (iBUG 48-67) found by an
  independent detector on out_e and out_keep, against the mouth landmarks of the requested 3D faces (edited and
  unedited coefficients): 1 - sum_k |d_det_k - d_req_k| / sum_k |d_req_k| with d = landmarks(edit) - landmarks(keep)
  (displacements, so a constant offset between the detector's and the 3DMM's landmark conventions cancels). Same
  scale as edit fidelity. Also the mouth NME of the detected vs the requested landmarks (inter-ocular normalised).

L1_hole is metrics.image.l1_hole (mean |diff| over the occlusion mask's pixels and channels).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .base import Metric, _to_float64
from .geometry import LEFT_EYE_OUTER, RIGHT_EYE_OUTER
from .image import l1_hole

MOUTH = slice(48, 68)  # iBUG-68, 0-based: outer and inner lip contours


class RatioOfSums(Metric):
    """Streams float64 sums of per-image numerators and denominators; the value is f(sum num / sum den).

    ``update(num, den)``: (N,) each; an image where either is NaN (undefined, e.g. an empty hole or a face the
    detector missed) is not counted. ``compute()`` -> {name: value, name/num: mean num, name/den: mean den,
    name/n: images counted}; NaN when nothing was counted or for 0 / 0, inf for x / 0.
    """

    kind = "control"

    def __init__(self, name: str, one_minus: bool = False) -> None:
        self.name, self.one_minus = name, bool(one_minus)
        self.reset()

    def reset(self) -> None:
        self._num, self._den, self._count = 0.0, 0.0, 0

    @torch.no_grad()
    def update(self, num: Tensor | np.ndarray, den: Tensor | np.ndarray) -> None:
        a, b = _to_float64(num), _to_float64(den)
        if a.shape != b.shape:
            raise ValueError(f"{self.name}: {a.size} numerators but {b.size} denominators")
        ok = ~(np.isnan(a) | np.isnan(b))
        self._num += math.fsum(a[ok].tolist())
        self._den += math.fsum(b[ok].tolist())
        self._count += int(ok.sum())

    def merge(self, other: RatioOfSums) -> None:
        self._num += other._num
        self._den += other._den
        self._count += other._count

    @property
    def count(self) -> int:
        return self._count

    def compute(self) -> dict[str, float]:
        n = self._count
        if not n or self._num == self._den == 0:
            ratio = math.nan  # nothing counted, or 0 / 0
        else:
            ratio = self._num / self._den if self._den > 0 else math.inf
        return {self.name: 1.0 - ratio if self.one_minus else ratio,
                f"{self.name}/num": self._num / n if n else math.nan,
                f"{self.name}/den": self._den / n if n else math.nan, f"{self.name}/n": float(n)}


class EditFidelityMetric(RatioOfSums):
    """Edit fidelity of one edit (module doc). update(out_edit, out_keep, truth_edit, hole): images (N,3,H,W) in
    [0,1] at one size, hole (N,1,H,W) {0,1} (the ground-truth occlusion map). num/den: mean L1_hole of out_edit and
    of out_keep against truth_edit."""

    higher_is_better = True

    def __init__(self, name: str = "edit_fidelity") -> None:
        super().__init__(name, one_minus=True)

    def update(self, out_edit: Tensor, out_keep: Tensor, truth_edit: Tensor, hole: Tensor) -> None:
        super().update(l1_hole(out_edit, truth_edit, hole), l1_hole(out_keep, truth_edit, hole))


class EditTransferMetric(RatioOfSums):
    """Edit transfer of one edit (module doc). update(out_edit, out_keep, truth_edit, truth_keep, hole): images
    (N,3,H,W) in [0,1], hole (N,1,H,W) {0,1}. num/den: mean L1_hole of the change's error and of the true change."""

    higher_is_better = True

    def __init__(self, name: str = "edit_transfer") -> None:
        super().__init__(name, one_minus=True)

    def update(self, out_edit: Tensor, out_keep: Tensor, truth_edit: Tensor, truth_keep: Tensor,
               hole: Tensor) -> None:
        change = truth_edit.double() - truth_keep.double()
        super().update(l1_hole(out_edit.double() - out_keep.double(), change, hole),
                       l1_hole(torch.zeros_like(change), change, hole))


class PriorRelianceMetric(RatioOfSums):
    """Prior reliance (module doc). update(out_grey, out_prior, target, hole): images (N,3,H,W) in [0,1], hole
    (N,1,H,W) {0,1}. num/den: mean L1_hole with the grey I_3D and with the true I_3D."""

    higher_is_better = True

    def __init__(self, name: str = "prior_reliance") -> None:
        super().__init__(name)

    def update(self, out_grey: Tensor, out_prior: Tensor, target: Tensor, hole: Tensor) -> None:
        super().update(l1_hole(out_grey, target, hole), l1_hole(out_prior, target, hole))


def mouth_displacement_error(det_edit: Tensor, det_keep: Tensor, req_edit: Tensor,
                             req_keep: Tensor) -> tuple[Tensor, Tensor]:
    """Per image: (sum_k |d_det_k - d_req_k|, sum_k |d_req_k|) over the 20 mouth points, d = edit - keep.

    Args:
        det_edit, det_keep: (N,68,2) detected landmarks (pixels) on the edited and the unedited output; NaN rows
            where the detector found no face.
        req_edit, req_keep: (N,68,2) landmarks of the requested 3D faces (edited and unedited coefficients), same
            image coordinates.
    Returns:
        two (N,) float64 tensors, pixels; NaN where a detection is missing.
    """
    for t in (det_keep, req_edit, req_keep):
        if t.shape != det_edit.shape or t.dim() != 3 or t.shape[1:] != (68, 2):
            raise ValueError(f"expected four (N,68,2) landmark tensors, got {tuple(det_edit.shape)} and "
                             f"{tuple(t.shape)}")
    f = lambda t: t.to(torch.float64)[:, MOUTH]  # noqa: E731
    d_det, d_req = f(det_edit) - f(det_keep), f(req_edit) - f(req_keep)
    return (d_det - d_req).norm(dim=-1).sum(1), d_req.norm(dim=-1).sum(1)


def mouth_nme(pred: Tensor, target: Tensor) -> Tensor:
    """(N,68,2) x 2 -> (N,) float64: mean distance of the 20 mouth points over the target's inter-ocular distance."""
    p, t = pred.to(torch.float64), target.to(torch.float64)
    iod = (t[:, LEFT_EYE_OUTER] - t[:, RIGHT_EYE_OUTER]).norm(dim=-1)
    return (p[:, MOUTH] - t[:, MOUTH]).norm(dim=-1).mean(1) / iod


class LandmarkEditFidelityMetric(RatioOfSums):
    """Landmark edit fidelity of one edit (module doc) plus the mouth NME of the detections on the edited output.

    update(det_edit, det_keep, req_edit, req_keep): (N,68,2) each, see mouth_displacement_error. compute() adds
    {name/mouth_nme: mean mouth NME of det_edit vs req_edit}.
    """

    higher_is_better = True

    def __init__(self, name: str = "lm_edit_fidelity") -> None:
        super().__init__(name, one_minus=True)

    def reset(self) -> None:
        super().reset()
        self._nme: list[np.ndarray] = []

    def update(self, det_edit: Tensor, det_keep: Tensor, req_edit: Tensor, req_keep: Tensor) -> None:
        super().update(*mouth_displacement_error(det_edit, det_keep, req_edit, req_keep))
        self._nme.append(_to_float64(mouth_nme(det_edit, req_edit)))

    def merge(self, other: LandmarkEditFidelityMetric) -> None:
        super().merge(other)
        self._nme.extend(other._nme)

    def compute(self) -> dict[str, float]:
        nme = np.concatenate(self._nme) if self._nme else np.zeros(0)
        nme = nme[~np.isnan(nme)]
        return {**super().compute(), f"{self.name}/mouth_nme": float(nme.mean()) if nme.size else math.nan}
