"""Mask templates on disk: an RGBA PNG plus a JSON of anchor points tied to landmark indices.

JSON keys (``anchors`` required):
- ``anchors``: {"<landmark index 0-67>": [x, y], ...} pixel coordinates in the PNG where that face landmark lies when
  the mask is worn (at least 2; 3+ give an affine fit, e.g. 29 nose bridge, 2 and 14 cheeks, 8 chin);
- ``image``: PNG file name (default: the JSON's stem + ``.png``);
- ``texture``: "keep" (show the PNG's colours), "replace" (paint library textures, shaded by the PNG's own
  luminance) or "both" (default: either, half the time each);
- ``texture_mask``: optional grey PNG, 255 where a texture may replace the colour (default: the whole mask);
- ``neutral``: grey level of the untextured fabric (generated shapes): shade = luminance / neutral exactly, instead
  of a low-passed luminance ratio;
- ``kind``, ``params``: provenance (written by data.masks.writer).

A template is resampled once into the canonical frame, so fitting it to a face is the same as for parametric
shapes. ``save_shape`` writes the same format (used by data.masks.writer).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from data.masks.canonical import CANONICAL_LANDMARKS, FIT_ANCHORS, FRAME_SIZE, canonical_to_raster
from data.masks.shapes import NEUTRAL, Shape, _pack

_OWN_PROB = {"keep": 1.0, "replace": 0.0, "both": 0.5}


class TemplateError(ValueError):
    """A malformed mask template (message names the file and the problem on one line)."""


def read_template_json(json_path: str | Path) -> dict:
    """Parse and validate a template JSON -> dict with int-keyed ``anchors`` and resolved ``image`` path."""
    json_path = Path(json_path)
    try:
        meta = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"mask template JSON not found: {json_path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TemplateError(f"mask template {json_path}: malformed JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("anchors"), dict):
        raise TemplateError(f"mask template {json_path}: missing 'anchors' object "
                            '(expected {"anchors": {"29": [x, y], "8": [x, y], ...}})')
    anchors = {}
    for k, v in meta["anchors"].items():
        try:
            idx = int(k)
            xy = [float(v[0]), float(v[1])]
            if len(v) != 2:
                raise ValueError
        except (TypeError, ValueError, IndexError):
            raise TemplateError(f"mask template {json_path}: bad anchor {k!r}: {v!r} (want \"index\": [x, y])") \
                from None
        if not 0 <= idx < 68:
            raise TemplateError(f"mask template {json_path}: anchor landmark index {idx} outside 0..67")
        anchors[idx] = xy
    if len(anchors) < 2:
        raise TemplateError(f"mask template {json_path}: needs at least 2 anchors, got {len(anchors)}")
    texture = meta.get("texture", "both")
    if texture not in _OWN_PROB:
        raise TemplateError(f"mask template {json_path}: 'texture' must be one of {sorted(_OWN_PROB)}, got {texture!r}")
    image = json_path.parent / meta.get("image", json_path.stem + ".png")
    if not image.is_file():
        raise FileNotFoundError(f"mask template {json_path}: image not found: {image}")
    out = dict(meta, anchors=anchors, image=image, texture=texture)
    if "texture_mask" in meta:
        out["texture_mask"] = json_path.parent / meta["texture_mask"]
        if not out["texture_mask"].is_file():
            raise FileNotFoundError(f"mask template {json_path}: texture mask not found: {out['texture_mask']}")
    return out


def _fit_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares map src -> dst: a similarity for 2 points, an affine for 3+ (similarity if collinear)."""
    n = len(src)
    if n >= 3:
        a = np.concatenate([src, np.ones((n, 1))], 1)
        if np.linalg.matrix_rank(a) == 3:
            sol, *_ = np.linalg.lstsq(a, dst, rcond=None)
            return sol.T
    # similarity [a -b tx; b a ty]
    rows = []
    rhs = []
    for (x, y), (u, v) in zip(src, dst):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    (a, b, tx, ty), *_ = np.linalg.lstsq(np.array(rows, float), np.array(rhs, float), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def _bleed(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Extend colours past the alpha support (push-pull: average down a pyramid, fill back up) so that resampling
    at the edge never mixes in the undefined colour of transparent pixels -> (h, w, 3) float32."""
    w = (alpha > 0.02).astype(np.float32)
    if w.all() or not w.any():
        return rgb
    return _push_pull(rgb * w[..., None], w)


def _push_pull(col: np.ndarray, w: np.ndarray) -> np.ndarray:
    h, wd = w.shape
    norm = col / np.maximum(w, 1e-6)[..., None]
    if min(h, wd) <= 2:
        mean = col.reshape(-1, 3).sum(0) / max(float(w.sum()), 1e-6)
        return np.where(w[..., None] > 1e-6, norm, mean).astype(np.float32)
    size = (max(wd // 2, 1), max(h // 2, 1))
    coarse = _push_pull(cv2.resize(col, size, interpolation=cv2.INTER_AREA),
                        cv2.resize(w, size, interpolation=cv2.INTER_AREA))
    up = cv2.resize(coarse, (wd, h), interpolation=cv2.INTER_LINEAR)
    k = np.clip(w, 0, 1)[..., None]
    return (norm * k + up * (1 - k)).astype(np.float32)


def load_template(json_path: str | Path) -> Shape:
    """Load a template (JSON + RGBA PNG) and resample it into the canonical frame -> ``Shape``."""
    meta = read_template_json(json_path)
    img = cv2.imread(str(meta["image"]), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise TemplateError(f"mask template {json_path}: image unreadable: {meta['image']}")
    if img.ndim != 3 or img.shape[2] != 4:
        raise TemplateError(f"mask template {json_path}: {meta['image'].name} must be RGBA (has no alpha channel)")
    depth = 65535.0 if img.dtype == np.uint16 else 255.0
    rgba = img.astype(np.float32) / depth
    rgba = rgba[..., [2, 1, 0, 3]]
    idx = sorted(meta["anchors"])
    src = np.array([meta["anchors"][i] for i in idx])
    dst = canonical_to_raster(CANONICAL_LANDMARKS[idx])
    mat = _fit_affine(src, dst)
    scale = float(np.sqrt(abs(np.linalg.det(mat[:, :2]))))
    if scale < 0.7:  # shrink with area averaging first: warpAffine would alias
        rgba = cv2.resize(rgba, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        mat = mat @ np.diag([1 / scale, 1 / scale, 1.0])
    h, w = FRAME_SIZE
    # colours are extended past the alpha support first, so they can be resampled straight (not premultiplied)
    rgba = np.concatenate([_bleed(rgba[..., :3], rgba[..., 3]), rgba[..., 3:]], -1)
    alpha = np.clip(cv2.warpAffine(rgba[..., 3], mat, (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT), 0, 1)
    rgb = np.clip(cv2.warpAffine(rgba[..., :3], mat, (w, h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE), 0, 1)
    lum = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    if "neutral" in meta:
        shade = lum / float(meta["neutral"])
    else:
        low = cv2.GaussianBlur(lum, (0, 0), 3.0)
        ref = float((low * alpha).sum() / max(alpha.sum(), 1e-6))
        shade = np.clip(low / max(ref, 1e-3), 0.4, 1.6)
    if "texture_mask" in meta:
        tm = cv2.imread(str(meta["texture_mask"]), cv2.IMREAD_GRAYSCALE)
        if tm is None:
            raise TemplateError(f"mask template {json_path}: texture mask unreadable: {meta['texture_mask']}")
        tm = tm.astype(np.float32) / 255.0
        if scale < 0.7:
            tm = cv2.resize(tm, (rgba.shape[1], rgba.shape[0]), interpolation=cv2.INTER_AREA)
        texw = cv2.warpAffine(tm, mat, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    else:
        texw = np.ones_like(alpha)
    name = Path(json_path).stem
    params = meta.get("params", {})
    shape = _pack(alpha, shade, texw, rgb, meta.get("kind", "template"), params, name, FIT_ANCHORS,
                  _OWN_PROB[meta["texture"]])
    return shape


def save_shape(shape: Shape, folder: str | Path, stem: str) -> tuple[Path, Path]:
    """Write ``shape`` as ``stem.png`` (RGBA: own colours + alpha), ``stem.tex.png`` (texture weight) and
    ``stem.json`` (anchors at the canonical landmarks in PNG pixels, kind, params) -> (png, json) paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bgra = np.concatenate([shape.colour[..., 2::-1], shape.maps[..., 0:1]], -1)
    png, tex, js = folder / f"{stem}.png", folder / f"{stem}.tex.png", folder / f"{stem}.json"
    cv2.imwrite(str(png), bgra)
    cv2.imwrite(str(tex), shape.maps[..., 2])
    uv = canonical_to_raster(CANONICAL_LANDMARKS) - np.array(shape.origin)
    meta = {"anchors": {str(i): [round(float(uv[i, 0]), 4), round(float(uv[i, 1]), 4)] for i in FIT_ANCHORS},
            "image": png.name, "texture_mask": tex.name, "texture": "replace", "neutral": NEUTRAL,
            "kind": shape.kind, "params": shape.params}
    js.write_text(json.dumps(meta, indent=1))
    return png, js
