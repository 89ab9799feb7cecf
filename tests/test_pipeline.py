"""One removal pipeline (tasks.removal.remove): validation and evaluation agree, the ground-truth prior goes in as
coefficients and a mask, the prior module and the OpenCV baselines."""

import pytest
import torch

from engine.config import ConfigError, build_dataclass
from metrics import DEFAULT_PSNR_MAX_DB, MetricContext, as_exported, build_metric, score_batch
from tasks.common import iterate
from tasks.inpaint import InpaintExperiment, InpaintTask
from tasks.removal import MaskRemover
from tests.helpers import tiny_data, tiny_train


def make_task(n3d_export, source="n3d", prior_blend=False):
    torch.manual_seed(0)
    cfg = build_dataclass(InpaintExperiment, {
        "data": tiny_data(n_val=6), "prior": {"n3d_checkpoint": str(n3d_export), "source": source, "mask_dilate": 1},
        "model": {"base_channels": 8, "n_res": 2, "d_base_channels": 8, "d_max_channels": 32, "n_down": 1,
                  "prior_blend": prior_blend},
        "loss": {"w_id": 0.0}, "train": tiny_train(batch_size=4)})
    return InpaintTask(cfg, torch.device("cpu"))


@pytest.mark.parametrize("prior_blend", [False, True])
def test_validation_and_evaluation_give_identical_numbers(n3d_export, tmp_path, prior_blend):
    from tasks.evaluation import EvalExperiment, Evaluator

    task = make_task(n3d_export, prior_blend=prior_blend)
    val = task.validate(0)
    # evaluate.py's row "ours" of the exported model, given the validation batches (batch i gets noise seed i in both)
    ev = Evaluator(build_dataclass(EvalExperiment, {
        "test": {"image_size": 32, "faces": [{"kind": "synthetic", "num": 2, "offset": 2_000_000}]},
        "checkpoint": str(task.export(tmp_path / "i.pt")), "metrics": ["l1"], "baselines": []}), tmp_path / "eval")
    row = ev.methods["ours"]
    assert (ev.removers["ours"].gen.gate is not None) == prior_blend  # the export rebuilds the gated N_G
    # scored as Evaluator.run scores a row: 8-bit inputs (as exported), 8-bit outputs, the metric objects
    scores = [build_metric(n, MetricContext("cpu", psnr_max_db=DEFAULT_PSNR_MAX_DB)) for n in ("l1_hole", "psnr")]
    for bi, batch in enumerate(iterate(task.val_set(), task.cfg.train.batch_size)):
        batch = as_exported(batch)
        out = row(batch, bi)
        got = task.predict(batch, seed=bi)
        assert torch.equal(out, got["output"]) and torch.equal(row.last.m, got["m"])
        assert torch.equal(row.last.i_n, got["i_n"]) and torch.equal(row.last.i3d[:, 0], got["i3d"])
        score_batch(scores, out, batch)
    got = {m.name: m.compute()[m.name] for m in scores}
    assert got["l1_hole"] == val["l1_hole"] and got["psnr"] == val["psnr"]
    assert 0 < val["l1_hole"] < 1
    (key, grid), = task.images(batch).items()  # TensorBoard's grid shows the gate as a seventh row
    assert key.endswith("|gate") == prior_blend and grid.shape[0] == (7 if prior_blend else 6) * batch["image"].shape[0]


def test_ground_truth_prior_goes_in_as_coefficients_and_mask(n3d_export, tmp_path):
    gt_task = make_task(n3d_export, source="gt")
    batch = next(iterate(gt_task.val_set(), 4))
    got = gt_task.predict(batch, seed=3)
    remover = MaskRemover(gt_task.prior, gt_task.g_ema)  # the same N_G through the inference API
    ref = remover(batch["masked_image"], ["keep"], seed=3, coeffs=batch["coeffs"], m=batch["mask"])
    assert torch.equal(got["output"], ref.images[:, 0]) and torch.equal(got["m"], batch["mask"])
    assert torch.equal(got["i3d"], gt_task.prior.render(batch["coeffs"]))
    outside = batch["mask"].expand_as(got["output"]) < 0.5
    assert torch.equal(got["output"][outside], batch["masked_image"][outside])  # composited with the true mask
    n3d_prior = MaskRemover(make_task(n3d_export).prior, gt_task.g_ema)(batch["masked_image"], ["keep"], seed=3)
    assert not torch.equal(n3d_prior.images[:, 0], got["output"])


