"""Parametric mask shapes in the canonical frame: surgical, KN95, N95 cup, cloth, neck gaiter, bandana.

A shape is drawn from a parameter dict (``shape_params(kind, rng)``) by ``render_shape(kind, params)``; shape ``i``
of a procedural library is ``make_shape(seed, i)``, a pure function of ``(seed, i)``. Every shape covers the nose
tip, the mouth and the chin of the canonical face and keeps clear of the eyes (checked by ``check_coverage``; the
generator redraws the parameters until it holds).

Rasters are stored cropped to the mask with their offset in the full canonical raster (see ``canonical.py``), as two
4-channel uint8 arrays (4 channels: cv2.remap is several times faster on 1 or 4 channels than on 3 or 6):
- ``maps`` (h, w, 4) = [alpha, shade, texture weight, 255]: alpha is the opacity (anti-aliased edges); shade the
  multiplicative fold/pleat/seam shading of the texture, 128 = 1.0; texture weight 255 where a texture replaces the
  colour (the fabric), 0 on accessories (loops, straps, valve);
- ``colour`` (h, w, 4) = [r, g, b, 255]: the shape's own colours (a neutral grey fabric times the shading,
  accessories in their colours).
Colours and shading are defined beyond the alpha support so bilinear resampling never mixes in black at the edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from data.io import to_uint8
from data.masks.canonical import (
    CANONICAL_LANDMARKS,
    CHIN,
    EYES,
    FIT_ANCHORS,
    FRAME,
    FRAME_SIZE,
    MOUTH,
    NOSE_TIP,
    PX_PER_UNIT,
    canonical_to_raster,
    jaw_point,
    jaw_x_at,
    jaw_y_at,
)

NEUTRAL = 0.72  # grey level of the untextured fabric in a shape's own colours (its PNG); shade = luminance / NEUTRAL
SHAPE_KINDS = ("surgical", "kn95", "n95", "cloth", "gaiter", "bandana")
KIND_WEIGHTS = (0.32, 0.18, 0.10, 0.22, 0.09, 0.09)


@dataclass
class Shape:
    """A mask template rasterised in the canonical frame.

    maps: (h, w, 4) uint8 [alpha, shade (128 = 1.0), texture weight, 255]; colour: (h, w, 4) uint8 [r, g, b, 255]
    (see the module docstring). origin: (u0, v0) full-frame raster pixel coordinates of pixel (0, 0).
    anchors: landmark indices the fit uses; own_prob: probability that a sample keeps the own colours instead of a
    texture (user templates); kind, params, name: provenance.
    """

    maps: np.ndarray
    colour: np.ndarray
    origin: tuple[float, float]
    kind: str = "template"
    params: dict = field(default_factory=dict)
    name: str = ""
    anchors: tuple[int, ...] = FIT_ANCHORS
    own_prob: float = 0.0
    ppu: float = PX_PER_UNIT

    def __post_init__(self):
        # accessories (texture weight < 1) need the own colours even when a texture is painted
        self.has_accessories = bool(self.maps[..., 2].min() < 255)
        # (x0, y0, x1, y1), end exclusive: the template pixels with alpha > 0 (the synthesiser fits only these)
        x, y, w, h = cv2.boundingRect(np.ascontiguousarray(self.maps[..., 0]))
        self.alpha_box = (x, y, x + w, y + h)
        # the anchors as an index array and their canonical positions (K, 2), looked up once, not once a pair
        self.anchor_index = np.asarray(self.anchors, np.intp)
        self.anchor_canonical = CANONICAL_LANDMARKS[self.anchor_index]

    @property
    def size(self) -> tuple[int, int]:
        """(h, w) of the rasters."""
        return self.maps.shape[:2]

    @property
    def alpha(self) -> np.ndarray:
        """(h, w) float32 opacity in [0, 1]."""
        return self.maps[..., 0].astype(np.float32) / 255.0

    @property
    def shade(self) -> np.ndarray:
        """(h, w) float32 multiplicative shading (1 = flat)."""
        return self.maps[..., 1].astype(np.float32) / 128.0

    @property
    def texture_weight(self) -> np.ndarray:
        """(h, w) float32 in [0, 1]: where a texture replaces the own colour."""
        return self.maps[..., 2].astype(np.float32) / 255.0

    @property
    def rgb(self) -> np.ndarray:
        """(h, w, 3) float32 own colours in [0, 1]."""
        return self.colour[..., :3].astype(np.float32) / 255.0

    def full_alpha(self) -> np.ndarray:
        """(H, W) float32 alpha pasted into the full canonical raster (``FRAME_SIZE``)."""
        out = np.zeros(FRAME_SIZE, np.float32)
        u0, v0 = int(round(self.origin[0])), int(round(self.origin[1]))
        h, w = self.size
        out[v0:v0 + h, u0:u0 + w] = self.alpha[: FRAME_SIZE[0] - v0, : FRAME_SIZE[1] - u0]
        return out


# ---------------------------------------------------------------------------------------------------------------
# canonical grid and raster helpers

def _grid() -> tuple[np.ndarray, np.ndarray]:
    h, w = FRAME_SIZE
    xs = FRAME.x0 + np.arange(w, dtype=np.float32) / PX_PER_UNIT
    ys = FRAME.y0 + np.arange(h, dtype=np.float32) / PX_PER_UNIT
    return np.meshgrid(xs, ys)


_GX, _GY = _grid()


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _fill(poly: np.ndarray) -> np.ndarray:
    """Anti-aliased fill of a canonical polygon (N, 2) -> (H, W) float32 coverage."""
    img = np.zeros(FRAME_SIZE, np.uint8)
    uv = np.round(canonical_to_raster(poly) * 16).astype(np.int32)
    cv2.fillPoly(img, [uv], 255, lineType=cv2.LINE_AA, shift=4)
    return img.astype(np.float32) / 255.0


def _polyline(img: np.ndarray, pts: np.ndarray, width: float, value: float = 1.0) -> None:
    """Draw an anti-aliased canonical polyline of ``width`` units into the float image (max-combined)."""
    layer = np.zeros(FRAME_SIZE, np.uint8)
    uv = np.round(canonical_to_raster(pts) * 16).astype(np.int32)
    cv2.polylines(layer, [uv], False, 255, thickness=max(1, int(round(width * PX_PER_UNIT))),
                  lineType=cv2.LINE_AA, shift=4)
    np.maximum(img, layer.astype(np.float32) / 255.0 * value, out=img)


def _round_edges(cov: np.ndarray, radius_px: float) -> np.ndarray:
    """Round corners by blurring and re-thresholding; leaves a ~1 px anti-aliased ramp."""
    if radius_px < 0.75:
        return cov
    b = cv2.GaussianBlur(cov, (0, 0), radius_px)
    return np.clip((b - 0.5) * radius_px * math.sqrt(2 * math.pi) + 0.5, 0.0, 1.0)


def _bezier(p0, p1, p2, n: int = 24) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2 = (np.asarray(p, dtype=np.float64) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t * t * p2


def eye_safe_top(x: np.ndarray) -> np.ndarray:
    """Highest allowed top edge: it may reach the nose bridge between the eyes but stays under the lower lids."""
    return np.minimum(-0.26 + 0.6 * np.abs(x), -0.1)


def _top_edge(x: np.ndarray, p: dict) -> np.ndarray:
    """Top edge y(x): ``top_c`` over the nose, ``top_l``/``top_r`` at |x| = ``top_span``, exponent ``top_p``, a
    rounded peak of width ``top_round``, never above ``eye_safe_top``."""
    u = np.clip(np.abs(x) / p["top_span"], 0.0, 1.0)
    e = p["top_round"]
    g = np.maximum(np.sqrt(u * u + e * e) - e, 0.0) / (math.sqrt(1 + e * e) - e)
    g = g ** p["top_p"]
    side = np.where(x < 0, p["top_l"], p["top_r"])
    return np.maximum(p["top_c"] + (side - p["top_c"]) * g, eye_safe_top(x))


def _lower_outline(p: dict, n: int = 121) -> np.ndarray:
    """Closed polygon below which the mask lies: the jaw curve scaled about (0, yc) by ``side_l``/``side_r`` at ear
    level and by the factor that puts the chin point at ``bottom``, blended with exponent ``bottom_q``."""
    yc = 0.3
    phi = np.linspace(-math.pi / 2, math.pi / 2, n)
    jaw = jaw_point(phi)[:, :2]
    f0 = (p["bottom"] - yc) / (1.0 - yc)
    side = np.where(phi < 0, p["side_l"], p["side_r"])
    f = side + (f0 - side) * np.cos(phi) ** p["bottom_q"]
    pts = np.array([0.0, yc]) + f[:, None] * (jaw - np.array([0.0, yc]))
    top = FRAME.y0 - 0.1
    return np.concatenate([[[pts[0, 0], top]], pts, [[pts[-1, 0], top]]], 0)


def _asym_grid(p: dict) -> tuple[np.ndarray, np.ndarray]:
    """Grid coordinates in the shape's own frame: a small rotation/shift about the mouth makes shapes asymmetric."""
    a = math.radians(p.get("tilt", 0.0))
    dx = p.get("shift", 0.0)
    cx, cy = 0.0, 0.45
    x, y = _GX - cx - dx, _GY - cy
    ca, sa = math.cos(a), math.sin(a)
    return (ca * x + sa * y + cx).astype(np.float32), (-sa * x + ca * y + cy).astype(np.float32)


