"""Animated edits: keyframes -> an eased trajectory of 3DMM coefficients -> frames with the same noise throughout.

    keys = parse_keyframes("keep>open_mouth>smile")            # ["keep", "open_mouth", "smile"]
    t = frame_times(48)                                          # (48,) in [0, 1]
    traj = animated_coeffs(base, keys, t, remover.model)         # (48, N, C)

A keyframe is an edit string of tasks.removal.apply_edit's syntax (``"smile"``, ``"open_mouth,brighter"``,
``"exp[3]=+1.5"``) or any object with ``apply(base (N, C), model) -> (N, C)`` (the editor's slider states,
tasks.editor.SliderState). Between consecutive keyframes the coefficients are interpolated linearly with the
smoothstep ``ease`` of the local time, so the motion starts and stops gently at each keyframe and passes through every
keyframe exactly. For video, call ``animated_coeffs`` per frame with that frame's base and its own time.
``animate_photo`` animates the faces of a photo (tasks.photo), as the web editor and ``remove_mask.py --animate`` do.

Each frame is rendered and inpainted by the one removal pipeline (``remove`` with the frame's coefficients and the
face's N_3D occlusion map, N_3D not re-run) with the same seed, so the noise is identical in every frame and the only
change between frames is the trajectory's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Protocol

import torch

from engine.config import ConfigError
from tasks.photo import PhotoFace, remove_from_photo
from tasks.removal import apply_edit

KEY_SEP = ">"


class CoeffState(Protocol):
    """A keyframe that is not an edit string: maps N_3D's coefficients to the keyframe's."""

    def apply(self, base: torch.Tensor, model) -> torch.Tensor: ...


Keyframe = str | CoeffState


def parse_keyframes(spec: str) -> list[str]:
    """``"keep>open_mouth>smile"`` -> ``["keep", "open_mouth", "smile"]``: two or more edit strings separated by
    ``>`` (each may itself hold comma-separated operations). One-line ConfigError for fewer than two or an empty one."""
    keys = [k.strip() for k in str(spec).split(KEY_SEP)]
    if len(keys) < 2 or any(not k for k in keys):
        raise ConfigError(f"--animate {spec!r}: give two or more edits separated by '{KEY_SEP}', "
                          "e.g. 'keep>open_mouth>smile'")
    return keys


def ease(t: torch.Tensor | float) -> torch.Tensor:
    """Smoothstep 3t^2 - 2t^3 of t clamped to [0, 1]: 0 -> 0, 1 -> 1, zero velocity at both ends (float64 tensor)."""
    t = torch.as_tensor(t, dtype=torch.float64).clamp(0, 1)
    return t * t * (3 - 2 * t)


def frame_times(frames: int) -> torch.Tensor:
    """(F,) evenly spaced times in [0, 1], first and last frame on the first and last keyframe (F >= 2)."""
    if frames < 2:
        raise ConfigError(f"--frames must be 2 or more, got {frames}")
    return torch.linspace(0, 1, frames, dtype=torch.float64)


def keyframe_coeffs(base: torch.Tensor, key: Keyframe, model) -> torch.Tensor:
    """base (N, C) -> the keyframe's coefficients (N, C): apply_edit for a string, ``key.apply`` otherwise."""
    if isinstance(key, str):
        return apply_edit(base, key, model)
    return key.apply(base, model)


def animated_coeffs(base: torch.Tensor, keyframes: list[Keyframe], t: torch.Tensor, model) -> torch.Tensor:
    """base (N, C) N_3D coefficients, K >= 2 keyframes, t (F,) in [0, 1] -> (F, N, C) coefficients.

    Time 0 is the first keyframe, 1 the last; keyframes are equally spaced in time, and within each segment the
    coefficients move linearly with ``ease`` of the local time. Same dtype and device as ``base``.
    """
    if len(keyframes) < 2:
        raise ConfigError("an animation needs two or more keyframes")
    keys = torch.stack([keyframe_coeffs(base, k, model) for k in keyframes]).double()  # (K, N, C)
    s = torch.as_tensor(t, dtype=torch.float64).clamp(0, 1) * (len(keyframes) - 1)
    seg = s.floor().long().clamp(max=len(keyframes) - 2)  # the last time belongs to the last segment
    u = ease(s - seg).to(keys)[:, None, None]
    out = keys[seg] * (1 - u) + keys[seg + 1] * u
    return out.to(base)


def check_keyframes(keyframes: list[Keyframe], model) -> None:
    """Raise a one-line ConfigError for the first keyframe edit this model cannot apply, before any work."""
    zero = torch.zeros(1, model.layout.size)
    for k in keyframes:
        keyframe_coeffs(zero, k, model)


@torch.no_grad()
def animate_crop(remover, crop: torch.Tensor, coeffs: torch.Tensor, m: torch.Tensor, keyframes: list[Keyframe],
                 t: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One aligned face through an animation: crop (1, 3, S, S) [0, 1] at the model's size, its N_3D coefficients
    (1, C) and occlusion map m (1, 1, S, S) {0, 1} -> frames (F, 3, S, S) [0, 1], composited (the input outside m).

    Every frame runs tasks.removal.remove with that frame's coefficients, the same m and the same seed (so the same
    noise): outside m the frames are the input, bit for bit."""
    traj = animated_coeffs(coeffs, keyframes, t, remover.model)
    return torch.stack([remover(crop, ["keep"], seed=seed, coeffs=c, m=m).images[0, 0] for c in traj])


def animate_photo(remover, image: torch.Tensor, faces: list[PhotoFace], keyframes: list, frames: int,
                  seed: int = 0, paste: str = "feather") -> Iterator[torch.Tensor]:
    """Analysed faces of a photo (3, H, W) through an animation -> yields F photos (3, H, W) in [0, 1], one at a time
    (a long clip of a large photo is never all in memory). Each frame is tasks.photo.remove_from_photo with every
    face's coefficients at that frame of its trajectory (tasks.animate.animated_coeffs from its own N_3D
    coefficients), its N_3D occlusion map and the same seed: outside the pasted region every frame is the photo."""
    t = frame_times(frames)
    trajs = [animated_coeffs(f.coeffs, keyframes, t, remover.model) for f in faces]  # each (F, 1, C)
    for i in range(len(t)):
        moved = [dataclasses.replace(f, coeffs=traj[i]) for f, traj in zip(faces, trajs)]
        yield remove_from_photo(remover, image, moved, ["keep"], seed=seed, paste=paste).images[0]
