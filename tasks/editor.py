"""The web editor's state and logic, testable without a browser (app.py is the Gradio layer over it).

    session = EditorSession(remover)                       # one per browser session
    messages = session.open(image)                         # detect, align, N_3D once per photo
    view = session.render(SliderState(expressions={"open_mouth": 0.8}, yaw=1.0), seed=0)
    frames = session.animate([SliderState(), SliderState(expressions={"open_mouth": 1.0})], frames=24, seed=0)
    run = session.video("in.mp4", "out.mp4", [state, state], seed=0)   # the sliders (or keyframes) over a video

A slider change re-renders I_3D and re-runs N_G only (tasks.photo.remove_from_photo with the face's N_3D
coefficients replaced by ``SliderState.apply``); N_3D and the face's occlusion map come from ``open``.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from renderer.morphable import EXPRESSION_PRESETS
from tasks.animate import animate_photo
from tasks.photo import (
    DEFAULT_REFINE,
    PhotoFace,
    find_faces,
    photo_framing,
    prepare_faces,
    remove_from_photo,
    to_uint8,
)

LIGHT_STEP = 0.3  # SH coefficient change of a lighting slider at full strength (as the brighter / darker edits)
BFM_EXP_SLIDERS = 10  # the first expression components get a slider when the model's expressions have no names
BFM_EXP_STD = 1.0  # slider unit of a BFM expression component, in coefficient units (see docs/editor.md)


@dataclass(frozen=True)
class SliderSpec:
    """One expression slider: key (an EXPRESSION_PRESETS name, or ``exp[i]``), label, range."""

    key: str
    label: str
    minimum: float
    maximum: float


def expression_sliders(model) -> list[SliderSpec]:
    """The expression sliders of a morphable model: each named preset's strength (synthetic model), or the first
    BFM_EXP_SLIDERS expression components in units of BFM_EXP_STD (BFM, whose components have no names)."""
    if getattr(model, "expression_names", None):
        return [SliderSpec(p, p.replace("_", " "), -0.5, 1.5) for p in EXPRESSION_PRESETS if p != "neutral"]
    n = min(BFM_EXP_SLIDERS, model.layout.sizes["exp"])
    return [SliderSpec(f"exp[{i}]", f"expression {i} (std)", -3.0, 3.0) for i in range(n)]


_EXP_INDEX = re.compile(r"^exp\[(\d+)\]$")


@dataclass
class SliderState:
    """The editor's sliders, applied to N_3D's coefficients (also an animation keyframe: tasks.animate).

    expressions: slider key -> strength. A preset at strength s moves the expression s of the way from N_3D's to the
        preset's (1 = the preset edit exactly; several add up); ``exp[i]`` adds s x BFM_EXP_STD to component i.
    yaw, pitch: 0 = the head as N_3D found it, 1 = frontal (the angle scaled by 1 - value).
    brightness: added to the ambient light of each colour, x LIGHT_STEP (+1 = the ``brighter`` edit).
    light_x, light_y: the light's direction, -1 .. 1 (left .. right, below .. above), x LIGHT_STEP on SH band 1.
    """

    expressions: dict[str, float] = field(default_factory=dict)
    yaw: float = 0.0
    pitch: float = 0.0
    brightness: float = 0.0
    light_x: float = 0.0
    light_y: float = 0.0

    def apply(self, base: torch.Tensor, model) -> torch.Tensor:
        """base (N, C) -> edited copy (N, C)."""
        out = base.clone()
        parts = model.layout.split(out)  # views into `out`
        exp, n = parts["exp"], out.shape[0]
        base_exp = exp.clone()
        for key, s in self.expressions.items():
            if not s:
                continue
            m = _EXP_INDEX.match(key)
            if m is not None:
                exp[:, int(m[1])] += float(s) * BFM_EXP_STD
            else:
                exp += float(s) * (model.expression(key, n).to(out) - base_exp)
        parts["angle"][:, 0] *= 1.0 - float(self.pitch)
        parts["angle"][:, 1] *= 1.0 - float(self.yaw)
        g = parts["gamma"].view(n, 3, -1)
        g[:, :, 0] += LIGHT_STEP * float(self.brightness)
        g[:, :, 3] -= LIGHT_STEP * float(self.light_x)  # SH band 1: -n_x
        g[:, :, 1] -= LIGHT_STEP * float(self.light_y)  # SH band 1: -n_y
        return out


def parse_points(text: str) -> np.ndarray:
    """"x y" pairs (separated by commas, semicolons or new lines) -> (5, 2) or (68, 2) float32 photo pixels:
    left eye, right eye, nose tip, left and right mouth corner (or the 68 iBUG points). ValueError otherwise."""
    nums = [float(v) for v in re.findall(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", text or "")]
    if len(nums) not in (10, 136):
        raise ValueError(f"give 5 points (10 numbers: left eye, right eye, nose tip, left and right mouth corner, "
                         f"as 'x y' in pixels) or 68 points; got {len(nums)} numbers")
    return np.asarray(nums, np.float32).reshape(-1, 2)


@dataclass
class EditorView:
    """One render of the editor, all (H, W, 3) uint8 RGB except region.

    input: the photo with the faces numbered (the chosen one green); overlay: N_3D's occlusion map in red over it;
    i3d: the rendered prior of the chosen face (its crop, model size); result: the photo with the edited face pasted
    back; region: (H, W) bool, where the result may differ from the photo; seconds: the render's wall time."""

    input: np.ndarray
    overlay: np.ndarray
    i3d: np.ndarray
    result: np.ndarray
    region: np.ndarray
    seconds: float


