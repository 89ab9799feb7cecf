"""Face alignment: one module for every framing a model here or a third-party model expects.

Pixel convention: x right, y down, pixel centres at integers (OpenCV's). Every framing is a (2, 3) forward
transform (original pixel -> crop pixel) built from the 68 landmarks' 5 points (:func:`five_points`: left eye =
mean(36, 39), right eye = mean(42, 45), nose tip 30, mouth corners 48 and 54, 0-based; Deng et al.'s extraction).

Framings (``FRAMINGS``, chosen by name):

``ffhq`` (default)
    least-squares similarity (rotation, uniform scale, translation; Umeyama) onto a canonical 5-point template:
    the ArcFace 112x112 template placed in the square crop that FFHQ's own alignment rule (NVlabs/ffhq-dataset:
    centre = eye midpoint + 0.1 * eye-to-mouth, side = 2 * max(2 * |eye-to-eye|, 1.8 * |eye-to-mouth|)) gives
    for those five points. An aligned photo is framed like an FFHQ / CelebA-HQ image: the whole head, brows to
    chin, with margin (an average face: eyes ~54 px apart at y ~105 of 224).
``deng``
    Deng et al.'s ``align_img`` (Deep3DFaceRecon_pytorch util/preprocess.py, docs/formats.md sec. 1): the 5 points are
    fitted to the 5 reference 3D points of ``BFM/similarity_Lm3D_all.mat`` (key ``lm``, 68 x 3) by POS, a least-
    squares affine camera x = A X + t with A (2, 3) free; s = mean of A's two row norms. The image is scaled by
    ``102 / s`` (no rotation) and t is put at the crop centre of a 224 crop: 1 unit of the reference landmarks
    (decimetres) = 102 px, the size Deng's camera (focal 1015 at distance 10) renders the mean face at, so
    coefficients predicted on this crop render back onto it. An average face: eyes ~63 px apart at y ~82 of 224.
    At another output size S the scale is ``102 * S / 224`` (same framing, the renderer's focal scales with S).
``release``
    the authors' release (face_de_mask test.py): the same POS fit, ``116 / s`` at 256 (``116 * S / 256``): Deng's
    framing at 256 to 0.5% (102 * 256 / 224 = 116.6).
``release_exact``
    ``release`` as test.py crops it, to the last pixel (the release preset, configs/release.yaml):
    - crop centre (``Framing.centre = "release"``): test.py puts the POS centre at (S / 2, S / 2) with its y read
      back as ``h0 - t_y'`` from the y-flipped fit (``t_y' = h0 - 1 - t_y``), one source pixel below the centre.
      Its forward transform is ``release``'s plus a translation of (+0.5, 0.5 - k) crop pixels, k = 116 / s the
      crop's magnification: its crop window sits (-0.5, k - 0.5) px from ours;
    - crop pixels (``Framing.border = "blur10"``): the photo is warped in 8 bits (OpenCV bilinear, mirrored
      border), and the part of the crop outside the photo (the box between the photo's truncated corner pixels
      (0, 0) and (w0 - 1, h0 - 1), mapped; its last row and column always count as outside, as in test.py)
      becomes a 10 x 10 box blur (OpenCV ``blur``) of that crop; no anti-alias pre-shrink.
    Paste it back with ``paste_back(..., mode="hard")`` for test.py's output.

Deng's and (but for ``release_exact``) the release's crops differ from these transforms by their integer rounding
and pixel-centre conventions (< 1 source pixel + 0.5 crop pixel; here t goes to the centre ((S - 1) / 2,
(S - 1) / 2), the renderer's principal point), and Deng resizes bicubically and pads black where this warps
bilinearly and mirrors. ``scale > 1`` widens any crop.

Pasting a crop-space result back (:func:`paste_back`): ``feather`` (default) blends over a ramp inside the region,
so no seam shows; ``hard`` is test.py's composite (its 8-bit result warped back, the crop-space mask warped back
in 8 bits, the photo replaced where it is 1), for exact parity with the release.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from data.io import to_uint8
from engine.config import ConfigError
from engine.files import FileReadError

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "FFHQ_TEMPLATE",
    "FRAMINGS",
    "Framing",
    "get_framing",
    "load_lm3d",
    "pos_fit",
    "AlignResult",
    "five_points",
    "alignment_template",
    "estimate_similarity",
    "transform_points",
    "invert_transform",
    "alignment_transform",
    "warp_affine",
    "align_face",
    "paste_back",
    "paste_hard",
    "hard_region",
    "pasted_region",
    "release_outside",
    "PASTE_MODES",
]

# ArcFace 112x112 template (insightface / Deng et al.): left eye, right eye, nose tip, left and right mouth corner.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


@dataclass(frozen=True)
class Framing:
    """A named crop convention. ``rescale`` / ``ref_size``: POS framings put 1 reference-landmark unit at
    ``rescale * S / ref_size`` crop pixels (S = output size); ``rescale=None``: the 5-point template similarity.
    ``centre``: ``pixel`` (the POS centre at the crop's centre pixel) or ``release`` (test.py's, module doc);
    ``border``: None (the caller's border mode) or ``blur10`` (test.py's 8-bit crop, box-blurred outside)."""

    name: str
    rescale: float | None = None
    ref_size: int = 224
    centre: str = "pixel"
    border: str | None = None

    @property
    def needs_lm3d(self) -> bool:
        return self.rescale is not None

    def pixels_per_unit(self, out_size: int) -> float:
        return float(self.rescale) * out_size / self.ref_size


FRAMINGS: dict[str, Framing] = {
    "ffhq": Framing("ffhq"),
    "deng": Framing("deng", 102.0, 224),
    "release": Framing("release", 116.0, 256),
    "release_exact": Framing("release_exact", 116.0, 256, centre="release", border="blur10"),
}
RELEASE_BLUR = 10  # test.py's box blur outside the photo, pixels


def get_framing(name: str | Framing) -> Framing:
    """A framing by name (``ffhq``, ``deng``, ``release``, ``release_exact``); an unknown name lists the valid
    ones."""
    if isinstance(name, Framing):
        return name
    if name not in FRAMINGS:
        raise ConfigError(f"unknown framing {name!r}; valid: {', '.join(FRAMINGS)}")
    return FRAMINGS[name]


def load_lm3d(path: str | os.PathLike, what: str = "lm3d_path") -> np.ndarray:
    """The 5 reference 3D points (5, 3) float64 from Deng et al.'s ``similarity_Lm3D_all.mat`` (key ``lm``, 68 x 3).

    The five are taken from the 68 as :func:`five_points` takes them from 2D landmarks (Deng's ``load_lm3d``:
    1-based 31, mean(37, 40), mean(43, 46), 49, 55, reordered to eyes, nose, mouth corners). Missing or unreadable
    files raise one line naming ``what``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: 3D reference landmarks not found: {path} (Deng et al.'s "
                                "BFM/similarity_Lm3D_all.mat)")
    from scipy.io import loadmat

    try:
        lm = np.asarray(loadmat(str(path))["lm"], np.float64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FileReadError(f"{what}: cannot read 3D reference landmarks from {path}: {e!s}".splitlines()[0]) from None
    if lm.shape != (68, 3):
        raise FileReadError(f"{what}: {path}: 'lm' must be 68 x 3, got {lm.shape}")
    return five_points(lm)


def pos_fit(points: np.ndarray, lm3d: np.ndarray) -> tuple[np.ndarray, float]:
    """POS: least-squares affine camera ``points ~= A @ X + t`` (A (2, 3) free). points (N, 2) image pixels, lm3d
    (N, 3). Returns (t (2,) float64, s = mean of A's row norms). The sign of an image axis does not change s, and
    t is the image position of the reference origin in the points' own (here y-down) coordinates."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    x = np.concatenate([np.asarray(lm3d, np.float64).reshape(-1, 3), np.ones((len(pts), 1))], axis=1)
    k, *_ = np.linalg.lstsq(x, pts, rcond=None)  # (4, 2): both image rows solved at once
    s = (np.linalg.norm(k[:3, 0]) + np.linalg.norm(k[:3, 1])) / 2
    if not np.isfinite(s) or s < 1e-12:
        raise ValueError("pos_fit: degenerate landmarks (no scale)")
    return k[3].copy(), float(s)


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
        return to_uint8(arr)
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
    landmarks68: np.ndarray | torch.Tensor, out_size: int, scale: float = 1.0, template: np.ndarray | None = None,
    framing: str | Framing = "ffhq", lm3d: np.ndarray | None = None,
) -> np.ndarray:
    """(2, 3) forward transform (original -> crop pixels) of ``framing`` (module doc) for an out_size crop.

    ``landmarks68``: (68, 2) landmarks, or (5, 2) points already in :func:`five_points` order.

    ``ffhq``: the similarity onto :func:`alignment_template` (``template`` replaces its points). ``deng`` /
    ``release``: scale ``pixels_per_unit / (s * scale)`` and no rotation, the POS centre t at the crop centre;
    ``lm3d`` (5, 3) from :func:`load_lm3d` is required.
    """
    lm = landmarks68.detach().cpu().numpy() if isinstance(landmarks68, torch.Tensor) else np.asarray(landmarks68)
    lm = lm.astype(np.float64)
    five = lm if lm.shape[-2] == 5 else five_points(lm)  # 5-point detections (eyes, nose, mouth corners) too
    fr = get_framing(framing)
    if not fr.needs_lm3d:
        return estimate_similarity(five, alignment_template(out_size, scale, template))
    if lm3d is None:
        raise ValueError(f"framing {fr.name!r} needs the 3D reference landmarks (lm3d_path: "
                         "BFM/similarity_Lm3D_all.mat)")
    if scale <= 0:
        raise ValueError(f"alignment scale must be > 0, got {scale}")
    t, s = pos_fit(five, lm3d)
    k = fr.pixels_per_unit(out_size) / (s * scale)
    c = (out_size - 1) / 2.0
    shift = (0.5, 0.5 - k) if fr.centre == "release" else (0.0, 0.0)  # test.py's centre, module doc
    return np.array([[k, 0.0, c - k * t[0] + shift[0]], [0.0, k, c - k * t[1] + shift[1]]], np.float64)


def release_outside(transform: np.ndarray, photo_hw: tuple[int, int], out_size: int) -> np.ndarray:
    """test.py's "outside the photo" map of a crop: (S, S) bool, True on the rows above / below and the columns
    left / right of the photo's corner pixels (0, 0) and (w0 - 1, h0 - 1) mapped by ``transform`` and truncated
    toward zero, the far row and column included (so the crop's last row and column always count)."""
    h0, w0 = photo_hw
    t = np.asarray(transform, np.float64)
    corners = (np.array([[0.0, 0.0, 1.0], [w0 - 1.0, h0 - 1.0, 1.0]]) @ t.T).astype(np.int32)
    left, top = max(int(corners[0, 0]), 0), max(int(corners[0, 1]), 0)
    right, bottom = min(int(corners[1, 0]), out_size - 1), min(int(corners[1, 1]), out_size - 1)
    out = np.zeros((out_size, out_size), bool)
    out[:top] = True
    out[bottom:] = True
    out[:, :left] = True
    out[:, right:] = True
    return out


def _release_crop(image: np.ndarray, transform: np.ndarray, out_size: int) -> np.ndarray:
    """test.py's crop of an (H, W, C) float [0, 1] photo (8-bit values: exact) -> (S, S, C) float32, k / 255."""
    u8 = to_uint8(image)
    warped = cv2.warpAffine(u8, np.asarray(transform, np.float64), (out_size, out_size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT101).reshape(out_size, out_size, -1)
    blurred = cv2.blur(warped, (RELEASE_BLUR, RELEASE_BLUR)).reshape(warped.shape)
    outside = release_outside(transform, image.shape[:2], out_size)[:, :, None]
    return np.where(outside, blurred, warped).astype(np.float32) / 255.0


def align_face(
    image: np.ndarray | torch.Tensor,
    landmarks68: np.ndarray | torch.Tensor,
    out_size: int,
    scale: float = 1.0,
    border: str = "reflect",
    template: np.ndarray | None = None,
    framing: str | Framing = "ffhq",
    lm3d: np.ndarray | None = None,
) -> AlignResult:
    """Align a face in an out_size x out_size crop with ``framing`` (module doc; default FFHQ's).

    Args:
        image: (C, H, W) float tensor in [0, 1], or (H, W, C) uint8 / float array.
        landmarks68: (68, 2) landmarks (or (5, 2) five points) in ``image`` pixel coordinates.
        out_size: side S of the square output.
        scale: crop side relative to the template's framing.
        template: (5, 2) canonical points as fractions of the crop side (default FFHQ_TEMPLATE).
        border: "reflect" (mirrored surroundings, as FFHQ pads), "replicate" or "constant" (black) outside the photo
            (``release_exact`` has its own: module doc).
        framing, lm3d: see :func:`alignment_transform`.
    Returns:
        AlignResult (crop image of the input's type, crop landmarks, forward transform).
    """
    borders = {"reflect": cv2.BORDER_REFLECT101, "replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}
    if border not in borders:
        raise ValueError(f"align_face: unknown border {border!r}; valid: {', '.join(borders)}")
    transform = alignment_transform(landmarks68, out_size, scale, template, framing, lm3d)
    arr, tag = _as_hwc_float(image)
    if get_framing(framing).border == "blur10":
        warped = _release_crop(arr, transform, out_size)
    else:
        warped = warp_affine(arr, transform, (out_size, out_size), border=borders[border])
    lm_out = transform_points(landmarks68, transform)
    if isinstance(lm_out, torch.Tensor):
        lm_out = lm_out.float()
    else:
        lm_out = np.asarray(lm_out, np.float32)
    return AlignResult(image=_from_hwc_float(warped, tag), landmarks=lm_out, transform=transform)


PASTE_MODES = ("feather", "hard")


def paste_back(
    original: np.ndarray | torch.Tensor,
    aligned_result: np.ndarray | torch.Tensor,
    transform: np.ndarray,
    mask: np.ndarray | torch.Tensor | None = None,
    feather: float | None = None,
    mode: str = "feather",
) -> np.ndarray | torch.Tensor:
    """Inverse-warp an aligned-crop result into the original photo with a feathered blend (``mode="hard"``:
    :func:`paste_hard`, test.py's composite; ``feather`` is ignored there).

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
    if mode not in PASTE_MODES:
        raise ValueError(f"paste: unknown mode {mode!r}; valid: {', '.join(PASTE_MODES)}")
    if mode == "hard":
        return paste_hard(original, aligned_result, transform,
                          np.ones(np.asarray(_as_hwc_float(aligned_result)[0]).shape[:2], np.float32)
                          if mask is None else mask)
    orig, tag = _as_hwc_float(original)
    res, _ = _as_hwc_float(aligned_result)
    h, w = orig.shape[:2]
    s = res.shape[0]
    inv = invert_transform(transform)
    back = warp_affine(res, inv, (h, w), border=cv2.BORDER_REPLICATE)
    region = pasted_region(np.ones((s, s), np.float32) if mask is None else mask, transform, (h, w))
    crop_side_orig = s / np.sqrt(abs(np.linalg.det(np.asarray(transform)[:, :2])))
    if feather is None:
        feather = max(1.0, 0.02 * crop_side_orig)
    dist = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3)
    weight = np.clip(dist / float(feather), 0.0, 1.0)[:, :, None].astype(np.float32)
    out = orig * (1.0 - weight) + back * weight
    return _from_hwc_float(out, tag)


def paste_hard(
    original: np.ndarray | torch.Tensor,
    aligned_result: np.ndarray | torch.Tensor,
    transform: np.ndarray,
    mask: np.ndarray | torch.Tensor,
) -> np.ndarray | torch.Tensor:
    """test.py's paste-back: a hard composite inside the warped-back mask, in 8 bits.

    The result is cut to 8 bits (truncated, as test.py's ``tensor2img``) and warped back bilinearly in 8 bits (white
    beyond the crop); ``mask`` ({0, 1}, crop space) is warped back in 8 bits (0 beyond the crop), which rounds the
    bilinear mix to 0 or 1; the photo takes the result where that is 1 and keeps its own pixels elsewhere. For
    test.py's output pass N_G's raw output and N_3D's m (not a composite, not a grown region). test.py warps back
    into a 256 x 256 canvas and whitens its last row (a display step); here the canvas is the photo, left as is.

    original: (C, H, W) float tensor [0, 1] or (H, W, C) array (uint8 or float); aligned_result: (C, S, S) tensor /
    (S, S, C) array in [0, 1]; transform: (2, 3) forward transform original -> crop; mask: (1, S, S) / (S, S).
    Returns the photo, same type and size as ``original``.
    """
    orig, tag = _as_hwc_float(original)
    res, _ = _as_hwc_float(aligned_result)
    h, w = orig.shape[:2]
    res_u8 = (np.clip(res, 0.0, 1.0) * 255.0).astype(np.uint8)
    back = cv2.warpAffine(res_u8, invert_transform(transform), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255, 255)).reshape(h, w, -1)
    region = hard_region(mask, transform, (h, w))
    out = np.where(region[:, :, None], back.astype(np.float32) / 255.0, orig)
    return _from_hwc_float(out, tag)


def hard_region(mask: np.ndarray | torch.Tensor, transform: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """The photo pixels :func:`paste_hard` replaces: the crop-space ``mask`` ((1, S, S) / (S, S), > 0.5 = inside)
    warped back in 8 bits as test.py does (bilinear, rounded to 0 / 1; 0 beyond the crop) -> (H, W) bool."""
    m, _ = _as_hwc_float(mask)
    m_u8 = (m[..., 0] > 0.5).astype(np.uint8)
    h, w = out_hw
    return cv2.warpAffine(m_u8, invert_transform(transform), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT) > 0


def pasted_region(mask: np.ndarray | torch.Tensor, transform: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """The photo pixels :func:`paste_back` may change: the crop-space region ``mask`` ((1, S, S) / (S, S), > 0.5
    = inside) warped back by the inverse of ``transform`` into an (H, W) bool array (False where the crop does not
    reach)."""
    m, _ = _as_hwc_float(mask)
    region_crop = (m[..., 0] > 0.5).astype(np.float32)
    # Zero padding outside the crop: everything the crop does not cover keeps the original pixels.
    inv = invert_transform(transform)
    return warp_affine(region_crop[:, :, None], inv, tuple(out_hw), border=cv2.BORDER_CONSTANT)[..., 0] > 0.5
