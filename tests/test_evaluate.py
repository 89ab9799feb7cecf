"""evaluate.py machinery: determinism, baselines, external predictions, report layout; export_testset.py."""

import json

import pytest
import torch

from engine.config import build_dataclass
from tasks.evaluation import EvalExperiment, Evaluator, build_testset
from tasks.report import results_markdown
from tests.helpers import cli


def eval_cfg(checkpoint=None, metrics=("l1", "l1_hole", "psnr", "ssim", "lpips", "arcface_cos", "fid"), **kw):
    data = {"test": {"image_size": 32, "faces": [{"kind": "synthetic", "num": 4, "offset": 2_000_000}]},
            "checkpoint": str(checkpoint) if checkpoint else None, "metrics": list(metrics),
            "edits": ["neutral", "smile", "open_mouth"], "control_edits": ["open_mouth"], "extra_images": 2,
            "batch_size": 4, "grid_images": 3, **kw}
    return build_dataclass(EvalExperiment, data)


def test_same_checkpoint_same_results(inpaint_export, tmp_path):
    # FID (12 s of scipy sqrtm per row on 2048-d features) is left to tests/test_metrics.py and the demo
    cfg = eval_cfg(inpaint_export, baselines=["telea"], metrics=("l1", "l1_hole", "psnr", "ssim", "lpips",
                                                                  "arcface_cos"))
    a = Evaluator(cfg, tmp_path / "a").run()
    b = Evaluator(cfg, tmp_path / "b").run()
    assert (tmp_path / "a" / "results.json").read_text() == (tmp_path / "b" / "results.json").read_text()
    assert set(a["methods"]) == {"ours", "ours_gt_mask", "telea"}
    assert a["row_masks"] == {"ours": "N_3D", "ours_gt_mask": "ground truth", "telea": "ground truth"}
    ours = a["methods"]["ours"]
    assert {"l1", "psnr", "ssim", "lpips", "arcface_cos", "mask_iou", "landmark_nme", "diversity", "edit_spread",
            "prior_reliance", *(f"edit_fidelity_{p}/{e}" for p in ("gt", "n3d") for e in ("open_mouth", "neutral",
                                                                                         "smile"))} <= set(ours)
    assert ours["diversity"] > 0 and ours["edit_spread"] > 0
    # random-weight feature networks are flagged, pixel metrics are not
    assert a["comparable"]["lpips"] is False and a["comparable"]["arcface_cos"] is False
    assert a["comparable"]["psnr"] is True
    md = (tmp_path / "a" / "results.md").read_text()
    assert "| ours |" in md and "LPIPS†" in md and "NOT comparable" in md and "By mask area" in md
    assert "## Controllability" in md and "| ours | open_mouth |" in md and "Ctrl err" not in md
    assert (tmp_path / "a" / "grid.png").is_file() and b == a
    assert (tmp_path / "a" / "edit_strip.png").is_file()
    assert (tmp_path / "a" / "edit_strip.txt").read_text().startswith("columns: keep, open_mouth, neutral, smile\n")


def test_n3d_metrics_reuse_the_removal_and_match_a_direct_analysis(inpaint_export, tmp_path):
    from metrics import get_metric
    from tasks.common import iterate, resize
    from tasks.evaluation import as_exported

    ev = Evaluator(eval_cfg(inpaint_export, metrics=("l1",), baselines=[], test={
        "image_size": 48, "faces": [{"kind": "synthetic", "num": 6, "offset": 2_000_000}]}), tmp_path / "e")
    remover = ev.removers["ours"]
    calls, analyze = [], remover.prior.coefficients_and_mask  # N_3D
    remover.prior.coefficients_and_mask = lambda x: calls.append(len(x)) or analyze(x)
    row = ev.run()["methods"]["ours"]
    remover.prior.coefficients_and_mask = analyze
    # N_3D once per test batch (2) and once for the one batch of edits (controllability reuses it, no re-fit)
    assert calls == [4, 2, 2]
    iou, nme = get_metric("mask_iou"), get_metric("landmark_nme")
    for batch in iterate(ev.testset, 4, device=torch.device("cpu")):  # N_3D run afresh on the test images
        batch = as_exported(batch)
        coeffs, m = remover.analyze(resize(batch["masked_image"], remover.image_size))
        iou.update(resize(m, 48).round(), batch["mask"])
        lm = (remover.prior.renderer.landmarks(coeffs) + 0.5) * (48 / remover.image_size) - 0.5  # pixel centres
        nme.update(lm, batch["landmarks"])
    assert row["mask_iou"] == pytest.approx(iou.compute()["mask_iou"], abs=1e-5)
    assert row["landmark_nme"] == pytest.approx(nme.compute()["landmark_nme"], abs=1e-5)
    # given N_3D's outputs, the removal skips N_3D and gives the same images
    x = resize(batch["masked_image"], remover.image_size)
    full = remover(x, ["smile"], seed=3)
    given = remover(x, ["smile"], seed=3, coeffs=full.base_coeffs, m=full.m)
    assert torch.equal(given.images, full.images)