def _to_frame(pts: np.ndarray, p: dict) -> np.ndarray:
    """Shape-frame polygon -> canonical (the inverse of ``_asym_grid``)."""
    a = math.radians(p.get("tilt", 0.0))
    cx, cy = 0.0, 0.45
    x, y = pts[:, 0] - cx, pts[:, 1] - cy
    ca, sa = math.cos(a), math.sin(a)
    return np.stack([ca * x - sa * y + cx + p.get("shift", 0.0), sa * x + ca * y + cy], 1)


def _edge_distance(alpha: np.ndarray) -> np.ndarray:
    """Distance (canonical units) of each inside pixel to the mask outline."""
    inside = (alpha > 0.5).astype(np.uint8)
    return cv2.distanceTransform(inside, cv2.DIST_L2, 5) / PX_PER_UNIT


# ---------------------------------------------------------------------------------------------------------------
# shading primitives (multiplicative factors around 1)

def _fold(x, y, f: dict) -> np.ndarray:
    """A soft crease: bright on one side, dark on the other, fading along its length."""
    c, s = math.cos(f["angle"]), math.sin(f["angle"])
    along = (x - f["x"]) * c + (y - f["y"]) * s
    across = -(x - f["x"]) * s + (y - f["y"]) * c
    t = across / f["width"]
    return f["amp"] * 1.65 * t * np.exp(-0.5 * t * t) * np.exp(-0.5 * (along / f["length"]) ** 2)


