"""3D morphable face model: coefficient layout, BFM loader and the procedural synthetic model.

Coefficients follow Deng et al.'s layout (id | exp | tex | angle | gamma | trans), always handled through
`CoeffLayout`. Geometry is in BFM units (decimetres), x to image right, y up, z toward the camera.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import synthetic as _synth

__all__ = ["CoeffLayout", "MorphableModel", "EXPRESSION_NAMES", "EXPRESSION_PRESETS"]

# Expression coefficient index of each named expression of the synthetic model (BFM's PCA has no names).
EXPRESSION_NAMES: dict[str, int] = {name: i for i, name in enumerate(_synth.EXPRESSION_NAMES)}
# Ready-made edits (expression name -> coefficient value) for the synthetic model.
EXPRESSION_PRESETS: dict[str, dict[str, float]] = {
    "neutral": {},
    "open_mouth": {"jaw_open": 2.0},
    "smile": {"smile": 2.0},
    "big_smile": {"smile": 2.5, "jaw_open": 0.8},
    "pucker": {"pucker": 2.0},
    "surprise": {"jaw_open": 1.6, "brow_raise": 2.0},
    "frown": {"frown": 2.0, "brow_furrow": 2.0},
}


class _SparseMatmul(torch.autograd.Function):
    """y = M @ x for a constant sparse CSR matrix given with its precomputed transpose as (M, M^T).

    PyTorch's own backward of CSR @ dense rebuilds the transpose on every call; this one reuses it.
    """

    @staticmethod
    def forward(ctx, mats, x):
        ctx.mat_t = mats[1]
        return mats[0] @ x

    @staticmethod
    def backward(ctx, grad):
        return None, ctx.mat_t @ grad


class _BasisProduct(torch.autograd.Function):
    """coeff (B, K) x basis (N, K) -> (B, N) = coeff @ basis^T, with both directions in their fast layouts.

    The basis is large (N = 3V ~ 1e5) and the product memory-bound: forward reads it as (N, K) @ (K, B), backward
    as (B, N) @ (N, K); on CPU these are 1.5x and 7x faster than the other orientations of the same products.
    """

    @staticmethod
    def forward(ctx, coeff, basis):
        ctx.save_for_backward(coeff, basis)
        return (basis @ coeff.t()).t().contiguous()

    @staticmethod
    def backward(ctx, grad):
        coeff, basis = ctx.saved_tensors
        g_coeff = grad @ basis if ctx.needs_input_grad[0] else None
        g_basis = grad.t() @ coeff if ctx.needs_input_grad[1] else None
        return g_coeff, g_basis


def _unit(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x / |x| along ``dim`` (zero vectors stay zero); one fused rsqrt instead of F.normalize's norm + divide."""
    return x * (x * x).sum(dim, keepdim=True).clamp_min(1e-24).rsqrt()


