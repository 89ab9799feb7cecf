"""Video files: frames streamed one at a time (decode -> process -> encode), the audio track kept untouched.

Built on PyAV (``av``): its wheel carries FFmpeg, so nothing else is installed, and it exposes packets, which lets the
audio be remuxed as it came (no re-encoding, no drift) while only the video is decoded.

- ``probe(path)`` -> VideoInfo (size, display rotation, frame rate, frame count, pixel format, audio);
- ``read_frames(path)`` yields Frame(index, pts, time, image (H, W, 3) uint8 RGB, upright);
- ``transcode(src, dst, process)`` runs ``process`` on every frame and writes ``dst`` with the input's timestamps
  (variable frame rates survive), size, display rotation (frames are processed upright, stored in the input's coded
  orientation with its rotation tag), pixel format (when the encoder takes it) and audio packets; a truncated input
  writes what was decoded and says where it stopped; Ctrl-C closes the output properly (a playable partial file);
- ``write_video(frames, path, fps)`` writes an MP4 (H.264, streamed) or a GIF (Pillow) from frames.

Only one decoded frame (plus the encoder's and muxer's small queues) is held at a time: memory does not grow with
the video's length.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = ["VideoError", "VideoInfo", "Frame", "TranscodeReport", "probe", "read_frames", "transcode", "write_video",
           "VideoWriter", "VIDEO_EXTENSIONS", "OUTPUT_EXTENSIONS"]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".gif", ".ts")
OUTPUT_EXTENSIONS = (".mp4", ".mov", ".mkv")  # what transcode writes (H.264 with the input's audio)
# libx264 pixel formats we keep as they are; anything else (e.g. a camera's yuvj420p, 10-bit) is written as yuv420p
_X264_PIX_FMTS = ("yuv420p", "yuv422p", "yuv444p")
DEFAULT_CRF = 18  # visually lossless H.264


class VideoError(ValueError):
    """A file that cannot be read as a video; the message is one line naming the file."""


@dataclass
class VideoInfo:
    """What the first video stream of a file says about itself.

    width, height: coded size in pixels (before rotation); rotation: counter-clockwise display rotation in degrees
    (a phone's portrait video is often coded landscape with rotation -90 or 90); fps: the average frame rate;
    frames: the container's frame count (0 when it does not say; an estimate from the duration is used then);
    pix_fmt: the decoder's pixel format; audio: the audio codec's name or None.
    """

    path: str
    width: int
    height: int
    rotation: int
    fps: Fraction
    frames: int
    duration: float
    pix_fmt: str
    codec: str
    audio: str | None

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown, after the rotation."""
        return (self.height, self.width) if self.rotation % 180 else (self.width, self.height)


@dataclass
class Frame:
    """index: 0-based decode order; pts: timestamp in the stream's time base (None if the file has none); time:
    seconds; image: (H, W, 3) uint8 RGB, upright (the display rotation applied)."""

    index: int
    pts: int | None
    time: float
    image: np.ndarray


@dataclass
class TranscodeReport:
    """frames: frames written; stopped: None, or one line saying why the input ended early (truncated / corrupt);
    interrupted: Ctrl-C stopped the run (the output holds the frames before it); seconds: wall time of the loop;
    decode_s / encode_s: time spent decoding and encoding (the rest is the processing)."""

    frames: int = 0
    expected: int = 0
    stopped: str | None = None
    interrupted: bool = False
    audio_packets: int = 0
    seconds: float = 0.0
    decode_s: float = 0.0
    encode_s: float = 0.0


def _av():
    import av

    return av


def _open_input(path: str | Path):
    av = _av()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"video not found: {p}")
    try:
        container = av.open(str(p), "r")
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise VideoError(f"not a readable video ({type(e).__name__}: {_short(e)}): {p}") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"no video stream in {p}")
    return container


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:160] if str(e) else type(e).__name__


def _rotation(stream, frame=None) -> int:
    rot = getattr(frame, "rotation", None) if frame is not None else None
    if rot is None:
        try:
            rot = int(float(stream.metadata.get("rotate", 0)))  # older muxers' tag (clockwise)
            rot = -rot
        except (TypeError, ValueError):
            rot = 0
    return int(round(rot / 90.0)) * 90 % 360 if rot else 0


def probe(path: str | Path) -> VideoInfo:
    """VideoInfo of the file's first video stream (decodes one frame, for the rotation). Raises FileNotFoundError,
    or VideoError with a one-line message for anything that is not a readable video."""
    av = _av()
    with _open_input(path) as c:
        vs = c.streams.video[0]
        try:
            first = next(iter(c.decode(vs)), None)
        except av.error.FFmpegError as e:
            raise VideoError(f"cannot decode the first frame of {path} ({_short(e)})") from None
        if first is None:
            raise VideoError(f"no decodable frame in {path}")
        fps = vs.average_rate or vs.guessed_rate or vs.base_rate or Fraction(25)
        duration = float(vs.duration * vs.time_base) if vs.duration and vs.time_base else (
            c.duration / 1e6 if c.duration else 0.0)
        frames = int(vs.frames or 0) or (int(round(duration * float(fps))) if duration else 0)
        audio = c.streams.audio[0].codec_context.name if c.streams.audio else None
        return VideoInfo(str(path), vs.codec_context.width, vs.codec_context.height, _rotation(vs, first),
                         Fraction(fps), frames, duration, vs.codec_context.format.name, vs.codec_context.name, audio)