def _seam(dist: np.ndarray, width: float, amp: float, stitch: float = 0.0, phase: np.ndarray | None = None):
    """A seam along the zero set of a distance field: dark groove with optional dashed stitches beside it."""
    out = -amp * np.exp(-0.5 * (dist / width) ** 2)
    if stitch > 0 and phase is not None:
        dash = (np.sin(phase) > 0.2).astype(np.float32)
        out = out - stitch * dash * np.exp(-0.5 * ((np.abs(dist) - 3 * width) / (0.6 * width)) ** 2)
    return out


def _common_shading(alpha, x, y, p: dict) -> np.ndarray:
    """Form shading every mask has: a darker rim, sides turning away, the underside of the chin, random creases."""
    d = _edge_distance(alpha)
    shade = 1.0 - p["rim"] * np.exp(-d / p["rim_w"])
    shade *= 1.0 - p["dome"] * np.clip(x * x, 0, 1.5)
    under = _smoothstep(0.0, 0.16, y - jaw_y_at(x).astype(np.float32) - 0.02)
    shade *= 1.0 - p["under"] * under * (np.abs(x) < 1.0)
    ridge = np.exp(-0.5 * (x / 0.13) ** 2) * _smoothstep(0.45, 0.1, y)
    shade *= 1.0 + p["ridge"] * ridge - 0.5 * p["ridge"] * np.exp(-0.5 * ((np.abs(x) - 0.32) / 0.1) ** 2) * (y < 0.4)
    for f in p["folds"]:
        shade = shade * (1.0 + _fold(x, y, f))
    return shade.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# parameter sampling

def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _folds(rng: np.random.Generator, n_lo: int, n_hi: int, region=(-0.8, 0.8, 0.1, 1.2)) -> list[dict]:
    out = []
    for _ in range(int(rng.integers(n_lo, n_hi + 1))):
        out.append({"x": _u(rng, region[0], region[1]), "y": _u(rng, region[2], region[3]),
                    "angle": _u(rng, -math.pi, math.pi), "amp": _u(rng, 0.04, 0.16), "width": _u(rng, 0.03, 0.09),
                    "length": _u(rng, 0.1, 0.45)})
    return out