class EditorSession:
    """One user's photo: faces found and aligned, N_3D run once; renders of slider states and animations.

    remover: tasks.removal.MaskRemover; align: the crop framing (tasks.photo.ALIGN_CHOICES; default the model's own,
    meanface for a model trained on the synthetic faces); detector: a data.detectors name for uploads.
    """

    def __init__(self, remover, align: str | None = None, detector: str = "masked"):
        self.remover = remover
        if align is None and remover.framing is None and getattr(remover.model, "expression_names", None):
            align = "meanface"  # the synthetic faces' own crop (as the demo runs remove_mask.py)
        self.framing = photo_framing(remover, align)
        self.detector = detector
        self.image: torch.Tensor | None = None
        self.faces: list[PhotoFace] = []
        self.face_index = 0
        self._still: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # face -> (input, overlay) views

    def open(self, image: torch.Tensor, landmarks: list[np.ndarray] | None = None) -> list[str]:
        """image (3, H, W) float [0, 1]; landmarks: per face (68, 2) or (5, 2) photo pixels, or None to detect.
        Aligns every face and runs N_3D once each. Returns one-line messages; ValueError when no face is found."""
        image = image.detach().cpu().float()
        if landmarks is None:
            found = find_faces(to_uint8(image), self.detector)
            if not found:
                raise ValueError("no face found: give the 5 points (left eye, right eye, nose tip, mouth corners)")
            refine = DEFAULT_REFINE
        else:
            found, refine = [np.asarray(lm, np.float32) for lm in landmarks], 0
        self.faces = prepare_faces(self.remover, image, found, refine=refine, framing=self.framing)
        self.image, self.face_index, self._still = image, 0, {}
        msgs = [n for f in self.faces for n in f.notes]
        if len(self.faces) > 1:
            msgs.append(f"{len(self.faces)} faces found: choose one (numbered in the input)")
        return msgs

    def choose(self, index: int) -> None:
        if not 0 <= index < len(self.faces):
            raise ValueError(f"face {index + 1}: the photo has {len(self.faces)} face(s)")
        self.face_index = index

    def _require(self) -> PhotoFace:
        if self.image is None or not self.faces:
            raise ValueError("open a photo first (upload one or pick a face from the gallery)")
        return self.faces[self.face_index]

    @torch.no_grad()
    def render(self, state: SliderState, seed: int = 0) -> EditorView:
        """The chosen face with ``state`` applied: I_3D and N_G only (N_3D ran in ``open``)."""
        face = self._require()
        t0 = time.perf_counter()
        edited = dataclasses.replace(face, coeffs=state.apply(face.coeffs, self.remover.model))
        out = remove_from_photo(self.remover, self.image, [edited], ["keep"], seed=seed)
        seconds = time.perf_counter() - t0
        if self.face_index not in self._still:  # what no slider changes: drawn once per face
            self._still[self.face_index] = (self.marked_input(), overlay_mask(to_uint8(self.image), self.occlusion()))
        return EditorView(*self._still[self.face_index], to_uint8(out.removals[0].i3d[0, 0]),
                          to_uint8(out.images[0]), out.region.numpy(), seconds)

    def occlusion(self) -> np.ndarray:
        """(H, W) bool: N_3D's occlusion map of the chosen face, in photo pixels."""
        from data.align import pasted_region

        face = self._require()
        return pasted_region(face.m[0].cpu(), face.transform, self.image.shape[-2:])

    def marked_input(self) -> np.ndarray:
        """The photo (H, W, 3) uint8 with each face's number at its nose (the chosen face green, others white)."""
        import cv2

        photo = to_uint8(self.image).copy()
        scale = max(photo.shape[:2]) / 512
        for i, f in enumerate(self.faces if len(self.faces) > 1 else []):
            x, y = np.asarray(f.landmarks, np.float64).mean(0)
            colour = (40, 220, 40) if i == self.face_index else (255, 255, 255)
            cv2.putText(photo, str(i + 1), (int(x), int(y)), cv2.FONT_HERSHEY_SIMPLEX, max(0.5, scale), colour,
                        max(1, int(2 * scale)), cv2.LINE_AA)
        return photo

    def video(self, src, dst, keyframes: list, seed: int = 0, points: np.ndarray | None = None,
              max_frames: int | None = None):
        """The masks taken off a video (tasks.video.remove_from_video, as remove_mask.py --video): keyframes
        (SliderStates or edit strings; two equal ones hold one slider state) eased over each face track; points:
        (5, 2) / (68, 2) of the first frame's face instead of a detection; max_frames: stop after that many.
        Returns (one line about the input, tasks.video.VideoRun); a one-line ValueError / data.video.VideoError for
        a bad file or keyframe."""
        from data.video import probe
        from tasks.video import VideoOptions, describe_video, remove_from_video

        info = probe(src)
        n = min(info.frames, max_frames) if max_frames and info.frames else (max_frames or info.frames)
        opts = VideoOptions(keyframes=list(keyframes), seed=int(seed), detector=self.detector, first_landmarks=points)
        run = remove_from_video(self.remover, src, dst, opts, n_frames=n, framing=self.framing, max_frames=max_frames,
                                progress=False)
        return describe_video(info), run

    @torch.no_grad()
    def animate(self, keyframes: list, frames: int = 24, seed: int = 0) -> torch.Tensor:
        """Keyframes (SliderStates or edit strings) -> (F, 3, H, W) photos in [0, 1] of the eased trajectory, with
        the same noise in every frame (tasks.animate)."""
        face = self._require()
        return torch.stack(list(animate_photo(self.remover, self.image, [face], keyframes, frames, seed)))


