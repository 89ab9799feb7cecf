"""Synthetic faces: renders of the morphable model with random coefficients, with their exact ground truth.

Items are dicts as the photo datasets' (data.photos module doc), always with ``face_mask`` and ``coeffs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from data.io import to_uint8
from data.splits import item_seed
from engine.config import ConfigError

__all__ = ["SyntheticFaces"]


def _smooth_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 in [0, 1]: a linear two-colour gradient at a random angle plus low-frequency colour
    noise (a 4x4 grid of N(0, 0.08) upsampled bicubically), so a face never sits on black."""
    c0, c1 = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    theta = rng.uniform(0.0, 2.0 * np.pi)
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size - 0.5
    xx, yy = np.meshgrid(coords, coords)
    t = np.clip((xx * np.cos(theta) + yy * np.sin(theta)) / np.sqrt(0.5) + 0.5, 0.0, 1.0)[..., None]
    grad = c0 * (1.0 - t) + c1 * t
    noise = rng.normal(0.0, 0.08, (4, 4, 3)).astype(np.float32)
    noise = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(grad + noise, 0.0, 1.0).astype(np.float32)


class SyntheticFaces(Dataset):
    """Faces rendered from the morphable model with random coefficients, over random smooth backgrounds.

    Item i depends only on (seed, offset + i): use different offsets for disjoint train / held-out sets. Items carry
    the exact ground truth: ``coeffs`` (257,), ``landmarks`` (renderer landmarks), ``face_mask`` (renderer mask).

    Coefficients: ``model.sample_coeffs(1, generator, ...)`` with a torch.Generator seeded by item_seed(seed,
    offset + i) (renderer.morphable.MorphableModel.sample_coeffs): id ~ N(0, id_sigma^2), tex ~ N(0, tex_sigma^2),
    exp ~ N(0, exp_sigma^2) (the synthetic model's named mouth / brow expressions one-sided), angles (pitch, yaw, roll)
    uniform in +-(pitch_deg, yaw_deg, roll_deg), SH lighting near white with a random direction (scaled by
    light_sigma; the renderer adds its 0.8 ambient), translation ~ N(0, trans_sigma^2) (x2 for z, decimetres).
    Background: see _smooth_background. Images and masks are stored as uint8 (the image is quantised to 1/255).

    Rendering is batched in chunks of ``chunk`` consecutive items and, with ``cache=True``, kept in memory (about
    S * S * 4 bytes per item); ``prerender()`` fills the whole cache, best done before DataLoader workers start so
    they share it instead of each rendering its own copy.

    Args:
        num: number of items.
        image_size: output side S.
        seed, offset: see above.
        model: a renderer.morphable.MorphableModel (default: MorphableModel.synthetic()).
        backend: rasterizer backend name for renderer.render.FaceRenderer.
        device: where to render ("cpu", "cuda"); items are returned on the CPU.
    """

    provides = frozenset({"face_mask", "coeffs"})

    def __init__(
        self,
        num: int,
        image_size: int,
        seed: int = 0,
        model: Any = None,
        backend: str = "torch",
        offset: int = 0,
        id_sigma: float = 1.0,
        exp_sigma: float = 0.4,
        tex_sigma: float = 1.0,
        yaw_deg: float = 30.0,
        pitch_deg: float = 12.0,
        roll_deg: float = 8.0,
        light_sigma: float = 1.0,
        trans_sigma: float = 0.03,
        cache: bool = True,
        chunk: int = 64,
        device: str = "cpu",
        config_key: str = "data",
    ) -> None:
        if num <= 0:
            raise ConfigError(f"{config_key}.num: must be > 0, got {num}")
        self.num, self.image_size, self.seed, self.offset = int(num), int(image_size), int(seed), int(offset)
        self.sample_kwargs = dict(
            id_std=float(id_sigma), exp_std=float(exp_sigma), tex_std=float(tex_sigma), max_yaw_deg=float(yaw_deg),
            max_pitch_deg=float(pitch_deg), max_roll_deg=float(roll_deg), light_std=float(light_sigma),
            trans_std=float(trans_sigma),
        )
        self.cache, self.chunk, self.device, self.backend = bool(cache), int(chunk), device, backend
        self.config_key = config_key
        self._model = model
        self._renderer = None
        self._chunks: dict[int, dict[str, np.ndarray]] = {}
        self.skipped = 0

    def __len__(self) -> int:
        return self.num

    # -- model -------------------------------------------------------------------------------------------------------
    @property
    def renderer(self):
        if self._renderer is None:
            from renderer.morphable import MorphableModel
            from renderer.render import FaceRenderer

            if self._model is None:
                self._model = MorphableModel.synthetic()
            self._renderer = FaceRenderer(self._model, self.image_size, backend=self.backend).to(self.device)
        return self._renderer

    @property
    def model(self):
        """The MorphableModel (built on first use)."""
        _ = self.renderer
        return self._model

    @property
    def layout(self):
        return self.model.layout

    # -- sampling ----------------------------------------------------------------------------------------------------
    def sample(self, i: int) -> tuple[torch.Tensor, np.ndarray]:
        """Coefficients (257,) float32 (CPU) and background (S, S, 3) float32 [0, 1] of item i."""
        key = item_seed(self.seed, self.offset + i)
        gen = torch.Generator().manual_seed(key)
        coeffs = self.model.sample_coeffs(1, generator=gen, **self.sample_kwargs)[0].float().cpu()
        background = _smooth_background(np.random.default_rng(key), self.image_size)
        return coeffs, background

    # -- rendering ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _render(self, items: Sequence[int], coeffs: torch.Tensor | None = None) -> dict[str, np.ndarray]:
        samples = [self.sample(i) for i in items]
        coeffs = torch.stack([c for c, _ in samples]) if coeffs is None else coeffs.detach().float().cpu()
        out = self.renderer(coeffs.to(self.device))
        face = out.image.float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy()
        mask = out.mask.float().cpu().permute(0, 2, 3, 1).numpy()
        bg = np.stack([b for _, b in samples])
        image = face * mask + bg * (1.0 - mask)
        return {
            "image": to_uint8(image),
            "face_mask": (mask[..., 0] > 0.5).astype(np.uint8),
            "landmarks": out.landmarks.float().cpu().numpy(),
            "coeffs": coeffs.numpy(),
        }

    def render_with(self, items: Sequence[int], coeffs: torch.Tensor) -> torch.Tensor:
        """Items re-rendered with other coefficients over their own backgrounds (e.g. the exact truth of an edit).

        Args:
            items: dataset indices i (not offset + i), length N.
            coeffs: (N, 257) coefficients replacing the items' own.
        Returns:
            (N, 3, S, S) float32 in [0, 1] on the CPU, quantised to 1/255 as the items' images are, so the items' own
            coefficients give back exactly their ``image``.
        """
        items = list(items)
        if coeffs.shape[0] != len(items):
            raise ValueError(f"render_with: {len(items)} items but {coeffs.shape[0]} coefficient rows")
        image = self._render(items, coeffs)["image"]
        return torch.from_numpy(image).permute(0, 3, 1, 2).float().div_(255.0)

    def _chunk(self, c: int) -> dict[str, np.ndarray]:
        if c not in self._chunks:
            lo, hi = c * self.chunk, min(self.num, (c + 1) * self.chunk)
            self._chunks[c] = self._render(range(lo, hi))
        return self._chunks[c]

    def prerender(self) -> None:
        """Render and cache every item (no-op for cache=False)."""
        if self.cache:
            for c in range((self.num + self.chunk - 1) // self.chunk):
                self._chunk(c)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -self.num <= i < self.num:
            raise IndexError(f"index {i} out of range for SyntheticFaces of length {self.num}")
        i %= self.num
        if self.cache:
            data, k = self._chunk(i // self.chunk), i % self.chunk
        else:
            data, k = self._render([i]), 0
        return {
            "image": torch.from_numpy(data["image"][k]).permute(2, 0, 1).float().div_(255.0),
            "landmarks": torch.from_numpy(data["landmarks"][k].copy()),
            "face_mask": torch.from_numpy(data["face_mask"][k]).float()[None],
            "coeffs": torch.from_numpy(data["coeffs"][k].copy()),
            "index": self.offset + i,
            "name": f"synth_{self.seed}_{self.offset + i:06d}",
        }