def _accessory_colour(rng: np.random.Generator, palette: list[tuple[float, float, float]]) -> list[float]:
    base = np.array(palette[int(rng.integers(len(palette)))])
    return [float(v) for v in np.clip(base + rng.normal(0, 0.03, 3), 0, 1)]


_LOOP_COLOURS = [(0.95, 0.95, 0.95), (0.92, 0.92, 0.9), (0.15, 0.15, 0.17), (0.85, 0.8, 0.72), (0.6, 0.75, 0.9)]
_STRAP_COLOURS = [(0.95, 0.95, 0.95), (0.95, 0.85, 0.2), (0.3, 0.45, 0.8), (0.75, 0.75, 0.78), (0.9, 0.5, 0.6)]
_VALVE_COLOURS = [(0.92, 0.92, 0.92), (0.25, 0.25, 0.27), (0.6, 0.62, 0.66), (0.9, 0.45, 0.15), (0.8, 0.82, 0.85)]


def _base_params(rng: np.random.Generator) -> dict:
    asym = _u(rng, 0.0, 0.06)
    return {"tilt": _u(rng, -2.5, 2.5), "shift": _u(rng, -0.025, 0.025), "asym": asym,
            "rim": _u(rng, 0.05, 0.2), "rim_w": _u(rng, 0.03, 0.1), "dome": _u(rng, 0.04, 0.2),
            "under": _u(rng, 0.15, 0.45), "ridge": _u(rng, 0.0, 0.12)}


