"""Animated edits: keyframe parsing, easing, the coefficient trajectory, smooth frames."""

import pytest
import torch

from engine.config import ConfigError
from renderer import MorphableModel
from tasks.animate import animate_crop, animated_coeffs, ease, frame_times, parse_keyframes
from tests.helpers import cli


@pytest.fixture(scope="module")
def model():
    return MorphableModel.synthetic(n_vertices=500)


def test_parse_keyframes():
    assert parse_keyframes("keep>open_mouth>smile") == ["keep", "open_mouth", "smile"]
    assert parse_keyframes(" keep > smile,brighter ") == ["keep", "smile,brighter"]
    for bad in ("smile", "keep>>smile", ">smile"):
        with pytest.raises(ConfigError, match="two or more"):
            parse_keyframes(bad)


def test_ease_is_smoothstep():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    e = ease(t)
    assert e[0] == 0 and e[-1] == 1 and abs(float(ease(0.5)) - 0.5) < 1e-12
    assert (e.diff() >= 0).all()
    assert float(e[1] - e[0]) < 1e-3 and float(e[50] - e[49]) > 0.01  # slow at the ends, fastest in the middle
    assert float(ease(-1)) == 0 and float(ease(2)) == 1


def test_animated_coeffs_passes_through_keyframes(model):
    base = model.sample_coeffs(2, torch.Generator().manual_seed(0))
    keys = ["keep", "open_mouth", "smile,brighter"]
    traj = animated_coeffs(base, keys, frame_times(9), model)  # keyframes at frames 0, 4, 8
    assert traj.shape == (9, 2, base.shape[1]) and traj.dtype == base.dtype
    from tasks.removal import apply_edit

    for f, k in zip((0, 4, 8), keys):
        torch.testing.assert_close(traj[f], apply_edit(base, k, model))
    jaw = model.expression_names["jaw_open"]
    exp = model.layout.split(traj)["exp"][:, 0, jaw]  # jaw opens over frames 0-4, closes over 4-8
    assert (exp[:5].diff() > 0).all() and (exp[4:].diff() < 0).all()
    halfway = model.layout.split(animated_coeffs(base, keys, torch.tensor([0.25]), model))["exp"][0, 0, jaw]
    assert abs(float(halfway) - (float(exp[0]) + float(exp[4])) / 2) < 1e-5  # ease(0.5) = 0.5


def test_animation_frames_are_smooth_and_fixed_outside_the_hole(inpaint_export):
    """The editor's animation on a synthetic face: bit-identical outside the hole; inside, the per-frame change
    follows the trajectory (largest step <= 3 x the median step, no noise flicker)."""
    from data.synthetic import SyntheticFaces
    from tasks.removal import MaskRemover

    remover = MaskRemover.from_checkpoints(inpaint_export)
    s = remover.image_size
    face = SyntheticFaces(num=1, image_size=s, offset=1_000_000)[0]["image"][None]
    m = torch.zeros(1, 1, s, s)
    m[..., s // 2:, s // 4: 3 * s // 4] = 1  # a mask over the mouth and chin
    coeffs, _ = remover.analyze(face)
    frames = animate_crop(remover, face * (1 - m), coeffs, m, ["keep", "open_mouth"], frame_times(16), seed=3)
    assert frames.shape == (16, 3, s, s)
    outside = (m[0] == 0).expand(3, -1, -1)
    assert all(torch.equal(frames[i][outside], frames[0][outside]) for i in range(16))
    steps = (frames.diff(dim=0).abs() * m).sum((1, 2, 3)) / m.sum()
    assert float(steps.max()) > 0  # it moves
    assert float(steps.max()) <= 3 * float(steps.median()), steps
    again = animate_crop(remover, face * (1 - m), coeffs, m, ["keep", "open_mouth"], frame_times(16), seed=3)
    assert torch.equal(frames, again)  # the same noise: reproducible


def test_remove_mask_animate_writes_a_clip(inpaint_export, tmp_path, capsys):
    """remove_mask.py --animate: one clip through the editor's code; outside the pasted region every frame is the
    photo (up to H.264's rounding), and a bad --out or keyframe is one line."""
    from data.io import write_image
    from data.landmarks import save_landmarks_file
    from data.video import read_frames
    main = cli("scripts/remove_mask.py")
    from tasks.editor import gallery_faces

    face = gallery_faces(1, size=96)[0]
    photo, lms = tmp_path / "face.png", tmp_path / "face.txt"
    write_image(photo, face["image"])
    save_landmarks_file(lms, face["landmarks"])
    base = ["--image", str(photo), "--landmarks", str(lms), "--checkpoint", str(inpaint_export), "--align", "meanface"]
    for suffix in (".gif", ".mp4"):
        out = tmp_path / f"clip{suffix}"
        assert main([*base, "--animate", "keep>open_mouth>smile", "--frames", "6", "--fps", "12",
                     "--out", str(out)]) == 0
        assert "wrote 6 frames" in capsys.readouterr().out
        frames = [f.image for f in read_frames(out)]
        assert len(frames) == 6 and frames[0].shape == (96, 96, 3)
    assert main([*base, "--animate", "keep>smile", "--out", str(tmp_path / "clip.avi")]) == 2
    assert main([*base, "--animate", "keep>grin", "--out", str(tmp_path / "x.gif")]) == 2
    assert "unknown edit 'grin'" in capsys.readouterr().err
    assert main([*base, "--animate", "keep", "--out", str(tmp_path / "x.gif")]) == 2
    assert "two or more" in capsys.readouterr().err
