"""Masked-pair synthesis: put a library mask on a face from its 68 landmarks -> (I_m, m).

Per pair (all randomness from the seed): draw a (shape, texture) from the library; fit the canonical template to
the face with a thin-plate spline through the anchor landmarks (follows yaw, roll, an open mouth); colour the
template in its own raster (texture placed by one affine warp, folds, colour jitter; accessories keep their own
colours), then bring it into the face's bounding box with one ``cv2.remap``; there, shade it with the face's own
lighting (a trimmed planar fit of its luminance under the mask), add grain and composite with soft (anti-aliased)
edges. ``m`` is 1 exactly where the composite changed the image.

Colouring in template space (~13k pixels, fewer than the mask covers at 256 px) keeps the per-pixel work at the
face's resolution to one remap and the compositing; the template colours are 8-bit with 2x headroom (1.0 = 127.5)
so that gains above 1 survive until the light is applied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from data.masks.canonical import FRAME
from data.masks.library import MaskLibrary
from data.masks.shapes import Shape
from data.masks.textures import Texture
from data.masks.warp import ThinPlateSpline

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_HEADROOM = 2.0  # template colours are uint8 with 1.0 = 255 / _HEADROOM (gains above 1 survive until the light)
_SALT = 0x3A5C
# the light plane is evaluated at 5 x 5 points (rows 1, x, y of a (3, 25) design) and resized
_PLANE = np.stack([np.ones(25), *(g.ravel() for g in np.meshgrid(*[np.linspace(-0.5, 0.5, 5)] * 2))])


class MaskedPairSynthesizer:
    """Synthesises masked faces from unmasked ones, deterministically per seed.

    Args:
        library: a ``MaskLibrary`` (default: ``MaskLibrary.procedural(seed=0)``, 900 shapes x 800 textures).
        shape_jitter: std of the random scale (relative) and shift (canonical units, ~half-face = 1) of the template.
        colour_jitter: std of the log brightness gain; per-channel gains get a third of it.
        lighting: (min, max) strength of the face's lighting transferred onto the mask (0 = flat).
        grain: max std of the pixel noise added to the mask.
        feather: max extra edge blur in pixels at 256 px faces (scaled with the face size).
        reg: thin-plate bending regulariser (0 = exact interpolation of the landmarks); a little smoothing keeps
            the fit sane when landmarks contradict each other (e.g. rendered lips below the jaw line).
    """

    def __init__(self, library: MaskLibrary | None = None, *, shape_jitter: float = 0.02,
                 colour_jitter: float = 0.1, lighting: tuple[float, float] = (0.3, 1.0), grain: float = 0.02,
                 feather: float = 0.8, reg: float = 0.03):
        self.library = MaskLibrary.procedural(seed=0) if library is None else library
        self.shape_jitter = shape_jitter
        self.colour_jitter = colour_jitter
        self.lighting = lighting
        self.grain = grain
        self.feather = feather
        self.reg = reg
        self._noise = np.random.default_rng(_SALT).standard_normal((512, 512)).astype(np.float32)

    # -- public API ---------------------------------------------------------------------------------------------
    def synth(self, image: torch.Tensor, landmarks: torch.Tensor | np.ndarray,
              seed: int | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask one face.

        Args:
            image: (3, H, W) float tensor in [0, 1] (any device; computed on CPU).
            landmarks: (68, 2) pixel coordinates (x right, y down), tensor or ndarray.
            seed: int (or tuple of ints, e.g. (seed, index)); same seed -> bitwise the same output.
        Returns:
            masked (3, H, W) float32 in [0, 1], equal to ``image`` wherever m == 0;
            m (1, H, W) float32 in {0, 1}, 1 wherever the mask changed the image (soft edges included).
        """
        masked, m = self.synth_numpy(_numpy(image), _numpy(landmarks), seed)
        masked, m = torch.from_numpy(masked), torch.from_numpy(m)
        return (masked, m) if image.is_cpu else (masked.to(image.device), m.to(image.device))

    def synth_batch(self, images: torch.Tensor, landmarks: torch.Tensor | np.ndarray,
                    seeds: int | Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W), (N, 68, 2), seeds (N ints/tuples, or one int -> (seed, i)) -> (N, 3, H, W), (N, 1, H, W)."""
        n = images.shape[0]
        seeds = [(int(seeds), i) for i in range(n)] if isinstance(seeds, (int, np.integer)) else list(seeds)
        out = [self.synth(images[i], landmarks[i], seeds[i]) for i in range(n)]
        return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])

    def synth_numpy(self, image: np.ndarray, landmarks: np.ndarray,
                    seed: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """NumPy core of ``synth``: image (3, H, W) float32 [0, 1], landmarks (68, 2) -> (masked, m) arrays."""
        image = np.ascontiguousarray(image, dtype=np.float32)
        lm = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
        if not math.isfinite(float(lm.sum())):  # any NaN / inf (one reduction, no boolean array)
            raise ValueError("MaskedPairSynthesizer: landmarks contain NaN/inf")
        _, h_img, w_img = image.shape
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(_seed_words(seed) + [_SALT])))
        shape, texture = self.library.sample(rng)
        p = self._draw(rng, shape, texture)

        # template fit: a thin-plate spline from image pixels to template pixels through the anchor landmarks
        idx = shape.anchor_index
        # the jittered canonical anchors in template pixels: ppu (scale R c + shift - frame origin) - raster origin
        lin = (p["scale"] * shape.ppu) * _rot(p["rot"]).T
        raster = shape.anchor_canonical @ lin + ((p["shift"] - (FRAME.x0, FRAME.y0)) * shape.ppu - shape.origin)
        face = math.hypot(*(lm[16] - lm[0])) + math.hypot(*(lm[8] - lm[27]))
        if not face > 4:
            raise ValueError(f"MaskedPairSynthesizer: degenerate landmarks (face size {face:.2f} px)")
        try:
            inv = ThinPlateSpline(lm[idx], raster, self.reg)
        except np.linalg.LinAlgError:
            raise ValueError("MaskedPairSynthesizer: degenerate landmarks (thin-plate fit is singular)") from None
        step = int(min(24, max(3, round(face / 20))))
        sigma = p["feather"] * face / 260 if p["feather"] > 0.3 else 0.0
        fit = _fit_map(inv, shape.alpha_box, step, w_img, h_img, pad=4 * sigma + 1)  # cv2's blur reaches ~4 sigma
        if fit is None:
            return _unmasked(image)
        (x0, y0, x1, y1), sm = fit
        warped = cv2.remap(self._template_colour(shape, texture, p), sm, None, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        planes = cv2.split(warped)
        alpha = np.multiply(planes[3], np.float32(1 / 255), dtype=np.float32)
        if sigma:
            alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)
        cv2.threshold(alpha, 2.5 / 255, 0.0, cv2.THRESH_TOZERO, dst=alpha)  # invisible fringes would inflate m
        inside = alpha > 0
        bx, by, bw, bh = cv2.boundingRect(inside.view(np.uint8))
        if not bw:
            return _unmasked(image)
        # the rest of the work only where the mask is visible (the fit's box is a cell or two larger all round)
        inside, alpha = inside[by:by + bh, bx:bx + bw], alpha[by:by + bh, bx:bx + bw]
        planes = [c[by:by + bh, bx:bx + bw] for c in planes[:3]]
        x0, y0, x1, y1 = x0 + bx, y0 + by, x0 + bx + bw, y0 + by + bh
        crop = image[:, y0:y1, x0:x1]
        light = self._lighting(crop, alpha, p, unit=_HEADROOM / 255)  # template colours -> [0, 1]
        noise = _noise_crop(self._noise, alpha.shape, p["noise_off"]) if p["grain"] > 0 else None
        if noise is not None:
            noise = noise * np.float32(p["grain"])
        col = np.empty((3, *alpha.shape), np.float32)
        for c in range(3):
            cv2.multiply(planes[c], light, dst=col[c], dtype=cv2.CV_32F)
            if noise is not None:
                cv2.add(col[c], noise, dst=col[c])
        flat = col.reshape(-1, col.shape[2])  # the three planes as one image: one cv2 call each for the clip
        cv2.threshold(flat, 1.0, 0.0, cv2.THRESH_TRUNC, dst=flat)
        cv2.threshold(flat, 0.0, 0.0, cv2.THRESH_TOZERO, dst=flat)
        masked, m = _unmasked(image)  # the full-size arrays last: their traffic would evict what the steps above reuse
        out = masked[:, y0:y1, x0:x1]
        for c in range(3):  # (col - crop) alpha + crop: alpha == 0 leaves the original value exactly
            cv2.subtract(col[c], crop[c], dst=col[c])
            cv2.multiply(col[c], alpha, dst=col[c])
            cv2.add(col[c], crop[c], dst=out[c])
        m[0, y0:y1, x0:x1] = inside
        return masked, m

    @staticmethod
    def _template_colour(shape: Shape, texture: Texture, p: dict) -> np.ndarray:
        """The mask before the face's light, in the template's raster: (h_t, w_t, 4) uint8 [rgb * 255 / _HEADROOM,
        alpha]. Gains and saturation are one 3x3 colour matrix (``cv2.transform``, on 3 channels: cv2's 4-channel
        path is ~7x slower); the texture is placed by one affine warp and multiplied by the template's folds
        (shade 128 = 1); accessories keep their own colours."""
        h_t, w_t = shape.size
        sat = float(p["sat"])
        mat = sat * np.eye(3) + (1 - sat) * _LUMA[None].astype(np.float64)  # saturation about the luma
        mat *= (p["gain"] * p["chan"])[None, :] / _HEADROOM
        if p["own"]:
            rgb = cv2.transform(cv2.cvtColor(shape.colour, cv2.COLOR_RGBA2RGB), mat)
        else:
            tex = cv2.cvtColor(_place_texture(texture, p["tex_affine"], w_t, h_t), cv2.COLOR_RGBA2RGB)
            shade = cv2.cvtColor(cv2.extractChannel(shape.maps, 1), cv2.COLOR_GRAY2RGB)
            rgb = cv2.multiply(cv2.transform(tex, mat), shade, scale=1 / 128)
            if shape.has_accessories:
                weight = cv2.cvtColor(cv2.extractChannel(shape.maps, 2), cv2.COLOR_GRAY2RGB)
                own = cv2.transform(cv2.cvtColor(shape.colour, cv2.COLOR_RGBA2RGB), mat)
                rgb = cv2.add(cv2.multiply(rgb, weight, scale=1 / 255), cv2.multiply(own, 255 - weight, scale=1 / 255))
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)  # cv2.remap is much faster on 4 channels than on 3
        cv2.mixChannels([shape.maps], [out], [0, 3])  # alpha
        return out

    # -- per-pair randomness ------------------------------------------------------------------------------------
    def _draw(self, rng: np.random.Generator, shape: Shape, texture: Texture) -> dict:
        """All random choices of one pair, in a fixed order (so a seed always means the same pair)."""
        # two vectorised draws (a call per value costs more than the rest of this function)
        u = rng.random(15)
        z = rng.standard_normal(8)
        own = bool(u[0] < shape.own_prob)
        scale = math.exp(min(max(float(z[0]) * self.shape_jitter, -0.06), 0.06))
        rot = float(z[1]) * 1.2
        shift = np.clip(z[2:4] * self.shape_jitter, -0.04, 0.04)
        # texture placement: texture pixels per canonical unit, rotation, offset (canonical units -> texture pixels)
        th, tw = texture.rgb.shape[:2]
        if texture.tileable:
            ppu = (40 + 70 * float(u[1])) * th / 128
            ang = (0.0, 0.0, 90.0)[int(u[2] * 3)] + ((70 * float(u[3]) - 35) if u[4] < 0.4 else 0.0)
        else:
            ppu = (0.28 + 0.17 * float(u[1])) * min(th, tw)
            ang = 20 * float(u[2]) - 10
        off_x, off_y = float(u[5]) * tw, float(u[6]) * th
        gain = math.exp(float(z[4]) * self.colour_jitter)
        chan = np.exp(z[5:8] * (self.colour_jitter / 3))
        sat = 0.8 + 0.35 * float(u[7])
        light = self.lighting[0] + (self.lighting[1] - self.lighting[0]) * float(u[8])
        expo = 0.2 + 0.4 * float(u[9])
        grain = self.grain * float(u[10])
        noise_off = (u[11:13] * 512).astype(np.int64)
        feather = self.feather * float(u[14]) if u[13] < 0.5 else 0.0
        # texture pixel t = ppu * R(ang) (x, y) + off of canonical (x, y), composed with template pixel -> canonical
        # (scalar arithmetic: a few small numpy arrays would cost more than the rest of the draw)
        c, s = ppu * math.cos(math.radians(ang)), ppu * math.sin(math.radians(ang))
        ox, oy = FRAME.x0 + shape.origin[0] / shape.ppu, FRAME.y0 + shape.origin[1] / shape.ppu  # canonical
        k = 1.0 / shape.ppu  # canonical units per template pixel
        tex_affine = np.array([[c * k, -s * k, c * ox - s * oy + off_x], [s * k, c * k, s * ox + c * oy + off_y]])
        return {"own": own, "scale": scale, "rot": rot, "shift": shift, "tex_affine": tex_affine, "gain": gain,
                "chan": chan, "sat": sat, "light": light, "expo": expo, "grain": grain, "noise_off": noise_off,
                "feather": feather}

    # -- light ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _lighting(crop: np.ndarray, alpha: np.ndarray, p: dict, unit: float = 1.0) -> np.ndarray:
        """(h, w) float32 multiplicative light taken from the face under the mask: a planar fit of its luminance
        over the brighter 70 % of samples (skips mouth, nostrils, beard), relative to its mean, times an exposure
        factor (a white mask in a dark photo is grey); times ``unit``."""
        h, w = alpha.shape
        stride = max(1, int(round(math.sqrt(h * w / 400))))
        sub = crop[:, ::stride, ::stride]
        lum = _LUMA[0] * sub[0] + _LUMA[1] * sub[1] + _LUMA[2] * sub[2]  # (h', w') on a ~20 x 20 grid
        sel = alpha[::stride, ::stride] > 0.5
        vals = lum[sel]
        if vals.size < 12:
            return np.full_like(alpha, unit)
        k = int(vals.size * 0.3)
        keep = lum >= np.partition(vals, k)[k]
        keep &= sel
        weight = keep.astype(np.float32)
        # the sums of the normal equations as image moments on the grid (x = column, y = row): two cv2 calls
        mw, mv = cv2.moments(weight), cv2.moments(np.multiply(lum, weight, out=weight))
        n, sv = mw["m00"], mv["m00"]
        # ... then in coordinates x, y in [-0.5, 0.5]: X = ax x - 0.5, Y = ay y - 0.5
        ax, ay = stride / w, stride / h
        sx, sy = ax * mw["m10"] - 0.5 * n, ay * mw["m01"] - 0.5 * n
        gxx = ax * ax * mw["m20"] - ax * mw["m10"] + 0.25 * n
        gyy = ay * ay * mw["m02"] - ay * mw["m01"] + 0.25 * n
        gxy = ax * ay * mw["m11"] - 0.5 * (ax * mw["m10"] + ay * mw["m01"]) + 0.25 * n
        gxv, gyv = ax * mv["m10"] - 0.5 * sv, ay * mv["m01"] - 0.5 * sv
        # least squares of lum ~ c0 + c1 X + c2 Y through its 3x3 normal equations
        normal = np.array([[n + 1e-6, sx, sy], [sx, gxx + 1e-6, gxy], [sy, gxy, gyy + 1e-6]])
        ok, coef = cv2.solve(normal, np.array([[sv], [gxv], [gyv]]), flags=cv2.DECOMP_LU)
        mean = max(sv / n, 0.02)
        coef = coef.ravel() / mean if ok else np.array([1.0, 0.0, 0.0])
        # the plane is linear: evaluate it (and the power) on a few points and resize instead of per pixel
        expo = min(max(mean / 0.5, 0.45), 1.3) ** p["expo"]
        small = np.minimum(np.maximum((coef @ _PLANE).reshape(5, 5), 0.55), 1.45)
        np.power(small, p["light"], out=small)
        small = (small * (expo * unit)).astype(np.float32)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------------------------------------------

def _numpy(x) -> np.ndarray:
    """An ndarray of a tensor (a view of a CPU tensor: one torch call, which counts at ~1 ms a pair; torch's
    attribute checks cost as much) or of anything array-like; ``synth_numpy`` converts dtype and layout."""
    if not isinstance(x, torch.Tensor):
        return np.asarray(x)
    try:
        return x.numpy()
    except (RuntimeError, TypeError):  # requires grad, not on the CPU, or a dtype numpy lacks (bfloat16)
        return x.detach().to("cpu", torch.float32 if x.is_floating_point() else x.dtype).numpy()


def _unmasked(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3, H, W) image -> (a copy of it, an all-zero (1, H, W) float32 map): the pair before any mask is drawn."""
    return image.copy(), np.zeros((1, *image.shape[1:]), np.float32)


