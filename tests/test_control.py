"""Controllability metrics (metrics/control.py, tasks/control.py): each measure can fail and can succeed."""

import math

import numpy as np
import pytest
import torch

from engine.config import build_dataclass
from metrics.control import (
    EditFidelityMetric,
    EditTransferMetric,
    LandmarkEditFidelityMetric,
    PriorRelianceMetric,
    RatioOfSums,
)
from tasks.common import iterate
from tasks.control import LandmarkControl, SyntheticControl, build_control, synthetic_faces_of
from tasks.evaluation import EvalExperiment, build_testset
from tasks.removal import MaskRemover, apply_edit
from tasks.report import control_markdown
from tests.helpers import cli

EDITS = ["open_mouth", "smile", "brighter"]


def _testset(remover, n=4, size=32):
    cfg = build_dataclass(EvalExperiment, {"test": {"image_size": size, "faces": [
        {"kind": "synthetic", "num": n, "offset": 2_000_000}]}})
    return build_testset(cfg, remover.model)


def _measure(remover, testset, edits=EDITS):
    control = SyntheticControl(synthetic_faces_of(testset), edits)
    for bi, batch in enumerate(iterate(testset, 4)):
        control.update(remover, batch, seed=bi)
    return control.compute()


class PastePrior(torch.nn.Module):
    """An oracle N_G that knows the backgrounds: the rendered prior where it shows a face, the background elsewhere."""

    def __init__(self, background: torch.Tensor):
        super().__init__()
        self.background = background  # (N,3,S,S) of the batch the remover will see

    def forward(self, m, i3d, i_n):
        k = i3d.shape[0] // self.background.shape[0]  # rows are input-major: K edits of input 0, then input 1, ...
        face = (i3d.amax(1, keepdim=True) > 0).float()
        out = i3d * face + self.background.repeat_interleave(k, 0) * (1 - face)
        return torch.floor(out * 255 + 0.5) / 255  # quantised as SyntheticFaces' images are


def test_ratio_of_sums_streams_skips_undefined_images_and_merges():
    a, b = RatioOfSums("r"), RatioOfSums("r")
    a.update(torch.tensor([1.0, math.nan]), torch.tensor([4.0, 1.0]))
    b.update(np.array([3.0]), np.array([4.0]))
    a.merge(b)
    assert a.compute() == {"r": 0.5, "r/num": 2.0, "r/den": 4.0, "r/n": 2.0}
    assert math.isnan(RatioOfSums("r").compute()["r"])
    with pytest.raises(ValueError, match="2 numerators but 1"):
        a.update(torch.ones(2), torch.ones(1))


def test_edit_fidelity_and_reliance_on_hand_made_images():
    g = torch.Generator().manual_seed(0)
    keep, truth = torch.rand(2, 3, 3, 8, 8, generator=g)
    hole = torch.zeros(3, 1, 8, 8)
    hole[..., 2:6, 2:6] = 1
    fid = EditFidelityMetric()
    fid.update(keep, keep, truth, hole)  # edit ignored
    assert fid.compute()["edit_fidelity"] == 0.0
    fid.reset()
    fid.update(truth, keep, truth, hole)  # the edited truth exactly
    assert fid.compute()["edit_fidelity"] == 1.0
    fid.reset()
    fid.update(0.5 * (keep + truth), keep, truth, hole)  # half-way, pixel by pixel
    assert fid.compute()["edit_fidelity"] == pytest.approx(0.5)
    rel = PriorRelianceMetric()
    rel.update(keep, 0.5 * (keep + truth), truth, hole)
    assert rel.compute()["prior_reliance"] == pytest.approx(2.0)


