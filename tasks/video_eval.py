"""Scoring the video path on synthetic videos with exact truth (data.synthetic_video): write the masked video, run
it through data.video.transcode with a tasks.video.VideoRemover, score the decoded output against the truth
(metrics.temporal.VideoScores), with the time per stage and the resident memory along the way."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np

from data.video import read_frames, transcode, write_gif, write_video
from metrics.temporal import VideoScores, flicker_vs_truth

__all__ = ["write_masked_video", "run_video", "score_video", "flicker_references", "rss_mb", "rss_slope"]


def rss_mb() -> float:
    """This process's resident memory now, in MiB (Linux /proc; the peak from getrusage elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_masked_video(synth, path: str | Path, crf: int = 12) -> Path:
    """The synthetic video's masked frames as an H.264 file at its fps (crf 12: close to lossless)."""
    write_video((s.masked for s in synth), path, fps=synth.fps, crf=crf)
    return Path(path)


def run_video(remover, src: str | Path, dst: str | Path, options, n_frames: int = 0, rss_every: int = 10,
              progress: bool = False, framing=None) -> dict:
    """transcode(src -> dst) through a VideoRemover -> {report, stats, fps, seconds per stage, rss samples}."""
    from tasks.video import VideoRemover

    vr = VideoRemover(remover, options, n_frames=n_frames, framing=framing)
    rss = []

    def process(frame):
        out = vr(frame)
        if frame.index % rss_every == 0:
            rss.append((frame.index, rss_mb()))
        return out

    t0 = time.perf_counter()
    rep = transcode(src, dst, process, progress=progress)
    wall = time.perf_counter() - t0
    split = dict(vr.stats.seconds, decode=rep.decode_s, encode=rep.encode_s)
    return {"report": rep, "stats": vr.stats, "wall_s": wall, "fps": rep.frames / wall if wall else 0.0,
            "split_ms": {k: 1000 * v / max(rep.frames, 1) for k, v in split.items()}, "rss": rss,
            "notes": vr.close_notes()}


def score_video(out_path: str | Path, synth) -> dict[str, float]:
    """The output video against the synthetic video's truth, frame by frame (metrics.temporal.VideoScores)."""
    scores = VideoScores()
    for frame, s in zip(read_frames(out_path), synth):
        scores.update(frame.image, s.truth, s.m, s.face, inp=s.masked)
    return scores.compute()


def flicker_references(synth, tmp_dir: str | Path) -> dict[str, float]:
    """What the flicker against truth gives to outputs no temporal processing can beat, for reading the figures:

    - ``frozen``: a fill that never changes (every frame frame 0's truth): mean |truth_t - truth_{t-1}| in the holes;
      a fill that does not reproduce the truth's own motion scores about this much;
    - ``codec``: the truth itself through the output's H.264 (crf 18), decoded;
    - ``propagated``: each frame the previous frame's truth moved by the face's exact 3D motion (tasks.fusion's
      flow with the true coefficients; the talking head only): what remains is the shading and silhouette change.
    """
    import torch
    import torch.nn.functional as F

    from tasks.fusion import crop_flow

    frozen, codec_scores, propagated = VideoScores(), VideoScores(), []
    first = prev = None
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    codec = Path(tmp_dir) / "truth_codec.mp4"
    write_video((s.truth for s in synth), codec, fps=synth.fps)
    for s, dec in zip(synth, read_frames(codec)):
        first = s.truth if first is None else first
        frozen.update(first, s.truth, s.m)
        codec_scores.update(dec.image, s.truth, s.m)
        if s.coeffs is not None and prev is not None:
            grid = crop_flow(synth.renderer, torch.from_numpy(s.coeffs)[None].float(),
                             torch.from_numpy(prev.coeffs)[None].float(), identity, identity)
            img = torch.from_numpy(prev.truth).permute(2, 0, 1)[None].float() / 255.0
            moved = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
            propagated.append(flicker_vs_truth(prev.truth, moved.permute(1, 2, 0).numpy(), prev.truth, s.truth,
                                               prev.m | s.m))
        prev = s
    out = {"frozen": frozen.compute()["flicker"], "codec": codec_scores.compute()["flicker"]}
    if propagated:
        out["propagated"] = float(np.mean(propagated))
    return out


def rss_slope(samples: list[tuple[int, float]]) -> float:
    """MiB per frame: the least-squares slope of (frame, RSS) over the second half of the samples (after warm-up)."""
    if len(samples) < 4:
        return float("nan")
    half = np.asarray(samples[len(samples) // 2:], np.float64)
    return float(np.polyfit(half[:, 0], half[:, 1], 1)[0])


def before_after_gif(path: str | Path, synth, outputs: list[str | Path], frames: int = 48, tile: int = 160,
                     fps: float | None = None) -> Path:
    """A GIF of the first ``frames`` frames side by side: the masked input, each output video, the truth
    (``tile`` px each)."""
    import cv2

    readers = [read_frames(o) for o in outputs]
    rows = []
    for s, *outs in zip(synth, *readers):
        if len(rows) >= frames:
            break
        tiles = [s.masked, *(o.image for o in outs), s.truth]
        rows.append(np.concatenate([cv2.resize(t, (tile, tile), interpolation=cv2.INTER_AREA) for t in tiles], 1))
    write_gif(path, np.stack(rows), fps or synth.fps)
    return Path(path)
