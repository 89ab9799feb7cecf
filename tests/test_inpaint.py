"""N_G / N_D training task, the generation API (edits, seeds) and train_inpaint.py."""

import shutil

import pytest
import torch
from torch.utils.data import default_collate

from engine.config import build_dataclass
from engine.loop import StepContext
from tasks.baselines import telea
from tasks.inpaint import InpaintExperiment, InpaintTask
from tasks.prior import noised
from tasks.removal import MaskRemover, apply_edit
from tests.helpers import tiny_data, tiny_train


def make_task(n3d_export, **over):
    torch.manual_seed(0)
    cfg = {"data": tiny_data(), "prior": {"n3d_checkpoint": str(n3d_export)},
           "model": {"base_channels": 8, "n_res": 2, "d_base_channels": 8, "d_max_channels": 32},
           "loss": {"w_id": 0.0}, "train": tiny_train(lr=2e-3)}
    for k, v in over.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    return InpaintTask(build_dataclass(InpaintExperiment, cfg), torch.device("cpu"))


def test_noise_only_inside_mask():
    x, m = torch.rand(2, 3, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    y = noised(x, m)
    assert torch.equal(y * (1 - m), x * (1 - m)) and not torch.equal(y, x)


def test_train_step_alternates_d_and_g_and_overfits(n3d_export):
    torch.manual_seed(0)
    task = make_task(n3d_export)
    batch = default_collate([task.train_set()[i] for i in range(4)])
    ctx = StepContext(task.cfg.train, torch.device("cpu"))
    first = task.train_step(batch, ctx)
    assert {"d_loss", "r1", "g_loss", "pix", "tv", "adv"} <= set(first)
    ema_before = [p.clone() for p in task.g_ema.parameters()]
    for i in range(30):
        ctx.step = i + 1
        last = task.train_step(batch, ctx)
    assert last["pix"] < 0.6 * first["pix"]
    assert any(not torch.equal(a, b) for a, b in zip(ema_before, task.g_ema.parameters()))


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")),
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_generator_step_matches_eager(n3d_export):
    # train.compile compiles N_G in place (checkpoint keys unchanged), after its EMA copy, and not N_D (R1's
    # double backward); one compiled training step gives the eager step's losses and N_G gradients
    eager = make_task(n3d_export)
    comp = make_task(n3d_export, train={"compile": True})
    assert comp.gen._compiled_call_impl is not None
    assert comp.g_ema._compiled_call_impl is None and comp.disc._compiled_call_impl is None
    assert list(comp.gen.state_dict()) == list(eager.gen.state_dict())
    batch = default_collate([eager.train_set()[i] for i in range(2)])
    out = []
    for task in (eager, comp):
        torch.manual_seed(1)
        ctx = StepContext(task.cfg.train, torch.device("cpu"))
        out.append(task.train_step(batch, ctx))
    assert out[0].keys() == out[1].keys()
    for k in out[0]:
        assert float(out[1][k]) == pytest.approx(float(out[0][k]), rel=1e-4, abs=1e-6), k
    # N_G's gradients agree (its weights after one Adam step would not: lr * sign(g) amplifies rounding)
    for a, b in zip(eager.gen.parameters(), comp.gen.parameters()):
        assert a.grad is not None and torch.allclose(a.grad, b.grad, rtol=1e-2, atol=1e-2 * a.grad.abs().max())


def test_compile_mode_reaches_torch_compile(n3d_export, monkeypatch):
    # train.compile_mode is handed to torch.compile (reduce-overhead = CUDA graphs); unknown modes fail at load
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: seen.append((type(self).__name__, kw)))
    task = make_task(n3d_export, train={"compile": True, "compile_mode": "reduce-overhead"})
    assert seen == [(type(task.gen).__name__, {"mode": "reduce-overhead"})]
    with pytest.raises(ValueError, match="compile_mode must be one of default, reduce-overhead"):
        make_task(n3d_export, train={"compile": True, "compile_mode": "fast"})


def test_validation_reports_model_and_telea(n3d_export):
    val = make_task(n3d_export).validate(0)
    assert set(val) == {"l1_hole", "psnr", "telea_l1_hole", "telea_psnr"}
    assert all(v == v for v in val.values())  # no NaN