class CoeffLayout:
    """Named layout of a flat 3DMM coefficient vector (Deng et al.: id 80 | exp 64 | tex 80 | angle 3 | gamma 27 |
    trans 3 = 257).

    angle: Euler angles (x pitch, y yaw, z roll) in radians; gamma: 27 SH lighting coefficients (9 R, 9 G, 9 B);
    trans: translation in decimetres.
    """

    ORDER = ("id", "exp", "tex", "angle", "gamma", "trans")

    def __init__(self, id: int = 80, exp: int = 64, tex: int = 80, angle: int = 3, gamma: int = 27,  # noqa: A002
                 trans: int = 3):
        self.sizes = {"id": int(id), "exp": int(exp), "tex": int(tex), "angle": int(angle), "gamma": int(gamma),
                      "trans": int(trans)}
        if self.sizes["angle"] != 3 or self.sizes["gamma"] != 27 or self.sizes["trans"] != 3:
            raise ValueError(f"angle/gamma/trans sizes must be 3/27/3 (got {angle}/{gamma}/{trans})")
        self._slices, start = {}, 0
        for name in self.ORDER:
            self._slices[name] = slice(start, start + self.sizes[name])
            start += self.sizes[name]
        self.size = start

    @property
    def names(self) -> tuple[str, ...]:
        return self.ORDER

    def slice(self, name: str) -> slice:
        if name not in self._slices:
            raise KeyError(f"unknown coefficient group {name!r}; valid: {', '.join(self.ORDER)}")
        return self._slices[name]

    def split(self, coeffs: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, size) -> dict name -> (N, size_of_name) views."""
        if coeffs.shape[-1] != self.size:
            raise ValueError(f"coefficients have {coeffs.shape[-1]} entries, layout expects {self.size}")
        return {name: coeffs[..., s] for name, s in self._slices.items()}

    def join(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """dict name -> (N, size_of_name) -> (N, size); missing groups are zero."""
        unknown = set(parts) - set(self.ORDER)
        if unknown:
            raise KeyError(f"unknown coefficient group(s) {sorted(unknown)}; valid: {', '.join(self.ORDER)}")
        ref = next(iter(parts.values()))
        out = []
        for name in self.ORDER:
            if name in parts:
                p = parts[name]
                if p.shape[-1] != self.sizes[name]:
                    raise ValueError(f"group {name!r} has {p.shape[-1]} entries, layout expects {self.sizes[name]}")
                out.append(p)
            else:
                out.append(ref.new_zeros(*ref.shape[:-1], self.sizes[name]))
        return torch.cat(out, dim=-1)

    def zeros(self, n: int, device=None, dtype=torch.float32) -> torch.Tensor:
        return torch.zeros(n, self.size, device=device, dtype=dtype)

    def __eq__(self, other) -> bool:
        return isinstance(other, CoeffLayout) and other.sizes == self.sizes

    def __hash__(self) -> int:
        return hash(tuple(self.sizes.values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.sizes.items())
        return f"CoeffLayout({inner}; size={self.size})"


_BFM_REQUIRED = ("meanshape", "idBase", "exBase", "meantex", "texBase", "tri", "keypoints")


class MorphableModel(nn.Module):
    """Linear face model with buffers only (no parameters).

    Buffers (non-persistent, so checkpoints of modules that hold a model stay small):
      mean_shape (V, 3); shape_base (3V, K_id + K_exp) = [id_base | exp_base] (both also properties), tex_base
      (3V, K_tex), with xyz / rgb interleaved per vertex (BFM layout); mean_tex (V, 3) in 0..255; triangles (F, 3)
      int64; landmark_idx (68,) int64; skin_mask (V,) bool.
    expression_names: dict name -> expression index ({} for BFM, whose PCA components have no names).
    """

    def __init__(self, mean_shape, id_base, exp_base, mean_tex, tex_base, triangles, landmark_idx, skin_mask=None,
                 expression_names: dict[str, int] | None = None, name: str = "custom"):
        super().__init__()

        def f32(a):
            return torch.as_tensor(np.asarray(a), dtype=torch.float32)

        mean_shape = f32(mean_shape).reshape(-1, 3)
        v = mean_shape.shape[0]
        self.register_buffer("mean_shape", mean_shape, persistent=False)
        id_base, exp_base = f32(id_base).reshape(3 * v, -1), f32(exp_base).reshape(3 * v, -1)
        self._n_id = id_base.shape[1]
        # one (3V, K_id + K_exp) basis: the geometry is a single memory-bound product (id_base, exp_base are views)
        self.register_buffer("shape_base", torch.cat([id_base, exp_base], 1), persistent=False)
        self.register_buffer("mean_tex", f32(mean_tex).reshape(v, 3), persistent=False)
        self.register_buffer("tex_base", f32(tex_base).reshape(3 * v, -1), persistent=False)
        tri = torch.as_tensor(np.asarray(triangles), dtype=torch.long).reshape(-1, 3)
        lmk = torch.as_tensor(np.asarray(landmark_idx), dtype=torch.long).reshape(-1)
        if tri.numel() and (tri.min() < 0 or tri.max() >= v):
            raise ValueError(f"triangle indices out of range [0, {v})")
        if lmk.numel() != 68 or lmk.min() < 0 or lmk.max() >= v:
            raise ValueError(f"need 68 landmark vertex indices in [0, {v}) (got {lmk.numel()})")
        self.register_buffer("triangles", tri, persistent=False)
        self.register_buffer("landmark_idx", lmk, persistent=False)
        skin = torch.ones(v, dtype=torch.bool) if skin_mask is None else \
            torch.as_tensor(np.asarray(skin_mask)).reshape(-1) > 0
        self.register_buffer("skin_mask", skin, persistent=False)
        self.layout = CoeffLayout(id=self.id_base.shape[1], exp=self.exp_base.shape[1], tex=self.tex_base.shape[1])
        self.expression_names = dict(expression_names or {})
        self.name = name

    # ------------------------------------------------------------------------------------------ constructors
    @classmethod
    def from_bfm(cls, path, recenter: bool = True) -> MorphableModel:
        """Load Deng et al.'s `BFM_model_front.mat` (meanshape (1, 3N) decimetres, idBase (3N, 80), exBase (3N, 64),
        meantex (1, 3N) in 0..255, texBase (3N, 80), tri (F, 3) and keypoints (68,) 1-based, skinmask (N,))."""
        from scipy.io import loadmat

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"BFM file not found: {path}")
        mat = loadmat(str(path))
        for key in _BFM_REQUIRED:
            if key not in mat:
                raise KeyError(f"BFM file {path} lacks key {key!r}")
        mean = np.asarray(mat["meanshape"], np.float32).reshape(-1, 3)
        if recenter:
            mean = mean - mean.mean(0, keepdims=True)
        skin = np.squeeze(mat["skinmask"]) if "skinmask" in mat else None
        if skin is not None and skin.size != mean.shape[0]:
            skin = None  # some releases store indices rather than a per-vertex flag: fall back to all skin
        return cls(mean, mat["idBase"], mat["exBase"], np.asarray(mat["meantex"], np.float32).reshape(-1, 3),
                   mat["texBase"], np.asarray(mat["tri"], np.int64) - 1,
                   np.squeeze(np.asarray(mat["keypoints"], np.int64)) - 1, skin, expression_names={},
                   name=f"bfm:{path.name}")

    @classmethod
    def synthetic(cls, seed: int = 0, n_vertices: int | None = None, cache_dir=None) -> MorphableModel:
        """Procedural face-shaped model in BFM's layout and units (see renderer/synthetic.py).

        n_vertices: target vertex count (default ~6000; ~35709 gives a BFM-sized mesh of ~70k triangles).
        cache_dir: if given, the arrays are cached there as .npz and reloaded for the same (seed, n_vertices).
        """
        arrays = None
        cache = None
        if cache_dir is not None:
            tag = f"{_synth.GENERATOR_VERSION}_s{int(seed)}_v{n_vertices or 'default'}"
            cache = Path(cache_dir) / f"synthetic_3dmm_{tag}.npz"
            if cache.is_file():
                with np.load(cache) as z:
                    arrays = {k: z[k] for k in z.files}
        if arrays is None:
            arrays = _synth.build_synthetic(seed=seed, n_vertices=n_vertices)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_name(cache.stem + f".tmp{os.getpid()}.npz")
                np.savez_compressed(tmp, **arrays)
                os.replace(tmp, cache)  # atomic: concurrent workers never read a half-written cache
        return cls(arrays["meanshape"], arrays["idBase"], arrays["exBase"], arrays["meantex"], arrays["texBase"],
                   arrays["tri"], arrays["keypoints"], arrays["skinmask"], expression_names=EXPRESSION_NAMES,
                   name=f"synthetic:{seed}")

    # ------------------------------------------------------------------------------------------ geometry
    @property
    def id_base(self) -> torch.Tensor:
        """(3V, K_id) identity basis (a view of ``shape_base``)."""
        return self.shape_base[:, :self._n_id]

    @property
    def exp_base(self) -> torch.Tensor:
        """(3V, K_exp) expression basis (a view of ``shape_base``)."""
        return self.shape_base[:, self._n_id:]

    @property
    def n_vertices(self) -> int:
        return self.mean_shape.shape[0]

    @property
    def n_triangles(self) -> int:
        return self.triangles.shape[0]

    def shape(self, id_coeff: torch.Tensor, exp_coeff: torch.Tensor) -> torch.Tensor:
        """id (B, K_id), exp (B, K_exp) -> vertices (B, V, 3) in model space (decimetres)."""
        flat = _BasisProduct.apply(torch.cat([id_coeff, exp_coeff], 1), self.shape_base)
        return flat.view(flat.shape[0], -1, 3) + self.mean_shape

    def albedo(self, tex_coeff: torch.Tensor) -> torch.Tensor:
        """tex (B, K_tex) -> per-vertex albedo (B, V, 3), nominally in [0, 1] (not clamped, as Deng et al.)."""
        flat = _BasisProduct.apply(tex_coeff, self.tex_base)
        return (flat.view(flat.shape[0], -1, 3) + self.mean_tex) / 255.0

    def vertex_normals(self, vertices: torch.Tensor, area_weighted: bool = False) -> torch.Tensor:
        """vertices (B, V, 3) -> unit normals (B, V, 3): sum of the adjacent unit face normals, normalised
        (Deng et al.'s definition, counter-clockwise triangles face outward). ``area_weighted``: the face normals
        are summed unnormalised (each weighted by twice its triangle's area), as the authors' release does."""
        d1, d2, adj = self._normal_operators(vertices.device, vertices.dtype)
        b, v = vertices.shape[:2]
        n_f = self.triangles.shape[0]
        # sparse products keep this linear in the mesh size and fast on CPU (no gathers of (B, F, 3, 3)); columns
        # are coordinate-major (x of every face, then y, then z) so the cross product works on contiguous rows
        vt = vertices.permute(1, 2, 0).reshape(v, 3 * b)
        ax, ay, az = _SparseMatmul.apply(d1, vt).view(n_f, 3, b).unbind(1)
        bx, by, bz = _SparseMatmul.apply(d2, vt).view(n_f, 3, b).unbind(1)
        fn = torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], 1)
        if not area_weighted:
            fn = _unit(fn, dim=1)
        acc = _SparseMatmul.apply(adj, fn.view(n_f, 3 * b)).view(v, 3, b)
        return _unit(acc, dim=1).permute(2, 0, 1)

    def _normal_operators(self, device, dtype):
        """Sparse CSR operators as (M, M^T) pairs: edges D1, D2 (F, V) (v1 - v0, v2 - v0), adjacency (V, F)."""
        key = (str(device), dtype)
        cache = self.__dict__.setdefault("_normal_ops_cache", {})
        if key not in cache:
            tri = self.triangles.cpu()
            n_f, v = tri.shape[0], self.n_vertices
            f = torch.arange(n_f)
            ones = torch.ones(n_f, dtype=dtype)

            def csr(rows, cols, vals, shape):
                m = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, shape).coalesce()
                mt = torch.sparse_coo_tensor(torch.stack([cols, rows]), vals, shape[::-1]).coalesce()
                return m.to_sparse_csr().to(device), mt.to_sparse_csr().to(device)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sparse CSR support is in beta" is not actionable here
                d1 = csr(torch.cat([f, f]), torch.cat([tri[:, 1], tri[:, 0]]), torch.cat([ones, -ones]), (n_f, v))
                d2 = csr(torch.cat([f, f]), torch.cat([tri[:, 2], tri[:, 0]]), torch.cat([ones, -ones]), (n_f, v))
                adj = csr(tri.reshape(-1), f.repeat_interleave(3), torch.ones(3 * n_f, dtype=dtype), (v, n_f))
            cache[key] = (d1, d2, adj)
        return cache[key]

    def landmarks3d(self, vertices: torch.Tensor) -> torch.Tensor:
        """vertices (B, V, 3) -> the 68 landmark vertices (B, 68, 3), iBUG-68 order."""
        return vertices[:, self.landmark_idx]

    # ------------------------------------------------------------------------------------------ coefficients
    def expression(self, preset: str | dict[str, float], batch: int = 1) -> torch.Tensor:
        """Expression coefficients (batch, K_exp) for a preset name (EXPRESSION_PRESETS) or a {name: value} dict."""
        if isinstance(preset, str) and preset not in EXPRESSION_PRESETS:
            raise KeyError(f"unknown expression preset {preset!r}; valid: {', '.join(EXPRESSION_PRESETS)}")
        values = EXPRESSION_PRESETS[preset] if isinstance(preset, str) else preset
        if values and not self.expression_names:
            raise ValueError(f"model {self.name} has no named expressions (BFM's expression PCA is unnamed); "
                             "only 'neutral' applies")
        out = torch.zeros(batch, self.layout.sizes["exp"], device=self.mean_shape.device)
        for name, val in values.items():
            if name not in self.expression_names:
                raise KeyError(f"unknown expression {name!r}; valid: {', '.join(self.expression_names)}")
            out[:, self.expression_names[name]] = float(val)
        return out

    def sample_coeffs(self, n: int, generator: torch.Generator | None = None, id_std: float = 1.0,
                      exp_std: float = 0.4, tex_std: float = 1.0, max_yaw_deg: float = 30.0,
                      max_pitch_deg: float = 12.0, max_roll_deg: float = 8.0, light_std: float = 1.0,
                      trans_std: float = 0.03) -> torch.Tensor:
        """Plausible random coefficients (n, layout.size) on the model's device, deterministic for `generator`.

        Identity/texture ~ N(0, std^2); expressions ~ N(0, exp_std^2), with the named mouth/brow expressions
        of the synthetic model drawn one-sided (jaw_open >= 0: a negative jaw opening pushes the lips through each
        other); pose uniform in +-max degrees; lighting near white with random direction; small translation.
        """
        dev = self.mean_shape.device

        def randn(*shape):
            return torch.randn(*shape, generator=generator).to(dev)

        def rand(*shape):
            return torch.rand(*shape, generator=generator).to(dev)

        lay = self.layout
        parts = {"id": randn(n, lay.sizes["id"]) * id_std, "tex": randn(n, lay.sizes["tex"]) * tex_std}
        exp = randn(n, lay.sizes["exp"]) * exp_std
        if self.expression_names:
            named = [self.expression_names[k] for k in ("smile", "jaw_open", "pucker", "brow_raise", "lower_lip_down")
                     if k in self.expression_names]
            exp[:, named] = randn(n, len(named)).abs() * 1.2 * rand(n, len(named)).lt(0.4)
        parts["exp"] = exp
        lim = torch.tensor([max_pitch_deg, max_yaw_deg, max_roll_deg], device=dev) * (math.pi / 180.0)
        parts["angle"] = (rand(n, 3) * 2.0 - 1.0) * lim
        # SH band 1 of a directional light d is (-d_y, d_z, -d_x); lights come mostly from the front (d_z > 0)
        d = F.normalize(randn(n, 3) * 0.6 + torch.tensor([0.0, 0.3, 1.0], device=dev), dim=-1)
        strength = (0.2 + 0.1 * randn(n, 1)).clamp(0.05, 0.45) * light_std
        band1 = torch.stack([-d[:, 1], d[:, 2], -d[:, 0]], -1) * strength
        gamma = torch.zeros(n, 3, 9, device=dev)
        gamma[:, :, 0] = (0.06 * randn(n, 1) + 0.02 * randn(n, 3)) * light_std - 0.1 * strength
        gamma[:, :, 1:4] = band1.unsqueeze(1) * (1.0 + 0.05 * randn(n, 3, 1))
        gamma[:, :, 4:] = 0.03 * randn(n, 1, 5) * light_std
        parts["gamma"] = gamma.reshape(n, 27)
        parts["trans"] = randn(n, 3) * trans_std * torch.tensor([1.0, 1.0, 2.0], device=dev)
        return lay.join(parts)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_normal_ops_cache", None)  # sparse CSR tensors need not (and may not) pickle
        return state

    def extra_repr(self) -> str:
        return f"name={self.name}, vertices={self.n_vertices}, triangles={self.n_triangles}, layout={self.layout}"