def test_edit_transfer_separates_following_the_edit_from_reconstructing_the_face():
    g = torch.Generator().manual_seed(1)
    truth_keep = torch.rand(2, 3, 8, 8, generator=g) * 0.5
    truth_edit = truth_keep.clone()
    truth_edit[..., 3:5, 3:5] += 0.3  # the edit changes a small part of the hole
    hole = torch.ones(2, 1, 8, 8)
    out_keep = (truth_keep + 0.2 * torch.rand(2, 3, 8, 8, generator=g)).clamp(0, 1)  # a blurry reconstruction
    out_edit = out_keep + (truth_edit - truth_keep)  # ... that follows the edit exactly
    fid, tr = EditFidelityMetric(), EditTransferMetric()
    fid.update(out_edit, out_keep, truth_edit, hole)
    tr.update(out_edit, out_keep, truth_edit, truth_keep, hole)
    assert tr.compute()["edit_transfer"] == pytest.approx(1.0) and fid.compute()["edit_fidelity"] < 0.5
    tr.reset()
    tr.update(out_keep, out_keep, truth_edit, truth_keep, hole)  # no change at all
    assert tr.compute()["edit_transfer"] == 0.0


def test_an_n_g_without_the_prior_has_fidelity_0_and_reliance_1(inpaint_export):
    from models.generator import Generator

    remover = MaskRemover.from_checkpoints(inpaint_export)
    torch.manual_seed(0)
    blind = MaskRemover(remover.prior, Generator(8, 2, use_3d_prior=False), use_3d_prior=False)
    res = _measure(blind, _testset(blind))
    assert res["prior_reliance"] == pytest.approx(1.0, abs=1e-9)
    assert res["l1_hole_gt_prior"] > 0.01  # an untrained N_G: far from the truth, but not because of I_3D
    for p in ("gt", "n3d"):
        for e in EDITS:
            assert res[f"edit_fidelity_{p}/{e}"] == pytest.approx(0.0, abs=1e-9)
            assert res[f"edit_transfer_{p}/{e}"] == pytest.approx(0.0, abs=1e-9)


def test_an_n_g_that_pastes_the_prior_has_fidelity_1_and_high_reliance(inpaint_export):
    remover = MaskRemover.from_checkpoints(inpaint_export)
    testset = _testset(remover)
    faces = synthetic_faces_of(testset)
    background = torch.stack([torch.from_numpy(faces.sample(i)[1]).permute(2, 0, 1) for i in range(len(faces))])
    oracle = MaskRemover(remover.prior, PastePrior(background))
    res = _measure(oracle, testset)
    for e in EDITS:  # the ground-truth prior: exact
        assert res[f"edit_fidelity_gt/{e}"] == pytest.approx(1.0, abs=1e-3)
        assert res[f"edit_transfer_gt/{e}"] == pytest.approx(1.0, abs=1e-3)
    assert res["l1_hole_gt_prior"] < 1e-4 and res["prior_reliance"] > 100
    # an untrained N_3D's prior leads the oracle away from the truth: that is what the N_3D column shows
    assert all(res[f"edit_fidelity_n3d/{e}"] < res[f"edit_fidelity_gt/{e}"] for e in EDITS)


def test_unseen_priors_hide_only_their_group_and_lower_the_oracle(inpaint_export):
    """The priors gt_no_NAME (the ground truth with a group the masked input does not show at the mean): each zeroes
    exactly its coefficients ("masked" the groups of MASKED_HIDDEN, "all" every group); the oracle N_G stays exact
    with the full truth and loses fidelity without the lower-face identity, which moves the jaw and lips it draws."""
    from tasks.control import MASKED_HIDDEN, hide_unseen, unseen_groups, unseen_index

    remover = MaskRemover.from_checkpoints(inpaint_export)
    testset = _testset(remover)
    faces = synthetic_faces_of(testset)
    lay = faces.layout
    c = torch.randn(3, lay.size)
    groups = unseen_groups()
    for name, (block, idx) in groups.items():
        changed = (hide_unseen(c, lay, name) != c).any(0).nonzero().flatten().tolist()
        if block != "*":
            assert changed == sorted(lay.slice(block).start + i for i in idx), name
    assert unseen_index(lay, "masked").tolist() == sorted(i for g in MASKED_HIDDEN for i in unseen_index(lay, g))
    assert set(unseen_index(lay, "all").tolist()) == {i for g, (b, _) in groups.items() if b != "*"
                                                     for i in unseen_index(lay, g).tolist()}
    exp = lay.slice("exp")
    kept = sorted(set(range(exp.start, exp.stop)) - set(unseen_index(lay, "expression").tolist()))
    assert len(kept) == 3  # the upper-face expressions (brows, eyes) stay visible above a mask
    with pytest.raises(ValueError, match="unknown unseen group 'hair'"):
        hide_unseen(c, lay, "hair")
    with pytest.raises(ValueError, match="unknown unseen group"):
        SyntheticControl(faces, EDITS, unseen=["hair"])
    background = torch.stack([torch.from_numpy(faces.sample(i)[1]).permute(2, 0, 1) for i in range(len(faces))])
    oracle = MaskRemover(remover.prior, PastePrior(background))
    control = SyntheticControl(faces, ["open_mouth", "smile"], unseen=["lower_face_id", "all"])
    for bi, batch in enumerate(iterate(testset, 4)):
        control.update(oracle, batch, seed=bi)
    res = control.compute()
    for e in ("open_mouth", "smile"):
        assert res[f"edit_fidelity_gt/{e}"] == pytest.approx(1.0, abs=1e-3)
        assert res[f"edit_fidelity_gt_no_lower_face_id/{e}"] < 0.95
        assert res[f"edit_fidelity_gt_no_all/{e}"] < res[f"edit_fidelity_gt/{e}"]
    assert res["l1_hole_gt_no_all_prior"] > res["l1_hole_gt_no_lower_face_id_prior"] > res["l1_hole_gt_prior"]


