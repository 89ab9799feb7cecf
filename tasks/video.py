"""Masks off in video, stable in time: face tracks, temporal smoothing, fixed noise, edits and animations over a track.

    remover = load_remover("runs/inpaint_demo/inpaint.pt")
    vr = VideoRemover(remover, VideoOptions(edit="smile", seed=0), n_frames=info.frames)
    report = data.video.transcode("in.mp4", "out.mp4", vr)      # vr(frame) -> the frame with the masks removed

Per frame (the photo pipeline, tasks.photo, on each tracked face; nothing of the removal math is repeated here):
1. **follow** each track: its landmarks, predicted at this frame's time from their One-Euro speed, are re-located
   by N_3D (``refine`` rounds of tasks.photo.refine_faces: align, reconstruct, the 3D face's landmarks); a track
   whose face leaves the frame (``lost_outside`` of its points outside) or jumps in size ends there;
2. **detect** (the photo detector) when no face is tracked (every ``idle_detect_every`` frames) and every
   ``redetect_every`` frames; a detection that overlaps no track starts a new one (a face that leaves and comes back
   is a new track; several faces are several tracks);
3. **smooth**: the landmarks that align the crop (One-Euro), N_3D's coefficients (pose, translation, lighting,
   expression: One-Euro; identity and texture: a slow 0.5 Hz low-pass; tasks.tracking.CoeffSmoother) and its occlusion
   map in the face-aligned crop (tasks.tracking.MaskSmoother);
4. **remove**: tasks.photo.remove_from_photo with the smoothed coefficients and map (N_3D not re-run), the edit or
   the animation's coefficients at this frame's time, and one seed per track: the noise is drawn in the aligned crop,
   so N_G sees the same noise wherever the face moves;
5. **fuse** the track's crop result with its previous one, moved by the face's 3D motion (tasks.fusion.FillFusion:
   the fill's own shimmer averaged out over about 1 / ``fuse`` frames, the new frame taken where the rendered prior
   changes), before it is pasted back.

``VideoOptions(temporal=False)`` is independent per-frame processing (the baseline the smoothing is measured
against): each frame's landmarks re-located from the previous frame's with the photo pipeline's DEFAULT_REFINE rounds
and nothing smoothed or fused. Frames without a face pass through unchanged (counted in ``stats``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from tasks.fusion import DEFAULT_FUSE, DEFAULT_FUSE_TAU, FillFusion
from tasks.tracking import CoeffSmoother, Track, match_tracks, outside_fraction

__all__ = ["VideoOptions", "VideoStats", "VideoRemover", "VideoRun", "describe_video", "remove_from_video"]


@dataclass
class VideoOptions:
    """edit: one edit string (tasks.removal syntax) for the whole video; keyframes: an animation (tasks.animate:
    two or more edits; time 0 at a track's first frame, 1 at the video's last) instead of the edit; seed: track k
    uses seed + k; detector: a tasks.photo.find_faces detector name; first_landmarks: (68, 2) / (5, 2) landmarks of
    the first frame instead of a detection; refine: N_3D rounds to follow a face each frame; temporal: False for
    independent per-frame processing; paste: tasks.photo's paste mode; fuse / fuse_tau: tasks.fusion's a0 / tau
    (fuse = 1: no fusion of the fill over time)."""

    edit: str = "keep"
    keyframes: list | None = None
    seed: int = 0
    detector: str = "masked"
    first_landmarks: np.ndarray | None = None
    refine: int = 1
    redetect_every: int = 0
    idle_detect_every: int = 12
    max_faces: int = 4
    lost_outside: float = 0.4
    temporal: bool = True
    paste: str = "feather"
    fuse: float = DEFAULT_FUSE
    fuse_tau: float = DEFAULT_FUSE_TAU


@dataclass
class VideoStats:
    """frames processed, frames_with_face, frames_without_face (passed through), tracks started, detections run,
    and seconds per stage (detect, track, n3d, render, n_g, fuse, paste; decode / encode come from data.video)."""

    frames: int = 0
    frames_with_face: int = 0
    frames_without_face: int = 0
    tracks: int = 0
    detections: int = 0
    seconds: dict = field(default_factory=lambda: dict.fromkeys(("detect", "track", "n3d", "render", "n_g",
                                                                 "fuse", "paste"), 0.0))


class _ModuleTimer:
    """Wall time spent in a module's forward (hooks), for the per-stage split."""

    def __init__(self, module: torch.nn.Module):
        self.total = 0.0
        self._t0 = None
        module.register_forward_pre_hook(self._start)
        module.register_forward_hook(self._stop)

    def _start(self, *_):
        self._t0 = time.perf_counter()

    def _stop(self, *_):
        if self._t0 is not None:
            self.total += time.perf_counter() - self._t0
            self._t0 = None