def shape_params(kind: str, rng: np.random.Generator) -> dict:
    """Draw a parameter dict for ``kind`` (one of ``SHAPE_KINDS``)."""
    p = _base_params(rng)
    a = p["asym"]
    if kind in ("surgical", "cloth", "kn95"):
        if kind == "surgical":
            top_c, top_s, top_p, top_round = _u(rng, -0.2, 0.0), _u(rng, -0.02, 0.16), _u(rng, 0.8, 1.8), \
                _u(rng, 0.03, 0.2)
            side, bottom, q, rnd = _u(rng, 0.9, 1.04), _u(rng, 1.06, 1.3), _u(rng, 0.4, 1.6), _u(rng, 0.5, 2.0)
        elif kind == "cloth":
            top_c, top_s, top_p, top_round = _u(rng, -0.2, -0.03), _u(rng, 0.0, 0.22), _u(rng, 1.2, 2.2), \
                _u(rng, 0.12, 0.4)
            side, bottom, q, rnd = _u(rng, 0.88, 1.0), _u(rng, 1.08, 1.3), _u(rng, 0.6, 2.0), _u(rng, 2.0, 5.0)
        else:
            top_c, top_s, top_p, top_round = _u(rng, -0.21, -0.1), _u(rng, 0.05, 0.25), _u(rng, 0.75, 1.05), \
                _u(rng, 0.0, 0.06)
            side, bottom, q, rnd = _u(rng, 0.84, 0.96), _u(rng, 1.12, 1.32), _u(rng, 2.0, 5.0), _u(rng, 0.5, 1.5)
        p.update(top_c=top_c, top_l=top_s + a * rng.choice([-1, 1]), top_r=top_s, top_p=top_p,
                 top_round=top_round, top_span=_u(rng, 0.85, 1.0), side_l=side, side_r=side + _u(rng, -a, a),
                 bottom=bottom, bottom_q=q, round_px=rnd)
    if kind == "surgical":
        p.update(pleats=[_u(rng, 0.15, 0.3) + 0.2 * k + _u(rng, -0.03, 0.03) for k in range(int(rng.integers(2, 5)))],
                 pleat_amp=_u(rng, 0.08, 0.22), pleat_w=_u(rng, 0.03, 0.07), bind_w=_u(rng, 0.04, 0.09),
                 bind_amp=_u(rng, -0.06, 0.08), wire_w=_u(rng, 0.03, 0.07), folds=_folds(rng, 0, 3),
                 loops=True, loop_colour=_accessory_colour(rng, _LOOP_COLOURS), loop_w=_u(rng, 0.025, 0.045))
    elif kind == "cloth":
        p.update(centre_seam=bool(rng.random() < 0.7), side_seams=bool(rng.random() < 0.35),
                 seam_x=_u(rng, 0.42, 0.6), hem_w=_u(rng, 0.03, 0.07), stitch=_u(rng, 0.0, 0.12),
                 folds=_folds(rng, 1, 5), loops=bool(rng.random() < 0.8),
                 loop_colour=_accessory_colour(rng, _LOOP_COLOURS), loop_w=_u(rng, 0.03, 0.06))
    elif kind == "kn95":
        p.update(panel_amp=_u(rng, 0.03, 0.14), weld_w=_u(rng, 0.03, 0.06), h_seam=_u(rng, 0.22, 0.42),
                 folds=_folds(rng, 0, 2), loops=True, loop_colour=_accessory_colour(rng, _LOOP_COLOURS),
                 loop_w=_u(rng, 0.025, 0.04), valve=bool(rng.random() < 0.2))
    elif kind == "n95":
        p.update(top_y=_u(rng, -0.18, -0.02), bottom_y=_u(rng, 1.07, 1.24), rx=_u(rng, 0.8, 0.96),
                 exponent=_u(rng, 2.0, 2.8), round_px=_u(rng, 0.5, 1.5), clip_w=_u(rng, 0.05, 0.09),
                 clip_len=_u(rng, 0.25, 0.45), rim_band=_u(rng, 0.03, 0.07), folds=_folds(rng, 0, 1),
                 valve=bool(rng.random() < 0.45), straps=True, strap_colour=_accessory_colour(rng, _STRAP_COLOURS),
                 strap_w=_u(rng, 0.04, 0.08), strap_y=[_u(rng, 0.05, 0.25), _u(rng, 0.75, 0.95)])
        p.update(dome=_u(rng, 0.1, 0.25))
    elif kind == "gaiter":
        top_c = _u(rng, -0.12, 0.02)
        p.update(top_c=top_c, top_l=top_c + _u(rng, 0.0, 0.15), top_r=top_c + _u(rng, 0.0, 0.15), top_p=_u(rng, 1, 2),
                 top_round=_u(rng, 0.1, 0.4), top_span=1.0, side=_u(rng, 1.02, 1.12), neck_w=_u(rng, 0.68, 0.9),
                 flare=_u(rng, -0.08, 0.1), hem_y=_u(rng, 1.9, 2.4), round_px=_u(rng, 1.0, 3.0),
                 wrinkles=_u(rng, 0.03, 0.1), wrinkle_freq=_u(rng, 2.5, 6.0), folds=_folds(rng, 1, 4))
        p.update(under=_u(rng, 0.2, 0.45))
    elif kind == "bandana":
        top_c = _u(rng, -0.12, 0.03)
        p.update(top_c=top_c, top_l=top_c + _u(rng, -0.03, 0.1), top_r=top_c + _u(rng, -0.03, 0.1),
                 top_p=_u(rng, 1, 2), top_round=_u(rng, 0.1, 0.4), top_span=1.0, side=_u(rng, 1.0, 1.1),
                 angle_phi=_u(rng, 0.8, 1.15), tip_x=_u(rng, -0.2, 0.2), tip_y=_u(rng, 1.5, 2.1),
                 round_px=_u(rng, 2.0, 5.0), hem_w=_u(rng, 0.03, 0.06),
                 folds=_folds(rng, 2, 5, region=(-0.7, 0.7, 0.6, 1.6)))
    else:
        raise ValueError(f"unknown mask kind {kind!r}; valid: {', '.join(SHAPE_KINDS)}")
    if p.get("valve"):
        p.update(valve_x=float(rng.choice([-1, 1])) * _u(rng, 0.3, 0.45), valve_y=_u(rng, 0.5, 0.75),
                 valve_r=_u(rng, 0.11, 0.19), valve_colour=_accessory_colour(rng, _VALVE_COLOURS))
    return p


# ---------------------------------------------------------------------------------------------------------------
# rendering

def _loops(acc: np.ndarray, p: dict, alpha: np.ndarray) -> None:
    """Ear loops from the mask's side corners towards the ear."""
    inside = alpha > 0.5
    rows = np.where(inside.any(1))[0]
    for sgn in (-1, 1):
        xs = np.where(inside, _GX * sgn, -np.inf).max(1)
        ok = rows[np.isfinite(xs[rows])]
        top_v, bot_v = ok[int(len(ok) * 0.08)], ok[int(len(ok) * 0.62)]
        xt, yt = sgn * float(xs[top_v]) - sgn * 0.03, float(_GY[top_v, 0]) + 0.03
        xb, yb = sgn * float(xs[bot_v]) - sgn * 0.03, float(_GY[bot_v, 0])
        ear_x = sgn * 1.12
        _polyline(acc, _bezier((xt, yt), (ear_x, yt - 0.05), (ear_x + sgn * 0.02, -0.32)), p["loop_w"])
        _polyline(acc, _bezier((xb, yb), (ear_x + sgn * 0.06, yb - 0.05), (ear_x + sgn * 0.05, 0.1)), p["loop_w"])