def _seed_words(seed) -> list[int]:
    if isinstance(seed, (int, np.integer)):
        seed = [seed]
    words = []
    for s in seed:
        s = int(s)
        words += [s & 0xFFFFFFFF, (s >> 32) & 0xFFFFFFFF, int(s < 0)]
    return words


def _rot(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s], [s, c]])


def _fit_map(inv: ThinPlateSpline, box: tuple[int, int, int, int], step: int, w_img: int, h_img: int,
             pad: float = 0.0):
    """Where the template lands in the image and how to sample it.

    ``box`` (x0, y0, x1, y1), end exclusive, holds the template pixels that are not transparent; ``pad`` is how
    far (image pixels) the alpha may still spread afterwards (the feather blur). The spline is evaluated on a
    coarse grid over the whole image to find the region that can reach the box, then at the centres of ``step`` x
    ``step`` cells there; that grid is resized to one map entry per pixel (cv2's half-pixel convention lines cell
    centres up with pixel centres). Between four neighbouring centres the map is their bilinear mix, so it stays
    inside their bounding box: the pixels there can sample the template only if that box meets it. The returned
    box is the union of those pixels (plus ``pad``), exact for the resized map, with no margin to guess.

    Returns ((x0, y0, x1, y1) exclusive image box, template map (h, w, 2) float32), or None if the mask misses.
    """
    lo_u, lo_v, hi_u, hi_v = box[0] - 1.0, box[1] - 1.0, float(box[2]), float(box[3])  # + the bilinear neighbour
    # coarse pass: cells whose centre maps within reach of the box, reach = (a cell + a fine cell + pad) x the
    # largest stretch (template pixels per image pixel) of the affine part, the singular value of a 2 x 2 matrix in
    # closed form; a cell's half diagonal would do for an affine map, the rest is slack for bending
    n = len(inv.ctrl)
    (a, b), (c, d) = inv.coef[n + 1:] * inv.scale
    fro2, det = a * a + b * b + c * c + d * d, a * d - b * c
    stretch = math.sqrt(0.5 * (fro2 + math.sqrt(max(fro2 * fro2 - 4 * det * det, 0.0))))
    coarse = 3 * step
    margin = (coarse + step + pad) * stretch + 2.0
    gw, gh = -(-w_img // coarse), -(-h_img // coarse)
    uv = inv.grid(np.arange(gw) * coarse + (coarse - 1) / 2.0, np.arange(gh) * coarse + (coarse - 1) / 2.0,
                  dtype=np.float32)
    hit = ((uv[..., 0] > lo_u - margin) & (uv[..., 0] < hi_u + margin) &
           (uv[..., 1] > lo_v - margin) & (uv[..., 1] < hi_v + margin))
    rows, cols = np.flatnonzero(hit.any(1)), np.flatnonzero(hit.any(0))
    if not rows.size:
        return None
    x0, y0 = int(cols[0]) * coarse, int(rows[0]) * coarse
    x1, y1 = min((int(cols[-1]) + 1) * coarse, w_img), min((int(rows[-1]) + 1) * coarse, h_img)
    # fine pass over that region, one extra cell on every side (cv2.resize clamps in the outer half cell)
    fw, fh = -(-(x1 - x0) // step) + 2, -(-(y1 - y0) // step) + 2
    sub = inv.grid(x0 + np.arange(-1, fw - 1) * step + (step - 1) / 2.0,
                   y0 + np.arange(-1, fh - 1) * step + (step - 1) / 2.0, dtype=np.float32)
    k2 = np.ones((2, 2), np.uint8)  # [i + 1, j + 1] of a 2 x 2 erosion / dilation = min / max of centres i..i+1, j..j+1
    meets = cv2.bitwise_and(cv2.inRange(cv2.dilate(sub, k2), (lo_u, lo_v), (np.inf, np.inf)),
                            cv2.inRange(cv2.erode(sub, k2), (-np.inf, -np.inf), (hi_u, hi_v)))
    bx, by, bw, bh = cv2.boundingRect(meets[1:, 1:])  # dual cells (between centres) that can sample the template
    if not bw:
        return None
    px0, px1 = _between_centres(bx, bx + bw - 1, x0, x1, step, pad)
    py0, py1 = _between_centres(by, by + bh - 1, y0, y1, step, pad)
    if px0 >= px1 or py0 >= py1:  # only blocks past the last pixel centre of a region that ends at the image edge
        return None
    j0, j1 = (px0 - x0) // step, (px1 - 1 - x0) // step  # the cells of the box, + one each side for the resize
    i0, i1 = (py0 - y0) // step, (py1 - 1 - y0) // step
    sub = sub[i0:i1 + 3, j0:j1 + 3]
    sm = cv2.resize(sub, (sub.shape[1] * step, sub.shape[0] * step), interpolation=cv2.INTER_LINEAR)
    ox, oy = x0 + (j0 - 1) * step, y0 + (i0 - 1) * step  # the resized grid's first pixel
    return (px0, py0, px1, py1), sm[py0 - oy:py1 - oy, px0 - ox:px1 - ox]


def _between_centres(first: int, last: int, start: int, end: int, step: int, pad: float) -> tuple[int, int]:
    """Pixel range [lo, hi) between the centre before dual cell ``first`` and the one after dual cell ``last`` (dual
    cell i lies between fine centres i and i + 1; centre r is at start + (r - 1) step + (step - 1) / 2), widened by
    ``pad`` and clipped to [start, end)."""
    widen = int(math.ceil(pad))
    lo = start + (first - 1) * step + (step - 1) // 2 - widen
    hi = start + last * step + (step - 1) // 2 + 1 + widen
    return max(lo, start), min(hi, end)


def _place_texture(texture: Texture, tex_affine: np.ndarray, w_t: int, h_t: int) -> np.ndarray:
    """The texture resampled onto the template raster: (h_t, w_t, 4) uint8.

    ``tex_affine`` (2, 3) maps template pixels to texture pixels. Tileable textures repeat, the others mirror. The
    offset is moved by whole periods (the same texture) so that coordinates start at 0, and the texture is extended
    by cv2.copyMakeBorder until every sample is in range: cv2's per-pixel border handling is ~3x slower.
    """
    th, tw = texture.rgb.shape[:2]
    size = np.array([tw, th], np.float64)
    period = size if texture.tileable else 2 * (size - 1)  # BORDER_REFLECT_101 repeats every 2 (n - 1)
    corners = np.array([[0, 0, 1], [w_t - 1, 0, 1], [0, h_t - 1, 1], [w_t - 1, h_t - 1, 1]], np.float64)
    uv = corners @ tex_affine.T
    shift = np.floor(uv.min(0) / period) * period
    aff = tex_affine.copy()
    aff[:, 2] -= shift
    pad = np.maximum(np.ceil(uv.max(0) - shift) + 2 - size, 0).astype(int)  # +2: the bilinear neighbour
    src = texture.rgbx
    if pad.any():
        src = cv2.copyMakeBorder(src, 0, int(pad[1]), 0, int(pad[0]),
                                 cv2.BORDER_WRAP if texture.tileable else cv2.BORDER_REFLECT_101)
    return cv2.warpAffine(src, aff, (w_t, h_t), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT)


def _noise_crop(noise: np.ndarray, size: tuple[int, int], off) -> np.ndarray:
    """An (h, w) window of the i.i.d. noise tile: a free slice (any in-range offset is as good as another), or a
    wrapped gather when the crop is larger than the tile."""
    h, w = size
    n = noise.shape[0]
    if h <= n and w <= n:
        oy, ox = int(off[0]) % (n - h + 1), int(off[1]) % (n - w + 1)
        return noise[oy:oy + h, ox:ox + w]
    oy, ox = int(off[0]), int(off[1])
    return noise[np.arange(oy, oy + h) % n][:, np.arange(ox, ox + w) % n]
