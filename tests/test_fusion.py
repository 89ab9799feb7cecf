"""The video path's temporal fusion of the fill (tasks.fusion): the flow that moves the previous crop onto this one,
the shimmer it averages out, the prior changes it lets through at once, and its effect on a video's flicker."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tasks.fusion import FillFusion, crop_flow

S = 64
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@pytest.fixture(scope="module")
def renderer():
    from renderer.morphable import MorphableModel
    from renderer.render import FaceRenderer

    return FaceRenderer(MorphableModel.synthetic(), S)


def _coeffs(renderer, yaw_deg=0.0, jaw=0.0):
    lay = renderer.layout
    parts = lay.split(torch.zeros(1, lay.size))
    parts["angle"][0, 1] = math.radians(yaw_deg)
    parts["exp"][0] = renderer.model.expression({"jaw_open": jaw}, 1)[0]
    return lay.join(parts)


def _warp(img, grid):
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)


def test_crop_flow_moves_the_face_with_its_mesh_and_keeps_the_background_still(renderer):
    before, after = _coeffs(renderer, 0.0), _coeffs(renderer, 12.0, jaw=0.6)
    # a pattern painted on the surface (no shading): what moves with the face
    pts = renderer.model.mean_shape.view(-1, 3)
    paint = 0.5 + 0.5 * torch.sin(pts / pts.std(0) * 6.0)[None]

    def painted(c):
        out = renderer(c)
        return renderer.rasterizer.interpolate(paint, out.fragments).permute(0, 3, 1, 2), out.mask[0, 0] > 0.5

    (prev_img, prev_cov), (cur, cur_cov) = painted(before), painted(after)
    grid = crop_flow(renderer, after, before, IDENTITY, IDENTITY)
    assert grid.shape == (1, S, S, 2)
    both = prev_cov & cur_cov
    moved = (_warp(prev_img, grid) - cur).abs().mean(1)[0][both].mean()
    unmoved = (prev_img - cur).abs().mean(1)[0][both].mean()
    assert moved < 0.3 * unmoved  # the turned face, mouth opening, is predicted from the previous one
    # off the face, a pixel maps to the same point of the video frame: this crop shifted 3 px right of the previous
    shifted = np.array([[1.0, 0.0, -3.0], [0.0, 1.0, 0.0]])  # frame -> this crop
    grid = crop_flow(renderer, before, before, shifted, IDENTITY)
    pix = (grid[0] + 1) / 2 * (S - 1)
    off = renderer(before).mask[0, 0] < 0.5
    ys, xs = torch.meshgrid(torch.arange(S).float(), torch.arange(S).float(), indexing="ij")
    assert torch.allclose(pix[..., 0][off], xs[off] + 3.0, atol=1e-4)
    assert torch.allclose(pix[..., 1][off], ys[off], atol=1e-4)


def _removal(image, i3d, m, coeffs):
    return SimpleNamespace(images=image[None], i3d=i3d[None], m=m, coeffs=coeffs[None])  # as a Removal of N = 1


def test_fusion_averages_shimmer_out_and_takes_prior_changes_at_once(renderer):
    gen = torch.Generator().manual_seed(0)
    coeffs = _coeffs(renderer)
    i3d = renderer(coeffs).image
    m = torch.zeros(1, 1, S, S)
    m[..., 20:50, 10:54] = 1
    base = torch.full((1, 3, S, S), 0.5)
    fusion = FillFusion(renderer, a0=0.15)
    noisy, fused = [], []
    for _ in range(40):
        image = base + 0.1 * torch.randn(base.shape, generator=gen)
        noisy.append(image)
        fused.append(fusion(_removal(image, i3d, m, coeffs), IDENTITY))
    hole = m[0, 0] > 0.5
    steps = lambda seq: torch.stack([(b - a).abs().mean(1)[0][hole].mean() for a, b in zip(seq[20:], seq[21:])])  # noqa: E731
    ratio = float(steps(fused).mean() / steps(noisy).mean())
    assert ratio < 0.4  # an EMA with a0 = 0.15 leaves sqrt(a0 / (2 - a0)) = 0.28 of iid shimmer
    assert torch.equal(fused[-1][..., ~hole], noisy[-1][..., ~hole])  # outside m: the input, untouched
    # the prior changes (the mouth opens): there the new frame is taken whole, elsewhere it is still blended
    opened = _coeffs(renderer, jaw=1.0)
    i3d_open = renderer(opened).image
    change = ((i3d_open - i3d).abs().amax(1)[0] > 0.3) & hole
    assert change.sum() > 10
    image = base + 0.1 * torch.randn(base.shape, generator=gen)
    out = fusion(_removal(image, i3d_open, m, opened), IDENTITY)
    assert torch.allclose(out[..., change], image[..., change], atol=1e-6)
    steady = hole & ((i3d_open - i3d).abs().amax(1)[0] < 1e-3)
    assert (out - image).abs().mean(1)[0][steady].mean() > 0.05
    with pytest.raises(ValueError, match="--fuse"):
        FillFusion(renderer, a0=0.0)


def test_fusion_lowers_a_videos_flicker_against_truth(inpaint_export, talking_clip):
    """The (untrained) model's fill shimmers from frame to frame; fused, the video flickers less against its truth and
    its hole is no worse."""
    from tasks.photo import load_remover, photo_framing
    from tasks.video import VideoOptions
    from tasks.video_eval import run_video, score_video

    synth, src, lm = talking_clip
    remover = load_remover(str(inpaint_export))
    framing = photo_framing(remover, "meanface")
    scores = {}
    for fuse in (1.0, 0.15):
        dst = src.parent / f"fuse_{fuse}.mp4"
        opts = VideoOptions(first_landmarks=np.loadtxt(lm), fuse=fuse)
        run = run_video(remover, src, dst, opts, n_frames=len(synth), framing=framing)
        assert run["stats"].frames_with_face == len(synth)
        scores[fuse] = score_video(dst, synth)
    assert scores[0.15]["flicker"] < 0.9 * scores[1.0]["flicker"]  # measured 0.84
    assert scores[0.15]["l1_hole"] < 1.02 * scores[1.0]["l1_hole"]


def test_flicker_references_of_the_talking_head(tmp_path):
    """A frozen fill scores the truth's own motion; moving the previous truth by the exact 3D motion explains most
    of it; the codec alone adds some."""
    from data.synthetic_video import TalkingHead
    from tasks.video_eval import flicker_references

    refs = flicker_references(TalkingHead(n_frames=10, size=96), tmp_path)
    assert 0 < refs["propagated"] < 0.7 * refs["frozen"]
    assert 0 < refs["codec"] < refs["frozen"]