class VideoRemover:
    """Callable on data.video.Frame -> (H, W, 3) uint8: the frame with every tracked face's mask removed (module doc).

    remover: a tasks.removal.MaskRemover; n_frames: the video's frame count (the animation's time scale; 0 = unknown,
    the animation then runs over ``animate_frames`` frames); framing: tasks.photo.PhotoFraming (default the
    model's own)."""

    def __init__(self, remover, options: VideoOptions | None = None, n_frames: int = 0, framing=None,
                 animate_frames: int = 48):
        from tasks.photo import photo_framing

        self.remover, self.opt = remover, options or VideoOptions()
        self.framing = framing or photo_framing(remover)
        self.n_frames = int(n_frames) or int(animate_frames)
        self.tracks: list[Track] = []
        self.next_id = 0
        self.last_detect = -10**9
        self.stats = VideoStats()
        self.notes: list[str] = []
        FillFusion(None, self.opt.fuse, self.opt.fuse_tau)  # checks the options now, not at the first face
        self._render = _ModuleTimer(remover.prior.renderer)
        self._gen = _ModuleTimer(remover.gen)
        if self.opt.keyframes:
            from tasks.animate import check_keyframes

            check_keyframes(self.opt.keyframes, remover.model)
        else:
            from tasks.removal import apply_edit

            apply_edit(torch.zeros(1, remover.model.layout.size), self.opt.edit, remover.model)

    # -- stages -----------------------------------------------------------------------------------------------------
    def _refine(self, image: torch.Tensor, lm: np.ndarray, rounds: int) -> np.ndarray:
        from tasks.photo import refine_faces

        return refine_faces(self.remover, image, [lm], rounds, self.framing)[0][0]

    def _detect(self, frame, image: torch.Tensor) -> list[np.ndarray]:
        from tasks.photo import DEFAULT_REFINE, find_faces

        t0 = time.perf_counter()
        if self.opt.first_landmarks is not None and frame.index == 0:
            found = [np.asarray(self.opt.first_landmarks, np.float32)]
        else:
            found = find_faces(frame.image, self.opt.detector)
            self.stats.detections += 1
        found = [self._refine(image, lm, DEFAULT_REFINE) for lm in found[: self.opt.max_faces]]
        self.stats.seconds["detect"] += time.perf_counter() - t0
        return found

    def _follow(self, tr: Track, image: torch.Tensor, t: float) -> bool:
        """Re-locate the track's face in this frame; False when it is lost."""
        h, w = image.shape[-2:]
        start = tr.lm_filter.predict(t) if self.opt.temporal else tr.landmarks
        rounds = self.opt.refine if self.opt.temporal else self._per_frame_rounds()
        lm = self._refine(image, np.asarray(start, np.float32), rounds)
        if outside_fraction(lm, w, h) > self.opt.lost_outside:
            return False
        size_ratio = np.ptp(lm, 0).max() / max(np.ptp(tr.landmarks, 0).max(), 1e-6)
        if not 0.5 < size_ratio < 2.0:
            return False
        tr.landmarks = tr.lm_filter(lm, t).astype(np.float32) if self.opt.temporal else lm
        return True

    @staticmethod
    def _per_frame_rounds() -> int:
        from tasks.photo import DEFAULT_REFINE

        return DEFAULT_REFINE

    def _new_track(self, lm: np.ndarray, frame) -> Track:
        tr = Track(self.next_id, frame.index, np.asarray(lm, np.float32))
        tr.coeffs = CoeffSmoother(self.remover.model.layout)
        tr.lm_filter(tr.landmarks, frame.time)
        if self.opt.temporal and self.opt.fuse < 1.0:
            tr.fusion = FillFusion(self.remover.prior.renderer, self.opt.fuse, self.opt.fuse_tau)
        self.next_id += 1
        self.stats.tracks += 1
        return tr

    # -- one frame --------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, frame) -> np.ndarray:
        from tasks.photo import prepare_faces, remove_from_photo, to_uint8

        s = self.stats.seconds
        image = torch.from_numpy(np.ascontiguousarray(frame.image)).permute(2, 0, 1).float().div_(255.0)
        t = float(frame.time)
        self.stats.frames += 1

        t0 = time.perf_counter()
        kept = []
        for tr in self.tracks:
            if self._follow(tr, image, t):
                kept.append(tr)
            else:
                self.notes.append(f"face track {tr.id} ended at frame {frame.index} (t = {t:.2f} s) after "
                                  f"{tr.frames} frames")
        self.tracks = kept
        s["track"] += time.perf_counter() - t0

        due = (not self.tracks and frame.index - self.last_detect >= self.opt.idle_detect_every) or (
            self.opt.redetect_every and frame.index - self.last_detect >= self.opt.redetect_every)
        if due or (frame.index == 0 and self.opt.first_landmarks is not None):
            self.last_detect = frame.index
            found = self._detect(frame, image)
            matched = match_tracks([tr.landmarks for tr in self.tracks], found)
            for i, lm in enumerate(found):
                if i not in matched and len(self.tracks) < self.opt.max_faces:
                    self.tracks.append(self._new_track(lm, frame))

        if not self.tracks:
            self.stats.frames_without_face += 1
            return frame.image
        self.stats.frames_with_face += 1

        out = image
        for tr in self.tracks:
            t0 = time.perf_counter()
            r0, g0 = self._render.total, self._gen.total
            face = prepare_faces(self.remover, image, [tr.landmarks], refine=0, framing=self.framing)[0]
            coeffs, m = face.coeffs, face.m
            if self.opt.temporal:
                coeffs, m = tr.coeffs(coeffs, t), tr.mask(m)
            edits = [self.opt.edit]
            if self.opt.keyframes:
                from tasks.animate import animated_coeffs

                u = (frame.index - tr.start) / max(1, self.n_frames - 1 - tr.start)
                coeffs = animated_coeffs(coeffs, self.opt.keyframes, torch.tensor([min(u, 1.0)]),
                                         self.remover.model)[0]
                edits = ["keep"]
            face.coeffs, face.m = coeffs, m
            t1 = time.perf_counter()
            s["n3d"] += t1 - t0 - (self._render.total - r0) - (self._gen.total - g0)
            r1, g1 = self._render.total, self._gen.total
            fuse_s = [0.0]  # wall time in the fusion

            def fuse(_i, removal, f, tr=tr, spent=fuse_s):
                t2 = time.perf_counter()
                crops = tr.fusion(removal, f.transform)
                spent[0] = time.perf_counter() - t2
                return crops

            out = remove_from_photo(self.remover, out, [face], edits, seed=self.opt.seed + tr.id,
                                    paste=self.opt.paste, post=fuse if tr.fusion else None).images[0]
            dr, dg = self._render.total - r1, self._gen.total - g1
            s["render"] += dr + (r1 - r0)
            s["n_g"] += dg + (g1 - g0)
            s["fuse"] += fuse_s[0]
            s["paste"] += time.perf_counter() - t1 - dr - dg - fuse_s[0]
            tr.frames += 1
            tr.last_t = t
        t0 = time.perf_counter()
        res = to_uint8(out)
        s["paste"] += time.perf_counter() - t0
        return res

    def close_notes(self) -> list[str]:
        """One line per track still open at the end, after the lines of the tracks that ended."""
        return self.notes + [f"face track {tr.id}: {tr.frames} frames from frame {tr.start}" for tr in self.tracks]


