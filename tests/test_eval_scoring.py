"""Evaluation scored alike for every row: shipped configs run, quantisation, mask rows, diversity over
noise seeds, the FID reference cache key."""

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

import metrics
from tasks.common import iterate
from tasks.evaluation import Evaluator, as_exported
from tests.helpers import cli
from tests.test_evaluate import eval_cfg

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "eval").glob("*.yaml"))


class TinyFID(nn.Module):
    """Stand-in for FIDInception (same constructor): 8-d features, so FID's sqrtm takes microseconds, not the ~12 s
    per row of 2048-d Inception features on 2 cores."""

    dim, pretrained, identity = 8, False, "tiny-fid:seed0"

    def __init__(self, weights_path=None, seed=0, key=""):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x):
        return torch.tanh(self.conv(x * 4 - 2)).mean(dim=(2, 3))


@pytest.fixture
def tiny_fid(monkeypatch):
    monkeypatch.setattr(metrics.context, "FIDInception", TinyFID)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_eval_config_runs_end_to_end(config, inpaint_export, tmp_path, tiny_fid, capsys):
    """Each config's own metrics, baselines, edits and control edits; only data, weights and device made tiny."""
    import evaluate

    tiny = ["test.image_size=32", "test.faces=[{kind: synthetic, num: 4, offset: 2000000}]", "test.mask_library=null",
            "morphable.bfm_path=null", "weights.fid_inception=null", "weights.lpips_backbone=null",
            "weights.arcface=null", "device=cpu", "extra_images=2", "batch_size=4", f"fid_cache_dir={tmp_path}/fid"]
    from engine.config import load_yaml

    own = load_yaml(config)
    tiny.append("ablations={" + ", ".join(f"{k}: {inpaint_export}" for k in own.get("ablations") or {}) + "}")
    args = ["--config", str(config), "--checkpoint", str(inpaint_export), "--run-dir", str(tmp_path / "run")]
    assert evaluate.main([*args, *[a for t in tiny for a in ("--set", t)]]) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(res["methods"]) == {"ours", "ours_gt_mask", *(own.get("ablations") or {}), *own["baselines"]}
    ours = res["methods"]["ours"]
    assert all(ours[k] is not None for k in own["metrics"]) and ours["diversity"] > 0
    md = (tmp_path / "run" / "results.md").read_text()
    assert "Diversity" in md and "Edit spread" in md and "## Conventions" in md
    if len(own["edits"]) < 2:  # the paper's config: K = 1 edit -> a note, not a crash
        assert ours["edit_spread"] is None
        assert "Note: Edit spread not measured: `edits` has 1 entry (K = 1" in md
    else:
        assert ours["edit_spread"] > 0


