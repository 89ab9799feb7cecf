"""Writing short clips: frames -> MP4 (H.264 through PyAV, whose wheel carries FFmpeg) or GIF (Pillow).

    write_clip("anim.mp4", frames, fps=24)   # frames (F, H, W, 3) uint8 RGB, or (F, 3, H, W) float [0, 1]
    write_clip("anim.gif", frames, fps=24)

MP4s are yuv420p H.264 (what browsers and players take), so odd sizes are padded by one edge pixel to even.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

CLIP_SUFFIXES = (".mp4", ".gif")


def clip_frames(frames) -> np.ndarray:
    """(F, H, W, 3) uint8 RGB from (F, H, W, 3) uint8 or (F, 3, H, W) float [0, 1] (rounded half up)."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        if frames.dtype != torch.uint8:
            frames = (frames.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        if frames.shape[1] == 3 and frames.shape[-1] != 3:
            frames = frames.permute(0, 2, 3, 1)
        return np.ascontiguousarray(frames.numpy())
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be (F, H, W, 3) uint8, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


def write_mp4(path: str | Path, frames, fps: float = 24, crf: int = 18) -> Path:
    """Frames -> H.264 MP4 at ``fps`` (constant rate factor ``crf``: 18 is visually lossless)."""
    import av

    arr = clip_frames(frames)
    h, w = arr.shape[1:3]
    if h % 2 or w % 2:  # yuv420p needs even sides
        arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=round(fps), options={"crf": str(crf)})
        stream.width, stream.height, stream.pix_fmt = arr.shape[2], arr.shape[1], "yuv420p"
        for f in arr:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    return path


def write_gif(path: str | Path, frames, fps: float = 24) -> Path:
    """Frames -> looping GIF (one adaptive palette per frame) at ``fps`` (GIF delays are in 10 ms steps)."""
    from PIL import Image

    arr = clip_frames(frames)
    images = [Image.fromarray(f) for f in arr]
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(20, round(1000 / fps)), loop=0,
                   optimize=False)
    return path


def write_clip(path: str | Path, frames, fps: float = 24) -> Path:
    """Write by suffix (.mp4 or .gif); ValueError naming the valid suffixes otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mp4":
        return write_mp4(path, frames, fps)
    if suffix == ".gif":
        return write_gif(path, frames, fps)
    raise ValueError(f"{path}: a clip is written as {' or '.join(CLIP_SUFFIXES)}")


def read_clip(path: str | Path) -> np.ndarray:
    """(F, H, W, 3) uint8 RGB frames of an MP4 or GIF (for tests and checks)."""
    import av

    with av.open(str(path)) as src:
        return np.stack([f.to_ndarray(format="rgb24") for f in src.decode(video=0)])
