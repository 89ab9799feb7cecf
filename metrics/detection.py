"""Masked-face detection measured: found / 5-point NME of a detector on masked faces with reference landmarks
(scripts/benchmark_landmarks.py reports it; BENCHMARKS.md, "Masked faces").

Sets (each face masked by data.synth.MaskedPairSynthesizer, once per seed): scikit-image's astronaut in 12 variants
and the faces of the photos insightface's wheel ships, FFHQ-framed at 256 px, with dlib HOG + 68 points on the
unmasked view as the reference; held-out SyntheticFaces with their exact landmarks. A detection counts as found when
its eye midpoint is within one inter-ocular distance of the reference's; the NME is the mean distance of the 5
alignment points over the reference's eye-centre distance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from data.io import to_uint8_hwc

SIZE = 256


@dataclass
class Case:
    """One masked face: image (H, W, 3) uint8 RGB, reference (68, 2) landmarks, a label."""

    image: np.ndarray
    reference: np.ndarray
    label: str


def nme5(points: np.ndarray, reference: np.ndarray) -> float:
    """Mean 5-point distance over the reference's eye-centre distance; points / reference (68, 2) or (5, 2)."""
    from data.align import five_points

    p = points if len(points) == 5 else five_points(np.asarray(points, np.float64))
    r = reference if len(reference) == 5 else five_points(np.asarray(reference, np.float64))
    return float(np.linalg.norm(p - r, axis=1).mean() / np.linalg.norm(r[1] - r[0]))


def match_detection(detections: list[np.ndarray], reference: np.ndarray) -> np.ndarray | None:
    """The detection whose eye midpoint is nearest the reference's, if within one inter-ocular distance."""
    from data.align import five_points

    r = five_points(np.asarray(reference, np.float64)) if len(reference) == 68 else reference
    centre, iod = (r[0] + r[1]) / 2, np.linalg.norm(r[1] - r[0])
    best, best_d = None, iod
    for d in detections:
        p = five_points(np.asarray(d, np.float64)) if len(d) == 68 else d
        dist = np.linalg.norm((p[0] + p[1]) / 2 - centre)
        if dist < best_d:
            best, best_d = d, dist
    return best


def score(detector, cases: list[Case]) -> dict:
    """-> {found, total, nme (mean over found), nme_max, s_per_image} of ``detector`` on ``cases``."""
    errs, t0 = [], time.perf_counter()
    for c in cases:
        hit = match_detection(detector.detect(c.image), c.reference)
        if hit is not None:
            errs.append(nme5(hit, c.reference))
    dt = (time.perf_counter() - t0) / max(len(cases), 1)
    return {"found": len(errs), "total": len(cases), "nme": float(np.mean(errs)) if errs else float("nan"),
            "nme_max": float(np.max(errs)) if errs else float("nan"), "s_per_image": dt}


def astronaut_variants() -> list[tuple[np.ndarray, str]]:
    """12 unmasked 256 px views of scikit-image's astronaut (mirror x roll x scale), (H, W, 3) uint8."""
    from skimage import data as skdata

    from data.align import align_face
    from data.detectors import DlibDetector

    photo = skdata.astronaut()
    lm = DlibDetector().detect(photo)[0]
    out = []
    for mirror in (False, True):
        src = photo[:, ::-1].copy() if mirror else photo
        lm_src = lm.copy()
        if mirror:  # mirrored landmarks are no longer iBUG-ordered: detect again on the mirrored photo
            lm_src = DlibDetector().detect(src)[0]
        for scale in (1.0, 1.3):
            crop = align_face(src, lm_src, SIZE, scale=scale).image
            for roll in (-12, 0, 12):
                out.append((_roll(crop, roll), f"astronaut{'_m' if mirror else ''}_s{scale}_r{roll}"))
    return out


def masked_cases(views: list[tuple[np.ndarray, np.ndarray, str]], seeds: int) -> list[Case]:
    """Each (unmasked image, reference landmarks, label) masked with seeds 0 .. seeds-1."""
    from data.synth import MaskedPairSynthesizer

    synth = MaskedPairSynthesizer()
    cases = []
    for i, (img, ref, label) in enumerate(views):
        x = torch.from_numpy(img).permute(2, 0, 1).float() / 255
        for s in range(seeds):
            masked, _ = synth.synth(x, torch.from_numpy(np.asarray(ref, np.float32)), (s, i))
            cases.append(Case(to_uint8_hwc(masked), np.asarray(ref, np.float64), f"{label}/seed{s}"))
    return cases


def insightface_variants() -> list[tuple[np.ndarray, str]]:
    """The faces of the photos in insightface's wheel (t1.jpg, Tom_Hanks_54745.png), FFHQ-framed at 256 px and
    rolled -12 / 0 / +12 degrees, (H, W, 3) uint8; FileNotFoundError when insightface is not installed."""
    import importlib.util

    from data.align import align_face
    from data.detectors import DlibDetector
    from data.io import read_image_uint8

    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("insightface photo set: the insightface package is not installed")
    root = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
    hanks = read_image_uint8(root / "Tom_Hanks_54745.png")  # a 112 px ArcFace crop: enlarged, with a border
    hanks = cv2.copyMakeBorder(cv2.resize(hanks, (224, 224), interpolation=cv2.INTER_CUBIC), 64, 64, 64, 64,
                               cv2.BORDER_REFLECT101)
    hog, out = DlibDetector(), []
    for name, src in (("t1", read_image_uint8(root / "t1.jpg")), ("hanks", hanks)):
        for j, lm in enumerate(hog.detect(src)):
            crop = align_face(src, lm, SIZE).image
            out.extend((_roll(crop, roll), f"{name}{j}_r{roll}") for roll in (-12, 0, 12))
    return out


def _roll(img: np.ndarray, degrees: float) -> np.ndarray:
    rot = cv2.getRotationMatrix2D(((SIZE - 1) / 2, (SIZE - 1) / 2), degrees, 1.0)
    return cv2.warpAffine(img, rot, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def photo_sets(seeds: int, which: str = "astronaut") -> tuple[list[Case], list[Case]]:
    """(unmasked, masked) cases of a photo set (``astronaut`` or ``insightface``); the reference is HOG + 68 points
    on the unmasked view (views where HOG finds no face are left out)."""
    from data.detectors import DlibDetector

    hog = DlibDetector()
    views = []
    variants = astronaut_variants() if which == "astronaut" else insightface_variants()
    for img, label in variants:
        found = hog.detect(img)
        if found:
            views.append((img, found[0], label))
    unmasked = [Case(img, ref, label) for img, ref, label in views]
    return unmasked, masked_cases(views, seeds)


def synthetic_sets(num: int, seeds: int) -> tuple[list[Case], list[Case]]:
    """(unmasked, masked) held-out SyntheticFaces at 256 px with their exact landmarks."""
    from data.synthetic import SyntheticFaces

    faces = SyntheticFaces(num, SIZE, offset=2_000_000)
    views = [(to_uint8_hwc(faces[i]["image"]), faces[i]["landmarks"].numpy(), f"synthetic{i}") for i in range(num)]
    return [Case(img, ref, label) for img, ref, label in views], masked_cases(views, seeds)