def test_validation_scores_equal_evaluation_scores_of_the_same_images(n3d_export, tmp_path):
    """Validation and evaluate.py score through metrics.score_batch: on the same pairs (the val set as a test set,
    same mask seeds, same noise seeds), the same model gives the same numbers, bit for bit."""
    from tasks.evaluation import EvalExperiment, Evaluator

    task = make_task(n3d_export)
    val = task.validate(0)
    d = task.cfg.data
    cfg = build_dataclass(EvalExperiment, {
        "test": {"image_size": d.image_size, "faces": [vars(f) for f in d.val], "mask_seed": d.val_mask_seed},
        "checkpoint": str(task.export(tmp_path / "inpaint.pt")), "metrics": ["l1_hole", "psnr"], "n3d_metrics": [],
        "baselines": ["telea"], "gt_mask_row": False, "diversity_seeds": 0, "edits": ["keep"], "control_edits": [],
        "extra_images": 0, "batch_size": task.cfg.train.batch_size})
    rows = Evaluator(cfg, tmp_path / "eval").run()["methods"]
    assert rows["ours"]["psnr"] == val["psnr"] and rows["ours"]["l1_hole"] == val["l1_hole"]
    assert rows["telea"]["psnr"] == val["telea_psnr"] and rows["telea"]["l1_hole"] == val["telea_l1_hole"]


def test_telea_changes_only_the_hole():
    x = torch.rand(1, 3, 32, 32)
    m = torch.zeros(1, 1, 32, 32)
    m[..., 10:20, 10:20] = 1
    y = telea(x, m)
    outside = (1 - m).bool().expand_as(x)
    assert (y - x).abs()[outside].max() <= 1 / 255 + 1e-6
    assert (y - x).abs()[~outside].mean() > 0.01


def test_ablation_without_3d_prior_and_gt_prior(n3d_export):
    task = make_task(n3d_export, model={"use_3d_prior": False}, prior={"source": "gt"})
    batch = default_collate([task.train_set()[i] for i in range(2)])
    out = task.predict(batch)
    assert out["output"].shape == (2, 3, 32, 32) and torch.equal(out["m"], batch["mask"])


@pytest.fixture(scope="module")
def remover(n3d_export, tmp_path_factory):
    task = make_task(n3d_export)
    path = task.export(tmp_path_factory.mktemp("inp") / "inpaint.pt")
    return MaskRemover.from_checkpoints(path, device="cpu"), task


def test_generation_api_edits_and_seeds(remover):
    remover, task = remover
    batch = default_collate([task.val_set()[i] for i in range(2)])
    edits = ["neutral", "smile", "open_mouth", "exp[3]=+1.5"]
    m = batch["mask"]  # the true map: an untrained N_3D's own map may be empty
    a = remover(batch["masked_image"], edits, seed=5, m=m)
    b = remover(batch["masked_image"], edits, seed=5, m=m)
    assert a.images.shape == (2, 4, 3, 32, 32)
    assert torch.equal(a.images, b.images)  # same seed + edits -> identical
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.equal(a.images[:, i], a.images[:, j])
    c = remover(batch["masked_image"], edits, seed=6, m=m)
    assert not torch.equal(a.images, c.images)


def test_expression_edit_changes_the_hole_not_the_rest(remover):
    remover, task = remover
    batch = default_collate([task.val_set()[i] for i in range(2)])
    out = remover(batch["masked_image"], ["neutral", "open_mouth"], seed=0, m=batch["mask"])
    diff = (out.images[:, 0] - out.images[:, 1]).abs().mean(1, keepdim=True)
    m = out.m
    inside = (diff * m).sum() / m.sum().clamp_min(1)
    outside = (diff * (1 - m)).sum() / (1 - m).sum().clamp_min(1)
    assert inside > 10 * outside and inside > 1e-4


