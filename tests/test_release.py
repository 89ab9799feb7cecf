"""The authors' release as a ready model: scripts/convert_release.py -> n3d.pt / inpaint.pt with the release's
inference settings, remove_mask.py --release-n3d / --release-gen, and evaluate.py scoring it as a row. The release
files are seeded random weights in the release's key layout (docs/formats.md sec. 5; tests/test_models.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from models.generator import Generator
from models.generator import key_map_authors_release as gen_key_map
from models.recon3d import ReconNet, key_map_authors_release
from tests.test_coeffs import synthetic_scene  # noqa: F401  (fixture: photos, landmarks, similarity_Lm3D_all.mat)
from tests.test_models import _authors_encoder_keys, _authors_generator_state


@pytest.fixture(scope="module")
def release_files(tmp_path_factory):
    """3D_it_500000.pkl (FaceEncoder keys, 'module.' prefix) and inpaint_it_200000.pkl ({'gen', 'dis', 'step'}),
    with the reference networks that hold the same weights."""
    root = tmp_path_factory.mktemp("release")
    torch.manual_seed(0)
    ref_n3d = ReconNet("resnet50", 257)
    with torch.no_grad():
        ref_n3d.coeff_head.weight.normal_(0, 1e-3)  # the zero-init head would hide a wrong layout
        for m in ref_n3d.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ours = ref_n3d.state_dict()
    authors = {}
    for key in _authors_encoder_keys(list(ref_n3d.backbone.state_dict())):
        (mapped,) = key_map_authors_release({key: torch.zeros(1)})
        authors[f"module.{key}"] = ours[mapped]
    assert len(authors) == len(ours)
    torch.save(authors, root / "3D_it_500000.pkl")
    gen_sd = _authors_generator_state(base=64)
    torch.save({"gen": gen_sd, "dis": {"module.main.0.weight_orig": torch.zeros(1)}, "step": 200000},
               root / "inpaint_it_200000.pkl")
    ref_gen = Generator(64, 6)
    ref_gen.load_state_dict(gen_key_map(gen_sd))
    return {"n3d": root / "3D_it_500000.pkl", "gen": root / "inpaint_it_200000.pkl", "ref_n3d": ref_n3d.eval(),
            "ref_gen": ref_gen.eval()}


def _preset_args(files, scene):
    return ["--set", f"n3d={files['n3d']}", "--set", f"gen={files['gen']}", "--set", "bfm_path=null",
            "--set", f"lm3d_path={scene['lm3d']}"]


@pytest.fixture(scope="module")
def release_exports(release_files, synthetic_scene, tmp_path_factory):  # noqa: F811
    from scripts.convert_release import main

    out = tmp_path_factory.mktemp("release_exports")
    assert main([*_preset_args(release_files, synthetic_scene), "--config", "configs/release.yaml",
                 "--out", str(out)]) == 0
    return out


def test_convert_release_keeps_the_functions_and_the_release_settings(release_files, release_exports):
    from tasks.common import MorphableConfig
    from tasks.prior import PriorConfig, PriorModule
    from tasks.removal import MaskRemover

    remover = MaskRemover.from_checkpoints(release_exports / "inpaint.pt")
    assert remover.image_size == 256 and remover.prior.n3d_size == 256
    assert (remover.prior.cfg.mask_threshold, remover.prior.cfg.mask_dilate) == (0.1, 3)
    assert (remover.inference.noise, remover.framing) == ("release", "release_exact") and remover.lm3d.shape == (5, 3)
    assert remover.prior.renderer.shading == "release"  # the I_3D the released N_G was trained on
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 256, 256, generator=g)
    with torch.no_grad():
        got, want = remover.prior.n3d(x), release_files["ref_n3d"](x)
        assert torch.equal(got["coeffs"], want["coeffs"]) and torch.equal(got["seg_logits"], want["seg_logits"])
        m, i3d, i_n = (torch.rand(1, c, 256, 256, generator=g) for c in (1, 3, 3))
        assert torch.equal(remover.gen(m, i3d, i_n), release_files["ref_gen"](m, i3d, i_n))
    # n3d.pt is an ordinary N_3D export: train_inpaint.py's prior.n3d_checkpoint takes it
    prior = PriorModule(PriorConfig(n3d_checkpoint=str(release_exports / "n3d.pt")), MorphableConfig(), 64,
                        torch.device("cpu"))
    assert prior.n3d_size == 256


def test_release_n3d_fine_tunes_through_init_checkpoint(release_files, release_exports):
    from tasks.recon3d import Recon3DModelConfig, build_n3d

    net = build_n3d(Recon3DModelConfig(init_checkpoint=str(release_exports / "n3d.pt")), 257)
    want = release_files["ref_n3d"].state_dict()
    assert all(torch.equal(v, want[k]) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="model.init_checkpoint") as e:
        build_n3d(Recon3DModelConfig(backbone="resnet18", init_checkpoint=str(release_exports / "n3d.pt")), 257)
    assert "\n" not in str(e.value)


def test_release_conventions_noise_and_dilation():
    from tasks.prior import dilate, noised

    g = torch.Generator().manual_seed(1)
    masked = torch.rand(2, 3, 16, 16, generator=g)
    m = (torch.rand(2, 1, 16, 16, generator=g) > 0.7).float()
    rel = noised(masked, m, torch.Generator().manual_seed(0), "release")
    u = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))  # one channel, the whole image
    assert torch.equal(rel, masked * (1 - m) + u)
    assert not torch.equal(rel * (1 - m), masked * (1 - m))  # the visible pixels get noise too
    ours = noised(masked, m, torch.Generator().manual_seed(0), "hole")
    assert torch.equal(ours * (1 - m), masked * (1 - m)) and not torch.equal(ours[:, 0], ours[:, 1])
    # the release's 5x5 then 3x3 max filters are one 3-pixel dilation
    sparse = (torch.rand(1, 1, 32, 32, generator=g) > 0.97).float()
    two = F.max_pool2d(F.max_pool2d(sparse, 5, 1, 2), 3, 1, 1)
    assert torch.equal(dilate(sparse, 3), two)


def test_remove_mask_runs_the_release_files(release_files, synthetic_scene, tmp_path, capsys):  # noqa: F811
    from data.io import read_image
    from scripts.remove_mask import main

    photo = synthetic_scene["photos"] / "face0.png"
    args = ["--image", str(photo), "--landmarks", str(synthetic_scene["photos"] / "face0.txt"),
            "--release-n3d", str(release_files["n3d"]), "--release-gen", str(release_files["gen"]),
            "--set", "bfm_path=null", "--set", f"lm3d_path={synthetic_scene['lm3d']}", "--variations", "1"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    res, orig = read_image(tmp_path / "o" / "face0_0_keep.png"), read_image(photo)
    assert res.shape == orig.shape and (res - orig).abs().amax() > 0
    # each preset setting can be overridden; a missing BFM file is one line naming the key
    assert main([*args, "--set", "lm3d_path=BFM/none.mat", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "lm3d_path" in err and "\n" not in err
    assert main(["--image", str(photo), "--release-n3d", str(release_files["n3d"]), "--out", str(tmp_path)]) == 2
    assert "--release-gen" in capsys.readouterr().err


def test_evaluate_scores_the_release_as_a_row(release_exports, tmp_path):
    import evaluate

    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({
        "test": {"image_size": 256, "faces": [{"kind": "synthetic", "num": 2, "offset": 5}]},
        "ablations": {"release": str(release_exports / "inpaint.pt")}, "baselines": ["telea"],
        "metrics": ["l1", "psnr"], "edits": ["keep", "neutral"], "control_edits": [], "extra_images": 1,
        "batch_size": 2, "grid_images": 1}))
    assert evaluate.main(["--config", str(cfg), "--run-dir", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    row = results["methods"]["release"]
    assert set(results["methods"]) == {"release", "telea"}
    for key in ("l1", "psnr", "mask_iou", "landmark_nme"):
        assert np.isfinite(row[key]), key


def test_release_n_g_fine_tunes_through_init_checkpoint(release_files, release_exports):
    # train_inpaint.py's model.init_checkpoint starts N_G (and its EMA) from an export such as the converted release
    from engine.config import build_dataclass
    from tasks.inpaint import InpaintExperiment, InpaintTask
    from tests.helpers import tiny_data, tiny_train

    def task(**model):
        cfg = {"data": tiny_data(), "prior": {"n3d_checkpoint": str(release_exports / "n3d.pt")},
               "model": {"d_base_channels": 8, "d_max_channels": 16, **model}, "loss": {"w_id": 0.0},
               "train": tiny_train()}
        return InpaintTask(build_dataclass(InpaintExperiment, cfg), torch.device("cpu"))

    t = task(base_channels=64, n_res=6, init_checkpoint=str(release_exports / "inpaint.pt"))
    want = release_files["ref_gen"].state_dict()
    for net in (t.gen, t.g_ema):
        assert all(torch.equal(v, want[k]) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="model.init_checkpoint") as e:  # another width: one line naming keys
        task(base_channels=16, n_res=6, init_checkpoint=str(release_exports / "inpaint.pt"))
    assert "\n" not in str(e.value)