@dataclass
class VideoRun:
    """remove_from_video's outcome: report (data.video.TranscodeReport), stats (VideoStats), notes (one line each:
    the face tracks, frames without a face, the summary) and warnings (an early end of the input, an interruption)."""

    report: object
    stats: VideoStats
    notes: list[str]
    warnings: list[str]


def describe_video(info) -> str:
    """One line about a data.video.VideoInfo: size, frame rate, frames, rotation, audio."""
    w, h = info.display_size
    return (f"{info.path}: {w} x {h}, {float(info.fps):.3g} frames/s, ~{info.frames} frames"
            + (f", rotated {info.rotation} degrees" if info.rotation else "")
            + (f", audio {info.audio} (kept)" if info.audio else ", no audio"))


def remove_from_video(remover, src, dst, options: VideoOptions, n_frames: int = 0, framing=None,
                      max_frames: int | None = None, progress: bool = True) -> VideoRun:
    """The video path, as remove_mask.py --video and the editor run it: src -> dst through a VideoRemover
    (data.video.transcode: streamed, audio kept; ``max_frames`` stops early). Bad options raise before any frame."""
    from data.video import transcode

    vr = VideoRemover(remover, options, n_frames=n_frames, framing=framing)
    rep = transcode(src, dst, vr, progress=progress, max_frames=max_frames)
    st, warnings = vr.stats, []
    if rep.stopped:
        warnings.append(f"warning: {rep.stopped}; the {rep.frames} frames decoded are written")
    if rep.interrupted:
        warnings.append(f"interrupted: {dst} holds the first {rep.frames} frames (playable)")
    notes = vr.close_notes()
    if st.frames_without_face:
        notes.append(f"{st.frames_without_face} of {st.frames} frames had no tracked face and pass through unchanged")
    notes.append(f"wrote {dst}: {rep.frames} frames, {st.tracks} face track(s), "
                 f"{rep.frames / max(rep.seconds, 1e-9):.2f} frames/s")
    return VideoRun(rep, st, notes, warnings)
