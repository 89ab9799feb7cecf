"""Procedural fabric textures and image-patch textures.

``make_texture(seed, j)`` draws texture ``j`` of library ``seed`` (a pure function of (seed, j)): solid fabric,
stripes, gingham checks, tartan plaid, dots, floral-like and camouflage prints, gradients, knit and woven cloth.
Procedural tiles are periodic (patterns use whole numbers of periods per tile, noise is filtered white noise on a
torus), so the synthesiser can tile them with wrap-around; image patches are mirrored at their borders instead.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from data.io import to_uint8

TILE = 128
TEXTURE_KINDS = ("solid", "stripes", "checks", "plaid", "dots", "floral", "camo", "gradient", "knit", "weave")
KIND_WEIGHTS = (0.2, 0.11, 0.07, 0.08, 0.1, 0.1, 0.08, 0.08, 0.09, 0.09)
TEXTURE_SALT = 0x7E47
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class Texture:
    """An RGB texture tile: ``rgb`` (T, T', 3) uint8; ``tileable`` -> wrap around, else mirror at the borders."""

    rgb: np.ndarray
    tileable: bool = True
    kind: str = "image"
    params: dict = field(default_factory=dict)
    name: str = ""

    @property
    def rgbx(self) -> np.ndarray:
        """(T, T', 4) uint8 [r, g, b, 255] (cv2.remap is much faster on 4 channels than on 3); cached."""
        cached = self.__dict__.get("_rgbx")
        if cached is None or cached.shape[:2] != self.rgb.shape[:2]:
            cached = np.concatenate([self.rgb, np.full(self.rgb.shape[:2] + (1,), 255, np.uint8)], -1)
            self.__dict__["_rgbx"] = cached
        return cached


# ---------------------------------------------------------------------------------------------------------------
# colours and noise

_PALETTE = [(0.55, 0.75, 0.9), (0.93, 0.94, 0.95), (0.12, 0.12, 0.13), (0.15, 0.2, 0.4), (0.5, 0.5, 0.52),
            (0.95, 0.7, 0.78), (0.85, 0.78, 0.65), (0.4, 0.45, 0.25), (0.45, 0.1, 0.15), (0.1, 0.45, 0.45),
            (0.6, 0.8, 0.95), (0.8, 0.15, 0.15), (0.95, 0.85, 0.3), (0.35, 0.25, 0.45), (0.3, 0.55, 0.35),
            (0.25, 0.35, 0.6), (0.7, 0.72, 0.75), (0.55, 0.35, 0.25)]
_CAMO = [[(0.33, 0.38, 0.22), (0.5, 0.45, 0.3), (0.2, 0.22, 0.15), (0.6, 0.58, 0.42)],
         [(0.45, 0.47, 0.5), (0.25, 0.26, 0.28), (0.7, 0.71, 0.72), (0.12, 0.12, 0.13)],
         [(0.76, 0.66, 0.48), (0.6, 0.48, 0.32), (0.85, 0.78, 0.6), (0.45, 0.36, 0.25)],
         [(0.25, 0.35, 0.5), (0.15, 0.2, 0.32), (0.5, 0.6, 0.72), (0.08, 0.1, 0.18)]]


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A mask-like colour: half from a palette of common mask colours, half random HSV."""
    if rng.random() < 0.5:
        base = np.array(_PALETTE[int(rng.integers(len(_PALETTE)))])
        return np.clip(base + rng.normal(0, 0.04, 3), 0, 1)
    h, s, v = rng.random(), rng.uniform(0.15, 0.9), rng.uniform(0.2, 0.95)
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def _periodic_noise(rng: np.random.Generator, size: int, cutoff: float) -> np.ndarray:
    """Smooth noise on a torus: white noise low-passed in Fourier space (``cutoff`` in cycles per tile); std 1."""
    white = rng.standard_normal((size, size))
    f = np.fft.fftfreq(size) * size
    fx, fy = np.meshgrid(f, f)
    spec = np.fft.fft2(white) * np.exp(-0.5 * (fx * fx + fy * fy) / (cutoff * cutoff))
    out = np.fft.ifft2(spec).real
    return ((out - out.mean()) / (out.std() + 1e-8)).astype(np.float32)


def _grain(rng: np.random.Generator, size: int, amount: float) -> np.ndarray:
    """Fine fabric grain (multiplicative, around 1): high-frequency noise plus a faint thread pattern."""
    n = _periodic_noise(rng, size, size / 3)
    u = np.arange(size) * 2 * np.pi / size
    k = int(rng.integers(size // 4, size // 2))
    threads = np.sin(k * u)[None, :] * np.sin(k * u)[:, None]
    return (1.0 + amount * (0.7 * n + 0.5 * threads)).astype(np.float32)


def _wrap_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur on a torus (cv2's filters have no wrap-around border)."""
    pad = int(math.ceil(3 * sigma))
    width = ((pad, pad), (pad, pad)) + ((0, 0),) * (img.ndim - 2)
    out = cv2.GaussianBlur(np.pad(np.asarray(img, np.float32), width, mode="wrap"), (0, 0), sigma)
    return out[pad:-pad, pad:-pad]


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    v, u = np.mgrid[0:size, 0:size].astype(np.float32)
    return u, v


def _stripe_index(t: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Which stripe of a repeating sequence of ``widths`` (fractions of one period) each t in [0, 1) falls in."""
    edges = np.cumsum(widths) / widths.sum()
    return np.searchsorted(edges, np.mod(t, 1.0), side="right").clip(0, len(widths) - 1)


def _soft_paint(canvas: np.ndarray, layer: np.ndarray, colour: np.ndarray) -> None:
    a = layer[..., None]
    canvas *= 1 - a
    canvas += a * colour


def _wrap_draw(size: int, draw: Callable[[np.ndarray, float, float], None]) -> np.ndarray:
    """Draw a motif 9 times (shifted by +-size) so it wraps around the tile; -> (size, size) float coverage."""
    layer = np.zeros((size, size), np.uint8)
    for dy in (-size, 0, size):
        for dx in (-size, 0, size):
            draw(layer, dx, dy)
    return layer.astype(np.float32) / 255.0


# ---------------------------------------------------------------------------------------------------------------
# kinds: each takes (rng, size) and returns ((size, size, 3) float image in [0, 1], params)

def _solid(rng, size):
    c = _colour(rng)
    mottle = _periodic_noise(rng, size, float(rng.uniform(2, 6)))
    amp = float(rng.uniform(0.01, 0.05))
    return c * (1 + amp * mottle)[..., None], {"colour": c.tolist(), "mottle": amp}


def _stripes(rng, size):
    n_col = int(rng.integers(2, 5))
    cols = [_colour(rng) for _ in range(n_col)]
    widths = rng.uniform(0.2, 1.0, n_col)
    periods = int(rng.choice([2, 3, 4, 5, 6, 8]))
    direction = [(1, 0), (0, 1), (1, 1), (1, -1), (2, 1), (1, 2)][int(rng.integers(6))]
    u, v = _coords(size)
    t = (u * direction[0] + v * direction[1]) * periods / size
    idx = _stripe_index(t, widths)
    img = np.array(cols)[idx]
    # soften the stripe boundaries by a pixel so they resample without aliasing
    img = _wrap_blur(img.astype(np.float32), 0.6)
    return img, {"colours": [c.tolist() for c in cols], "widths": widths.tolist(), "periods": periods,
                 "direction": list(direction)}


def _checks(rng, size):
    base, ink = _colour(rng), _colour(rng)
    periods = int(rng.choice([3, 4, 5, 6, 8, 10]))
    duty = float(rng.uniform(0.3, 0.6))
    u, v = _coords(size)
    h = (np.mod(v * periods / size, 1.0) < duty).astype(np.float32)
    w = (np.mod(u * periods / size, 1.0) < duty).astype(np.float32)
    cover = _wrap_blur(0.5 * h + 0.5 * w, 0.6)
    img = base * (1 - cover[..., None]) + ink * cover[..., None]
    return img, {"base": base.tolist(), "ink": ink.tolist(), "periods": periods, "duty": duty}


def _plaid(rng, size):
    n = int(rng.integers(3, 7))
    cols = np.array([_colour(rng) for _ in range(n)])
    widths = rng.uniform(0.1, 1.0, n)
    seq = np.concatenate([widths, widths[::-1]])  # tartans mirror their thread sequence
    col_seq = np.concatenate([np.arange(n), np.arange(n)[::-1]])
    periods = int(rng.choice([1, 2, 3, 4]))
    u, v = _coords(size)
    cu = cols[col_seq[_stripe_index(u * periods / size, seq)]]
    cv = cols[col_seq[_stripe_index(v * periods / size, seq)]]
    twill = (np.mod(u + v, 4) < 2)[..., None]  # 2/2 twill: warp and weft alternate along diagonals
    img = np.where(twill, cu, cv).astype(np.float32)
    img = 0.6 * img + 0.4 * _wrap_blur(img, 1.2)
    return img, {"colours": cols.tolist(), "widths": widths.tolist(), "periods": periods}


def _dots(rng, size):
    base, ink = _colour(rng), _colour(rng)
    img = np.ones((size, size, 3), np.float32) * base
    if rng.random() < 0.6:
        n = int(rng.choice([3, 4, 5, 6, 8]))
        s = size / n
        r = float(rng.uniform(0.12, 0.38)) * s
        stagger = bool(rng.random() < 0.5)
        centres = [((i + (0.5 * (j % 2) if stagger else 0)) * s + s / 2, j * s + s / 2) for i in range(n)
                   for j in range(n)]
        params = {"grid": n, "radius": r, "stagger": stagger}
        radii = [r] * len(centres)
    else:
        k = int(rng.integers(8, 30))
        centres = [tuple(p) for p in rng.uniform(0, size, (k, 2))]
        radii = list(rng.uniform(size / 60, size / 14, k))
        params = {"confetti": k}
    inks = [ink if rng.random() < 0.7 else _colour(rng) for _ in centres]
    for (cx, cy), r, c in zip(centres, radii, inks):
        def draw(layer, dx, dy, cx=cx, cy=cy, r=r):
            cv2.circle(layer, (int(round((cx + dx) * 16)), int(round((cy + dy) * 16))), int(round(r * 16)), 255,
                       -1, cv2.LINE_AA, 4)
        _soft_paint(img, _wrap_draw(size, draw), c)
    params.update(base=base.tolist(), ink=ink.tolist())
    return img, params


def _floral(rng, size):
    base = _colour(rng)
    img = np.ones((size, size, 3), np.float32) * base
    leaf = np.clip(np.array([0.2, 0.5, 0.2]) + rng.normal(0, 0.08, 3), 0, 1)
    k = int(rng.integers(3, 9))
    flowers = []
    for _ in range(k):
        cx, cy = rng.uniform(0, size, 2)
        r = float(rng.uniform(size / 18, size / 7))
        petals = int(rng.integers(4, 8))
        rot = float(rng.uniform(0, 2 * math.pi))
        pc, cc = _colour(rng), _colour(rng)
        flowers.append([float(cx), float(cy), r, petals])
        for side in (-1, 1):
            ang = rot + side * 2.2

            def draw_leaf(layer, dx, dy, cx=cx, cy=cy, r=r, ang=ang):
                ex, ey = cx + dx + math.cos(ang) * r * 1.2, cy + dy + math.sin(ang) * r * 1.2
                cv2.ellipse(layer, (int(ex * 16), int(ey * 16)), (int(r * 0.7 * 16), int(r * 0.3 * 16)),
                            math.degrees(ang), 0, 360, 255, -1, cv2.LINE_AA, 4)
            _soft_paint(img, _wrap_draw(size, draw_leaf), leaf)

        def draw_petals(layer, dx, dy, cx=cx, cy=cy, r=r, petals=petals, rot=rot):
            for q in range(petals):
                a = rot + 2 * math.pi * q / petals
                px, py = cx + dx + math.cos(a) * r * 0.55, cy + dy + math.sin(a) * r * 0.55
                cv2.ellipse(layer, (int(px * 16), int(py * 16)), (int(r * 0.5 * 16), int(r * 0.28 * 16)),
                            math.degrees(a), 0, 360, 255, -1, cv2.LINE_AA, 4)
        _soft_paint(img, _wrap_draw(size, draw_petals), pc)

        def draw_centre(layer, dx, dy, cx=cx, cy=cy, r=r):
            cv2.circle(layer, (int((cx + dx) * 16), int((cy + dy) * 16)), int(r * 0.22 * 16), 255, -1,
                       cv2.LINE_AA, 4)
        _soft_paint(img, _wrap_draw(size, draw_centre), cc)
    return img, {"base": base.tolist(), "flowers": flowers}


def _camo(rng, size):
    pal = np.array(_CAMO[int(rng.integers(len(_CAMO)))]) if rng.random() < 0.7 else \
        np.array([_colour(rng) for _ in range(4)])
    pal = np.clip(pal + rng.normal(0, 0.04, pal.shape), 0, 1)
    n = int(rng.integers(3, 5))
    img = np.ones((size, size, 3), np.float32) * pal[0]
    cut = float(rng.uniform(2.0, 5.0))
    for k in range(1, n):
        noise = _periodic_noise(rng, size, cut)
        thr = float(rng.uniform(0.3, 0.9))
        layer = np.clip((noise - thr) * 4 + 0.5, 0, 1)
        _soft_paint(img, layer, pal[k % len(pal)])
    return img, {"palette": pal.tolist(), "layers": n, "cutoff": cut}


def _gradient(rng, size):
    c0, c1 = _colour(rng), _colour(rng)
    direction = [(1, 0), (0, 1), (1, 1), (1, -1)][int(rng.integers(4))]
    u, v = _coords(size)
    t = np.mod((u * direction[0] + v * direction[1]) / size, 1.0)
    t = 1 - np.abs(2 * t - 1)  # triangle wave: periodic, so the tile still wraps
    gamma = float(rng.uniform(0.6, 1.6))
    t = t ** gamma
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    return img, {"c0": c0.tolist(), "c1": c1.tolist(), "direction": list(direction), "gamma": gamma}


def _knit(rng, size):
    c = _colour(rng)
    cols = int(rng.choice([8, 12, 16, 20]))
    rows = int(rng.choice([10, 16, 20, 24]))
    u, v = _coords(size)
    a = np.mod(u * cols / size, 1.0)
    b = np.mod(v * rows / size, 1.0)
    d = np.abs(a - 0.5) * 2
    s = np.mod(b + 0.5 * d, 1.0)  # chevrons: the two legs of each V stitch
    shade = 0.72 + 0.28 * np.sin(np.pi * s) - 0.18 * np.exp(-0.5 * (d / 0.12) ** 2)
    stripe = np.ones_like(u)
    if rng.random() < 0.35:
        c2 = _colour(rng)
        band = (np.floor(v * rows / size) % int(rng.integers(3, 7)) == 0).astype(np.float32)[..., None]
        img = (c * (1 - band) + c2 * band) * shade[..., None]
    else:
        img = c * (shade * stripe)[..., None]
    return img, {"colour": c.tolist(), "cols": cols, "rows": rows}


def _weave(rng, size):
    warp = _colour(rng)
    # denim-like: a light weft under a coloured warp; else a second colour or a shade of the warp
    choice = rng.random()
    if choice < 0.35:
        weft = np.clip(0.88 + rng.normal(0, 0.03, 3), 0, 1)
    elif choice < 0.7:
        weft = _colour(rng)
    else:
        weft = np.clip(warp * rng.uniform(0.6, 1.3), 0, 1)
    n = int(rng.choice([16, 24, 32]))
    twill = int(rng.choice([2, 3, 4]))
    u, v = _coords(size)
    p = size / n
    iu, iv = np.floor(u / p), np.floor(v / p)
    on_top = np.mod(iu + iv, twill) < twill / 2
    fu, fv = np.mod(u / p, 1.0), np.mod(v / p, 1.0)
    shade_warp = 0.75 + 0.25 * np.sin(np.pi * fu)
    shade_weft = 0.75 + 0.25 * np.sin(np.pi * fv)
    img = np.where(on_top[..., None], warp * shade_warp[..., None], weft * shade_weft[..., None])
    return img, {"warp": warp.tolist(), "weft": weft.tolist(), "threads": n, "twill": twill}


_KINDS: dict[str, Callable] = {"solid": _solid, "stripes": _stripes, "checks": _checks, "plaid": _plaid,
                               "dots": _dots, "floral": _floral, "camo": _camo, "gradient": _gradient,
                               "knit": _knit, "weave": _weave}


def render_texture(kind: str, rng: np.random.Generator, size: int = TILE) -> Texture:
    """Draw one procedural texture of ``kind`` -> ``Texture`` (rgb uint8 (size, size, 3), tileable)."""
    if kind not in _KINDS:
        raise ValueError(f"unknown texture kind {kind!r}; valid: {', '.join(TEXTURE_KINDS)}")
    img, params = _KINDS[kind](rng, size)
    grain = float(rng.uniform(0.015, 0.05))
    img = np.asarray(img, np.float32) * _grain(rng, size, grain)[..., None]
    rgb = to_uint8(img)
    return Texture(rgb, True, kind, dict(params, grain=grain))


def make_texture(seed: int, index: int, size: int = TILE) -> Texture:
    """Procedural texture ``index`` of library ``seed`` (depends only on (seed, index, size))."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index), TEXTURE_SALT]))
    kind = TEXTURE_KINDS[int(rng.choice(len(TEXTURE_KINDS), p=np.array(KIND_WEIGHTS) / sum(KIND_WEIGHTS)))]
    tex = render_texture(kind, rng, size)
    tex.name = f"texture_{index:05d}"
    tex.params.update(seed=int(seed), index=int(index))
    return tex


def load_texture_image(path: str | Path, max_side: int = 256) -> Texture:
    """An image patch (any format cv2 reads) -> ``Texture`` (RGB, longest side at most ``max_side``, mirrored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"texture image not found: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"texture image unreadable: {path}")
    scale = max_side / max(bgr.shape[:2])
    if scale < 1:
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return Texture(np.ascontiguousarray(bgr[..., ::-1]), False, "image", {"file": path.name}, path.stem)
