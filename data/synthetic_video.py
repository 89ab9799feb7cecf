"""Synthetic test videos with exact truth: the masked frames a user would film, and the unmasked frames behind them.

- ``talking_head``: a face of the embedded morphable model that turns (yaw +-20 degrees), nods, talks (jaw and
  expression trajectories) and drifts a little, under one fixed light, over a fixed smooth background;
- ``moving_photo``: a real photo (scikit-image's astronaut) moved by smooth similarity transforms (shift, rotation,
  zoom), its landmarks found once by the photo detector and moved with it.

In both, one mask (one MaskedPairSynthesizer seed: the same shape and texture) is fitted to each frame's landmarks, so
it moves and deforms with the face. Frames are generated one at a time (``__iter__``), so any length fits in memory,
and the truth of frame t is recomputed from t alone (``frame(t)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from data.io import to_uint8

__all__ = ["VideoSample", "TalkingHead", "MovingPhoto", "get_synthetic_video"]


@dataclass
class VideoSample:
    """One frame: masked / truth (H, W, 3) uint8 RGB; m (H, W) bool (1 = the mask changed the pixel); face (H, W)
    bool (the face region: the renderer's face mask, or the landmarks' hull for a photo); landmarks (68, 2) pixels;
    coeffs (257,) the exact coefficients (None for a photo)."""

    index: int
    masked: np.ndarray
    truth: np.ndarray
    m: np.ndarray
    face: np.ndarray
    landmarks: np.ndarray
    coeffs: np.ndarray | None = None


class _MaskedVideo:
    """Shared: n frames at fps, one mask seed."""

    def __init__(self, n_frames: int, size: int, fps: float, seed: int):
        if n_frames <= 0 or size < 32:
            raise ValueError(f"synthetic video: need n_frames > 0 and size >= 32, got {n_frames}, {size}")
        self.n_frames, self.size, self.fps, self.seed = int(n_frames), int(size), float(fps), int(seed)
        self._synth = None

    @property
    def synthesizer(self):
        if self._synth is None:
            from data.synth import MaskedPairSynthesizer

            self._synth = MaskedPairSynthesizer()
        return self._synth

    def _mask(self, truth_u8: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        img = truth_u8.astype(np.float32).transpose(2, 0, 1) / 255.0
        masked, m = self.synthesizer.synth_numpy(img, landmarks, (self.seed, 0x51DE0))  # same mask every frame
        return to_uint8(masked.transpose(1, 2, 0)), m[0] > 0.5

    def frame(self, t: int) -> VideoSample:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self) -> Iterator[VideoSample]:
        for t in range(self.n_frames):
            yield self.frame(t)


class TalkingHead(_MaskedVideo):
    """The morphable model's face (identity, texture, light and background from ``seed``) with smooth trajectories:
    yaw 20 sin(2 pi t / 4 s) degrees, pitch 8 sin(2 pi t / 3 s), roll 3 sin(2 pi t / 5 s); jaw_open in [0, 0.9]
    at ~2 syllables a second, a smile that comes and goes every 6 s, a small translation drift."""

    def __init__(self, n_frames: int = 96, size: int = 256, fps: float = 24.0, seed: int = 0, yaw_deg: float = 20.0,
                 pitch_deg: float = 8.0):
        super().__init__(n_frames, size, fps, seed)
        from data.splits import item_seed
        from data.synthetic import _smooth_background
        from renderer.morphable import MorphableModel
        from renderer.render import FaceRenderer

        self.model = MorphableModel.synthetic()
        self.renderer = FaceRenderer(self.model, self.size)
        key = item_seed(seed, 7_000_000)
        gen = torch.Generator().manual_seed(key)
        base = self.model.sample_coeffs(1, generator=gen, exp_std=0.0, max_yaw_deg=0, max_pitch_deg=0,
                                        max_roll_deg=0, trans_std=0.0)[0]
        self.base = base
        self.background = _smooth_background(np.random.default_rng(key), self.size)
        self.yaw, self.pitch = math.radians(yaw_deg), math.radians(pitch_deg)

    def coeffs(self, t: int) -> torch.Tensor:
        """(257,) the exact coefficients of frame t."""
        s = t / self.fps
        lay = self.model.layout
        parts = lay.split(self.base.clone()[None])
        parts["angle"][0] = torch.tensor([self.pitch * math.sin(2 * math.pi * s / 3.0),
                                          self.yaw * math.sin(2 * math.pi * s / 4.0),
                                          math.radians(3.0) * math.sin(2 * math.pi * s / 5.0)])
        talk = 0.5 - 0.5 * math.cos(2 * math.pi * 2.0 * s + 0.8 * math.sin(2 * math.pi * 0.37 * s))
        smile = max(0.0, math.sin(2 * math.pi * s / 6.0))
        exp = self.model.expression({"jaw_open": 0.9 * talk, "smile": 0.8 * smile}, 1)[0]
        parts["exp"][0] = exp
        drift = [0.02 * math.sin(2 * math.pi * s / 7.0), 0.015 * math.sin(2 * math.pi * s / 5.5), 0.0]
        parts["trans"][0] = torch.tensor(drift)
        return lay.join(parts)[0]

    @torch.no_grad()
    def frame(self, t: int) -> VideoSample:
        c = self.coeffs(t)
        out = self.renderer(c[None])
        face = out.image[0].clamp(0, 1).permute(1, 2, 0).numpy()
        cover = out.mask[0, 0].numpy()[..., None]
        truth = to_uint8(face * cover + self.background * (1 - cover))
        lm = out.landmarks[0].numpy().astype(np.float64)
        masked, m = self._mask(truth, lm)
        return VideoSample(t, masked, truth, m, cover[..., 0] > 0.5, lm, c.numpy())


class MovingPhoto(_MaskedVideo):
    """A photo (default: scikit-image's astronaut) cropped around its face and moved by smooth similarity
    transforms: a shift of up to 6% of the frame, a rotation of up to 8 degrees and a zoom of +-8%."""

    def __init__(self, n_frames: int = 96, size: int = 256, fps: float = 24.0, seed: int = 0,
                 photo: np.ndarray | None = None, landmarks: np.ndarray | None = None):
        super().__init__(n_frames, size, fps, seed)
        if photo is None:
            import skimage.data

            photo = skimage.data.astronaut()
        if landmarks is None:
            from data.detectors import get_detector

            found = get_detector("dlib").detect(photo)
            if not found:
                raise ValueError("moving photo: no face found in the photo")
            landmarks = found[0]
        self.photo = np.ascontiguousarray(photo[..., :3])
        self.lm = np.asarray(landmarks, np.float64)
        lo, hi = self.lm.min(0), self.lm.max(0)
        self.centre = (lo + hi) / 2
        self.side = 2.2 * float((hi - lo).max())  # the frame shows the face and some of its surroundings

    def transform(self, t: int) -> np.ndarray:
        """(2, 3) photo -> frame pixels of frame t."""
        s = t / self.fps
        ang = math.radians(8.0) * math.sin(2 * math.pi * s / 4.0)
        zoom = (self.size / self.side) * (1.0 + 0.08 * math.sin(2 * math.pi * s / 5.0))
        shift = 0.06 * self.size * np.array([math.sin(2 * math.pi * s / 3.0), math.sin(2 * math.pi * s / 4.5)])
        a = zoom * np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
        b = np.array([self.size / 2 - 0.5, self.size / 2 - 0.5]) + shift - a @ self.centre
        return np.concatenate([a, b[:, None]], 1)

    def frame(self, t: int) -> VideoSample:
        a = self.transform(t)
        truth = cv2.warpAffine(self.photo, a, (self.size, self.size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT101)
        lm = self.lm @ a[:, :2].T + a[:, 2]
        masked, m = self._mask(truth, lm)
        face = np.zeros((self.size, self.size), np.uint8)
        cv2.fillConvexPoly(face, cv2.convexHull(np.round(lm).astype(np.int32)), 1)
        return VideoSample(t, masked, truth, m, face > 0, lm)


def get_synthetic_video(name: str, **kw) -> _MaskedVideo:
    """``talking`` (TalkingHead) or ``photo`` (MovingPhoto)."""
    kinds = {"talking": TalkingHead, "photo": MovingPhoto}
    if name not in kinds:
        raise ValueError(f"unknown synthetic video {name!r}; valid: {', '.join(kinds)}")
    return kinds[name](**kw)
