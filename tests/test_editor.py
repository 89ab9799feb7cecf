"""The editor's logic without a browser: slider states, one N_3D per photo, renders that change only the pasted
region, animations."""

import numpy as np
import pytest
import torch

from tasks.editor import EditorSession, SliderState, expression_sliders, gallery_faces, parse_points


@pytest.fixture(scope="module")
def remover(inpaint_export):
    from tasks.removal import MaskRemover

    return MaskRemover.from_checkpoints(inpaint_export)


@pytest.fixture(scope="module")
def gallery():
    return gallery_faces(2, size=96)


def test_slider_state_matches_the_edit_strings(remover):
    from tasks.removal import apply_edit

    model = remover.model
    base = model.sample_coeffs(2, torch.Generator().manual_seed(1))
    torch.testing.assert_close(SliderState({"open_mouth": 1.0}).apply(base, model),
                               apply_edit(base, "open_mouth", model))
    torch.testing.assert_close(SliderState(brightness=-1.0).apply(base, model), apply_edit(base, "darker", model))
    torch.testing.assert_close(SliderState(yaw=1.0, pitch=1.0).apply(base, model)[:, :-1],
                               apply_edit(base, "angle[0]=0,angle[1]=0", model)[:, :-1])
    assert torch.equal(SliderState().apply(base, model), base)
    half = SliderState({"smile": 0.5}).apply(base, model)
    torch.testing.assert_close(half, (base + apply_edit(base, "smile", model)) / 2)
    keys = [s.key for s in expression_sliders(model)]
    assert "open_mouth" in keys and "smile" in keys and "neutral" not in keys


def test_parse_points():
    pts = parse_points("30 40, 60 40; 45 55\n35 70 55 70")
    assert pts.shape == (5, 2) and pts[2].tolist() == [45, 55]
    with pytest.raises(ValueError, match="5 points"):
        parse_points("1 2 3")


def test_session_runs_n3d_once_and_changes_only_the_pasted_region(remover, gallery, monkeypatch):
    calls = []
    analyze = remover.analyze
    monkeypatch.setattr(remover, "analyze", lambda x: calls.append(1) or analyze(x))
    face = gallery[0]
    session = EditorSession(remover)
    session.open(face["image"], [face["landmarks"]])
    assert len(calls) == 1
    photo = (face["image"].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    views = [session.render(SliderState({"open_mouth": s}), seed=0) for s in (0.0, 1.0)]
    again = session.render(SliderState({"open_mouth": 1.0}), seed=0)
    assert len(calls) == 1  # slider changes: I_3D + N_G only
    a, b = views
    assert a.result.shape == photo.shape and a.region.any() and not a.region.all()
    outside = ~a.region
    assert np.array_equal(a.result[outside], photo[outside]) and np.array_equal(b.result[outside], photo[outside])
    assert not np.array_equal(a.i3d, b.i3d)  # the prior moved
    assert np.array_equal(b.result, again.result)  # same state and seed -> same picture
    other_seed = session.render(SliderState({"open_mouth": 1.0}), seed=5)
    assert not np.array_equal(other_seed.result, b.result)
    assert a.overlay.shape == photo.shape and (a.overlay != photo).any()


def test_sessions_do_not_share_photos(remover, gallery):
    s1, s2 = EditorSession(remover), EditorSession(remover)
    s1.open(gallery[0]["image"], [gallery[0]["landmarks"]])
    with pytest.raises(ValueError, match="open a photo first"):
        s2.render(SliderState())
    s2.open(gallery[1]["image"], [gallery[1]["landmarks"]])
    assert not np.array_equal(s1.render(SliderState()).result, s2.render(SliderState()).result)


def test_animation_of_a_photo(remover, gallery):
    face = gallery[0]
    session = EditorSession(remover)
    session.open(face["image"], [face["landmarks"]])
    clip = session.animate([SliderState(), SliderState({"open_mouth": 1.2}), "smile"], frames=9, seed=2)
    assert clip.shape == (9, *face["image"].shape)
    region = torch.from_numpy(session.render(SliderState()).region)
    for f in clip:
        assert torch.equal(f[:, ~region], clip[0][:, ~region])
    first = torch.from_numpy(session.render(SliderState(), seed=2).result).permute(2, 0, 1).float() / 255
    assert (clip[0] - first).abs().max() <= 1 / 255 + 1e-6  # frame 0 is the first keyframe's render


def test_session_takes_masks_off_a_video(remover, talking_clip, tmp_path):
    """The editor's video: the slider state on every frame of the tracked face (the same path as remove_mask.py
    --video), its first frames only when capped; a file that is not a video is one line."""
    from data.align import five_points
    from data.video import VideoError, read_frames

    synth, src, lm = talking_clip
    session = EditorSession(remover, align="meanface")
    points = five_points(np.loadtxt(lm))
    opened = SliderState(expressions={"open_mouth": 1.0})
    about, run = session.video(src, tmp_path / "open.mp4", [opened, opened], seed=1, points=points)
    assert "96 x 96" in about and run.report.frames == len(synth) and run.stats.tracks == 1
    assert any("1 face track(s)" in n for n in run.notes)
    _, keep = session.video(src, tmp_path / "keep.mp4", [SliderState(), SliderState()], seed=1, points=points,
                            max_frames=5)
    assert keep.report.frames == 5 and keep.warnings == []  # a cap is not an early end of the input
    a = [f.image.astype(int) for f in read_frames(tmp_path / "open.mp4")][:5]
    b = [f.image.astype(int) for f in read_frames(tmp_path / "keep.mp4")]
    inp = [f.image.astype(int) for f in read_frames(src)][:5]
    assert all(np.abs(x - y).max() > 40 for x, y in zip(a, b))  # the open mouth differs from the kept one
    assert all((np.abs(x - i).max(-1) > 40).any() for x, i in zip(b, inp))  # and both from the masked input
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"not a video" * 50)
    with pytest.raises(VideoError, match="not a readable video"):
        session.video(bad, tmp_path / "o.mp4", [opened, opened])