def test_predictions_of_the_ground_truth_score_perfectly(tmp_path):
    export_main = cli("scripts/export_testset.py")

    cfg_path = tmp_path / "eval.yaml"
    cfg_path.write_text(json.dumps({"test": {"image_size": 32, "faces": [{"kind": "synthetic", "num": 5,
                                                                          "offset": 2_000_000}]}}))
    assert export_main(["--config", str(cfg_path), "--out", str(tmp_path / "ts")]) == 0
    names = json.loads((tmp_path / "ts" / "index.json").read_text())["names"]
    assert len(names) == 5 and all((tmp_path / "ts" / "masked" / f"{n}.png").is_file() for n in names)
    cfg = eval_cfg(None, metrics=("l1", "psnr", "ssim"), baselines=[])
    res = Evaluator(cfg, tmp_path / "pred", predictions=str(tmp_path / "ts" / "gt")).run()
    row = res["methods"]["predictions"]
    # read back from PNG and quantised like the test items: bit-identical, so L1 is exactly 0
    assert row["l1"] == 0 and row["ssim"] == pytest.approx(1, abs=1e-12)
    # identical images: infinite PSNR per image, capped at psnr_max_db and counted
    assert row["psnr"] == 100.0 and row["psnr_exact"] == 4  # eval_cfg scores the first 4 of the 5
    assert res["row_masks"] == {"predictions": "ground truth"}
    md = (tmp_path / "pred" / "results.md").read_text()
    assert "Identical output/truth pairs (PSNR capped): predictions 4." in md and "100 dB" in md


def test_baselines_only_and_errors(tmp_path):
    res = Evaluator(eval_cfg(None, metrics=("l1", "psnr")), tmp_path / "base").run()
    assert set(res["methods"]) == {"telea", "navier_stokes"}
    assert res["methods"]["telea"]["psnr"] > 10
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        Evaluator(eval_cfg(tmp_path / "missing.pt"), tmp_path / "x")
    with pytest.raises(ValueError, match="unknown metric"):
        Evaluator(eval_cfg(None, metrics=("l2",)), tmp_path / "y")
    with pytest.raises(ValueError, match="^metrics: unknown metric 'mask_iou'; valid: arcface_cos, fid, l1, l1_hole, "
                                         "lpips, psnr, ssim$"):  # registered, but it scores N_3D's masks
        Evaluator(eval_cfg(None, metrics=("mask_iou",)), tmp_path / "y")


def test_n3d_metrics_are_the_configured_ones(inpaint_export, tmp_path):
    cfg = eval_cfg(inpaint_export, metrics=("l1",), baselines=[], gt_mask_row=False, n3d_metrics=["landmark_nme"],
                   diversity_seeds=1, edits=["keep"], control_edits=[])
    row = Evaluator(cfg, tmp_path / "e").run()["methods"]["ours"]
    assert row["landmark_nme"] > 0 and "mask_iou" not in row
    with pytest.raises(ValueError, match="^n3d_metrics: unknown metric 'psnr'; valid: landmark_nme, mask_iou$"):
        Evaluator(eval_cfg(inpaint_export, n3d_metrics=["psnr"]), tmp_path / "f")


def test_testset_is_deterministic():
    cfg = eval_cfg(None)
    a, b = build_testset(cfg)[3], build_testset(cfg)[3]
    assert torch.equal(a["masked_image"], b["masked_image"]) and torch.equal(a["mask"], b["mask"])


def test_markdown_marks_missing_values():
    md = results_markdown({"n_images": 1, "methods": {"x": {"l1": 0.1, "fid": None}}, "comparable": {"fid": False}})
    assert "| x | 0.1000 | – |" in md
