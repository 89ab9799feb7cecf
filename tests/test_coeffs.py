"""Deng et al.'s coefficients: the Deng framing (POS onto similarity_Lm3D_all.mat), the gate-free network, and
scripts/extract_coeffs.py end to end (matches a direct forward pass, bit-identical reruns, landmark round trip)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
import yaml
from scipy.io import savemat
from torch import nn

from data.align import FRAMINGS, alignment_transform, five_points, load_lm3d, pos_fit, transform_points
from models.recon3d import DENG_FINAL_LAYER_SIZES, DengReconNet, build_deng_recon
from tests.helpers import cli

# ------------------------------------------------------------------------------------------------ fixtures


class DengLayoutNet(nn.Module):
    """Deng et al.'s ReconNetWrapper layout as docs/formats.md sec. 1 states it: ``backbone`` = torchvision ResNet-50
    without fc (-> (B, 2048, 1, 1)), ``final_layers`` = seven 1x1 convs with bias (80, 64, 80, 3, 27, 2, 1),
    concatenated to 257."""

    def __init__(self):
        super().__init__()
        self.backbone = torchvision.models.resnet50(weights=None)
        del self.backbone.fc  # no fc.* keys in net_recon
        self.final_layers = nn.ModuleList(nn.Conv2d(2048, c, 1) for c in DENG_FINAL_LAYER_SIZES)

    def forward(self, x):
        b = self.backbone
        h = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        h = b.avgpool(b.layer4(b.layer3(b.layer2(b.layer1(h)))))
        return torch.cat([f(h) for f in self.final_layers], 1).flatten(1)


def deng_layout_net(seed: int = 0, oracle: torch.Tensor | None = None) -> DengLayoutNet:
    """Seeded random weights (BatchNorm statistics too, so eval mode matters); ``oracle``: zero final weights and
    these (257,) coefficients as biases, so the network outputs them for any input."""
    torch.manual_seed(seed)
    net = DengLayoutNet()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
        if oracle is not None:
            start = 0
            for f, c in zip(net.final_layers, DENG_FINAL_LAYER_SIZES):
                f.weight.zero_()
                f.bias.copy_(oracle[start:start + c])
                start += c
    return net.eval()


def save_deng_checkpoint(net: DengLayoutNet, path) -> None:
    """Deng's checkpoint dict: net_recon plus optimiser / scheduler entries (non-tensor values included)."""
    opt = {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0, 1]}]}
    torch.save({"net_recon": net.state_dict(), "opt_00": opt, "sched_00": {"last_epoch": 20}}, path)


@pytest.fixture(scope="module")
def synthetic_scene(tmp_path_factory):
    """Two 'photos' of synthetic mean-shape faces (random albedo and light) rendered at 224 and embedded in a
    larger canvas by a scale + shift; 68-point landmark files next to them; similarity_Lm3D_all.mat made of the
    synthetic model's 3D landmarks (the role BFM's mean-face landmarks play for Deng)."""
    from data.io import write_image
    from data.landmarks import save_landmarks_file
    from renderer.morphable import MorphableModel
    from renderer.render import FaceRenderer

    root = tmp_path_factory.mktemp("scene")
    model = MorphableModel.synthetic(seed=0)
    renderer = FaceRenderer(model, 224)
    g = torch.Generator().manual_seed(5)
    lay = model.layout
    coeffs = lay.zeros(2)
    lay.split(coeffs)["tex"].copy_(torch.randn(2, lay.sizes["tex"], generator=g))
    lay.split(coeffs)["gamma"].copy_(0.2 * torch.randn(2, lay.sizes["gamma"], generator=g))
    out = renderer(coeffs)
    photos = root / "photos"
    for i, (scale, shift) in enumerate([(1.7, (30.0, 50.0)), (2.3, (-40.0, 10.0))]):
        import cv2

        emb = np.array([[scale, 0, shift[0]], [0, scale, shift[1]]])
        img = out.image[i].permute(1, 2, 0).numpy() + 0.3 * (1 - out.mask[i, 0].numpy())[..., None]
        write_image(photos / f"face{i}.png", cv2.warpAffine(img, emb, (480, 480), flags=cv2.INTER_LINEAR))
        save_landmarks_file(photos / f"face{i}.txt", transform_points(out.landmarks[i].numpy(), emb))
    savemat(root / "similarity_Lm3D_all.mat", {"lm": model.mean_shape[model.landmark_idx].numpy()})
    return {"root": root, "photos": photos, "lm3d": root / "similarity_Lm3D_all.mat", "coeffs": coeffs,
            "landmarks": out.landmarks, "model": model}


