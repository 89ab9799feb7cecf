"""Reading a user's upload safely: limits, formats, orientation, one-line messages instead of tracebacks.

    image, notes = read_upload(path)   # (3, H, W) float [0, 1] RGB; notes: what was converted, one line each
    # UploadError (one line, for the page) for files too large, not images, corrupt or truncated

EXIF orientation is applied (a phone photo shows upright); CMYK, 16-bit, greyscale, palette and alpha images are
converted to 8-bit RGB (alpha composited over white), each with a note.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from data.io import to_uint8

MAX_UPLOAD_BYTES = 25 * 1024 * 1024
MAX_SIDE = 8000


class UploadError(ValueError):
    """An upload that cannot be used; the message is one line for the user."""


def read_upload(path: str | os.PathLike, max_bytes: int = MAX_UPLOAD_BYTES,
                max_side: int = MAX_SIDE) -> tuple[torch.Tensor, list[str]]:
    """An uploaded file -> ((3, H, W) float32 RGB in [0, 1], notes). UploadError for anything unusable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    name = path.name
    if not path.is_file():
        raise UploadError(f"{name}: no such file")
    size = path.stat().st_size
    if size > max_bytes:
        raise UploadError(f"{name}: {size / 2**20:.1f} MB is over the {max_bytes / 2**20:.0f} MB limit")
    if size == 0:
        raise UploadError(f"{name}: the file is empty")
    notes = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if max(w, h) > max_side:
                    raise UploadError(f"{name}: {w} x {h} px is over the {max_side} px limit on a side")
                img.load()  # decode now: truncated or damaged data fails here
                if img.getexif().get(0x0112, 1) not in (0, 1):  # the EXIF orientation tag
                    img = ImageOps.exif_transpose(img)
                    notes.append("turned upright (EXIF orientation)")
                arr = _to_rgb8(img, notes)
    except UploadError:
        raise
    except UnidentifiedImageError:
        raise UploadError(f"{name}: not an image (JPEG, PNG, WebP, BMP or TIFF)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UploadError(f"{name}: corrupt or truncated image ({why})") from None
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0), notes


def _to_rgb8(img, notes: list[str]) -> np.ndarray:
    """A decoded PIL image of any mode -> (H, W, 3) uint8 RGB, noting each conversion."""
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit (or 32-bit int) greyscale
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 or mode.startswith("I;16") else 255.0
        grey = to_uint8(arr / top)
        notes.append("16-bit greyscale reduced to 8-bit RGB")
        return np.repeat(grey[:, :, None], 3, 2)
    if mode == "F":
        grey = np.clip(np.asarray(img, np.float64) * (255 if np.asarray(img).max() <= 1 else 1) + 0.5, 0, 255)
        notes.append("floating-point greyscale converted to 8-bit RGB")
        return np.repeat(grey.astype(np.uint8)[:, :, None], 3, 2)
    if mode == "CMYK":
        notes.append("CMYK converted to RGB (colours may shift)")
        return np.asarray(img.convert("RGB"))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append("transparency composited over white")
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode in ("L", "1"):
        notes.append("greyscale shown as RGB")
        return np.asarray(img.convert("RGB"))
    if mode != "RGB":
        notes.append(f"{mode} converted to RGB")
        return np.asarray(img.convert("RGB"))
    return np.asarray(img)