def overlay_mask(photo: np.ndarray, mask: np.ndarray, colour=(255, 40, 40), alpha: float = 0.5) -> np.ndarray:
    """photo (H, W, 3) uint8 with mask (H, W) bool tinted ``colour`` at ``alpha``."""
    out = photo.astype(np.float32)
    out[mask] = out[mask] * (1 - alpha) + np.asarray(colour, np.float32) * alpha
    return (out + 0.5).astype(np.uint8)


def gallery_faces(n: int = 6, size: int = 128, offset: int = 3_000_000, seed: int = 99) -> list[dict]:
    """Held-out masked synthetic test faces (as the demo's remove_mask stage): dicts with image (3, S, S) [0, 1],
    truth (3, S, S) the unmasked face, landmarks (68, 2) pixels, name. Offsets far from every training set."""
    from data.config import SyntheticConfig, TestSetConfig
    from data.pairs import build_pairs

    pairs = build_pairs(TestSetConfig(image_size=size, faces=[SyntheticConfig(num=n, offset=offset)], mask_library=None,
                                      mask_seed=seed), "test")
    out = []
    for i in range(n):
        item = pairs[i]
        out.append({"image": item["masked_image"], "truth": item["image"],
                    "landmarks": np.asarray(item["landmarks"], np.float32), "name": f"held-out face {i + 1}"})
    return out