def test_edit_spread_and_control_share_the_n3d_prior_pass(inpaint_export, tmp_path):
    from tasks.evaluation import EvalExperiment, Evaluator

    ev = Evaluator(build_dataclass(EvalExperiment, {
        "test": {"image_size": 32, "faces": [{"kind": "synthetic", "num": 3, "offset": 2_000_000}]},
        "checkpoint": str(inpaint_export), "metrics": ["l1"], "baselines": [], "gt_mask_row": False,
        "edits": ["neutral", "smile"], "control_edits": ["open_mouth"], "extra_images": 3, "diversity_seeds": 2,
        "batch_size": 4}), tmp_path / "e")
    remover = ev.removers["ours"]
    batches, forward = [], remover.gen.forward
    remover.gen.forward = lambda m, i3d, i_n: batches.append(m.shape[0]) or forward(m, i3d, i_n)
    row = ev.edit_metrics("ours", remover)
    remover.gen.forward = forward
    # N_3D's prior with keep + the control's and the spread's edits once (3 x 4), 2 noise seeds (3 each), the
    # ground-truth prior (3 x 4), the visible-GT prior (3 x 4) and the grey prior (3): no second N_3D-prior pass for
    # the controllability
    assert batches == [12, 3, 3, 12, 12, 3]
    assert row["edit_spread"] > 0 and "edit_fidelity_n3d/open_mouth" in row


def test_prior_module_config_and_noise():
    from tasks.prior import PriorConfig, PriorModule, noised

    with pytest.raises(ConfigError, match=r"prior.source: 'n3D' is not one of \['n3d', 'gt'\]") as e:
        build_dataclass(PriorConfig, {"source": "n3D"}, "prior")
    assert "\n" not in str(e.value)
    from tasks.common import MorphableConfig

    prior = PriorModule(PriorConfig(source="gt"), MorphableConfig(), 16, torch.device("cpu"))
    assert isinstance(prior, torch.nn.Module) and prior.renderer in list(prior.modules())
    assert not any(p.requires_grad for p in prior.parameters())
    with pytest.raises(ValueError, match="noise must be one of hole, release"):
        noised(torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 4), torch.Generator(), "uniform")


def test_opencv_baselines_are_named_for_what_they_run():
    import cv2
    import numpy as np

    from tasks.baselines import navier_stokes, opencv_inpaint, telea

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 24, 24, generator=g)
    m = torch.zeros(2, 1, 24, 24)
    m[:, :, 6:18, 4:20] = 1
    u8 = np.ascontiguousarray((x[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
    hole = m[0, 0].numpy().astype(np.uint8)
    for fn, flag in ((telea, cv2.INPAINT_TELEA), (navier_stokes, cv2.INPAINT_NS)):
        want = torch.from_numpy(cv2.inpaint(u8, hole, 3, flag)).permute(2, 0, 1).float() / 255
        assert torch.equal(fn(x, m)[0], want)
    assert not torch.equal(telea(x, m), navier_stokes(x, m))
    with pytest.raises(ValueError, match="unknown OpenCV inpainting method 'ns'; valid: telea, navier_stokes"):
        opencv_inpaint(x, m, "ns")


def test_removal_landmarks_are_mapped_with_pixel_centres_at_integers(inpaint_export):
    """Removal.landmarks in the pixels of the images given to the call: a point at the centre of model pixel u is at
    the centre of the input's pixels covering it, (u + 0.5) * scale - 0.5, as predict_landmarks maps them."""
    remover = MaskRemover.from_checkpoints(inpaint_export)
    s = remover.image_size
    masked = torch.rand(2, 3, 2 * s, 2 * s, generator=torch.Generator().manual_seed(0))
    res = remover(masked, ["keep"], seed=0)
    own = remover.prior.renderer.landmarks(res.base_coeffs)
    assert torch.allclose(res.landmarks, (own + 0.5) * 2 - 0.5, atol=1e-5)
    assert torch.allclose(remover(masked[:, :, ::2, ::2], ["keep"], seed=0).landmarks,
                          remover.prior.renderer.landmarks(remover.analyze(masked[:, :, ::2, ::2])[0]), atol=1e-5)