def test_information_ceiling_is_exact_without_hidden_information_and_lower_with_it(inpaint_export, monkeypatch):
    """The information ceiling (no N_G): with nothing hidden the per-pixel median is the truth (fidelity 1); with
    what a mask hides (lower-face identity, lip colour, expression) a smile cannot be placed exactly, and the
    ceiling falls. It does not depend on the batching, and only SyntheticControl's ceiling
    keys appear."""
    import tasks.control as control_mod

    remover = MaskRemover.from_checkpoints(inpaint_export)
    testset = _testset(remover, n=4, size=64)
    faces = synthetic_faces_of(testset)

    def ceiling(batch_size, draws=16):
        control = SyntheticControl(faces, ["smile", "brighter"], ceiling_draws=draws)
        for batch in iterate(testset, batch_size):
            items = (batch["index"] - faces.offset).tolist()
            truth = {e: faces.render_with(items, apply_edit(batch["coeffs"], e, faces.model)) for e in control.edits}
            control._update_ceiling(items, batch["coeffs"], truth, batch["image"], batch["mask"])
        return {k: v for k, v in control.compute().items() if "ceiling" in k}

    hidden = ceiling(4)
    assert set(hidden) == {f"edit_{m}_ceiling/{e}" for m in ("fidelity", "transfer") for e in ("smile", "brighter")}
    assert hidden == ceiling(1)  # per-item draws: the same whatever the batch
    assert 0.0 < hidden["edit_fidelity_ceiling/smile"] < 0.9
    assert hidden["edit_fidelity_ceiling/brighter"] > hidden["edit_fidelity_ceiling/smile"]
    monkeypatch.setattr(control_mod, "MASKED_HIDDEN", ())
    visible = ceiling(4, draws=3)
    assert visible["edit_fidelity_ceiling/smile"] == 1.0 and visible["edit_transfer_ceiling/smile"] == 1.0
    assert not any("ceiling" in k for k in SyntheticControl(faces, ["smile"]).compute())  # off by default


def test_edited_truth_is_the_items_own_render_for_keep():
    from data.synthetic import SyntheticFaces

    faces = SyntheticFaces(3, 32, offset=2_000_000)
    coeffs = torch.stack([faces[i]["coeffs"] for i in range(3)])
    assert torch.equal(faces.render_with([0, 1, 2], coeffs), torch.stack([faces[i]["image"] for i in range(3)]))
    smile = faces.render_with([0, 1, 2], apply_edit(coeffs, "open_mouth", faces.model))
    assert (smile - faces.render_with([0, 1, 2], coeffs)).abs().amax() > 0.1
    with pytest.raises(ValueError, match="2 items but 3"):
        faces.render_with([0, 1], coeffs)


