"""Photo datasets: FFHQ, CelebAMask-HQ and an image folder (synthetic faces: data.synthetic; masked pairs and the
factory: data.pairs).


Every face dataset returns dicts (S = the dataset's ``image_size``):
    image      (3, S, S) float32 RGB in [0, 1]
    landmarks  (68, 2) float32, iBUG-68 pixel coordinates of ``image`` (x right, y down, pixel centres at integers)
    face_mask  (1, S, S) float32 {0, 1}, face-region map M (1 = face skin region) -- where the dataset knows it
    coeffs     (257,) float32 3DMM coefficients (renderer.morphable.CoeffLayout) -- where known
    index      int, the dataset's own image index (FFHQ / CelebA-HQ number, folder position, synthetic item number)
    name       str, the image file stem

Geometry: without ``align`` an image is centre-cropped to a square (a no-op for FFHQ / CelebA-HQ) and resized to S;
with ``align=True`` the face is similarity-aligned from its landmarks onto a canonical 5-point template
(data.align: ``framing`` ffhq (default), deng (Deng et al.'s align_img, 102/s at 224) or release (116/s at 256),
the last two with ``lm3d_path`` = BFM/similarity_Lm3D_all.mat; ``align_scale`` widens / narrows the crop,
``align_template`` gives other (5, 2) ffhq-framing template points as fractions of the crop side). Landmarks and
face_mask follow the same transform. Downscaling uses area averaging (no aliasing).

Optional coefficient files (``coeffs_dir``): ``<coeffs_dir>/<stem>.npy``, a (257,) float32 array in the
CoeffLayout order (id 80 | exp 64 | tex 80 | angle 3 | gamma 27 | trans 3), e.g. predicted by Deng et al.'s network
(scripts/extract_coeffs.py) on the image exactly as this dataset delivers it, which must then be in Deng's framing
(``align: true``, ``framing: deng`` or ``release``); since the renderer's focal length scales with the image size,
the coefficients do not depend on S.

Indexing: what can be known without decoding an image is checked once, at construction: requested images that do
not exist (``missing``), and, unless ``strict``, images without a landmark source (no table entry or landmark file
and no detector) or without their coefficient file (``coeffs_dir``) are left out; ``index_report`` says so in one
line ("36 of 69,000 FFHQ images found under ROOT (68,964 image files missing); using those"). A root folder that
does not exist, holds no images or no usable one is a one-line FileNotFoundError naming the config key
(``config_key``, default "data").

Bad data found at load time (a corrupt or unreadable image, a landmark file that does not parse, no face detected,
...) is skipped: ``__getitem__`` returns the next valid item and one warning line per file is logged
(``logging``); ``strict=True`` raises instead. ``skipped_flags`` (bool, one per item) marks the skipped files in
shared memory, so every DataLoader worker (forked from the process that built the dataset) sees what the others
found: a bad file is read once per run, not once per worker and epoch, and ``skipped`` (their count) is exact in the
main process.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from data.align import alignment_transform, get_framing, load_lm3d, transform_points, warp_affine
from data.detectors import LandmarkDetector, get_detector
from data.io import CorruptImageError, list_images, read_array, read_image_uint8
from data.landmarks import _LANDMARK_SUFFIXES, find_landmarks_file, load_landmarks_file, rescale_points
from data.splits import ffhq_split
from engine.config import ConfigError

__all__ = [
    "CELEBAMASK_PARTS",
    "CELEBAMASK_FACE_PARTS",
    "N_COEFFS",
    "FaceImageDataset",
    "FFHQ",
    "CelebAMaskHQ",
    "ImageFolderFaces",
    "SkippedItem",
    "load_ffhq_landmarks",
    "scale_points",
]


log = logging.getLogger(__name__)

N_COEFFS = 257

# CelebAMask-HQ part labels in the dataset's merge order.
CELEBAMASK_PARTS = (
    "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)
# Parts of the face-region map M: the skin and everything drawn on top of it inside the face. Eyeglasses, hair, hat,
# ears, earrings, neck, necklace and cloth are excluded (they are not explained by the 3DMM's skin region).
CELEBAMASK_FACE_PARTS = ("skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "mouth", "u_lip", "l_lip")


class SkippedItem(ValueError):
    """An item that cannot be produced (no landmarks, missing coefficient file, ...)."""



def _to_tensor_image(arr: np.ndarray) -> torch.Tensor:
    """(H, W, C) float32 -> (C, H, W) float32 tensor, clamped to [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).clamp_(0.0, 1.0)


