"""One owner per export format (tasks/exports.py): save / load / build, and the crop a model was trained on recorded
so that photos and test faces are framed as the model expects."""

import pytest
import torch

from tests.test_coeffs import synthetic_scene  # noqa: F401  (fixture: photos, landmarks, similarity_Lm3D_all.mat)


def test_exports_round_trip_and_record_their_training_crop(n3d_export, inpaint_export, tmp_path):
    from tasks.exports import InpaintExport, N3DExport, load_n3d

    e = N3DExport.load(n3d_export)
    assert e.crop == {"crop": "meanface", "lm3d_path": None}  # trained on SyntheticFaces
    x = torch.rand(2, 3, e.image_size, e.image_size, generator=torch.Generator().manual_seed(0))
    net, morph, size = load_n3d(n3d_export, torch.device("cpu"))
    again = N3DExport.load(e.save(tmp_path / "n3d.pt"))
    with torch.no_grad():
        assert torch.equal(net(x)["coeffs"], again.build()(x)["coeffs"])
    assert (again.crop, again.image_size, morph) == (e.crop, size, e.morphable)
    g = InpaintExport.load(inpaint_export)
    assert (g.inference.crop, g.inference.noise, g.inference.framing) == ("meanface", "hole", None)
    g2 = InpaintExport.load(g.save(tmp_path / "inpaint.pt"))
    assert g2.inference == g.inference and g2.prior == g.prior and g2.model == g.model
    assert all(torch.equal(g.weights[k], g2.weights[k]) for k in g.weights)
    with pytest.raises(FileNotFoundError, match="^checkpoint: inpainting checkpoint not found"):
        InpaintExport.load(tmp_path / "none.pt")
    with pytest.raises(ValueError, match="is an N_3D export"):
        InpaintExport.load(n3d_export)


def test_crop_of_a_training_set():
    from data.config import FolderConfig, SyntheticConfig
    from tasks.exports import crop_of

    deng = FolderConfig(root="x", align=True, framing="deng", lm3d_path="BFM/lm.mat")
    assert crop_of([SyntheticConfig(num=4)]) == {"crop": "meanface", "lm3d_path": None}
    assert crop_of([FolderConfig(root="x")]) is None  # a folder as given: any crop (e.g. an exported test set)
    assert crop_of([deng, deng]) == {"crop": "deng", "lm3d_path": "BFM/lm.mat"}
    assert crop_of([deng, SyntheticConfig(num=4)]) is None  # mixed: nothing reliable to record


def test_a_model_trained_in_deng_framing_aligns_photos_in_it_without_flags(inpaint_export, synthetic_scene,  # noqa: F811
                                                                             tmp_path):
    import numpy as np

    from data.align import alignment_transform, load_lm3d
    from data.io import read_image
    from data.landmarks import load_landmarks_file
    from tasks.exports import InferenceConfig, InpaintExport
    from tasks.photo import photo_framing, prepare_faces
    from tasks.removal import MaskRemover

    e = InpaintExport.load(inpaint_export)
    e.inference = InferenceConfig(crop="deng", lm3d_path=str(synthetic_scene["lm3d"]))
    remover = MaskRemover.from_checkpoints(e.save(tmp_path / "deng.pt"))
    framing = photo_framing(remover)
    assert (framing.name, framing.framing) == ("deng", "deng") and remover.framing is None  # evaluation: as framed
    lm = load_landmarks_file(synthetic_scene["photos"] / "face0.txt")
    face = prepare_faces(remover, read_image(synthetic_scene["photos"] / "face0.png"), [lm], analyze=False)[0]
    expect = alignment_transform(lm, remover.image_size, framing="deng", lm3d=load_lm3d(synthetic_scene["lm3d"]))
    assert np.allclose(face.transform, expect)
    assert photo_framing(remover, "ffhq").name == "ffhq"  # --align still overrides


def test_old_exports_without_the_record_keep_loading(n3d_export, inpaint_export, tmp_path):
    from engine.checkpoint import export_inference, load_inference
    from tasks.photo import photo_framing
    from tasks.removal import MaskRemover

    n3d = load_inference(n3d_export)
    n3d["config"].pop("crop")
    old_n3d = export_inference(tmp_path / "n3d.pt", n3d["modules"], n3d["config"])
    g = load_inference(inpaint_export)
    g["config"].pop("inference")
    old = export_inference(tmp_path / "inpaint.pt", g["modules"], g["config"])
    remover = MaskRemover.from_checkpoints(old, old_n3d)
    assert remover.inference.crop is None and remover.prior.crop is None
    assert photo_framing(remover).name == "ffhq"  # today's fallback


def test_evaluation_refuses_test_faces_in_another_crop_than_the_model_s(inpaint_export, synthetic_scene,  # noqa: F811
                                                                        tmp_path):
    from engine.config import ConfigError, build_dataclass
    from tasks.evaluation import EvalExperiment, Evaluator

    faces = [{"kind": "folder", "root": str(synthetic_scene["photos"]), "align": True, "framing": "deng",
              "lm3d_path": str(synthetic_scene["lm3d"])}]
    cfg = build_dataclass(EvalExperiment, {"test": {"image_size": 32, "faces": faces}, "baselines": [],
                                           "checkpoint": str(inpaint_export)})
    with pytest.raises(ConfigError, match="^checkpoint: the model was trained on meanface crops but test.faces are "
                                          "deng crops"):
        Evaluator(cfg, tmp_path / "e")