def _upright(frame, rotation: int) -> np.ndarray:
    img = frame.to_ndarray(format="rgb24")
    return np.ascontiguousarray(np.rot90(img, rotation // 90)) if rotation else img


def read_frames(path: str | Path, report: TranscodeReport | None = None) -> Iterator[Frame]:
    """Yield the video's frames one at a time (upright RGB uint8). A decode error ends the iteration; when
    ``report`` is given its ``stopped`` says where, otherwise VideoError is raised."""
    av = _av()
    with _open_input(path) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        tb = vs.time_base
        i = 0
        try:
            for frame in c.decode(vs):
                t = float(frame.pts * tb) if frame.pts is not None and tb else i / 25.0
                yield Frame(i, frame.pts, t, _upright(frame, _rotation(vs, frame)))
                i += 1
        except av.error.FFmpegError as e:
            msg = f"input ends early: decoding stopped after frame {i} ({_short(e)})"
            if report is None:
                raise VideoError(f"{msg}: {path}") from None
            report.stopped = msg


class VideoWriter:
    """Encodes upright RGB uint8 frames to ``path`` as H.264 (MP4, MOV, MKV).

    ``fps``: nominal rate; frames given a ``pts`` (in ``time_base``) keep their own timestamps (variable frame
    rates). ``rotation``: the display rotation to store (frames are rotated back to that coded orientation).
    ``pix_fmt``: kept when libx264 takes it, else yuv420p. ``audio_template``: an input audio stream whose packets
    will be remuxed with ``mux_audio``. Close it (or use ``with``) to finish a playable file.
    """

    def __init__(self, path: str | Path, fps: float | Fraction, size: tuple[int, int], *, rotation: int = 0,
                 pix_fmt: str = "yuv420p", time_base: Fraction | None = None, audio_template=None,
                 crf: int = DEFAULT_CRF):
        av = _av()
        self.path = Path(path)
        if self.path.suffix.lower() == ".gif":
            raise VideoError(f"{self.path}: GIFs are written by write_video (whole), not streamed")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rotation = rotation % 360
        w, h = size  # upright size
        coded_w, coded_h = (h, w) if self.rotation % 180 else (w, h)
        self.container = av.open(str(self.path), "w")
        rate = Fraction(fps).limit_denominator(100000) if not isinstance(fps, Fraction) else fps
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.pix_fmt = pix_fmt if pix_fmt in _X264_PIX_FMTS else "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": "veryfast"}
        if self.stream.pix_fmt == "yuv420p":  # 4:2:0 needs even sides
            coded_w, coded_h = coded_w + coded_w % 2, coded_h + coded_h % 2
        self.stream.width, self.stream.height = coded_w, coded_h
        self.time_base = time_base or Fraction(1, 1) / rate
        self.stream.codec_context.time_base = self.time_base
        self.stream.time_base = self.time_base
        if self.rotation:
            self.stream.set_display_rotation(self.rotation)
        self.audio = None
        if audio_template is not None:
            try:
                self.audio = self.container.add_stream_from_template(audio_template)
            except (av.error.FFmpegError, ValueError) as e:
                print(f"note: audio ({audio_template.codec_context.name}) cannot go into {self.path.suffix} "
                      f"({_short(e)}): written without audio", flush=True)
        self._n = 0
        self._last_pts = None
        self.encode_s = 0.0

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        """image (H, W, 3) uint8 RGB, upright; pts in ``time_base`` (default: frame count)."""
        av = _av()
        t0 = time.perf_counter()
        img = np.rot90(image, -self.rotation // 90) if self.rotation else image
        h, w = img.shape[:2]
        if (w, h) != (self.stream.width, self.stream.height):  # odd sides padded by replication
            img = np.pad(img, ((0, self.stream.height - h), (0, self.stream.width - w), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        pts = self._n if pts is None else int(pts)
        if self._last_pts is not None and pts <= self._last_pts:  # encoders need strictly increasing timestamps
            pts = self._last_pts + 1
        frame.pts, frame.time_base = pts, self.time_base
        self._last_pts = pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self._n += 1
        self.encode_s += time.perf_counter() - t0

    def mux_audio(self, packet) -> bool:
        if self.audio is None or packet.dts is None:
            return False
        packet.stream = self.audio
        self.container.mux(packet)
        return True

    @property
    def frames(self) -> int:
        return self._n

    def close(self) -> None:
        if self.container is None:
            return
        t0 = time.perf_counter()
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()
        self.container = None
        self.encode_s += time.perf_counter() - t0

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: float = 24.0, crf: int = DEFAULT_CRF) -> int:
    """Write frames ((H, W, 3) uint8 RGB, or (3, H, W) float tensors in [0, 1]) to an MP4 as they come (the size is
    the first frame's), or to a GIF (write_gif: one adaptive palette per frame, so a GIF's frames are gathered
    first: keep GIFs short); returns the number written."""
    if Path(path).suffix.lower() == ".gif":
        arr = np.stack([_as_uint8(f) for f in frames])
        write_gif(path, arr, fps)
        return len(arr)
    writer = None
    try:
        for f in frames:
            img = _as_uint8(f)
            if writer is None:
                writer = VideoWriter(path, fps, (img.shape[1], img.shape[0]), crf=crf)
            writer.write(img)
    finally:
        if writer is not None:
            writer.close()
    return 0 if writer is None else writer.frames


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 24) -> Path:
    """(F, H, W, 3) uint8 RGB -> a looping GIF through Pillow, one adaptive palette per frame (sharper than one
    palette for the clip), at ``fps`` (GIF delays are whole 10 ms steps)."""
    from PIL import Image

    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(20, round(1000 / fps)), loop=0,
                   optimize=False)
    return Path(path)


def _as_uint8(f) -> np.ndarray:
    if isinstance(f, np.ndarray) and f.dtype == np.uint8:
        return f
    import torch

    from data.io import to_uint8, to_uint8_hwc

    if isinstance(f, torch.Tensor):
        return to_uint8_hwc(f)
    return to_uint8(np.asarray(f, np.float32))


def transcode(src: str | Path, dst: str | Path, process: Callable[[Frame], np.ndarray], *, progress: bool = True,
              crf: int = DEFAULT_CRF, max_frames: int | None = None) -> TranscodeReport:
    """Decode ``src`` frame by frame, write ``process(frame)`` ((H, W, 3) uint8 RGB upright, the frame's size) to
    ``dst`` with the input's timestamps, rotation, pixel format and audio packets (remuxed untouched).

    A decode error (truncated / corrupt input) ends the loop: what was decoded is written and ``report.stopped``
    says where. Ctrl-C ends it too (``report.interrupted``); the output is closed either way, so it plays.
    A progress bar (tqdm: frames/s, time left) goes to stderr when ``progress``.
    """
    av = _av()
    info = probe(src)
    rep = TranscodeReport(expected=info.frames)
    t_start = time.perf_counter()
    inp = _open_input(src)
    writer = None
    bar = None
    try:
        vs = inp.streams.video[0]
        vs.thread_type = "AUTO"
        audio = inp.streams.audio[0] if inp.streams.audio else None
        writer = VideoWriter(dst, info.fps, info.display_size, rotation=info.rotation, pix_fmt=info.pix_fmt,
                             time_base=vs.time_base, audio_template=audio, crf=crf)
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=info.frames or None, unit="frame", desc=Path(src).name, dynamic_ncols=True, leave=True)
        tb = vs.time_base
        streams = [vs] + ([audio] if audio is not None else [])
        i = 0
        done = False
        demux = inp.demux(*streams)
        while not done:
            t0 = time.perf_counter()
            try:
                packet = next(demux)
                decoded = list(packet.decode()) if packet.stream is vs else None
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                rep.stopped = (f"input ends early: stopped after frame {i} (t = {i / float(info.fps):.2f} s) "
                               f"of ~{info.frames} ({_short(e)})")
                break
            rep.decode_s += time.perf_counter() - t0
            if decoded is None:
                rep.audio_packets += writer.mux_audio(packet)
                continue
            for frame in decoded:
                rot = info.rotation
                t = float(frame.pts * tb) if frame.pts is not None else i / float(info.fps)
                out = process(Frame(i, frame.pts, t, _upright(frame, rot)))
                writer.write(out, frame.pts)
                i += 1
                if bar is not None:
                    bar.update(1)
                if max_frames is not None and i >= max_frames:
                    done = True
                    break
        rep.frames = i
        if rep.stopped is None and not done and info.frames and i < info.frames * 0.98 - 1:
            rep.stopped = (f"input ends early: stopped after frame {i} (t = {i / float(info.fps):.2f} s) of "
                           f"{info.frames} the container announces")
    except KeyboardInterrupt:
        rep.interrupted = True
        rep.frames = writer.frames if writer is not None else 0
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
            rep.encode_s = writer.encode_s
        inp.close()
    rep.seconds = time.perf_counter() - t_start
    return rep


def fps_of(info: VideoInfo) -> float:
    """The average frame rate as a float (25 when the file gives none)."""
    f = float(info.fps) if info.fps else 25.0
    return f if math.isfinite(f) and f > 0 else 25.0