def _centre_square_transform(h: int, w: int, size: int) -> np.ndarray:
    """(2, 3) transform from an (h, w) image to its central square resized to size x size (pixel-centre convention)."""
    side = min(h, w)
    s = size / side
    x0, y0 = (w - side) / 2.0, (h - side) / 2.0
    return np.array([[s, 0, 0.5 * s - 0.5 - s * x0], [0, s, 0.5 * s - 0.5 - s * y0]], np.float64)


def scale_points(points: np.ndarray, src_wh: tuple[float, float], dst_wh: tuple[float, float]) -> np.ndarray:
    """Rescale pixel coordinates between two resolutions of one image (pixel-centre convention)."""
    sx, sy = dst_wh[0] / src_wh[0], dst_wh[1] / src_wh[1]
    return rescale_points(points, (sx, sy)).astype(np.float32)


def _detector_from_spec(spec: str | Mapping | LandmarkDetector | None) -> LandmarkDetector | None:
    if spec is None or isinstance(spec, LandmarkDetector):
        return spec
    if isinstance(spec, str):
        return get_detector(spec)
    spec = dict(spec)
    return get_detector(spec.pop("name"), **spec)


@dataclass
class _Record:
    name: str
    path: Path
    index: int


class FaceImageDataset(Dataset):
    """Base class of the photo datasets: records -> loaded, resized/aligned dict items (module doc).

    Landmarks are looked up in this order: the subclass' table (e.g. FFHQ's json), ``landmarks_dir`` files
    (``<stem>.npy`` / ``<stem>.txt``, in the original image's pixel coordinates), then ``detector`` (a name from
    data.detectors.get_detector, a dict ``{name: ..., **kwargs}``, or a LandmarkDetector; detections are cached in
    memory per image, the largest face is used).

    The subclasses pass their ``**common`` options on to this constructor: landmarks_dir, detector, align,
    align_scale, align_template, framing, lm3d_path, coeffs_dir, strict (module doc). ``records``, ``root`` and
    ``missing`` (requested image files that do not exist) are filled in by the subclass.
    """

    provides: frozenset[str] = frozenset()
    label = ""  # the dataset's name in index_report ("FFHQ images")

    def __init__(
        self,
        records: list[_Record],
        image_size: int,
        *,
        root: Path,
        landmarks_dir: str | os.PathLike | None = None,
        detector: str | Mapping | LandmarkDetector | None = None,
        align: bool = False,
        align_scale: float = 1.0,
        align_template: Sequence[Sequence[float]] | None = None,
        framing: str = "ffhq",
        lm3d_path: str | os.PathLike | None = None,
        coeffs_dir: str | os.PathLike | None = None,
        strict: bool = False,
        config_key: str = "data",
        missing: int = 0,
    ) -> None:
        self.records = records
        self.image_size = int(image_size)
        self.root = Path(root)
        self.align = bool(align)
        self.align_scale = float(align_scale)
        self.align_template = None if align_template is None else np.asarray(align_template, np.float64).reshape(5, 2)
        try:
            self.framing = get_framing(framing)
        except ValueError as e:
            raise ConfigError(f"{config_key}.framing: {e}") from None
        self.lm3d = None
        if self.align and self.framing.needs_lm3d:
            if lm3d_path is None:
                raise ConfigError(f"{config_key}.lm3d_path: framing {self.framing.name!r} needs Deng et al.'s "
                                 "BFM/similarity_Lm3D_all.mat")
            self.lm3d = load_lm3d(lm3d_path, f"{config_key}.lm3d_path")
        self.strict = bool(strict)
        self.config_key = config_key
        self.landmarks_dir = None if landmarks_dir is None else Path(landmarks_dir)
        if self.landmarks_dir is not None and not self.landmarks_dir.is_dir():
            raise FileNotFoundError(f"{config_key}.landmarks_dir: folder not found: {self.landmarks_dir}")
        self.coeffs_dir = None if coeffs_dir is None else Path(coeffs_dir)
        if self.coeffs_dir is not None and not self.coeffs_dir.is_dir():
            raise FileNotFoundError(f"{config_key}.coeffs_dir: folder not found: {self.coeffs_dir}")
        if self.coeffs_dir is not None:
            self.provides = self.provides | {"coeffs"}
        self._detector_spec = detector
        self._detector: LandmarkDetector | None = None
        self._detected: dict[int, np.ndarray | None] = {}
        self.missing = int(missing)
        self._requested = len(records) + self.missing
        self.records, self._left_out = (records, {}) if self.strict else self._index(records)
        if not self.records:
            why = ", ".join(f"{n:,} {reason}" for reason, n in self._left_out.items())
            raise FileNotFoundError(f"{config_key}: none of the {len(records):,} {self._what} found under {self.root} "
                                    f"is usable ({why})")
        self._bad = torch.zeros(len(self.records), dtype=torch.bool).share_memory_()

    # -- indexing ----------------------------------------------------------------------------------------------------
    @property
    def _what(self) -> str:
        return f"{self.label} images".strip()

    def _index(self, records: list[_Record]) -> tuple[list[_Record], dict[str, int]]:
        """Leave out the records whose side files are missing (checked by listing folders, no image read):
        -> (kept records, {reason: count})."""
        left_out = {}
        if self.coeffs_dir is not None:
            have = {e.name[:-4] for e in os.scandir(self.coeffs_dir) if e.name.endswith(".npy")}
            keep = [r for r in records if r.name in have]
            left_out[f"without a coefficient file in {self.coeffs_dir}"] = len(records) - len(keep)
            records = keep
        if self._detector_spec is None:
            have = set()
            if self.landmarks_dir is not None:
                have = {Path(e.name).stem for e in os.scandir(self.landmarks_dir)
                        if Path(e.name).suffix in _LANDMARK_SUFFIXES}
            keep = [r for r in records if r.name in have or self._has_table_landmarks(r)]
            left_out["without landmarks"] = len(records) - len(keep)
            records = keep
        return records, {k: n for k, n in left_out.items() if n}

    @property
    def index_report(self) -> list[str]:
        """One line: how many of the requested images this dataset uses, and why the others are left out."""
        n, wanted = len(self.records), self._requested
        if n == wanted:
            return [f"{n:,} {self._what} under {self.root}"]
        why = ([f"{self.missing:,} image files missing"] if self.missing else []) + \
            [f"{k:,} {reason}" for reason, k in self._left_out.items()]
        return [f"{n:,} of {wanted:,} {self._what} {'usable' if self._left_out else 'found'} under {self.root} "
                f"({', '.join(why)}); using those"]

    # -- bookkeeping -------------------------------------------------------------------------------------------------
    @property
    def skipped_flags(self) -> torch.Tensor:
        """(len(self),) bool: items skipped at load so far, by this process or its DataLoader workers."""
        return self._bad

    @property
    def skipped(self) -> int:
        """Number of image files skipped at load so far (files missing at construction: ``missing``)."""
        return int(self._bad.sum())

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self.records)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {type(self).__name__} of length {n}")
        i %= n
        for k in range(n):
            j = (i + k) % n
            if self._bad[j]:
                continue
            try:
                return self.load(j)
            except (CorruptImageError, FileNotFoundError, SkippedItem) as e:
                if self.strict:
                    raise
                self._bad[j] = True
                log.warning("%s: skipping %s: %s", type(self).__name__, self.records[j].path, e)
        raise RuntimeError(f"{self.config_key}: no valid item in {self.root} ({self.skipped} files skipped)")

    # -- hooks -------------------------------------------------------------------------------------------------------
    def _table_landmarks(self, rec: _Record, wh: tuple[int, int]) -> np.ndarray | None:
        """Landmarks from a dataset-specific table, in original image coordinates; None if unknown."""
        return None

    def _has_table_landmarks(self, rec: _Record) -> bool:
        """Whether `_table_landmarks` knows this record (checked at indexing, without reading the image)."""
        return False

    def _face_mask(self, rec: _Record) -> np.ndarray | None:
        """Face-region map as (h, w) float32 {0, 1} at its own resolution (mapped onto the image by scaling)."""
        return None

    # -- loading -----------------------------------------------------------------------------------------------------
    def _landmarks(self, j: int, rec: _Record, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        lm = self._table_landmarks(rec, (w, h))
        if lm is None and self.landmarks_dir is not None:
            p = find_landmarks_file(self.landmarks_dir, rec.name)
            if p is not None:
                try:
                    lm = load_landmarks_file(p)
                except ValueError as e:
                    raise SkippedItem(str(e)) from None
        if lm is None and self._detector_spec is not None:
            if j not in self._detected:
                if self._detector is None:
                    self._detector = _detector_from_spec(self._detector_spec)
                faces = self._detector.detect(img, rec.name)
                self._detected[j] = faces[0] if faces else None
            lm = self._detected[j]
        if lm is None:
            raise SkippedItem("no landmarks (no table entry, landmark file or detection)")
        return np.asarray(lm, np.float32)

    def _coeffs(self, rec: _Record) -> torch.Tensor:
        p = self.coeffs_dir / f"{rec.name}.npy"
        if not p.is_file():
            raise SkippedItem(f"coefficient file not found: {p}")
        try:
            c = read_array(p).astype(np.float32).reshape(-1)
        except (OSError, ValueError) as e:
            raise SkippedItem(f"cannot read coefficient file {p}: {e}") from None
        if c.shape != (N_COEFFS,):
            raise SkippedItem(f"coefficient file {p}: expected ({N_COEFFS},), got {c.shape}")
        return torch.from_numpy(c)

    def load(self, j: int) -> dict[str, Any]:
        """Item j without the skip logic (raises CorruptImageError / FileNotFoundError / SkippedItem)."""
        rec = self.records[j]
        img = read_image_uint8(rec.path)
        h, w = img.shape[:2]
        lm = self._landmarks(j, rec, img)
        s = self.image_size
        if self.align:
            transform = alignment_transform(lm, s, self.align_scale, self.align_template, self.framing, self.lm3d)
            border = cv2.BORDER_REFLECT101
        else:
            transform = _centre_square_transform(h, w, s)
            border = cv2.BORDER_REPLICATE
        out_img = warp_affine(img.astype(np.float32) / 255.0, transform, (s, s), border=border)
        item: dict[str, Any] = {
            "image": _to_tensor_image(out_img),
            "landmarks": torch.from_numpy(np.asarray(transform_points(lm, transform), np.float32)),
        }
        fm = self._face_mask(rec)
        if fm is not None:
            mh, mw = fm.shape
            # mask pixel -> image pixel -> output pixel
            to_img = np.array([[w / mw, 0, 0.5 * w / mw - 0.5], [0, h / mh, 0.5 * h / mh - 0.5], [0, 0, 1]])
            t_mask = (np.vstack([transform, [0, 0, 1]]) @ to_img)[:2]
            warped = warp_affine(fm[:, :, None], t_mask, (s, s), border=cv2.BORDER_CONSTANT)[..., 0]
            item["face_mask"] = torch.from_numpy((warped > 0.5).astype(np.float32))[None]
        if self.coeffs_dir is not None:
            item["coeffs"] = self._coeffs(rec)
        item["index"] = rec.index
        item["name"] = rec.name
        return item


def _require_images(paths: Sequence[Path], root: Path, config_key: str) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"{config_key}.root: folder not found: {root}")
    if not paths:
        raise FileNotFoundError(f"{config_key}.root: no images found in {root}")