def _valve(acc_img: np.ndarray, acc_col: np.ndarray, p: dict) -> None:
    """A round exhalation valve with a ring and slots, painted into the accessory layers."""
    cx, cy, r = p["valve_x"], p["valve_y"], p["valve_r"]
    d = np.sqrt((_GX - cx) ** 2 + (_GY - cy) ** 2)
    disk = np.clip((r - d) * PX_PER_UNIT + 0.5, 0, 1)
    np.maximum(acc_img, disk, out=acc_img)
    body = 1.0 - 0.25 * np.exp(-0.5 * ((d - 0.8 * r) / (0.05 * r)) ** 2) + 0.12 * (1 - d / r)
    slots = (np.sin((_GY - cy) / r * math.pi * 4) > 0.6) & (np.abs(_GX - cx) < 0.5 * r) & (d < 0.65 * r)
    body = body * np.where(slots, 0.7, 1.0)
    for c in range(3):
        acc_col[..., c] = np.where(disk > 0, p["valve_colour"][c] * body, acc_col[..., c])


def _outline_region(p: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    cov = _fill(_to_frame(_lower_outline(p), p))
    top = np.clip((y - _top_edge(x, p)) * PX_PER_UNIT + 0.5, 0.0, 1.0)
    return _round_edges(cov * top, p["round_px"])


def _render_body(kind: str, p: dict) -> tuple[np.ndarray, np.ndarray]:
    """-> (alpha, shade) full-frame float32 for the fabric body of the mask."""
    x, y = _asym_grid(p)
    if kind in ("surgical", "cloth", "kn95"):
        alpha = _outline_region(p, x, y)
    elif kind == "n95":
        yc, ry = (p["top_y"] + p["bottom_y"]) / 2, (p["bottom_y"] - p["top_y"]) / 2
        e = p["exponent"]
        r = (np.abs(x / p["rx"]) ** e + np.abs((y - yc) / ry) ** e) ** (1 / e)
        cov = np.clip((1 - r) * ry * PX_PER_UNIT + 0.5, 0, 1) * np.clip((y - eye_safe_top(x)) * PX_PER_UNIT + 0.5, 0, 1)
        alpha = _round_edges(cov, p["round_px"])
    elif kind == "gaiter":
        half = np.maximum(p["side"] * jaw_x_at(np.minimum(y, 0.99)) * (y < 1.0),
                          (p["neck_w"] + p["flare"] * (y - 1.0)) * (y > 0.3))
        cov = np.clip((half - np.abs(x)) * PX_PER_UNIT + 0.5, 0, 1)
        cov *= np.clip((y - _top_edge(x, p)) * PX_PER_UNIT + 0.5, 0, 1)
        hem = p["hem_y"] + 0.05 * np.sin(x * 3.0 + p["hem_y"] * 7)
        cov *= np.clip((hem - y) * PX_PER_UNIT + 0.5, 0, 1)
        alpha = _round_edges(cov.astype(np.float32), p["round_px"])
    elif kind == "bandana":
        phi = np.linspace(-math.pi / 2, -p["angle_phi"], 40)
        left = jaw_point(phi)[:, :2] * np.array([p["side"], 1.0]) + np.array([0, 0.04])
        right = left[::-1] * np.array([-1.0, 1.0])
        poly = np.concatenate([[[left[0, 0], FRAME.y0 - 0.1]], left, [[p["tip_x"], p["tip_y"]]], right,
                               [[right[-1, 0], FRAME.y0 - 0.1]]], 0)
        cov = _fill(_to_frame(poly, p)) * np.clip((y - _top_edge(x, p)) * PX_PER_UNIT + 0.5, 0, 1)
        alpha = _round_edges(cov, p["round_px"])
    else:
        raise ValueError(f"unknown mask kind {kind!r}; valid: {', '.join(SHAPE_KINDS)}")
    alpha = alpha.astype(np.float32)
    shade = _common_shading(alpha, x, y, p)
    shade *= _kind_shading(kind, p, alpha, x, y)
    return alpha, shade


def _kind_shading(kind: str, p: dict, alpha: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    one = np.ones_like(x)
    d = _edge_distance(alpha)
    if kind == "surgical":
        top = _top_edge(x, p)
        bottom = np.maximum(jaw_y_at(x) + (p["bottom"] - 1.0), top + 0.3)
        s = (y - top) / (bottom - top)
        out = one.copy()
        xs = np.where(alpha > 0.5, np.abs(x), 0).max()
        fade = _smoothstep(xs, xs - 0.25, np.abs(x))
        for t in p["pleats"]:
            dd = (s - t) / p["pleat_w"]
            profile = -np.where(dd > 0, np.exp(-dd * 1.5), 0) + 0.45 * np.exp(-0.5 * ((dd + 0.6) / 0.5) ** 2)
            out += p["pleat_amp"] * profile * (0.35 + 0.65 * fade)
        band = _smoothstep(xs - p["bind_w"] - 0.01, xs - p["bind_w"] + 0.01, np.abs(x))
        out *= 1.0 + p["bind_amp"] * band
        out *= 1.0 + _seam(np.abs(x) - (xs - p["bind_w"]), 0.008, 0.15)
        out *= 1.0 + 0.06 * np.exp(-0.5 * ((d - p["wire_w"] / 2) / (p["wire_w"] / 2)) ** 2) * (s < 0.3)
        return out
    if kind == "kn95":
        seam_x = 0.015 * np.sin(y * 2.0)
        out = 1.0 + p["panel_amp"] * np.tanh((x - seam_x) / 0.05)
        out *= 1.0 + _seam(x - seam_x, 0.01, 0.25)
        hs = y - (_top_edge(x, p) + p["h_seam"])
        out *= 1.0 + 0.5 * _seam(hs, 0.008, 0.2) + 0.05 * np.tanh(hs / 0.04)
        out *= 1.0 + _seam(d - p["weld_w"], 0.006, 0.25, 0.12, (x + y) * 90.0)
        return out
    if kind == "n95":
        yc = (p["top_y"] + p["bottom_y"]) / 2
        out = 1.0 - 0.12 * np.clip(((y - yc) / 0.7) ** 2, 0, 1.5)
        out *= 1.0 + 0.08 * np.exp(-0.5 * ((d - p["rim_band"]) / 0.012) ** 2) - 0.1 * (d < p["rim_band"])
        clip = (np.abs(x) < p["clip_len"] / 2) & (d < p["clip_w"]) & (y < yc)
        out *= np.where(clip, 1.12, 1.0)
        return out
    if kind == "cloth":
        out = one.copy()
        if p["centre_seam"]:
            out *= 1.0 + _seam(x - 0.01 * np.sin(y * 3), 0.012, 0.3, p["stitch"], y * 120.0)
        if p["side_seams"]:
            for sgn in (-1, 1):
                out *= 1.0 + _seam(sgn * x - p["seam_x"] - 0.06 * (y - 0.5), 0.01, 0.2, p["stitch"], y * 120.0)
        out *= 1.0 + _seam(d - p["hem_w"], 0.008, 0.12, p["stitch"], (x + y) * 120.0)
        return out
    if kind == "gaiter":
        f = p["wrinkle_freq"]
        phase = y * f * 2 * math.pi + 1.5 * np.sin(x * 2.3 + f)
        bend = np.sin(y * f * 0.9 + x * 3.1 + 2 * f)
        return 1.0 + p["wrinkles"] * np.sin(phase) * (0.35 + 0.65 * bend * bend) * _smoothstep(0.3, 0.9, y)
    if kind == "bandana":
        out = one.copy()
        for k in range(4):
            ang = (k - 1.5) * 0.35
            u = (x - p["tip_x"]) * math.cos(ang) + (y - p["tip_y"]) * math.sin(ang) * 0.3
            out *= 1.0 + 0.06 * np.sin(u * 9.0 + k) * _smoothstep(0.5, 1.2, y)
        out *= 1.0 + _seam(d - p["hem_w"], 0.008, 0.15)
        return out
    return one


def render_shape(kind: str, params: dict, name: str = "") -> Shape:
    """Rasterise a shape from its parameters (see ``shape_params``) -> ``Shape`` (pure function of its inputs)."""
    p = params
    alpha, shade = _render_body(kind, p)
    acc = np.zeros(FRAME_SIZE, np.float32)  # accessory coverage: loops, straps, valve
    acc_col = np.zeros(FRAME_SIZE + (3,), np.float32)
    if p.get("loops"):
        _loops(acc, p, alpha)
        acc_col[:] = np.array(p["loop_colour"], np.float32)
    if p.get("straps"):
        layer = np.zeros(FRAME_SIZE, np.float32)
        for k, yy in enumerate(p["strap_y"]):
            for sgn in (-1, 1):
                x0 = sgn * 0.7
                _polyline(layer, np.array([[x0, yy], [sgn * 1.05, yy - 0.25 - 0.1 * k], [sgn * 1.6, yy - 0.5]]),
                          p["strap_w"])
        np.maximum(acc, layer, out=acc)
        acc_col[:] = np.array(p["strap_colour"], np.float32)
    acc_col *= shade[..., None] ** 0.5
    if p.get("valve"):
        _valve(acc, acc_col, p)
    fabric = np.clip(NEUTRAL * shade, 0, 1)[..., None].repeat(3, -1)
    rgb = fabric * (1 - acc[..., None]) + acc_col * acc[..., None]
    total = np.maximum(alpha, acc)
    texw = np.where(acc > 0, 1.0 - acc, 1.0)
    return _pack(total, shade, texw, rgb, kind, p, name)


def _pack(alpha, shade, texw, rgb, kind, params, name, anchors=FIT_ANCHORS, own_prob=0.0) -> Shape:
    """Crop full-frame float maps to the alpha support (+2 px) and quantise into a ``Shape``."""
    ys, xs = np.nonzero(alpha >= 0.5 / 255)  # what survives 8-bit quantisation
    if len(ys) == 0:
        raise ValueError(f"shape {name or kind}: empty alpha")
    v0, v1 = max(int(ys.min()) - 2, 0), min(int(ys.max()) + 3, alpha.shape[0])
    u0, u1 = max(int(xs.min()) - 2, 0), min(int(xs.max()) + 3, alpha.shape[1])
    sl = (slice(v0, v1), slice(u0, u1))
    maps = np.full((v1 - v0, u1 - u0, 4), 255, np.uint8)
    maps[..., 0] = to_uint8(alpha[sl])
    maps[..., 1] = np.floor(np.clip(shade[sl] * 128, 0, 255) + 0.5)  # 128 = 1.0; halves up, as to_uint8
    maps[..., 2] = to_uint8(texw[sl])
    colour = np.full((v1 - v0, u1 - u0, 4), 255, np.uint8)
    colour[..., :3] = to_uint8(rgb[sl])
    return Shape(maps, colour, (float(u0), float(v0)), kind, params, name, tuple(anchors), own_prob)


# ---------------------------------------------------------------------------------------------------------------
# coverage check and the procedural generator

def check_coverage(shape: Shape, margin: float = 0.04) -> bool:
    """True when the nose tip, mouth and chin are inside (alpha = 1 within ``margin`` units) and the eyes clear."""
    full = shape.full_alpha()
    offsets = np.array([[0, 0], [margin, 0], [-margin, 0], [0, margin], [0, -margin]])

    def at(idx, offs):
        uv = canonical_to_raster(CANONICAL_LANDMARKS[list(idx)][:, None, :] + offs[None])
        u = np.clip(np.round(uv[..., 0]).astype(int), 0, full.shape[1] - 1)
        v = np.clip(np.round(uv[..., 1]).astype(int), 0, full.shape[0] - 1)
        return full[v, u]

    covered = at((NOSE_TIP, CHIN) + MOUTH, offsets)
    eyes = at(EYES, offsets * 2.0)
    return bool((covered >= 0.99).all() and (eyes <= 0.0).all())


def _item_rng(seed: int, index: int, salt: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index), salt]))


SHAPE_SALT = 0x5A11


def make_shape(seed: int, index: int) -> Shape:
    """Procedural shape ``index`` of library ``seed``: kind and parameters drawn from (seed, index) only."""
    rng = _item_rng(seed, index, SHAPE_SALT)
    kind = SHAPE_KINDS[int(rng.choice(len(SHAPE_KINDS), p=np.array(KIND_WEIGHTS) / sum(KIND_WEIGHTS)))]
    for attempt in range(20):
        params = shape_params(kind, rng)
        shape = render_shape(kind, params, name=f"shape_{index:05d}")
        if check_coverage(shape):
            shape.params = dict(params, seed=int(seed), index=int(index), attempt=attempt)
            return shape
    raise RuntimeError(f"shape {index} of seed {seed}: no valid {kind} parameters in 20 draws")
