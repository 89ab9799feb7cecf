"""The procedural mask library on disk: the writer of the folder ``MaskLibrary.from_dir`` reads
(scripts/make_masks.py is its command line), its contact sheet, and a preview of masked faces.

Layout: DIR/shapes/shape_NNNNN.{png,tex.png,json} (data.masks.templates.save_shape), DIR/textures/texture_NNNNN.
{png,json} (``save_texture``), DIR/contact_sheet.png; item i depends only on (seed, i).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from data.draw import label, tile_grid
from data.io import to_uint8, to_uint8_hwc
from data.masks.canonical import posed_landmarks
from data.masks.shapes import Shape, make_shape
from data.masks.templates import save_shape
from data.masks.textures import Texture, make_texture


def save_texture(tex: Texture, folder: Path, stem: str) -> None:
    """Write a texture as FOLDER/STEM.png (RGB) and FOLDER/STEM.json (kind, tileable, params): the files
    ``MaskLibrary.from_dir`` reads."""
    cv2.imwrite(str(folder / f"{stem}.png"), tex.rgb[..., ::-1])
    (folder / f"{stem}.json").write_text(json.dumps({"kind": tex.kind, "tileable": tex.tileable, "params": tex.params}))


class _Progress:
    """One updating line on stderr (no dependency on tqdm)."""

    def __init__(self, label: str, total: int, quiet: bool = False):
        self.label, self.total, self.quiet, self.t0 = label, total, quiet, time.perf_counter()
        self._last = -1.0

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if self.quiet or (now - self._last < 0.2 and done < self.total):
            return
        self._last = now
        rate = done / max(now - self.t0, 1e-9)
        sys.stderr.write(f"\r{self.label}: {done}/{self.total} ({rate:.0f}/s)")
        if done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(arr).tobytes()).hexdigest()


def write_library(out: str | Path, n_shapes: int = 900, n_textures: int = 800, seed: int = 0,
                  quiet: bool = False) -> dict:
    """Generate and write the library -> summary dict (counts, distinctness, timings, paths).

    Raises RuntimeError if two shapes or two textures came out identical (they are checked by content hash).
    """
    out = Path(out)
    (out / "shapes").mkdir(parents=True, exist_ok=True)
    (out / "textures").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    shape_hash: dict[str, int] = {}
    kinds: dict[str, int] = {}
    prog = _Progress("shapes", n_shapes, quiet)
    first_shapes: list[Shape] = []
    for i in range(n_shapes):
        shape = make_shape(seed, i)
        d = _digest(shape.maps) + _digest(shape.colour)
        if d in shape_hash:
            raise RuntimeError(f"shape {i} duplicates shape {shape_hash[d]}")
        shape_hash[d] = i
        kinds[shape.kind] = kinds.get(shape.kind, 0) + 1
        save_shape(shape, out / "shapes", f"shape_{i:05d}")
        if i < 48:
            first_shapes.append(shape)
        prog(i + 1)
    t_shapes = time.perf_counter() - t0
    tex_hash: dict[str, int] = {}
    tex_kinds: dict[str, int] = {}
    prog = _Progress("textures", n_textures, quiet)
    first_tex: list[Texture] = []
    for j in range(n_textures):
        tex = make_texture(seed, j)
        d = _digest(tex.rgb)
        if d in tex_hash:
            raise RuntimeError(f"texture {j} duplicates texture {tex_hash[d]}")
        tex_hash[d] = j
        tex_kinds[tex.kind] = tex_kinds.get(tex.kind, 0) + 1
        save_texture(tex, out / "textures", f"texture_{j:05d}")
        if j < 48:
            first_tex.append(tex)
        prog(j + 1)
    t_total = time.perf_counter() - t0
    sheet = contact_sheet(first_shapes, first_tex)
    cv2.imwrite(str(out / "contact_sheet.png"), sheet[..., ::-1])
    summary = {"shapes": n_shapes, "textures": n_textures, "seed": seed, "shape_kinds": kinds,
               "texture_kinds": tex_kinds, "distinct_shapes": len(shape_hash), "distinct_textures": len(tex_hash),
               "seconds_shapes": round(t_shapes, 2), "seconds_total": round(t_total, 2), "out": str(out)}
    return summary


# ---------------------------------------------------------------------------------------------------------------
# contact sheets

def _shape_tile(shape: Shape, texture: Texture | None, size: int = 128) -> np.ndarray:
    """A shape on a grey canvas, in its own colours or textured (a quick canonical-frame render, no face)."""
    from data.masks.canonical import FRAME_SIZE

    canvas = np.full(FRAME_SIZE + (3,), 0.42, np.float32)
    h, w = shape.size
    u0, v0 = int(round(shape.origin[0])), int(round(shape.origin[1]))
    h, w = min(h, FRAME_SIZE[0] - v0), min(w, FRAME_SIZE[1] - u0)
    a = shape.alpha[:h, :w, None]
    col = shape.rgb[:h, :w]
    if texture is not None:
        reps = (-(-h // texture.rgb.shape[0]), -(-w // texture.rgb.shape[1]), 1)
        tex = np.tile(texture.rgb, reps)[:h, :w].astype(np.float32) / 255 * shape.shade[:h, :w, None]
        tw = shape.texture_weight[:h, :w, None]
        col = col + tw * (tex - col)
    region = canvas[v0:v0 + h, u0:u0 + w]
    canvas[v0:v0 + h, u0:u0 + w] = region + a * (col - region)
    img = to_uint8(canvas)
    img = img[: int(FRAME_SIZE[0] * 0.62)]  # the neck part is mostly empty
    img = cv2.resize(img, (size, int(size * img.shape[0] / img.shape[1])), interpolation=cv2.INTER_AREA)
    label(img, shape.kind)
    return img


def contact_sheet(shapes: list[Shape], textures: list[Texture]) -> np.ndarray:
    """Rows of shapes in their own colours, the same shapes textured, then the textures -> (H, W, 3) uint8 RGB."""
    tiles = [_shape_tile(s, None) for s in shapes]
    if textures:
        tiles += [_shape_tile(s, textures[k % len(textures)]) for k, s in enumerate(shapes)]
    sheets = [tile_grid(tiles, 12, fill=255)] if tiles else []
    if textures:
        tt = []
        for t in textures:
            img = cv2.resize(t.rgb, (96, 96), interpolation=cv2.INTER_AREA)
            label(img, t.kind)
            tt.append(img)
        tex_sheet = tile_grid(tt, 16, fill=255)
        if sheets:
            width = max(sheets[0].shape[1], tex_sheet.shape[1])
            sheets = [np.pad(s, ((0, 8), (0, width - s.shape[1]), (0, 0)), constant_values=255)
                      for s in sheets + [tex_sheet]]
        else:
            sheets = [tex_sheet]
    return np.concatenate(sheets, 0)


# ---------------------------------------------------------------------------------------------------------------
# preview on faces

def draw_face(landmarks: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A simple drawn face around 68 landmarks (skin, hair, eyes, brows, nose, lips, neck, side light)
    -> (3, size, size) float32 in [0, 1]. Only for previews and tests when no renderer is available."""
    lm = np.asarray(landmarks, np.float64)
    s = 16.0

    def pts(idx):
        return np.round(lm[list(idx)] * s).astype(np.int32)

    bg = rng.uniform(0.2, 0.9, 3)
    img = np.ones((size, size, 3), np.float32) * bg
    skin = np.array([0.93, 0.76, 0.62]) * rng.uniform(0.45, 1.05) + rng.normal(0, 0.03, 3)
    hair = rng.uniform(0.05, 0.45) * np.array([1.0, 0.8, 0.6])
    canvas = np.zeros((size, size, 3), np.uint8)
    eye_c = (lm[36] + lm[45]) / 2
    fw = np.linalg.norm(lm[16] - lm[0])
    up = (eye_c - lm[8]) / np.linalg.norm(eye_c - lm[8])
    ang = math.degrees(math.atan2(up[0], -up[1]))
    down = (lm[8] - eye_c) * 1.5
    neck = np.array([lm[5], lm[11], lm[11] + down + [fw * 0.1, 0], lm[5] + down - [fw * 0.1, 0]])
    cv2.fillPoly(canvas, [np.round(neck * s).astype(np.int32)], (1, 1, 1), cv2.LINE_AA, 4)
    head_c = eye_c - up * fw * 0.05
    cv2.ellipse(canvas, (int(head_c[0] * s), int(head_c[1] * s)), (int(fw * 0.56 * s), int(fw * 0.62 * s)), ang,
                180, 360, (3, 3, 3), -1, cv2.LINE_AA, 4)
    cv2.ellipse(canvas, (int(head_c[0] * s), int(head_c[1] * s)), (int(fw * 0.5 * s), int(fw * 0.5 * s)), ang,
                180, 360, (1, 1, 1), -1, cv2.LINE_AA, 4)
    cv2.fillPoly(canvas, [pts(range(17))], (1, 1, 1), cv2.LINE_AA, 4)
    face = canvas[..., 0]
    img[face == 1] = skin
    img[face == 3] = hair
    light = np.linspace(-1, 1, size, dtype=np.float32)[None, :] * rng.uniform(-0.25, 0.25)
    img[face == 1] *= (1 + light.repeat(size, 0))[face == 1][:, None]
    layer = img.copy()
    for eye in (range(36, 42), range(42, 48)):
        cv2.fillPoly(layer, [pts(eye)], (0.95, 0.95, 0.95), cv2.LINE_AA, 4)
        c = lm[list(eye)].mean(0)
        r = np.linalg.norm(lm[eye[0]] - lm[eye[3]]) * 0.22
        cv2.circle(layer, (int(c[0] * s), int(c[1] * s)), int(r * s), (0.25, 0.18, 0.1), -1, cv2.LINE_AA, 4)
    for brow in (range(17, 22), range(22, 27)):
        cv2.polylines(layer, [pts(brow)], False, tuple(hair.tolist()), max(1, int(fw * 0.03)), cv2.LINE_AA, 4)
    cv2.polylines(layer, [pts(range(27, 31))], False, tuple((skin * 0.75).tolist()), 1, cv2.LINE_AA, 4)
    cv2.polylines(layer, [pts(range(31, 36))], False, tuple((skin * 0.55).tolist()), 1, cv2.LINE_AA, 4)
    cv2.fillPoly(layer, [pts(range(48, 60))], tuple((skin * np.array([0.85, 0.55, 0.55])).tolist()), cv2.LINE_AA, 4)
    cv2.fillPoly(layer, [pts(range(60, 68))], (0.15, 0.05, 0.05), cv2.LINE_AA, 4)
    img = cv2.GaussianBlur(layer, (0, 0), 0.7)
    return np.clip(img, 0, 1).transpose(2, 0, 1).copy()


