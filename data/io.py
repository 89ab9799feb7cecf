"""Image file reading and writing.

Files are read through ``np.fromfile`` + ``cv2.imdecode`` so that any path (non-ASCII, network mounts) works, and
every failure to decode becomes one :class:`CorruptImageError` with a one-line message that names the file.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np
import torch

__all__ = [
    "IMAGE_EXTENSIONS",
    "CorruptImageError",
    "read_image",
    "read_image_uint8",
    "write_image",
    "list_images",
    "read_array",
    "to_uint8",
    "to_uint8_hwc",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

# A JPEG that lost its tail still decodes (libjpeg fills grey); a missing end-of-image marker near the end of the
# file is the cheap tell. Some writers append a few bytes after the marker, hence a window, not the last 2 bytes.
_JPEG_EOI = b"\xff\xd9"
_JPEG_TAIL_WINDOW = 4096
# Damaged data before an intact end marker also decodes; libjpeg's only sign is a warning it prints on stderr
# (OpenCV gives no other way to see it), e.g. "Corrupt JPEG data: 1909 extraneous bytes before marker 0xd9".
_JPEG_WARNINGS = ("Corrupt JPEG data", "Premature end of JPEG", "Invalid JPEG", "Bogus", "JPEG datastream")


class CorruptImageError(OSError):
    """An image file exists but cannot be decoded (garbage bytes, truncated JPEG, unsupported format)."""

    def __init__(self, path: str | os.PathLike, reason: str = "cannot decode image") -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"corrupt or unreadable image ({reason}): {self.path}")

    def __reduce__(self):  # keeps the exception picklable across DataLoader worker processes
        return (type(self), (self.path, self.reason))


def read_image_uint8(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an RGB uint8 array.

    Returns:
        (H, W, 3) uint8 RGB. Grey images are repeated to 3 channels, alpha is dropped, 16-bit images are scaled.
    Raises:
        FileNotFoundError: the file does not exist.
        CorruptImageError: the file cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise CorruptImageError(path, f"cannot read file: {e.strerror or e}") from None
    if data.size == 0:
        raise CorruptImageError(path, "empty file")
    if data[:2].tobytes() == b"\xff\xd8" and _JPEG_EOI not in data[-_JPEG_TAIL_WINDOW:].tobytes():
        raise CorruptImageError(path, "truncated JPEG")
    if data[:2].tobytes() == b"\xff\xd8":
        img, warning = _decode_capturing_stderr(data)
        if warning:
            raise CorruptImageError(path, f"damaged JPEG data: {warning}")
    else:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise CorruptImageError(path)
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise CorruptImageError(path, f"unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    elif img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[:, :, ::-1])  # BGR -> RGB


def _decode_capturing_stderr(data: np.ndarray) -> tuple[np.ndarray | None, str]:
    """cv2.imdecode with file descriptor 2 redirected to a temporary file; returns (image, libjpeg's first damage
    warning or ''). Whatever else was written to stderr meanwhile is passed on."""
    global _stderr_sink, _stderr_sink_pid
    with _stderr_lock:  # fd 2 is process-wide: one redirect at a time
        if _stderr_sink is None or _stderr_sink_pid != os.getpid():  # forked workers must not share the file
            _stderr_sink, _stderr_sink_pid = tempfile.TemporaryFile(), os.getpid()
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(_stderr_sink.fileno(), 2)
            img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        _stderr_sink.seek(0)
        text = _stderr_sink.read().decode("utf-8", "replace")
        _stderr_sink.seek(0)
        _stderr_sink.truncate()
    lines = text.splitlines()
    damage = [ln.strip() for ln in lines if ln.strip().startswith(_JPEG_WARNINGS)]
    rest = [ln for ln in lines if not ln.strip().startswith(_JPEG_WARNINGS)]
    if rest:
        sys.stderr.write("\n".join(rest) + "\n")
    return img, damage[0] if damage else ""


_stderr_sink = None  # one temporary file per process, reused
_stderr_sink_pid = -1
_stderr_lock = threading.Lock()


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as a float tensor.

    Returns:
        (3, H, W) float32 RGB in [0, 1].
    Raises:
        FileNotFoundError, CorruptImageError (see :func:`read_image_uint8`).
    """
    img = read_image_uint8(path)
    return torch.from_numpy(img).permute(2, 0, 1).float().div_(255.0)