class RenderedTruth:
    """A remover stand-in whose outputs are the exact renders of the requested coefficients (an oracle N_G)."""

    def __init__(self, faces, items):
        self.faces, self.items = faces, items
        self.image_size, self.prior = faces.image_size, type("P", (), {"renderer": faces.renderer})()

    def __call__(self, masked, edits, seed=0, coeffs=None, m=None):
        from tasks.removal import Removal

        base = torch.stack([self.faces[i]["coeffs"] for i in self.items])
        edited = torch.stack([apply_edit(base, e, self.faces.model) for e in edits], 1)
        imgs = torch.stack([self.faces.render_with(self.items, edited[:, k]) for k in range(len(edits))], 1)
        return Removal(imgs, imgs, imgs, None, edited, base)


def test_landmark_measure_on_synthetic_renders_with_known_landmarks():
    pytest.importorskip("dlib")
    from data.detectors import DlibDetector
    from data.synthetic import SyntheticFaces
    from metrics.control import mouth_nme
    from tasks.control import detect_landmarks

    faces, items = SyntheticFaces(6, 64, offset=2_000_000), list(range(6))
    detector = DlibDetector()
    batch = {"masked_image": torch.stack([faces[i]["image"] for i in items])}
    # dlib finds the render's own (known) mouth landmarks, at 64 px upscaled
    det = detect_landmarks(batch["masked_image"], detector)
    known = torch.stack([faces[i]["landmarks"] for i in items])
    assert mouth_nme(det, known).mean() < 0.12
    # outputs that are the exact renders of the edited faces: the detector sees the mouth move the requested way
    # (dlib on these synthetic renders under-reads an opened mouth: ~0.2 at best for open_mouth, ~0.55 for smile)
    ctrl = LandmarkControl(["open_mouth", "smile"], detector)
    ctrl.update(RenderedTruth(faces, items), batch, seed=0)
    good = ctrl.compute()
    assert good["lm_edit_fidelity/open_mouth"] > 0.1 and good["lm_edit_fidelity/smile"] > 0.4
    assert good["lm_edit_fidelity/open_mouth/mouth_nme"] < 0.15
    # outputs that ignore the edit: fidelity exactly 0
    lm = LandmarkEditFidelityMetric()
    req = faces.renderer.landmarks(apply_edit(torch.stack([faces[i]["coeffs"] for i in items]), "open_mouth",
                                              faces.model))
    lm.update(det, det, req, known)
    assert lm.compute()["lm_edit_fidelity"] == 0.0


def test_real_test_sets_get_the_landmark_measure_and_the_report_labels_both():
    class Folder(torch.utils.data.Dataset):
        def __len__(self):
            return 1

    assert build_control(Folder(), ["smile"], []) is None
    assert isinstance(build_control(Folder(), ["smile"], ["open_mouth"], detector=object()), LandmarkControl)
    md = "\n".join(control_markdown({"ours": {"prior_reliance": 2.5, "l1_hole_gt_prior": 0.01,
                                              "l1_hole_grey_prior": 0.025, "l1_hole_n3d_prior": 0.02,
                                              "edit_fidelity_gt/smile": 0.7, "edit_fidelity_n3d/smile": 0.4},
                                     "telea": {"l1": 0.1}}))
    assert "| Method | prior reliance ↑ | L1 hole, GT prior ↓ | L1 hole, grey I_3D ↓ | L1 hole, N_3D prior ↓ |" in md
    assert "| Method | edit | fidelity, GT prior ↑ | fidelity, N_3D prior ↑ |" in md
    assert "| ours | 2.500 | 0.010 | 0.025 | 0.020 |" in md and "| ours | smile | 0.700 | 0.400 |" in md
    assert "telea" not in md
    md = "\n".join(control_markdown({"ours": {"prior_reliance": 2.5, "l1_hole_gt_no_masked_prior": 0.03,
                                              "edit_fidelity_gt_no_masked/smile": 0.3,
                                              "edit_fidelity_ceiling/smile": 0.25}}))
    assert "| Method | prior reliance ↑ | L1 hole, visible-GT prior ↓ |" in md
    assert "| ours | smile | 0.300 | 0.250 |" in md and "fidelity, visible-GT prior ↑ | fidelity ceiling ↑" in md


