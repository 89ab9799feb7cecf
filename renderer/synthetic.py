"""Procedural, face-shaped 3DMM in the layout and units of Deng et al.'s BFM (no data files needed).

The mesh is a height field z = h(x, y) over a face-shaped outline, on a tensor-product grid that is denser around
the eyes, nose and mouth, plus a small mouth-cavity patch (dark, with upper teeth) behind the lips. Along the mouth
line the grid vertices are duplicated (upper / lower lip), so the jaw-open expression opens a real gap.

Units: decimetres, x to image right, y up, z toward the camera; the face is about 1.9 units tall and is recentred
on its mean vertex (as BFM with recenter=True), so Deng's camera (focal 1015/224*size, distance 10) frames it the way
it frames BFM.

Bases are displacement (or colour) fields per unit coefficient, scaled so that coefficients ~ N(0, 1) give plausible
variation (BFM's bases are likewise scaled by their eigenvalues). The first components are named
(IDENTITY_NAMES, EXPRESSION_NAMES, TEXTURE_NAMES); the rest are smooth random fields with decaying amplitude.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import PchipInterpolator

GENERATOR_VERSION = "synth-v1"  # part of the cache file name: bump when the geometry or bases change

IDENTITY_NAMES = ("face_width", "face_length", "face_depth", "nose_size", "nose_length", "nose_width", "jaw_width",
                  "chin_length", "cheek_fullness", "eye_spacing", "brow_height", "lip_thickness", "mouth_width",
                  "forehead_slope")
EXPRESSION_NAMES = ("jaw_open", "smile", "pucker", "brow_raise", "brow_furrow", "cheek_puff", "mouth_left",
                    "lower_lip_down", "upper_lip_raise", "frown", "mouth_stretch", "lip_press", "eye_squint")
TEXTURE_NAMES = ("skin_tone", "skin_redness", "skin_yellowness", "lip_colour", "brow_darkness", "iris_colour",
                 "cheek_blush")

DEFAULT_VERTICES = 6000

# Facial anatomy before recentring (decimetres, y up).
Y_TOP, Y_BOT = 0.88, -0.98
EYE_X, EYE_Y, EYE_HW, EYE_HH_UP, EYE_HH_LO = 0.31, 0.14, 0.135, 0.055, 0.04
IRIS_R, PUPIL_R = 0.047, 0.018
MOUTH_Y, MOUTH_HW = -0.50, 0.25
UPPER_LIP_H, LOWER_LIP_H = 0.075, 0.09
NOSE_TIP_Y, NOSE_BASE_Y = -0.14, -0.27

_OUTLINE_Y = [Y_BOT, -0.96, -0.92, -0.84, -0.72, -0.55, -0.30, 0.0, 0.30, 0.55, 0.72, 0.80, 0.85, Y_TOP]
_OUTLINE_W = [0.10, 0.17, 0.26, 0.38, 0.50, 0.61, 0.70, 0.74, 0.74, 0.70, 0.61, 0.51, 0.41, 0.30]


def _outline_halfwidth(y):
    f = PchipInterpolator(_OUTLINE_Y, _OUTLINE_W)
    return np.where((y >= Y_BOT) & (y <= Y_TOP), f(np.clip(y, Y_BOT, Y_TOP)), -1.0)


def _gauss(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * ((x - cx) / sx) ** 2 - 0.5 * ((y - cy) / sy) ** 2)


def _gauss_pair(x, y, cx, cy, sx, sy):
    """Symmetric pair of Gaussians at (+-cx, cy)."""
    return _gauss(x, y, cx, cy, sx, sy) + _gauss(x, y, -cx, cy, sx, sy)


def _smoothstep(e0, e1, v):
    t = np.clip((v - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _taper(x, hw):
    return np.sqrt(np.clip(1.0 - (x / hw) ** 2, 0.0, 1.0))


# ------------------------------------------------------------------------------------------------ height field

def _nose_height(x, y):
    ys = [-0.31, -0.27, -0.22, -0.17, -0.14, -0.05, 0.06, 0.16, 0.26, 0.36]
    hs = [0.0, 0.05, 0.18, 0.26, 0.27, 0.235, 0.155, 0.085, 0.02, 0.0]  # zero at both ends: no step in z
    ss = [0.10, 0.11, 0.10, 0.085, 0.075, 0.062, 0.055, 0.058, 0.07, 0.08]
    h = np.interp(y, ys, hs, left=0.0, right=0.0)
    s = np.interp(y, ys, ss)
    ridge = h * np.exp(-0.5 * (x / s) ** 2)
    alae = 0.09 * _gauss_pair(x, y, 0.125, -0.205, 0.05, 0.045)
    tip = 0.035 * _gauss(x, y, 0.0, NOSE_TIP_Y, 0.05, 0.04)
    return ridge + alae + tip


def _lip_bumps(x, y):
    t = _taper(x, MOUTH_HW * 1.05)
    up = t * _smoothstep(0.0, 0.015, y - MOUTH_Y) * _smoothstep(UPPER_LIP_H + 0.02, 0.0, y - MOUTH_Y)
    lo = t * _smoothstep(0.0, 0.015, MOUTH_Y - y) * _smoothstep(LOWER_LIP_H + 0.03, 0.0, MOUTH_Y - y)
    return 0.05 * up + 0.06 * lo


def _height(x, y):
    """Mean face surface z(x, y) before recentring."""
    hw = np.maximum(_outline_halfwidth(y), 0.05)
    a = hw * 1.1
    zc = 0.62 * np.sqrt(np.clip(1.0 - ((y + 0.05) / 1.3) ** 2, 0.05, 1.0))
    z = zc * np.sqrt(np.clip(1.0 - (x / a) ** 2, 0.0, 1.0))
    z += _nose_height(x, y)
    z -= 0.10 * _gauss_pair(x, y, EYE_X, EYE_Y + 0.01, 0.13, 0.085)  # eye sockets
    eye_r2 = ((np.abs(x) - EYE_X) / (EYE_HW * 1.05)) ** 2 + ((y - EYE_Y) / 0.07) ** 2
    z += 0.035 * np.clip(1.0 - eye_r2, 0.0, None) ** 0.5  # eyeballs
    z += 0.055 * _gauss_pair(x, y, 0.30, 0.31, 0.17, 0.055)  # brow ridge
    z += 0.03 * _gauss(x, y, 0.0, 0.30, 0.09, 0.06)  # glabella
    z += 0.06 * _gauss_pair(x, y, 0.46, -0.03, 0.13, 0.11)  # cheekbones
    z -= 0.025 * _gauss_pair(x, y, 0.46, -0.36, 0.12, 0.12)  # cheek hollows
    z += 0.09 * _gauss(x, y, 0.0, MOUTH_Y, 0.30, 0.16)  # dental arch
    z += _lip_bumps(x, y)
    z -= 0.012 * _gauss(x, y, 0.0, MOUTH_Y + 0.14, 0.025, 0.05)  # philtrum
    z -= 0.03 * _gauss(x, y, 0.0, MOUTH_Y - 0.17, 0.16, 0.035)  # labiomental fold
    z += 0.08 * _gauss(x, y, 0.0, -0.82, 0.16, 0.10)  # chin
    return z


# ------------------------------------------------------------------------------------------------ regions (0..1)

def _eye_regions(x, y):
    """Soft masks (sclera-opening, iris, pupil, lash line) for both eyes."""
    q = (np.abs(x) - EYE_X) / EYE_HW
    lid = np.clip(1.0 - q * q, 0.0, None)
    upper = EYE_Y + EYE_HH_UP * lid ** 0.8
    lower = EYE_Y - EYE_HH_LO * lid ** 0.8
    opening = _smoothstep(-0.002, 0.006, upper - y) * _smoothstep(-0.002, 0.006, y - lower) * (np.abs(q) < 1)
    r = np.hypot(np.abs(x) - EYE_X, y - (EYE_Y + 0.004))
    iris = _smoothstep(IRIS_R + 0.004, IRIS_R - 0.006, r) * opening
    pupil = _smoothstep(PUPIL_R + 0.004, PUPIL_R - 0.004, r) * opening
    lash = np.exp(-0.5 * ((y - upper - 0.004) / 0.01) ** 2) * (np.abs(q) < 1.12)
    return opening, iris, pupil, lash


def _brow_centre(ax):
    return np.interp(ax, [0.08, 0.16, 0.30, 0.44, 0.52], [0.29, 0.305, 0.335, 0.32, 0.28])


def _brow_region(x, y):
    ax = np.abs(x)
    thick = np.interp(ax, [0.08, 0.2, 0.5], [0.028, 0.025, 0.012])
    along = _smoothstep(0.06, 0.1, ax) * _smoothstep(0.54, 0.48, ax)
    return along * _smoothstep(thick + 0.008, thick - 0.004, np.abs(y - _brow_centre(ax)))


def _lip_region(x, y):
    t = _taper(x, MOUTH_HW)
    bow = 1.0 - 0.18 * np.exp(-0.5 * (x / 0.03) ** 2) + 0.08 * np.exp(-0.5 * ((np.abs(x) - 0.07) / 0.04) ** 2)
    up = _smoothstep(0.006, -0.004, (y - MOUTH_Y) - UPPER_LIP_H * t * bow) * (y >= MOUTH_Y - 1e-9)
    lo = _smoothstep(0.006, -0.004, (MOUTH_Y - y) - LOWER_LIP_H * t) * (y <= MOUTH_Y + 1e-9)
    return np.clip(up + lo, 0.0, 1.0) * (np.abs(x) <= MOUTH_HW + 0.01)


def _nostril_region(x, y):
    return _gauss_pair(x, y, 0.058, -0.255, 0.022, 0.012)


# ------------------------------------------------------------------------------------------------ mesh

def _grid_lines(lo, hi, n, bumps):
    """n monotone grid lines on [lo, hi] whose spacing shrinks where `bumps` (centre, width, gain) ask."""
    fine = np.linspace(lo, hi, 4001)
    dens = np.ones_like(fine)
    for c, w, g in bumps:
        dens += g * np.exp(-0.5 * ((fine - c) / w) ** 2)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(fine))])
    return np.interp(np.linspace(0.0, cdf[-1], n), cdf, fine)


def _snap(lines, value):
    i = int(np.argmin(np.abs(lines - value)))
    lines[i] = value
    return i


def _face_grid(scale: float):
    """Grid lines: u in [-1, 1] across the face (x = u * halfwidth(y)) and y from chin to forehead."""
    nul = int(round(61 * scale)) | 1  # odd, so u = 0 is a grid line
    nyl = int(round(80 * scale))
    ue = EYE_X / float(_outline_halfwidth(np.array(EYE_Y)))
    us = _grid_lines(-1.0, 1.0, nul, [(-ue, 0.12, 1.2), (ue, 0.12, 1.2), (0.0, 0.16, 0.8)])
    us = 0.5 * (us - us[::-1])  # exact mirror symmetry
    us[nul // 2] = 0.0
    uc = MOUTH_HW / float(_outline_halfwidth(np.array(MOUTH_Y)))
    ci = int(np.argmin(np.abs(us - uc)))
    us[ci], us[nul - 1 - ci] = uc, -uc  # mouth corners sit exactly on grid columns
    yb = [(EYE_Y, 0.07, 1.6), (MOUTH_Y, 0.09, 1.3), (-0.2, 0.08, 0.6), (0.31, 0.05, 0.6)]
    ys = _grid_lines(Y_BOT, Y_TOP, nyl, yb)
    row_m = _snap(ys, MOUTH_Y)
    return us, ys, row_m, uc


def _build_mesh(scale: float):
    """Face mesh (a grid warped to the outline) with a duplicated mouth line, plus the mouth cavity patch."""
    us, ys, row_m, uc = _face_grid(scale)
    gu, gy = np.meshgrid(us, ys)  # (rows = y, cols = u)
    gx = gu * _outline_halfwidth(gy)
    vid = np.arange(gx.size).reshape(gx.shape)
    px, py = gx.ravel(), gy.ravel()
    slit_cols = np.where(np.abs(us) < uc - 1e-9)[0]
    n = px.size
    side = np.zeros(n, np.int8)  # +1 upper lip line, -1 lower lip copy, 0 elsewhere
    side[vid[row_m, slit_cols]] = 1
    low_vid = vid[row_m].copy()
    low_vid[slit_cols] = n + np.arange(slit_cols.size)
    px = np.concatenate([px, gx[row_m, slit_cols]])
    py = np.concatenate([py, np.full(slit_cols.size, MOUTH_Y)])
    side = np.concatenate([side, -np.ones(slit_cols.size, np.int8)])

    left_half = (0.5 * (us[:-1] + us[1:]) < 0)[:, None]
    tris = []
    for r in range(len(ys) - 1):
        top = low_vid if r + 1 == row_m else vid[r + 1]  # cells just below the mouth line use the lower copies
        bl, br, tl, tr = vid[r, :-1], vid[r, 1:], top[:-1], top[1:]
        # mirror the diagonal on the two halves so the mesh is left-right symmetric (counter-clockwise, y up)
        tris.append(np.where(left_half, np.stack([bl, br, tr], 1), np.stack([bl, br, tl], 1)))
        tris.append(np.where(left_half, np.stack([bl, tr, tl], 1), np.stack([br, tr, tl], 1)))
    face_tri = np.concatenate(tris, 0)

    # mouth cavity: a dark recessed patch behind the lips, visible only when the mouth opens
    n_face = px.size
    cx = _grid_lines(-MOUTH_HW * 0.97, MOUTH_HW * 0.97, max(9, int(round(21 * scale))) | 1, [])
    cy = _grid_lines(MOUTH_Y - 0.24, MOUTH_Y + 0.06, max(7, int(round(15 * scale))), [])
    ccx, ccy = np.meshgrid(cx, cy)
    cav_idx = n_face + np.arange(ccx.size).reshape(ccx.shape)
    a, b, c, d = cav_idx[:-1, :-1], cav_idx[:-1, 1:], cav_idx[1:, 1:], cav_idx[1:, :-1]
    cav_tri = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    px = np.concatenate([px, ccx.ravel()])
    py = np.concatenate([py, ccy.ravel()])
    side = np.concatenate([side, np.zeros(ccx.size, np.int8)])
    cavity = np.zeros(px.size, bool)
    cavity[n_face:] = True
    return px, py, side, cavity, np.concatenate([face_tri, cav_tri]).astype(np.int64)


def _mean_shape(px, py, cavity):
    z = _height(px, py)
    zc = _height(np.zeros_like(px), np.full_like(py, MOUTH_Y)) - 0.13 - 0.35 * (px / MOUTH_HW) ** 2
    zc -= 0.25 * np.clip(MOUTH_Y - 0.02 - py, 0.0, None)
    z = np.where(cavity, np.minimum(zc, z - 0.05), z)
    return np.stack([px, py, z], -1)


# ------------------------------------------------------------------------------------------------ landmarks

def _landmark_targets():
    """68 (x, y, group) targets in iBUG order; group 0 face, +1 upper lip line, -1 lower lip line."""
    pts = []
    # jaw 0-16: equally spaced along the outline (slightly inside) from image-left at eye level round the chin
    yy = np.linspace(0.08, Y_BOT, 400)
    hw = np.maximum(_outline_halfwidth(yy), 0.0)
    lx = -(hw * 0.96)
    ly = yy + 0.02 * (yy < -0.9)
    path = np.concatenate([np.stack([lx, ly], 1), np.stack([-lx[::-1], ly[::-1]], 1)[1:]])
    seg = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))]
    for s in np.linspace(0.0, seg[-1], 17):
        pts.append((np.interp(s, seg, path[:, 0]), np.interp(s, seg, path[:, 1]), 0))
    for sgn, xs in ((-1, (0.50, 0.42, 0.33, 0.24, 0.14)), (1, (0.14, 0.24, 0.33, 0.42, 0.50))):  # brows 17-26
        for ax in xs:
            pts.append((sgn * ax, _brow_centre(ax) + 0.012, 0))
    for y in (0.16, 0.06, -0.04, NOSE_TIP_Y):  # nose bridge 27-30
        pts.append((0.0, y, 0))
    for x, y in ((-0.10, -0.235), (-0.05, -0.255), (0.0, -0.265), (0.05, -0.255), (0.10, -0.235)):  # 31-35
        pts.append((x, y, 0))

    def lid(xq, upper):
        q = (abs(xq) - EYE_X) / EYE_HW
        liv = max(1.0 - q * q, 0.0) ** 0.8
        return EYE_Y + EYE_HH_UP * liv if upper else EYE_Y - EYE_HH_LO * liv

    for ex in (-EYE_X, EYE_X):  # eyes 36-47
        o, i = (ex - EYE_HW, ex + EYE_HW) if ex < 0 else (ex + EYE_HW, ex - EYE_HW)
        a1, a2 = (ex - EYE_HW / 3, ex + EYE_HW / 3) if ex < 0 else (ex + EYE_HW / 3, ex - EYE_HW / 3)
        if ex < 0:  # 36 outer, 37, 38 upper, 39 inner, 40, 41 lower
            seq = [(o, EYE_Y), (a1, lid(a1, True)), (a2, lid(a2, True)), (i, EYE_Y), (a2, lid(a2, False)),
                   (a1, lid(a1, False))]
        else:  # 42 inner, 43, 44 upper, 45 outer, 46, 47 lower
            seq = [(i, EYE_Y), (a2, lid(a2, True)), (a1, lid(a1, True)), (o, EYE_Y), (a1, lid(a1, False)),
                   (a2, lid(a2, False))]
        pts.extend((x, y, 0) for x, y in seq)
    w = MOUTH_HW

    def up_edge(x):
        return MOUTH_Y + UPPER_LIP_H * float(_taper(np.array(x), w)) * (1.0 - 0.18 * np.exp(-0.5 * (x / 0.03) ** 2))

    def lo_edge(x):
        return MOUTH_Y - LOWER_LIP_H * float(_taper(np.array(x), w))

    outer = [(-w - 0.012, MOUTH_Y, 0)]  # 48 left corner
    outer += [(x, up_edge(x), 0) for x in (-0.6 * w, -0.25 * w, 0.0, 0.25 * w, 0.6 * w)]  # 49-53
    outer += [(w + 0.012, MOUTH_Y, 0)]  # 54 right corner
    outer += [(x, lo_edge(x), 0) for x in (0.6 * w, 0.3 * w, 0.0, -0.3 * w, -0.6 * w)]  # 55-59
    inner = [(-w, MOUTH_Y, 0)] + [(x, MOUTH_Y, 1) for x in (-0.45 * w, 0.0, 0.45 * w)]  # 60-63
    inner += [(w, MOUTH_Y, 0)] + [(x, MOUTH_Y, -1) for x in (0.45 * w, 0.0, -0.45 * w)]  # 64-67
    pts += outer + inner
    assert len(pts) == 68
    return pts


def _landmark_indices(px, py, side, cavity):
    idx = []
    for x, y, g in _landmark_targets():
        ok = ~cavity & ((side == g) if g != 0 else (side >= 0))
        if g == 0 and abs(y - MOUTH_Y) < 1e-9:
            ok = ~cavity & (side == 0)  # mouth corners: the shared (not duplicated) vertices
        d = (px - x) ** 2 + (py - y) ** 2
        d[~ok] = np.inf
        idx.append(int(np.argmin(d)))
    return np.array(idx, np.int64)


# ------------------------------------------------------------------------------------------------ texture

def _mean_texture(px, py, cavity):
    skin = np.array([222.0, 170.0, 142.0])
    tex = np.tile(skin, (px.size, 1))
    tex += (np.array([10.0, -6.0, -6.0]) * _gauss_pair(px, py, 0.42, -0.2, 0.14, 0.12)[:, None])  # cheeks
    tex += (np.array([8.0, -4.0, -4.0]) * _gauss(px, py, 0.0, -0.16, 0.06, 0.06)[:, None])  # nose tip
    # slightly darker toward the outline, as a sun-tan/shadow cue that keeps the silhouette readable
    edge = _smoothstep(0.75, 1.0, np.abs(px) / np.maximum(_outline_halfwidth(py), 0.05))
    tex -= np.array([25.0, 25.0, 22.0]) * edge[:, None]
    brow = _brow_region(px, py)[:, None]
    tex = tex * (1 - brow) + np.array([82.0, 58.0, 46.0]) * brow
    lips = _lip_region(px, py)[:, None]
    tex = tex * (1 - lips) + np.array([190.0, 92.0, 92.0]) * lips
    line = (np.exp(-0.5 * ((py - MOUTH_Y) / 0.006) ** 2) * (np.abs(px) < MOUTH_HW))[:, None]
    tex = tex * (1 - 0.6 * line) + np.array([90.0, 35.0, 35.0]) * 0.6 * line
    nos = _nostril_region(px, py)[:, None]
    tex = tex * (1 - 0.8 * nos) + np.array([70.0, 40.0, 35.0]) * 0.8 * nos
    opening, iris, pupil, lash = (v[:, None] for v in _eye_regions(px, py))
    tex = tex * (1 - opening) + np.array([232.0, 228.0, 222.0]) * opening
    tex = tex * (1 - iris) + np.array([92.0, 62.0, 40.0]) * iris
    tex = tex * (1 - pupil) + np.array([18.0, 14.0, 12.0]) * pupil
    tex = tex * (1 - 0.85 * lash) + np.array([40.0, 28.0, 24.0]) * 0.85 * lash
    # cavity: dark mouth with a band of upper teeth just behind the upper lip
    teeth = (_smoothstep(MOUTH_Y - 0.06, MOUTH_Y - 0.04, py) * _taper(px, MOUTH_HW * 0.75))[:, None]
    cav = np.array([70.0, 22.0, 24.0]) * (1 - teeth) + np.array([235.0, 230.0, 215.0]) * teeth
    tex[cavity] = cav[cavity]
    return np.clip(tex, 0.0, 255.0)


def _eye_zone(px, py):
    return ((np.abs(px) - EYE_X) / (EYE_HW + 0.02)) ** 2 + ((py - EYE_Y) / (EYE_HH_UP + 0.02)) ** 2 < 1


def _skin_mask(px, py, cavity):
    opening = _eye_regions(px, py)[0]
    not_skin = (opening > 0.1) | _eye_zone(px, py) | (_brow_region(px, py) > 0.3) | (_lip_region(px, py) > 0.3)
    not_skin |= _nostril_region(px, py) > 0.3
    return ~not_skin & ~cavity


# ------------------------------------------------------------------------------------------------ bases

def _random_fields(rng, px, py, count, amp0, decay, centre_box, sigma_range, sym_prob=0.7, weight=None, mix=None):
    """`count` smooth random 3D fields (V, 3, count): sums of Gaussian RBFs, RMS amplitude amp0 * decay^k.

    mix (3, 3): correlates the three channels (amplitude vectors are mix @ N(0, I)), e.g. mostly-luminance colour.
    """
    out = np.zeros((px.size, 3, count))
    (x0, x1), (y0, y1) = centre_box
    for k in range(count):
        f = np.zeros((px.size, 3))
        sym = rng.random() < sym_prob
        for _ in range(5):
            cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
            s = rng.uniform(*sigma_range)
            amp = rng.normal(size=3)
            if mix is not None:
                amp = mix @ amp
            g = _gauss(px, py, cx, cy, s, s)[:, None] * amp
            if sym:
                g = g + _gauss(px, py, -cx, cy, s, s)[:, None] * amp * np.array([-1.0, 1.0, 1.0])
            f += g
        if weight is not None:
            f *= weight[:, None]
        f *= amp0 * decay ** k / max(np.sqrt((f ** 2).sum(1).mean()), 1e-12)
        out[:, :, k] = f
    return out


def _jaw_weight(px, py, side, cavity):
    """How much each vertex follows the jaw (0..1); discontinuous only across the mouth slit."""
    ax = np.abs(px)
    lateral = np.where(ax < 0.6 * MOUTH_HW, 1.0,
                       np.interp(ax, [0.6 * MOUTH_HW, MOUTH_HW, MOUTH_HW + 0.2, MOUTH_HW + 0.45],
                                 [1.0, 0.55, 0.25, 0.08]))
    below = lateral * _smoothstep(MOUTH_Y + 0.12, MOUTH_Y, py)
    corner = _smoothstep(MOUTH_HW - 0.1, MOUTH_HW, ax)
    upper_part = (py > MOUTH_Y + 1e-9) | (side == 1)
    w = np.where(upper_part & (ax < MOUTH_HW), below * corner, below)
    w = np.where(cavity, _smoothstep(MOUTH_Y - 0.01, MOUTH_Y - 0.16, py), w)
    return w


def _identity_bases(rng, px, py, pz, count):
    v = px.size
    named = []

    def field(dx=0.0, dy=0.0, dz=0.0):
        f = np.zeros((v, 3))
        f[:, 0], f[:, 1], f[:, 2] = dx, dy, dz
        return f

    lower = _smoothstep(-0.2, -0.6, py)
    nose_c = _gauss(px, py, 0.0, -0.1, 0.16, 0.2)
    mouth = _gauss(px, py, 0.0, MOUTH_Y, 0.3, 0.12)
    named.append(field(dx=0.05 * px))  # face_width
    named.append(field(dy=0.05 * py))  # face_length
    named.append(field(dz=0.08 * (pz - pz.min())))  # face_depth
    named.append(field(dx=0.1 * px * nose_c, dz=0.22 * _nose_height(px, py)))  # nose_size
    named.append(field(dy=-0.035 * _gauss(px, py, 0.0, -0.16, 0.12, 0.07),
                       dz=0.02 * _gauss(px, py, 0.0, -0.15, 0.08, 0.06)))  # nose_length
    named.append(field(dx=0.025 * np.sign(px) * _gauss_pair(px, py, 0.12, -0.2, 0.07, 0.07)))  # nose_width
    named.append(field(dx=0.06 * px * lower))  # jaw_width
    named.append(field(dy=-0.05 * _smoothstep(-0.55, -0.92, py)))  # chin_length
    named.append(field(dz=0.04 * _gauss_pair(px, py, 0.42, -0.28, 0.16, 0.16)))  # cheek_fullness
    named.append(field(dx=0.02 * np.sign(px) * _gauss_pair(px, py, EYE_X, EYE_Y + 0.08, 0.17, 0.13)))  # eye_spacing
    named.append(field(dy=0.025 * _gauss_pair(px, py, 0.3, 0.32, 0.2, 0.06)))  # brow_height
    lips = _lip_bumps(px, py) / 0.06
    named.append(field(dy=0.012 * np.sign(py - MOUTH_Y) * lips, dz=0.02 * lips))  # lip_thickness
    named.append(field(dx=0.03 * px / MOUTH_HW * mouth))  # mouth_width
    named.append(field(dz=-0.07 * _smoothstep(0.3, 0.9, py)))  # forehead_slope
    named = np.stack(named, -1)
    rest = _random_fields(rng, px, py, max(0, count - named.shape[-1]), 0.016, 0.94, ((-0.6, 0.6), (-0.9, 0.8)),
                          (0.15, 0.45))
    return np.concatenate([named, rest], -1)[:, :, :count]


def _expression_bases(rng, px, py, pz, side, cavity, count):
    v = px.size
    jaw = _jaw_weight(px, py, side, cavity)
    # jaw opening: derivative of a rotation about a hinge behind and above the mouth (chin goes down and back)
    theta, hy, hz = 0.1, 0.1, -0.6
    jaw_open = np.stack([np.zeros(v), -theta * (pz - hz), theta * (py - hy)], -1) * jaw[:, None]
    corners = (_gauss(px, py, MOUTH_HW, MOUTH_Y, 0.09, 0.08), _gauss(px, py, -MOUTH_HW, MOUTH_Y, 0.09, 0.08))

    def corner_field(out, up, back):
        return (np.stack([out * corners[0], up * corners[0], back * corners[0]], -1)
                + np.stack([-out * corners[1], up * corners[1], back * corners[1]], -1))

    mouth = _gauss(px, py, 0.0, MOUTH_Y, 0.22, 0.12)
    ff = []
    ff.append(jaw_open)
    smile = corner_field(0.035, 0.045, -0.02)
    smile[:, 1] += 0.02 * _gauss_pair(px, py, 0.38, -0.2, 0.12, 0.12)
    smile[:, 2] += 0.015 * _gauss_pair(px, py, 0.38, -0.2, 0.12, 0.12)
    smile[:, 1] += 0.008 * _gauss_pair(px, py, EYE_X, EYE_Y - 0.06, 0.1, 0.03)
    ff.append(smile)
    ff.append(np.stack([-0.3 * px * mouth, -0.2 * (py - MOUTH_Y) * mouth, 0.05 * mouth], -1))  # pucker
    ff.append(np.stack([np.zeros(v), 0.035 * _gauss(px, py, 0.0, 0.4, 0.4, 0.15), np.zeros(v)], -1))  # brow_raise
    inner = _gauss_pair(px, py, 0.15, 0.3, 0.1, 0.08)
    ff.append(np.stack([-0.02 * np.sign(px) * inner, -0.02 * inner, 0.005 * inner], -1))  # brow_furrow
    ff.append(np.stack([np.zeros(v), np.zeros(v), 0.05 * _gauss_pair(px, py, 0.35, -0.42, 0.13, 0.13)], -1))
    ff.append(np.stack([0.04 * _gauss(px, py, 0.0, MOUTH_Y, 0.3, 0.15), np.zeros(v), np.zeros(v)], -1))
    lower_lip = _gauss(px, py, 0.0, MOUTH_Y - 0.05, 0.2, 0.08) * ((py < MOUTH_Y - 1e-9) | (side == -1))
    ff.append(np.stack([np.zeros(v), -0.03 * lower_lip, 0.01 * lower_lip], -1))  # lower_lip_down
    upper_lip = _gauss(px, py, 0.0, MOUTH_Y + 0.05, 0.2, 0.07) * ((py > MOUTH_Y + 1e-9) | (side == 1))
    ff.append(np.stack([np.zeros(v), 0.025 * upper_lip, 0.005 * upper_lip], -1))  # upper_lip_raise
    ff.append(corner_field(0.0, -0.035, -0.005))  # frown
    ff.append(corner_field(0.04, -0.01, -0.01))  # mouth_stretch
    lipsw = _lip_bumps(px, py) / 0.06
    ff.append(np.stack([np.zeros(v), np.zeros(v), -0.02 * lipsw], -1))  # lip_press
    upper_lid = _gauss_pair(px, py, EYE_X, EYE_Y + 0.04, 0.12, 0.04)
    lower_lid = _gauss_pair(px, py, EYE_X, EYE_Y - 0.05, 0.12, 0.03)
    ff.append(np.stack([np.zeros(v), -0.012 * upper_lid + 0.008 * lower_lid, np.zeros(v)], -1))  # eye_squint
    named = np.stack(ff, -1)
    local = (_gauss(px, py, 0.0, MOUTH_Y, 0.35, 0.25) + _gauss_pair(px, py, EYE_X, 0.22, 0.2, 0.15))
    rest = _random_fields(rng, px, py, max(0, count - named.shape[-1]), 0.012, 0.96, ((-0.5, 0.5), (-0.8, 0.45)),
                          (0.08, 0.25), weight=np.clip(local, 0.0, 1.0))
    return np.concatenate([named, rest], -1)[:, :, :count]


def _texture_bases(rng, px, py, skin_w, cavity, count):
    lips = _lip_region(px, py)
    brow = _brow_region(px, py)
    _, iris, _, _ = _eye_regions(px, py)
    cheeks = _gauss_pair(px, py, 0.42, -0.2, 0.14, 0.12)
    cols = [
        np.outer(skin_w, [-30.0, -30.0, -27.0]),  # skin_tone (positive = darker)
        np.outer(skin_w, [7.0, -2.5, -2.5]),  # skin_redness
        np.outer(skin_w, [4.0, 4.0, -10.0]),  # skin_yellowness
        np.outer(lips, [15.0, -12.0, -8.0]),  # lip_colour
        np.outer(brow, [-25.0, -20.0, -17.0]),  # brow_darkness
        np.outer(iris, [-30.0, -8.0, 22.0]),  # iris_colour
        np.outer(cheeks * skin_w, [12.0, -5.0, -5.0]),  # cheek_blush
    ]
    named = np.stack(cols, -1)
    # skin colour varies mostly in brightness, a little in hue
    mix = np.array([[1.0, 0.12, 0.05], [0.85, -0.04, 0.05], [0.75, -0.04, -0.1]])
    rest = _random_fields(rng, px, py, max(0, count - named.shape[-1]), 5.0, 0.95, ((-0.7, 0.7), (-0.95, 0.85)),
                          (0.1, 0.5), sym_prob=0.8, weight=np.where(cavity, 0.0, 1.0), mix=mix)
    return np.concatenate([named, rest], -1)[:, :, :count]


def _flat(b):
    """(V, 3, K) -> BFM layout (3V, K), xyz interleaved per vertex."""
    return b.reshape(-1, b.shape[-1])


def build_synthetic(seed: int = 0, n_vertices: int | None = None, n_id: int = 80, n_exp: int = 64,
                    n_tex: int = 80) -> dict:
    """Generate the synthetic model's arrays (float32 / int64 numpy), deterministic for (seed, n_vertices).

    Returns a dict with meanshape (V, 3) recentred, idBase (3V, n_id), exBase (3V, n_exp), meantex (V, 3) in
    0..255, texBase (3V, n_tex), tri (F, 3) 0-based, keypoints (68,) 0-based, skinmask (V,) bool, cavity (V,) bool.
    n_vertices is a target: the returned mesh has roughly that many vertices.
    """
    target = DEFAULT_VERTICES if n_vertices is None else int(n_vertices)
    if target < 500:
        raise ValueError(f"n_vertices must be >= 500 (got {target})")
    scale = 1.0
    for _ in range(4):  # a few secant-like steps: vertex count grows ~ scale^2
        px, py, side, cavity, tri = _build_mesh(scale)
        scale *= np.sqrt(target / px.size)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x3D3D]))
    mean = _mean_shape(px, py, cavity)
    pz = mean[:, 2]
    skin = _skin_mask(px, py, cavity)
    # how much skin-colour changes reach a vertex: lips and brows follow half-way, eyes and mouth cavity not at all
    skin_w = np.where(skin, 1.0, np.where(_eye_zone(px, py) | cavity, 0.0, 0.5))
    id_b = _identity_bases(rng, px, py, pz, n_id)
    exp_b = _expression_bases(rng, px, py, pz, side, cavity, n_exp)
    tex_b = _texture_bases(rng, px, py, skin_w, cavity, n_tex)
    mean = mean - mean.mean(0, keepdims=True)
    return {
        "meanshape": mean.astype(np.float32),
        "idBase": _flat(id_b).astype(np.float32),
        "exBase": _flat(exp_b).astype(np.float32),
        "meantex": _mean_texture(px, py, cavity).astype(np.float32),
        "texBase": _flat(tex_b).astype(np.float32),
        "tri": tri.astype(np.int64),
        "keypoints": _landmark_indices(px, py, side, cavity),
        "skinmask": skin,
        "cavity": cavity,
    }