def read_array(path: str | os.PathLike) -> np.ndarray:
    """A ``.npy`` array (coefficients, landmarks), never unpickling. Every failure is one ValueError line naming the
    file and what is wrong (empty, truncated, pickled / not a .npy file); a missing file is a FileNotFoundError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"array file not found: {path}")
    try:
        if path.stat().st_size == 0:
            raise ValueError("empty file (0 bytes)")
        return np.load(path, allow_pickle=False)
    except EOFError:
        raise ValueError(f"cannot read {path}: truncated (no array data)") from None
    except (OSError, ValueError) as e:
        msg = getattr(e, "strerror", None) or str(e).split(". ")[0]
        if "pickled" in msg or "Object arrays" in msg:
            msg = "holds pickled objects or is not a .npy file (refused)"
        elif "Failed to read all data" in msg or msg.startswith("EOF"):
            msg = f"truncated ({msg})"
        raise ValueError(f"cannot read {path}: {msg}") from None


def to_uint8(x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Float values in [0, 1] -> uint8 0..255, the one 8-bit conversion: clipped to [0, 1], then floor(255 x + 0.5),
    so halves round up as PNG writers do (``np.round`` / ``torch.round`` would round them to even). The same rule as
    ``metrics.quantize``. Any shape; a tensor stays a tensor (same device), an array an array."""
    if isinstance(x, torch.Tensor):
        return (x.detach().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)  # non-negative: truncation = floor
    x = np.asarray(x)
    return (np.clip(x if x.dtype.kind == "f" else x.astype(np.float32), 0, 1) * 255.0 + 0.5).astype(np.uint8)


def to_uint8_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """An image -> a contiguous (H, W, C) uint8 array (``to_uint8``'s rounding): a tensor (3|1, H, W) in [0, 1], or
    an array (H, W[, C]) in [0, 1] or already uint8."""
    if isinstance(image, torch.Tensor):
        arr = image.detach().cpu().float()
        if arr.ndim != 3 or arr.shape[0] not in (1, 3):
            raise ValueError(f"expected a (3,H,W) or (1,H,W) image tensor, got {tuple(arr.shape)}")
        return np.ascontiguousarray(to_uint8(arr).permute(1, 2, 0).numpy())
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = to_uint8(arr.astype(np.float32))
    return np.ascontiguousarray(arr[:, :, None] if arr.ndim == 2 else arr)


def write_image(path: str | os.PathLike, image: torch.Tensor | np.ndarray) -> None:
    """Write an image; the format follows the file extension (png, jpg, ...). Parent folders are created.

    Args:
        image: (3, H, W) or (1, H, W) float tensor in [0, 1] (values are clamped), or an (H, W, 3) / (H, W) RGB
            array (uint8, or float in [0, 1]).
    """
    path = Path(path)
    arr = to_uint8_hwc(image)
    if arr.shape[2] == 3:
        arr = arr[:, :, ::-1]  # RGB -> BGR for OpenCV
    ext = path.suffix.lower() or ".png"
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(arr))
    if not ok:
        raise ValueError(f"write_image: cannot encode {ext} for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf.tofile(str(path))


def list_images(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """All image files (by extension, case-insensitive) under ``root``, sorted by path. Hidden folders are skipped."""
    root = Path(root)
    out: list[Path] = []
    if not root.is_dir():
        return out
    if recursive:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            out.extend(Path(dirpath) / f for f in filenames if f.lower().endswith(IMAGE_EXTENSIONS))
    else:
        out = [p for p in root.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(out)