# ---------------------------------------------------------------------------------------------------------------------
# FFHQ


def load_ffhq_landmarks(
    json_path: str | os.PathLike, cache_path: str | os.PathLike | None = None
) -> tuple[dict[int, int], np.ndarray, np.ndarray]:
    """Landmarks of the aligned FFHQ images from ffhq-dataset-v2.json.

    Returns:
        (row_of_index, landmarks (N, 68, 2) float32, ref_size (N, 2) float32 = image pixel_size [w, h] the landmarks
        refer to, 1024 x 1024 for FFHQ). ``entry['image']['face_landmarks']`` of key str(index).
    The json is ~270 MB; ``cache_path`` (.npz) stores the extracted arrays and is reused when newer than the json.
    """
    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(f"landmarks_json: file not found: {json_path}")
    if cache_path is not None:
        cache_path = Path(cache_path)
        if cache_path.is_file() and cache_path.stat().st_mtime >= json_path.stat().st_mtime:
            z = np.load(cache_path, allow_pickle=False)
            return {int(k): r for r, k in enumerate(z["indices"])}, z["landmarks"], z["ref_size"]
    with open(json_path, encoding="utf-8") as f:
        meta = json.load(f)
    indices, lms, refs = [], [], []
    for key, entry in meta.items():
        image = entry.get("image", {}) if isinstance(entry, Mapping) else {}
        lm = np.asarray(image.get("face_landmarks", ()), np.float32)
        if lm.shape != (68, 2):
            continue
        indices.append(int(key))
        lms.append(lm)
        refs.append(np.asarray(image.get("pixel_size", (1024, 1024)), np.float32)[:2])
    lm_arr = np.stack(lms) if lms else np.zeros((0, 68, 2), np.float32)
    ref_arr = np.stack(refs) if refs else np.zeros((0, 2), np.float32)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(f"{cache_path.name}.tmp{os.getpid()}.npz")  # ranks / datasets write at once
        np.savez(tmp, indices=np.asarray(indices, np.int64), landmarks=lm_arr, ref_size=ref_arr)
        os.replace(tmp, cache_path)
    return {k: r for r, k in enumerate(indices)}, lm_arr, ref_arr