def _config(tmp_path, scene, image_size=224, framing="deng"):
    entry = {"kind": "folder", "root": str(scene["photos"]), "align": True, "framing": framing,
             "lm3d_path": str(scene["lm3d"])}
    cfg = tmp_path / f"c_{framing}_{image_size}.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"image_size": image_size, "train": [entry], "val": [entry]},
                                   "loss": {"w_id": 0.0}}))
    return cfg


def _faces(cfg_path):
    from data.pairs import build_faces
    from engine.config import load_config
    from tasks.recon3d import Recon3DExperiment

    cfg = load_config(Recon3DExperiment, str(cfg_path), [])
    return build_faces(cfg.data.train, cfg.data.image_size, "data.train")


# ------------------------------------------------------------------------------------------------ framing


def test_pos_fit_recovers_scale_and_centre():
    rng = np.random.default_rng(0)
    x3 = rng.normal(size=(5, 3))
    a, b = 0.4, 0.25  # a rotation about two axes, scale 3.5, centre (120, 80)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    pts = 3.5 * (x3 @ (ry @ rx).T)[:, :2] + np.array([120.0, 80.0])
    t, s = pos_fit(pts, x3)
    assert s == pytest.approx(3.5, rel=1e-9)
    np.testing.assert_allclose(t, [120.0, 80.0], atol=1e-9)


def test_deng_and_release_framings_scale_translate_only():
    lm3d = np.random.default_rng(1).normal(size=(68, 3))
    pts = 2.0 * lm3d[:, :2] * [1, -1] + [300.0, 200.0]  # orthographic, y down
    for name, per_unit in (("deng", 102.0), ("release", 116.0 * 224 / 256)):
        t = alignment_transform(pts, 224, framing=name, lm3d=five_points(lm3d))
        k = per_unit / 2.0
        np.testing.assert_allclose(t, [[k, 0, 111.5 - k * 300], [0, k, 111.5 - k * 200]], atol=1e-9)
    assert FRAMINGS["release"].pixels_per_unit(256) == 116.0 and FRAMINGS["deng"].pixels_per_unit(224) == 102.0
    five = five_points(pts)  # a 5-point detection frames the same as its 68 landmarks
    for name in ("deng", "ffhq"):
        np.testing.assert_array_equal(alignment_transform(five, 224, framing=name, lm3d=five_points(lm3d)),
                                      alignment_transform(pts, 224, framing=name, lm3d=five_points(lm3d)))
    with pytest.raises(ValueError, match="lm3d_path"):
        alignment_transform(pts, 224, framing="deng")
    with pytest.raises(ValueError, match="valid: ffhq, deng, release"):
        alignment_transform(pts, 224, framing="dlib")


def test_lm3d_file_errors_are_one_line(tmp_path, synthetic_scene):
    with pytest.raises(FileNotFoundError) as e:
        load_lm3d(tmp_path / "BFM" / "similarity_Lm3D_all.mat", "data.train[0].lm3d_path")
    assert "data.train[0].lm3d_path" in str(e.value) and "\n" not in str(e.value)
    savemat(tmp_path / "bad.mat", {"lm": np.zeros((5, 3))})
    with pytest.raises(ValueError, match="68 x 3"):
        load_lm3d(tmp_path / "bad.mat")
    from data.photos import ImageFolderFaces

    with pytest.raises(ValueError, match="lm3d_path"):
        ImageFolderFaces(synthetic_scene["photos"], 64, align=True, framing="deng", config_key="data.train[0]")