def test_evaluate_on_a_photo_folder_reports_the_dlib_mouth_measure(inpaint_export, tmp_path):
    pytest.importorskip("dlib")
    export_main = cli("scripts/export_testset.py")
    from tasks.evaluation import Evaluator

    cfg_path = tmp_path / "eval.yaml"
    cfg_path.write_text('{"test": {"image_size": 32, "faces": [{"kind": "synthetic", "num": 2, "offset": 2000000}]}}')
    assert export_main(["--config", str(cfg_path), "--out", str(tmp_path / "ts")]) == 0
    cfg = build_dataclass(EvalExperiment, {
        "test": {"image_size": 32, "faces": [{"kind": "folder", "root": str(tmp_path / "ts" / "gt"),
                                              "landmarks_dir": str(tmp_path / "ts" / "landmarks")}]},
        "checkpoint": str(inpaint_export), "metrics": ["l1"], "baselines": [], "edits": ["smile", "neutral"],
        "control_edits": ["open_mouth"], "extra_images": 2, "batch_size": 2})
    ev = Evaluator(cfg, tmp_path / "e")
    assert isinstance(ev.control["ours"], LandmarkControl)
    row = ev.run()["methods"]["ours"]
    assert "lm_edit_fidelity/open_mouth" in row and not any(k.startswith("edit_fidelity_") for k in row)
    md = (tmp_path / "e" / "results.md").read_text()
    assert "| ours | open_mouth |" in md and "fidelity, dlib mouth ↑" in md and "prior reliance" not in md


def test_measure_control_cli(inpaint_export, tmp_path, capsys):
    import json

    main = cli("scripts/measure_control.py")

    out = tmp_path / "c.json"
    assert main(["--checkpoint", str(inpaint_export), "--n", "2", "--edits", "open_mouth,smile",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "prior reliance" in text and "open_mouth" in text and "smile" in text
    res = json.loads(out.read_text())
    assert {"prior_reliance", "edit_fidelity_gt/smile", "edit_transfer_n3d/open_mouth"} <= set(res)
    assert main(["--checkpoint", str(inpaint_export), "--n", "2", "--edits", "smile", "--unseen", "depth",
                 "--ceiling", "2"]) == 0
    text = capsys.readouterr().out
    assert "gt_no_depth" in text and "information ceiling" in text
    assert main(["--checkpoint", str(inpaint_export), "--n", "2", "--unseen", "hair"]) == 2
    assert "--unseen: unknown group(s) hair" in capsys.readouterr().out
    assert main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert capsys.readouterr().out.startswith("error: --checkpoint: inpainting checkpoint not found")
    assert main(["--checkpoint", str(inpaint_export), "--n", "2", "--edits", "grin"]) == 2
    assert "unknown edit 'grin'" in capsys.readouterr().out


def test_edit_strip_shows_each_edit_beside_its_exact_truth(inpaint_export):
    # the oracle's GT-prior rows are the edited ground truth; the rows come per face in a fixed order
    remover = MaskRemover.from_checkpoints(inpaint_export)
    testset = _testset(remover)
    faces = synthetic_faces_of(testset)
    background = torch.stack([torch.from_numpy(faces.sample(i)[1]).permute(2, 0, 1) for i in range(len(faces))])
    control = SyntheticControl(faces, EDITS, strip_faces=3)
    assert control.strip() is None
    oracle = MaskRemover(remover.prior, PastePrior(background))
    for bi, batch in enumerate(iterate(testset, 4)):
        control.update(oracle, batch, seed=bi)
    images, rows, cols = control.strip()
    assert cols == ["keep", *EDITS] and len(rows) == 3 * 4 and rows[0] == "face 0: input"
    grid = images.view(3, 4, len(cols), 3, 32, 32)  # face, row kind, column
    assert rows[2] == "face 0: ours, GT prior" and rows[3] == "face 0: edited ground truth"
    first = next(iterate(testset, 3))
    hole = first["mask"][:, None]  # (3,1,1,S,S): N_G fills the hole only, outside it the input stays
    assert ((grid[:, 2] - grid[:, 3]).abs() * hole).max() < 2 / 255  # the oracle with the GT prior: the truth
    assert not torch.equal(grid[:, 3, 0], grid[:, 3, 1])  # and the edits change the truth
    assert torch.equal(grid[:, 0, 0], first["masked_image"]) and torch.equal(grid[:, 3, 0], first["image"])
