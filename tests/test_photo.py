"""The photo pipeline (tasks/photo.py): faces aligned and analysed once, edits re-rendered, results pasted back."""

import copy
import dataclasses

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def photo():
    """scikit-image's astronaut (512 px, float (3, H, W)) and its face's dlib HOG landmarks (68, 2)."""
    from skimage import data as skdata

    from data.detectors import DlibDetector

    u8 = skdata.astronaut()
    return torch.from_numpy(u8).permute(2, 0, 1).float() / 255, DlibDetector().detect(u8)[0]


@pytest.fixture(scope="module")
def remover(inpaint_export):
    from tasks.removal import MaskRemover

    return MaskRemover.from_checkpoints(inpaint_export)


def test_prepared_faces_reproduce_a_fresh_run_and_change_only_the_region(remover, photo, lower_face_m):
    from tasks.photo import prepare_faces, remove_from_photo

    image, lm = photo
    edits = ["keep", "smile"]
    fresh = remove_from_photo(remover, image, [lm], edits, seed=3)  # landmarks: aligned and analysed inside
    faces = prepare_faces(remover, image, [lm])
    assert faces[0].coeffs.shape == (1, remover.model.layout.size) and faces[0].m.shape[-1] == remover.image_size
    again = remove_from_photo(remover, image, faces, edits, seed=3)
    for a, b in zip(fresh.images, again.images):
        assert torch.equal(a, b)
    assert torch.equal(fresh.region, again.region) and 0.005 < fresh.region.float().mean() < 0.2
    for out in again.images:
        assert torch.equal(out[:, ~again.region], image[:, ~again.region])  # bit for bit outside the region
    assert not torch.equal(again.images[0], again.images[1])  # the edit shows
    assert again.removals[0].images.shape == (1, 2, 3, remover.image_size, remover.image_size)
    # N_3D is not run again for prepared faces
    calls = []
    orig = remover.analyze
    remover.analyze = lambda *a: calls.append(1) or orig(*a)
    try:
        remove_from_photo(remover, image, faces, ["keep"], seed=3)
    finally:
        del remover.analyze
    assert calls == []


def test_edit_coefficients_drive_the_same_result_as_the_edit(remover, photo, lower_face_m):
    """An animation passes interpolated coefficients with the edit 'keep': at an end point it is the edit itself."""
    from tasks.photo import edit_coefficients, prepare_faces, remove_from_photo

    image, lm = photo
    faces = prepare_faces(remover, image, [lm])
    rows = edit_coefficients(faces[0].coeffs, ["keep", "open_mouth"], remover.model)  # (1, 2, C)
    assert rows.shape == (1, 2, remover.model.layout.size) and not torch.equal(rows[0, 0], rows[0, 1])
    by_edit = remove_from_photo(remover, image, faces, ["open_mouth"], seed=1)
    assert torch.equal(by_edit.removals[0].coeffs[0, 0], rows[0, 1])
    moved = [dataclasses.replace(faces[0], coeffs=rows[:, 1])]
    by_coeffs = remove_from_photo(remover, image, moved, ["keep"], seed=1)
    assert torch.equal(by_coeffs.images[0], by_edit.images[0])
    half = [dataclasses.replace(faces[0], coeffs=rows[:, 0].lerp(rows[:, 1], 0.5))]
    mid = remove_from_photo(remover, image, half, ["keep"], seed=1).images[0]
    ends = [remove_from_photo(remover, image, faces, ["keep"], seed=1).images[0], by_edit.images[0]]
    assert not torch.equal(mid, ends[0]) and not torch.equal(mid, ends[1])


def test_hard_paste_takes_the_result_whole_inside_the_warped_back_mask(remover, photo, lower_face_m):
    import cv2

    from data.align import invert_transform
    from tasks.photo import remove_from_photo

    image, lm = photo
    hard = remove_from_photo(remover, image, [lm], ["keep"], seed=0, paste="hard")
    soft = remove_from_photo(remover, image, [lm], ["keep"], seed=0)
    res, face = hard.removals[0], hard.faces[0]
    # test.py's composite: N_G's raw output in 8 bits (truncated) and m warped back in 8 bits, the photo replaced
    # where the warped m is 1 (tests/test_release.py checks it against the release's steps on a real photo)
    h, w = image.shape[-2:]
    inv = invert_transform(face.transform)
    inside = cv2.warpAffine(res.m[0, 0].numpy().astype(np.uint8), inv, (w, h)) > 0
    assert torch.equal(hard.region, torch.from_numpy(inside))
    assert hard.region.sum() < soft.region.sum()  # m itself, not m grown by the seam margin
    raw_u8 = (res.raw[0, 0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    back = cv2.warpAffine(raw_u8, inv, (w, h), borderValue=(255, 255, 255)).astype(np.float32) / 255
    out = hard.images[0].permute(1, 2, 0).numpy()
    assert np.array_equal(out[inside], back[inside])
    assert torch.equal(hard.images[0][:, ~hard.region], image[:, ~hard.region])
    with pytest.raises(ValueError, match="paste must be one of"):
        remove_from_photo(remover, image, [lm], ["keep"], paste="soft")


def test_small_faces_and_framings_are_reported_as_data(remover, photo):
    import torch.nn.functional as F

    from tasks.photo import SMALL_FACE_SPAN, model_notes, photo_framing, prepare_faces

    image, lm = photo
    small = F.interpolate(image[None], scale_factor=0.1, mode="area")[0]
    lm_small = (lm + 0.5) * 0.1 - 0.5
    faces = prepare_faces(remover, small, [lm_small], analyze=False)
    assert faces[0].span < SMALL_FACE_SPAN * remover.image_size / 256 and faces[0].coeffs is None
    assert len(faces[0].notes) == 1 and faces[0].notes[0].startswith("warning: face 1 is small")
    assert prepare_faces(remover, image, [lm], analyze=False)[0].notes == []
    mean = photo_framing(remover)  # the tiny export was trained on SyntheticFaces: its crop is the mean face's
    assert (mean.name, mean.framing, mean.template.shape) == ("meanface", "ffhq", (5, 2))
    assert len(model_notes(remover, mean)) == 1  # the synthetic-model note
    assert photo_framing(remover, "ffhq").template is None
    with pytest.raises(ValueError, match="--lm3d"):
        photo_framing(remover, "deng")


def test_a_preset_the_model_lacks_is_one_line_naming_its_edits(remover):
    from engine.config import ConfigError
    from tasks.photo import check_edits, preset_edits
    from tasks.removal import available_edits

    synthetic = remover.model
    assert {"smile", "open_mouth", "keep", "brighter"} <= set(available_edits(synthetic))
    bfm_like = copy.copy(synthetic)
    bfm_like.expression_names = {}  # as BFM: expression components without names
    assert available_edits(bfm_like) == ["keep", "neutral", "brighter", "darker", "frontal"]
    assert preset_edits(9, ["exp[0]=+1"], bfm_like) == ["keep", "neutral", "brighter", "darker", "exp[0]=+1"]
    check_edits(["neutral,brighter", "exp[3]=+1.5"], bfm_like)
    with pytest.raises(ConfigError) as e:
        check_edits(["smile,brighter"], bfm_like)
    msg = str(e.value)
    assert "\n" not in msg and "'smile'" in msg and "keep, neutral, brighter, darker, frontal" in msg