def test_ssim_convention_flag_and_errors(tmp_path, capsys):
    import evaluate

    base = ["--config", str(CONFIGS[0]), "--set", "test.image_size=32", "--set",
            "test.faces=[{kind: synthetic, num: 4, offset: 2000000}]", "--set", "metrics=[ssim]", "--set",
            "morphable.bfm_path=null", "--set", "test.mask_library=null", "--set", "weights.fid_inception=null",
            "--set", "weights.lpips_backbone=null", "--set", "weights.arcface=null", "--set", "device=cpu",
            "--set", "checkpoint=null", "--set", "ablations={}", "--run-dir", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as e:
        evaluate.main([*base, "--ssim-convention", "gauss"])
    assert e.value.code == 2 and "error: ssim_convention: unknown 'gauss'; valid: wang, skimage, edgeconnect" in \
        capsys.readouterr().out
    with pytest.raises(SystemExit):  # 51x51 window on 32 px images: refused before any work
        evaluate.main([*base, "--ssim-convention", "edgeconnect"])
    assert "its 51x51 window needs test images of at least 51 px, got 32" in capsys.readouterr().out
    assert evaluate.main([*base, "--ssim-convention", "skimage"]) == 0
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["conventions"]["ssim"].startswith("skimage: scikit-image defaults")
    assert "ssim: skimage: scikit-image defaults" in (tmp_path / "r" / "results.md").read_text()


def test_every_row_is_scored_on_8_bit_outputs_of_8_bit_inputs(inpaint_export, tmp_path):
    ev = Evaluator(eval_cfg(inpaint_export, metrics=("l1", "psnr"), baselines=[], gt_mask_row=False),
                   tmp_path / "e")
    row = ev.run()["methods"]["ours"]
    seen = []
    ours = ev.methods["ours"]
    for bi, batch in enumerate(iterate(ev.testset, 4, device=torch.device("cpu"))):
        b = as_exported(batch)
        assert not torch.equal(b["masked_image"], batch["masked_image"])  # the mask texture is not 8-bit
        seen.append((ours(b, bi), b["image"]))
    out, gt = seen[0]
    q = metrics.PSNRMetric(max_db=100.0)
    q.update(metrics.quantize(out), gt)
    raw = metrics.PSNRMetric(max_db=100.0)
    raw.update(out, gt)
    assert row["psnr"] == pytest.approx(q.compute()["psnr"], abs=1e-12)
    assert raw.compute()["psnr"] != pytest.approx(row["psnr"], abs=1e-9)  # so the float outputs were not scored


def test_gt_mask_row_uses_the_ground_truth_mask_and_reuses_n3d(inpaint_export, tmp_path):
    ev = Evaluator(eval_cfg(inpaint_export, metrics=("l1",), baselines=[]), tmp_path / "e")
    batch = as_exported(next(iter(iterate(ev.testset, 4, device=torch.device("cpu")))))
    remover, m, x = ev.removers["ours"], batch["mask"], batch["masked_image"]
    calls, analyze = [], remover.prior.coefficients_and_mask  # N_3D
    remover.prior.coefficients_and_mask = lambda t: calls.append(len(t)) or analyze(t)
    n3d_row = ev.methods["ours"](batch, 0)
    gt_row = ev.methods["ours_gt_mask"](batch, 0)
    remover.prior.coefficients_and_mask = analyze
    assert calls == [4]  # N_3D ran for the N_3D-mask row only
    assert torch.equal(gt_row * (1 - m), x * (1 - m))  # composited with the ground-truth mask
    assert not torch.equal(n3d_row * (1 - m), x * (1 - m))  # N_3D's (untrained) mask differs from it
    direct = remover(x, ["keep"], seed=0, m=m)  # N_3D run afresh, given the ground-truth mask
    assert torch.equal(gt_row, direct.images[:, 0])
    with pytest.raises(RuntimeError, match="must run after its N_3D-mask row"):
        ev.methods["ours_gt_mask"](batch, 1)


def test_diversity_is_over_noise_seeds_and_edit_spread_over_edits(inpaint_export, tmp_path):
    cfg = eval_cfg(inpaint_export, metrics=("l1",), baselines=[], diversity_seeds=3, extra_images=4)
    ev = Evaluator(cfg, tmp_path / "e")
    row = ev.run()["methods"]["ours"]
    remover = ev.removers["ours"]
    batch = as_exported(next(iter(iterate(ev.testset, 4, 4, torch.device("cpu")))))
    seeds = torch.cat([remover(batch["masked_image"], ["keep"], seed=s).images for s in range(3)], 1)
    div = metrics.DiversityMetric.from_context(ev.context)
    div.update(metrics.quantize(seeds))
    spread = metrics.DiversityMetric.from_context(ev.context)
    spread.update(metrics.quantize(remover(batch["masked_image"], cfg.edits, seed=0).images))
    assert row["diversity"] == pytest.approx(div.compute()["diversity"], rel=1e-6)
    assert row["edit_spread"] == pytest.approx(spread.compute()["diversity"], rel=1e-6)
    assert row["diversity"] > 0 and row["diversity"] != pytest.approx(row["edit_spread"], rel=1e-3)

    res = Evaluator(eval_cfg(inpaint_export, metrics=("l1",), baselines=[], diversity_seeds=1, edits=["smile"],
                             control_edits=[]), tmp_path / "f").run()
    assert res["methods"]["ours"]["diversity"] is None and res["methods"]["ours"]["edit_spread"] is None
    md = (tmp_path / "f" / "results.md").read_text()
    assert "Note: Diversity not measured: `diversity_seeds` is 1" in md and "Note: Edit spread not measured" in md


def _folder_testset(tmp_path) -> dict:
    export_main = cli("scripts/export_testset.py")

    cfg_path = tmp_path / "export.yaml"
    cfg_path.write_text(json.dumps({"test": {"image_size": 32, "faces": [{"kind": "synthetic", "num": 4,
                                                                          "offset": 2_000_000}]}}))
    assert export_main(["--config", str(cfg_path), "--out", str(tmp_path / "ts")]) == 0
    return {"image_size": 32, "faces": [{"kind": "folder", "root": str(tmp_path / "ts" / "gt"),
                                         "landmarks_dir": str(tmp_path / "ts" / "landmarks")}]}


def test_fid_cache_key_covers_everything_that_shapes_the_reference(tmp_path, tiny_fid, capsys):
    test = _folder_testset(tmp_path)
    cache = tmp_path / "fid"

    def evaluator(test=test, **kw):
        return Evaluator(eval_cfg(None, metrics=("fid",), baselines=["telea"], fid_cache_dir=str(cache), test=test,
                                  **kw), tmp_path / "out")

    first = evaluator()
    fid_a = first.run()["methods"]["telea"]["fid"]
    key = first.context.fid_reference.cache_path
    assert key.is_file() and evaluator().context.fid_reference.complete  # same images: a hit
    assert evaluator(test={**test, "mask_seed": 7}).context.fid_reference.cache_path != key  # test-set config
    assert evaluator(test={**test, "image_size": 36}).context.fid_reference.cache_path != key  # image size
    # a file changed in place under the same root (same name): another image's bytes, then only a new mtime
    gt = sorted((tmp_path / "ts" / "gt").glob("*.png"))
    gt[0].write_bytes(gt[1].read_bytes())
    second = evaluator()
    assert not second.context.fid_reference.complete and second.context.fid_reference.cache_path != key
    fid_b = second.run()["methods"]["telea"]["fid"]
    assert fid_b != pytest.approx(fid_a, rel=1e-6)  # the new reference images, not the first run's statistics
    st = os.stat(gt[2])
    os.utime(gt[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = evaluator().context.fid_reference.cache_path
    assert third not in (key, second.context.fid_reference.cache_path)
    (tmp_path / "ts" / "gt" / "extra.png").write_bytes(gt[1].read_bytes())  # a file added under the root
    (tmp_path / "ts" / "landmarks" / "extra.txt").write_text((tmp_path / "ts" / "landmarks" / f"{gt[1].stem}.txt")
                                                             .read_text())
    assert evaluator().context.fid_reference.cache_path not in (key, second.context.fid_reference.cache_path, third)
    # synthetic faces: the morphable model that renders them (same test config, another model)
    synth = {"image_size": 32, "faces": [{"kind": "synthetic", "num": 4, "offset": 2_000_000}]}
    a = evaluator(test=synth).context.fid_reference.cache_path
    assert evaluator(test=synth, morphable={"synthetic_seed": 1}).context.fid_reference.cache_path != a
    assert evaluator(test=synth).context.fid_reference.cache_path == a