def preview_faces(n: int, size: int, seed: int):
    """n (image (3,H,W) float32, landmarks (68,2)) pairs: SyntheticFaces from data.synthetic when it is available,
    else drawn faces with random yaw, roll and mouth opening."""
    try:
        from data.synthetic import SyntheticFaces

        ds = SyntheticFaces(n, size, seed=seed)
        out = []
        for i in range(n):
            item = ds[i]
            out.append((item["image"].numpy(), item["landmarks"].numpy()))
        return out, "SyntheticFaces"
    except Exception as e:  # noqa: BLE001 - any failure of the optional renderer path falls back to drawn faces
        reason = f"{type(e).__name__}: {e}".splitlines()[0]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lm = posed_landmarks(yaw=rng.uniform(-35, 35), pitch=rng.uniform(-10, 10), roll=rng.uniform(-15, 15),
                             mouth_open=rng.uniform(0, 0.25) if rng.random() < 0.3 else 0.0, size=size,
                             scale=size * rng.uniform(0.22, 0.3),
                             center=(size * rng.uniform(0.45, 0.55), size * rng.uniform(0.45, 0.55)))
        out.append((draw_face(lm, size, rng), lm))
    return out, f"drawn faces ({reason})"


def write_preview(out: str | Path, library=None, n: int = 64, size: int = 256, seed: int = 0,
                  quiet: bool = False) -> Path:
    """Synthesise ``n`` masked pairs on preview faces and write ``out/preview.png`` (8 columns)."""
    import torch

    from data.synth import MaskedPairSynthesizer

    synth = MaskedPairSynthesizer(library)
    faces, source = preview_faces(n, size, seed)
    tiles = []
    prog = _Progress("preview", n, quiet)
    for k, (img, lm) in enumerate(faces):
        masked, _ = synth.synth(torch.from_numpy(np.ascontiguousarray(img, np.float32)), lm, (seed, k))
        tiles.append(to_uint8_hwc(masked))
        prog(k + 1)
    path = Path(out) / "preview.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), tile_grid(tiles, 8, fill=255)[..., ::-1])
    if not quiet:
        print(f"preview: {n} pairs on {source} -> {path}")
    return path