class FFHQ(FaceImageDataset):
    """FFHQ (aligned images, any resolution).

    Layout: ``root/images1024x1024/{idx - idx % 1000:05d}/{idx:05d}.png`` (official), or any folder below ``root``
    whose image files are named by their index (``00042.png``; a flat folder works). Only numerically named files
    count.

    Args:
        root: dataset root (holding ``images1024x1024``) or the image folder itself.
        image_size: output side S.
        landmarks_json: ffhq-dataset-v2.json; ``entry['image']['face_landmarks']`` (68 dlib points in the aligned
            1024 image) are rescaled to the actual image size.
        landmarks_cache: optional .npz cache of the landmarks extracted from the json (see load_ffhq_landmarks).
        indices: image indices to use; or ``split``: 'train' / 'test' / 'all' (data.splits.ffhq_split). Requested
            images that do not exist are left out and counted in ``missing`` (``index_report``).
        common: FaceImageDataset's options (landmarks_dir: used where the json has no entry; detector, align,
            align_scale, align_template, framing, lm3d_path, coeffs_dir, strict; see it and the module doc).
    """

    label = "FFHQ"

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int,
        landmarks_json: str | os.PathLike | None = None,
        indices: Sequence[int] | None = None,
        split: str | None = None,
        landmarks_cache: str | os.PathLike | None = None,
        config_key: str = "data",
        **common: Any,
    ) -> None:
        root = Path(root)
        if landmarks_json is None and common.get("landmarks_dir") is None and common.get("detector") is None:
            raise ConfigError(f"{config_key}: FFHQ needs a landmark source: landmarks_json, landmarks_dir or detector")
        images_dir = root / "images1024x1024" if (root / "images1024x1024").is_dir() else root
        found = {int(p.stem): p for p in list_images(images_dir) if p.stem.isdigit()}
        _require_images(list(found.values()), root, config_key)
        if indices is not None and split is not None:
            raise ConfigError(f"{config_key}: give either indices or split, not both")
        try:
            wanted = ffhq_split(split) if split is not None else sorted(found) if indices is None else list(indices)
        except ValueError as e:
            raise ConfigError(f"{config_key}.split: {e}") from None
        missing = [int(i) for i in wanted if int(i) not in found]
        records = [_Record(found[i].stem, found[i], int(i)) for i in map(int, wanted) if i in found]
        if not records:
            raise FileNotFoundError(
                f"{config_key}.root: none of the {len(wanted)} requested FFHQ images found in {images_dir}"
            )
        if missing:
            log.info("FFHQ: %d of %d requested images are missing in %s (first: %05d)",
                     len(missing), len(wanted), images_dir, missing[0])
        self._lm_rows: dict[int, int] = {}
        self._lm = np.zeros((0, 68, 2), np.float32)
        self._lm_ref = np.zeros((0, 2), np.float32)
        if landmarks_json is not None:
            try:
                self._lm_rows, self._lm, self._lm_ref = load_ffhq_landmarks(landmarks_json, landmarks_cache)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"{config_key}.{e}") from None
        super().__init__(records, image_size, root=images_dir, config_key=config_key, missing=len(missing), **common)

    def _table_landmarks(self, rec: _Record, wh: tuple[int, int]) -> np.ndarray | None:
        row = self._lm_rows.get(rec.index)
        if row is None:
            return None
        ref_w, ref_h = self._lm_ref[row]
        return scale_points(self._lm[row], (float(ref_w), float(ref_h)), wh)

    def _has_table_landmarks(self, rec: _Record) -> bool:
        return rec.index in self._lm_rows