def test_edit_syntax(remover):
    model = remover[0].model
    c = torch.zeros(2, model.layout.size)
    parts = model.layout.split(apply_edit(c, "exp[3]=+1.5,exp[3]=+1,tex[0]=2,angle*=0", model))
    assert torch.allclose(parts["exp"][:, 3], torch.tensor(2.5)) and torch.allclose(parts["tex"][:, 0],
                                                                                      torch.tensor(2.0))
    smile = model.layout.split(apply_edit(c, "smile", model))["exp"]
    assert smile.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown"):
        apply_edit(c, "grin", model)
    with pytest.raises(ValueError, match="out of range"):
        apply_edit(c, "exp[999]=1", model)


@pytest.mark.slow
def test_torchrun_two_ranks_gan_stays_in_sync(n3d_export, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from tests.helpers import free_port, script_env

    root = Path(__file__).resolve().parents[1]
    cfg = {"data": tiny_data(n_train=8), "prior": {"n3d_checkpoint": str(n3d_export)},
           "model": {"base_channels": 8, "n_res": 2, "d_base_channels": 8, "d_max_channels": 32},
           "loss": {"w_id": 0.0}, "train": tiny_train(steps=4, batch_size=2, ckpt_every=4, image_every=2, val_every=2)}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           str(root / "train_inpaint.py"), "--config", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "r")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=300,
                       env=script_env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert "all 2 ranks hold identical weights" in r.stdout  # G, D and the EMA of G
    from engine.logging import read_jsonl

    assert [m["step"] for m in read_jsonl(tmp_path / "r" / "metrics.jsonl")] == [2, 4]  # images and validation ran
    assert (tmp_path / "r" / "inpaint.pt").is_file()


def test_pixel_l1_masked_counts_only_the_hole():
    from losses.inpaint import pixel_l1, pixel_l1_masked

    pred, real = torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8)
    m = torch.zeros(2, 1, 8, 8)
    m[:, :, 2:4, 2:6] = 1  # 8 pixels per image
    pred[:, :, 2:4, 2:6] = 0.5  # wrong inside the hole
    pred[:, :, 6:, :] = 1.0  # wrong outside: ignored
    assert float(pixel_l1_masked(pred, real, m)) == pytest.approx(0.5)
    assert float(pixel_l1(pred, real)) == pytest.approx((8 * 0.5 + 16) / 64)
    assert float(pixel_l1_masked(pred, real, torch.zeros_like(m))) == 0.0


def test_train_gt_fraction_mixes_ground_truth_prior_per_sample(n3d_export):
    task = make_task(n3d_export)
    batch = default_collate([task.train_set()[i] for i in range(6)])
    _, m_n3d, c_n3d = task.prior(batch)
    torch.manual_seed(3)
    _, m_all, c_all = task.prior(batch, gt_fraction=1.0)
    assert torch.equal(c_all, batch["coeffs"].float()) and torch.equal(m_all, batch["mask"])
    seed = next(s for s in range(100) if 0 < int((torch.manual_seed(s) and torch.rand(6) < 0.5).sum()) < 6)
    expected = torch.manual_seed(seed) and torch.rand(6) < 0.5
    torch.manual_seed(seed)
    i3d_mix, m_mix, c_mix = task.prior(batch, gt_fraction=0.5)
    gt_rows = (c_mix == batch["coeffs"].float()).all(1)
    n3d_rows = (c_mix == c_n3d).all(1)
    assert torch.equal(gt_rows, expected) and bool((gt_rows ^ n3d_rows).all())  # each sample one or the other
    assert torch.equal(m_mix[gt_rows], batch["mask"][gt_rows]) and torch.equal(m_mix[n3d_rows], m_n3d[n3d_rows])
    assert torch.allclose(i3d_mix[gt_rows], task.prior.render(batch["coeffs"][gt_rows].float()))
    with pytest.raises(ValueError, match="train_gt_fraction must be in"):
        make_task(n3d_export, prior={"train_gt_fraction": 1.5})


