"""Video: the temporal filters on synthetic trajectories, the flicker metrics, streaming with audio and metadata kept,
bad input, and the synthetic videos' truth."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from metrics.temporal import VideoScores, flicker_vs_truth, flow_flicker
from tasks.tracking import MaskSmoother, OneEuro, match_tracks, measure_lag
from tests.helpers import cli

FPS = 24


def _trajectory(n=480, noise=1.5, seed=0):
    t = np.arange(n) / FPS
    x = 128 + 40 * np.sin(2 * np.pi * t / 4) + 10 * np.sin(2 * np.pi * t / 1.3)
    return t, x, x + np.random.default_rng(seed).normal(0, noise, n)


def test_one_euro_halves_jitter_with_at_most_one_frame_of_lag():
    t, x, noisy = _trajectory()
    f = OneEuro(1.0, 0.05)
    y = np.array([f(v, s) for v, s in zip(noisy, t)])

    def jitter(z):  # frame-to-frame change that the true motion does not have
        return np.sqrt(np.mean((np.diff(z) - np.diff(x))[FPS:] ** 2))

    assert jitter(y) < 0.55 * jitter(noisy)
    assert measure_lag(x, y) <= 1
    # a filter with a low fixed cutoff (beta 0) lags the same motion by more
    g = OneEuro(0.3, 0.0)
    z = np.array([g(v, s) for v, s in zip(noisy, t)])
    assert measure_lag(x, z) >= 3


def test_one_euro_follows_variable_frame_rate_and_arrays():
    f = OneEuro(1.0, 0.0)
    a = f(np.zeros((68, 2)), 0.0)
    assert a.shape == (68, 2)
    # a step: a longer gap lets the filter move further (the time step comes from the timestamps)
    short = OneEuro(1.0, 0.0)
    short(0.0, 0.0)
    long = OneEuro(1.0, 0.0)
    long(0.0, 0.0)
    assert long(1.0, 0.2) > short(1.0, 0.02) > 0


def test_measure_lag_finds_a_known_delay():
    x = np.sin(np.arange(200) / 5.0)
    assert measure_lag(x, np.concatenate([np.zeros(4), x[:-4]])) == 4


def test_mask_smoother_keeps_every_marked_pixel_and_holds_blinking_ones():
    sm = MaskSmoother()
    on = torch.ones(1, 1, 4, 4)
    off = torch.zeros(1, 1, 4, 4)
    for _ in range(5):
        sm(on)
    assert sm(off).sum() == 16  # held one frame after turning off
    blink = [sm(on if k % 2 else off) for k in range(8)]
    assert all(b.sum() == 16 for b in blink[2:])  # a blinking pixel stays in the hole
    fresh = MaskSmoother()
    m = (torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    assert bool((fresh(m) >= m).all())


def test_match_tracks_by_overlap():
    a = np.array([[10, 10], [50, 60]], float)
    b = np.array([[200, 10], [240, 60]], float)
    assert match_tracks([a, b], [b + 2, a + 1, a + 300]) == {0: 1, 1: 0}


def test_flicker_metrics_score_a_flickering_sequence_worse():
    rng = np.random.default_rng(0)
    h = w = 48
    yy, xx = np.mgrid[:h, :w]
    hole = (abs(yy - 24) < 10) & (abs(xx - 24) < 12)
    smooth_scores, flick_scores = VideoScores(), VideoScores()
    for t in range(6):
        truth = ((np.sin(xx / 6 + t * 0.3) * 0.4 + 0.5)[..., None] * np.ones(3) * 255).astype(np.uint8)
        smooth = truth.copy()
        smooth[hole] = np.clip(truth[hole].astype(int) + 20, 0, 255)  # a constant error: no flicker
        flick = truth.copy()
        flick[hole] = np.clip(truth[hole].astype(int) + rng.integers(-40, 40, (hole.sum(), 1)), 0, 255)
        smooth_scores.update(smooth, truth, hole, inp=truth)
        flick_scores.update(flick, truth, hole, inp=truth)
    s, f = smooth_scores.compute(), flick_scores.compute()
    assert s["flicker"] < 0.01 < 0.05 < f["flicker"]
    assert s["flow_flicker"] < 0.5 * f["flow_flicker"]
    assert s["frames"] == f["frames"] == 6
    # both have a per-frame error in the hole; flicker is about its change only
    assert s["l1_hole"] > 0.05
    region = np.ones((4, 4), bool)
    assert flicker_vs_truth(np.zeros((4, 4, 3)), np.ones((4, 4, 3)), np.zeros((4, 4, 3)), np.ones((4, 4, 3)),
                            region) == 0.0
    assert np.isnan(flow_flicker(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)), ~region))


# -- files ---------------------------------------------------------------------------------------------------------


def _make_video(path, n=24, w=96, h=64, rotation=0, audio=True, vfr=False, pix_fmt="yuv420p"):
    import av

    c = av.open(str(path), "w")
    vs = c.add_stream("libx264", rate=FPS)
    vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
    tb = Fraction(1, 1000)
    vs.codec_context.time_base = vs.time_base = tb
    if rotation:
        vs.set_display_rotation(rotation)
    if audio:
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
    pts = 0
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:10, :20] = 255  # a marker at the coded top-left
        img[..., 1] = (i * 8) % 256
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts, f.time_base = pts, tb
        pts += (20 if i % 2 else 60) if vfr else 1000 // FPS
        for p in vs.encode(f):
            c.mux(p)
    for p in vs.encode(None):
        c.mux(p)
    if audio:
        s = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000 * n // FPS) / 16000)).astype(np.float32)[None]
        for k in range(0, s.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(s[:, k:k + 1024]), format="fltp", layout="mono")
            af.sample_rate, af.pts = 16000, k
            for p in a.encode(af):
                c.mux(p)
        for p in a.encode(None):
            c.mux(p)
    c.close()
    return path


def _audio_packets(path):
    import av

    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def test_transcode_keeps_audio_timestamps_rotation_and_pixel_format(tmp_path):
    from data.video import probe, read_frames, transcode

    src = _make_video(tmp_path / "in.mp4", rotation=-90, vfr=True, pix_fmt="yuv444p")
    info = probe(src)
    assert info.rotation == 270 and info.display_size == (64, 96) and info.audio == "aac"
    frames = list(read_frames(src))
    assert frames[0].image.shape == (96, 64, 3)  # upright: coded 96 x 64 turned a quarter clockwise
    ys, xs = np.nonzero(frames[0].image[..., 0] > 128)
    assert xs.min() >= 44 and ys.max() <= 21  # the coded top-left marker is at the top right once upright
    seen = []
    rep = transcode(src, tmp_path / "out.mp4", lambda f: seen.append(f.image.shape) or 255 - f.image, progress=False)
    assert rep.frames == len(frames) == 24 and rep.stopped is None and not rep.interrupted
    out = probe(tmp_path / "out.mp4")
    assert (out.width, out.height, out.rotation, out.pix_fmt) == (96, 64, 270, "yuv444p")
    assert [f.pts for f in read_frames(tmp_path / "out.mp4")] == [f.pts for f in frames]  # variable rate kept
    assert _audio_packets(tmp_path / "out.mp4") == _audio_packets(src)  # remuxed untouched
    back = next(read_frames(tmp_path / "out.mp4")).image.astype(int)
    assert np.abs(back - (255 - frames[0].image.astype(int))).mean() < 3
    assert seen[0] == (96, 64, 3)


def test_bad_video_inputs_give_one_line(tmp_path):
    from data.video import VideoError, probe, transcode

    (tmp_path / "x.mp4").write_bytes(b"this is not a video" * 50)
    with pytest.raises(VideoError, match="not a readable video") as e:
        probe(tmp_path / "x.mp4")
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "missing.mp4")
    # a truncated stream: what was decoded is written, and the report says where it stopped
    src = _make_video(tmp_path / "full.mkv", n=48, audio=False)
    data = (tmp_path / "full.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) * 3 // 5])
    rep = transcode(tmp_path / "cut.mkv", tmp_path / "cut_out.mp4", lambda f: f.image, progress=False)
    assert 0 < rep.frames < 48 and rep.stopped and "stopped after frame" in rep.stopped
    assert probe(tmp_path / "cut_out.mp4").frames == rep.frames
    assert src.exists()


def test_interrupted_transcode_leaves_a_playable_file(tmp_path):
    from data.video import probe, read_frames, transcode

    src = _make_video(tmp_path / "in.mp4", n=24)

    def process(f):
        if f.index == 10:
            raise KeyboardInterrupt
        return f.image

    rep = transcode(src, tmp_path / "out.mp4", process, progress=False)
    assert rep.interrupted and rep.frames == 10
    assert len(list(read_frames(tmp_path / "out.mp4"))) == 10 and probe(tmp_path / "out.mp4").audio == "aac"


def test_write_video_mp4_and_gif(tmp_path):
    from data.video import probe, read_frames, write_video

    frames = [np.full((32, 48, 3), 10 * i, np.uint8) for i in range(5)]
    assert write_video(iter(frames), tmp_path / "a.mp4", fps=12) == 5
    assert write_video([torch.full((3, 32, 48), 0.2 + 0.3 * k) for k in range(3)], tmp_path / "a.gif", fps=12) == 3
    info = probe(tmp_path / "a.mp4")
    assert (info.width, info.height, float(info.fps)) == (48, 32, 12.0)
    got = [f.image for f in read_frames(tmp_path / "a.mp4")]
    assert len(got) == 5 and abs(int(got[3].mean()) - 30) <= 2
    assert len(list(read_frames(tmp_path / "a.gif"))) == 3


def test_synthetic_videos_have_exact_truth():
    from data.synthetic_video import MovingPhoto, TalkingHead

    v = TalkingHead(n_frames=48, size=96)
    a, b = v.frame(0), v.frame(12)
    assert a.masked.shape == a.truth.shape == (96, 96, 3) and a.m.any()
    assert np.array_equal(a.masked[~a.m], a.truth[~a.m])  # the truth is the frame without the mask
    assert not np.array_equal(a.truth, b.truth)  # the head moves
    yaw = [v.coeffs(t)[v.model.layout.slice("angle")][1].item() for t in range(96)]
    assert max(yaw) == pytest.approx(np.radians(20), rel=0.02) and min(yaw) < 0
    assert np.array_equal(v.frame(12).truth, b.truth)  # frame t depends on t alone
    lm = np.zeros((68, 2))
    lm[:, 0], lm[:, 1] = np.linspace(150, 350, 68), np.tile(np.linspace(150, 350, 17), 4)
    p = MovingPhoto(n_frames=24, size=96, landmarks=lm)
    f = p.frame(5)
    assert np.array_equal(f.masked[~f.m], f.truth[~f.m]) and f.face.any()


# -- end to end ----------------------------------------------------------------------------------------------------


def test_remove_mask_video_end_to_end(inpaint_export, talking_clip, tmp_path, capsys):
    from data.video import probe, read_frames
    main = cli("scripts/remove_mask.py")

    synth, src, lm = talking_clip
    out = tmp_path / "out.mp4"
    rc = main(["--video", str(src), "--out", str(out), "--checkpoint", str(inpaint_export), "--landmarks", str(lm),
               "--align", "meanface", "--edit", "open_mouth", "--seed", "3"])
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert "1 face track(s)" in text.out and "12 frames" in text.out
    info = probe(out)
    assert (info.width, info.height, info.frames) == (96, 96, 12)
    ins = [f.image.astype(int) for f in read_frames(src)]
    outs = [f.image.astype(int) for f in read_frames(out)]
    changed = [np.abs(o - i).max(-1) > 40 for o, i in zip(outs, ins)]
    assert all(c.any() for c in changed)  # an (untrained) model's fill in every frame
    # the same seed gives the same video; another edit gives another one
    out2 = tmp_path / "out2.mp4"
    assert main(["--video", str(src), "--out", str(out2), "--checkpoint", str(inpaint_export), "--landmarks",
                 str(lm), "--align", "meanface", "--edit", "open_mouth", "--seed", "3"]) == 0
    assert all(np.array_equal(a.image, b.image) for a, b in zip(read_frames(out), read_frames(out2)))
    # an animation over the track: the first frame is its first keyframe ("keep"), later ones move towards the last
    out3 = tmp_path / "anim.mp4"
    assert main(["--video", str(src), "--out", str(out3), "--checkpoint", str(inpaint_export), "--landmarks",
                 str(lm), "--align", "meanface", "--animate", "keep>exp[0]=+3", "--seed", "3"]) == 0
    keep = tmp_path / "keep.mp4"
    assert main(["--video", str(src), "--out", str(keep), "--checkpoint", str(inpaint_export), "--landmarks",
                 str(lm), "--align", "meanface", "--seed", "3"]) == 0
    anim, still = [f.image.astype(int) for f in read_frames(out3)], [f.image.astype(int) for f in read_frames(keep)]
    d0, d1 = np.abs(anim[0] - still[0]).mean(), np.abs(anim[-1] - still[-1]).mean()
    assert d0 < 0.25 * d1  # (not 0: x264's rate control looks ahead, so frame 0's coding depends on later frames)


def test_remove_mask_video_bad_inputs(inpaint_export, tmp_path, capsys):
    from data.video import read_frames, write_video
    main = cli("scripts/remove_mask.py")

    (tmp_path / "x.mp4").write_bytes(b"not a video" * 100)
    assert main(["--video", str(tmp_path / "x.mp4"), "--out", str(tmp_path / "o.mp4"), "--checkpoint",
                 str(inpaint_export)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: not a readable video") and "\n" not in err
    assert main(["--video", str(tmp_path / "x.mp4"), "--out", str(tmp_path / "dir"), "--checkpoint",
                 str(inpaint_export)]) == 2
    assert "--out must be a video file" in capsys.readouterr().err
    # no face: every frame passes through (re-encoded) and is counted
    frames = [np.full((64, 80, 3), 40 + 10 * i, np.uint8) for i in range(6)]
    write_video(frames, tmp_path / "blank.mp4", fps=12)
    assert main(["--video", str(tmp_path / "blank.mp4"), "--out", str(tmp_path / "blank_out.mp4"), "--checkpoint",
                 str(inpaint_export), "--detector", "dlib"]) == 0
    assert "6 of 6 frames had no tracked face" in capsys.readouterr().out
    got = [f.image.astype(int) for f in read_frames(tmp_path / "blank_out.mp4")]
    assert len(got) == 6 and all(np.abs(g - f).max() <= 2 for g, f in zip(got, frames))


def test_coeff_smoother_follows_pose_and_steadies_identity():
    """Noisy per-frame estimates of a turning head: the filtered yaw jitters less and lags at most two frames; the
    identity, constant in truth, settles much closer to it than the per-frame estimates are."""
    from renderer.morphable import MorphableModel
    from tasks.tracking import CoeffSmoother

    lay = MorphableModel.synthetic().layout
    rng = np.random.default_rng(0)
    smoother = CoeffSmoother(lay)
    true_id = rng.normal(0, 1, lay.split(torch.zeros(1, lay.size))["id"].shape)
    t = np.arange(240) / FPS
    yaw = 0.35 * np.sin(2 * np.pi * t / 4)
    raw_yaw, out_yaw, id_err_raw, id_err_out = [], [], [], []
    for k, tk in enumerate(t):
        parts = lay.split(torch.zeros(1, lay.size, dtype=torch.float64))
        parts["angle"][0, 1] = yaw[k] + rng.normal(0, 0.02)
        parts["id"][:] = torch.from_numpy(true_id + rng.normal(0, 0.3, true_id.shape))
        c = lay.join(parts)
        out = lay.split(smoother(c, tk))
        raw_yaw.append(float(parts["angle"][0, 1]))
        out_yaw.append(float(out["angle"][0, 1]))
        if k >= 120:
            id_err_raw.append(np.abs(parts["id"].numpy() - true_id).mean())
            id_err_out.append(np.abs(out["id"].numpy() - true_id).mean())
    jitter = lambda x: np.abs(np.diff(np.asarray(x) - yaw, 2)).mean()  # noqa: E731
    assert jitter(out_yaw) < 0.5 * jitter(raw_yaw)
    assert measure_lag(yaw, np.asarray(out_yaw)) <= 2
    assert np.mean(id_err_out) < 0.4 * np.mean(id_err_raw)
    unfiltered = CoeffSmoother(lay, filters={"angle": (1.0, 5.0)})  # blocks with no filter pass through
    c = torch.randn(1, lay.size)
    assert torch.equal(lay.split(unfiltered(c, 0.0))["id"], lay.split(c)["id"])


def test_remove_mask_video_rejects_a_bad_fusion_weight(inpaint_export, talking_clip, tmp_path, capsys):
    synth, src, lm = talking_clip
    rc = cli("scripts/remove_mask.py")(["--video", str(src), "--out", str(tmp_path / "o.mp4"), "--checkpoint",
                                        str(inpaint_export), "--landmarks", str(lm), "--fuse", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: the fusion weight (--fuse) must be in (0, 1]") and "\n" not in err
    assert not (tmp_path / "o.mp4").exists()