def test_deng_framing_matches_the_renderer_ffhq_does_not(synthetic_scene):
    """The mean face rendered at 224, embedded in a photo, comes back onto its own landmarks in Deng's framing:
    the crop Deng's camera (focal 1015, distance 10) was made for. FFHQ's framing misses by many pixels."""
    lm3d = load_lm3d(synthetic_scene["lm3d"])
    photo_lm = np.loadtxt(synthetic_scene["photos"] / "face1.txt")
    truth = synthetic_scene["landmarks"][1].numpy()
    err = {}
    for name in ("deng", "ffhq"):
        back = transform_points(photo_lm, alignment_transform(photo_lm, 224, framing=name, lm3d=lm3d))
        err[name] = np.abs(back - truth).max()
    assert err["deng"] < 0.5 and err["ffhq"] > 10


# ------------------------------------------------------------------------------------------------ network


def test_deng_checkpoint_builds_a_gate_free_network_equal_to_deng_layout(tmp_path):
    ref = deng_layout_net(seed=0)
    save_deng_checkpoint(ref, tmp_path / "epoch_20.pth")
    net = build_deng_recon(tmp_path / "epoch_20.pth")
    assert isinstance(net, DengReconNet) and not net.training
    assert not any("gate" in k for k in net.state_dict())  # nothing left at a fresh initialisation
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(net(x)["coeffs"], ref(x), rtol=1e-5, atol=1e-5)
        again = build_deng_recon(tmp_path / "epoch_20.pth")(x)["coeffs"]
    assert torch.equal(again, net(x)["coeffs"])  # a second load is the same function, bit for bit


# ------------------------------------------------------------------------------------------------ script


def test_extract_coeffs_matches_direct_forward_and_is_bit_identical(tmp_path, synthetic_scene):
    main = cli("scripts/extract_coeffs.py")

    ref = deng_layout_net(seed=3)
    save_deng_checkpoint(ref, tmp_path / "epoch_20.pth")
    cfg = _config(tmp_path, synthetic_scene, image_size=224)
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert main(["--config", str(cfg), "--deng-checkpoint", str(tmp_path / "epoch_20.pth"), "--out", str(out),
                     "--batch-size", "1"]) == 0
    faces = _faces(cfg)
    for i in range(len(faces)):
        item = faces[i]
        a, b = (out / f"{item['name']}.npy" for out in outs)
        assert a.read_bytes() == b.read_bytes()  # two runs: bit-identical files
        with torch.no_grad():
            direct = ref(item["image"][None])[0].numpy()
        np.testing.assert_allclose(np.load(a), direct, rtol=1e-4, atol=1e-5)


def test_extract_coeffs_round_trip_lands_on_the_image_landmarks(tmp_path, synthetic_scene):
    """Oracle Deng network (outputs the scene's true coefficients); the coefficients written for a 128 px Deng-framed
    dataset, rendered at 128, land on the dataset's own landmarks."""
    from renderer.render import FaceRenderer
    main = cli("scripts/extract_coeffs.py")

    truth = synthetic_scene["coeffs"][0]
    save_deng_checkpoint(deng_layout_net(seed=1, oracle=truth), tmp_path / "oracle.pth")
    cfg = _config(tmp_path, synthetic_scene, image_size=128)
    assert main(["--config", str(cfg), "--deng-checkpoint", str(tmp_path / "oracle.pth"),
                 "--out", str(tmp_path / "c")]) == 0
    renderer = FaceRenderer(synthetic_scene["model"], 128)
    faces = _faces(cfg)
    for i in range(len(faces)):
        item = faces[i]
        c = torch.from_numpy(np.load(tmp_path / "c" / f"{item['name']}.npy"))[None]
        torch.testing.assert_close(c[0], truth, rtol=1e-5, atol=1e-5)
        err = (renderer.landmarks(c)[0] - item["landmarks"]).abs().max()
        assert err < 0.5, f"{item['name']}: {float(err):.2f} px"


def test_extract_coeffs_refuses_other_framings(tmp_path, synthetic_scene, capsys):
    main = cli("scripts/extract_coeffs.py")

    save_deng_checkpoint(deng_layout_net(seed=0), tmp_path / "e.pth")
    assert main(["--config", str(_config(tmp_path, synthetic_scene, framing="ffhq")), "--deng-checkpoint",
                 str(tmp_path / "e.pth"), "--out", str(tmp_path / "o")]) == 2
    msg = capsys.readouterr().out.strip()
    assert "framing: deng" in msg and "data.train[0]" in msg and "\n" not in msg