# ---------------------------------------------------------------------------------------------------------------------
# CelebAMask-HQ


def _read_part_mask(path: Path) -> np.ndarray | None:
    """A CelebAMask-HQ part file -> (h, w) bool (channel 0 non-zero); None if the file does not exist."""
    if not path.is_file():
        return None
    data = np.fromfile(str(path), dtype=np.uint8)
    m = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if m is None:
        raise CorruptImageError(path, "cannot decode part mask")
    if m.ndim == 3:
        m = m[:, :, 0]  # OpenCV's channel 0, as the dataset's own preprocessing reads it
    return m != 0


class CelebAMaskHQ(FaceImageDataset):
    """CelebAMask-HQ: images with the face-region map M from the part annotations.

    Layout: ``root/CelebA-HQ-img/<idx>.jpg`` (1024 px) and
    ``root/CelebAMask-HQ-mask-anno/<idx // 2000>/<idx:05d>_<part>.png`` (512 px; channel 0 non-zero = part).
    M = union of ``face_parts`` (default skin, nose, l_eye, r_eye, l_brow, r_brow, mouth, u_lip, l_lip;
    eyeglasses, hair, hat, ears, earring, neck, necklace and cloth are excluded), resized / aligned with the image;
    ``face_mask`` (1, S, S) {0, 1}. A missing part file means that part is absent; an image without any of the
    parts is skipped. The dataset has no landmarks: give ``landmarks_dir`` (precomputed, recommended) or
    ``detector`` (e.g. "dlib", run on the fly on the 1024 image, cached in memory).

    Args:
        root, image_size, config_key: see FaceImageDataset / module doc; ``common``: FaceImageDataset's options.
        indices: image numbers to use (default: all found).
        face_parts: part names forming M.
    """

    provides = frozenset({"face_mask"})
    label = "CelebAMask-HQ"

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int,
        indices: Sequence[int] | None = None,
        face_parts: Sequence[str] = CELEBAMASK_FACE_PARTS,
        config_key: str = "data",
        **common: Any,
    ) -> None:
        root = Path(root)
        if common.get("landmarks_dir") is None and common.get("detector") is None:
            raise ConfigError(f"{config_key}: CelebAMaskHQ needs a landmark source: landmarks_dir or detector")
        img_dir = root / "CelebA-HQ-img"
        found = {int(p.stem): p for p in list_images(img_dir, recursive=False) if p.stem.isdigit()}
        if not root.is_dir():
            raise FileNotFoundError(f"{config_key}.root: folder not found: {root}")
        _require_images(list(found.values()), img_dir, config_key)
        self.mask_dir = root / "CelebAMask-HQ-mask-anno"
        if not self.mask_dir.is_dir():
            raise FileNotFoundError(f"{config_key}.root: part-mask folder not found: {self.mask_dir}")
        unknown = [p for p in face_parts if p not in CELEBAMASK_PARTS]
        if unknown:
            valid = ", ".join(CELEBAMASK_PARTS)
            raise ConfigError(f"{config_key}.face_parts: unknown part(s) {unknown}; valid: {valid}")
        self.face_parts = tuple(face_parts)
        wanted = sorted(found) if indices is None else [int(i) for i in indices]
        missing = [i for i in wanted if i not in found]
        records = [_Record(found[i].stem, found[i], i) for i in wanted if i in found]
        if not records:
            raise FileNotFoundError(f"{config_key}.root: none of the requested images found in {img_dir}")
        if missing:
            log.info("CelebAMaskHQ: %d requested images are missing in %s (first: %d)", len(missing), img_dir,
                     missing[0])
        super().__init__(records, image_size, root=root, config_key=config_key, missing=len(missing), **common)

    def part_path(self, index: int, part: str) -> Path:
        return self.mask_dir / str(index // 2000) / f"{index:05d}_{part}.png"

    def _face_mask(self, rec: _Record) -> np.ndarray:
        union = None
        for part in self.face_parts:
            m = _read_part_mask(self.part_path(rec.index, part))
            if m is None:
                continue
            if union is not None and m.shape != union.shape:
                raise SkippedItem(f"part masks of image {rec.index} differ in size")
            union = m if union is None else union | m
        if union is None:
            raise SkippedItem(f"no face-part mask files for image {rec.index} in {self.mask_dir}")
        return union.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# image folder


class ImageFolderFaces(FaceImageDataset):
    """Any folder of face photos (searched recursively; png, jpg, jpeg, bmp, webp, tif).

    Landmarks: ``landmarks_dir/<stem>.npy`` or ``.txt`` (68 rows "x y" in the photo's pixel coordinates; see
    data.landmarks), else files with the same stem next to the image, else ``detector``. Optional face-region maps:
    ``face_masks_dir/<stem>.png`` (non-zero = face region, any resolution of the same framing). ``index`` is the
    position in the sorted file list, ``name`` the file stem (stems should be unique). ``recursive``: search
    sub-folders; ``common``: FaceImageDataset's options.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int,
        face_masks_dir: str | os.PathLike | None = None,
        recursive: bool = True,
        config_key: str = "data",
        **common: Any,
    ) -> None:
        root = Path(root)
        paths = list_images(root, recursive=recursive)
        _require_images(paths, root, config_key)
        records = [_Record(p.stem, p, k) for k, p in enumerate(paths)]
        self.face_masks_dir = None if face_masks_dir is None else Path(face_masks_dir)
        if self.face_masks_dir is not None:
            if not self.face_masks_dir.is_dir():
                raise FileNotFoundError(f"{config_key}.face_masks_dir: folder not found: {self.face_masks_dir}")
            self.provides = self.provides | {"face_mask"}
        super().__init__(records, image_size, root=root, config_key=config_key, **common)

    def _has_table_landmarks(self, rec: _Record) -> bool:
        return self.landmarks_dir is None and find_landmarks_file(rec.path.parent, rec.name) is not None

    def _table_landmarks(self, rec: _Record, wh: tuple[int, int]) -> np.ndarray | None:
        if self.landmarks_dir is not None:
            return None
        p = find_landmarks_file(rec.path.parent, rec.name)
        if p is None:
            return None
        try:
            return load_landmarks_file(p)
        except ValueError as e:
            raise SkippedItem(str(e)) from None

    def _face_mask(self, rec: _Record) -> np.ndarray | None:
        if self.face_masks_dir is None:
            return None
        p = self.face_masks_dir / f"{rec.name}.png"
        m = _read_part_mask(p)
        if m is None:
            raise SkippedItem(f"face mask file not found: {p}")
        return m.astype(np.float32)