def test_train_gt_blocks_take_those_blocks_from_the_ground_truth(n3d_export):
    """prior.train_gt_blocks: N_3D's prior with the named blocks (here the expression) replaced by the truth's;
    the other blocks and N_3D's mask stay; combined with train_gt_fraction the GT samples are GT throughout."""
    task = make_task(n3d_export, prior={"train_gt_blocks": ["exp"]})
    batch = default_collate([task.train_set()[i] for i in range(4)])
    _, m_n3d, c_n3d = task.prior(batch)
    i3d, m, c = task.prior(batch, gt_blocks=("exp",))
    lay = task.prior.morph.layout
    exp = lay.slice("exp")
    assert torch.equal(c[:, exp], batch["coeffs"].float()[:, exp])
    rest = [i for i in range(lay.size) if not exp.start <= i < exp.stop]
    assert torch.equal(c[:, rest], c_n3d[:, rest]) and not torch.equal(c[:, exp], c_n3d[:, exp])
    assert torch.equal(m, m_n3d) and torch.allclose(i3d, task.prior.render(c))
    _, m_all, c_all = task.prior(batch, gt_fraction=1.0, gt_blocks=("exp",))
    assert torch.equal(c_all, batch["coeffs"].float()) and torch.equal(m_all, batch["mask"])
    seen = {}
    task.prior.forward = lambda b, f=0.0, blocks=(): seen.update(f=f, blocks=blocks) or (i3d, m, c)
    ctx = StepContext(task.cfg.train, torch.device("cpu"))
    task.train_step(batch, ctx)
    assert seen == {"f": 0.0, "blocks": ("exp",)}  # the training step asks for them
    with pytest.raises(ValueError, match="train_gt_blocks: unknown coefficient block.*shape"):
        make_task(n3d_export, prior={"train_gt_blocks": ["shape"]})


def test_gt_prior_needs_coefficients_for_photo_datasets(tmp_path, n3d_export):
    cfg = {"data": {**tiny_data(), "train": [{"kind": "folder", "root": str(tmp_path)}]},
           "prior": {"n3d_checkpoint": str(n3d_export), "train_gt_fraction": 0.5}, "loss": {"w_id": 0.0}}
    with pytest.raises(ValueError, match=r"data.train\[0\].coeffs_dir"):
        build_dataclass(InpaintExperiment, cfg)


def test_hole_loss_term_is_logged_and_weighted(n3d_export):
    task = make_task(n3d_export, loss={"w_pix_hole": 5.0, "w_adv": 0.0})
    batch = default_collate([task.train_set()[i] for i in range(4)])
    ctx = StepContext(task.cfg.train, torch.device("cpu"))
    torch.manual_seed(0)
    logs = task.train_step(batch, ctx)
    total = 10.0 * logs["pix"] + 0.1 * logs["tv"] + 5.0 * logs["pix_hole"]
    assert float(logs["g_loss"]) == pytest.approx(float(total), rel=1e-5)
    assert float(logs["pix_hole"]) > float(logs["pix"])  # the hole is where N_G is wrong


def test_d_and_g_losses_are_small_functions_of_named_terms():
    import contextlib

    from models.discriminator import Discriminator
    from tasks.inpaint import InpaintLossConfig, compute_d_loss, compute_g_loss

    torch.manual_seed(0)
    d = Discriminator(32, 8, 32)
    real, fake = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    m = (torch.rand(2, 1, 32, 32) > 0.5).float()
    lc = InpaintLossConfig(w_r1=2.0, w_pix_hole=3.0)
    loss, terms = compute_d_loss(d, real, fake, lc, contextlib.nullcontext)
    assert set(terms) == {"d_loss", "r1"} and terms["r1"] > 0
    assert torch.allclose(loss, terms["d_loss"] + 2.0 * terms["r1"])
    pred = fake.clone().requires_grad_(True)
    loss, terms = compute_g_loss(pred, real, m, torch.zeros(2, 68, 2), lc, d, None, contextlib.nullcontext)
    assert set(terms) == {"pix", "tv", "pix_hole", "adv"}
    weighted = lc.w_pix * terms["pix"] + lc.w_tv * terms["tv"] + 3.0 * terms["pix_hole"] + lc.w_adv * terms["adv"]
    assert torch.allclose(loss, weighted)
    loss.backward()
    assert pred.grad.abs().sum() > 0 and all(p.grad is None and p.requires_grad for p in d.parameters())
