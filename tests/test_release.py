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
from tests.helpers import cli
from tests.test_coeffs import synthetic_scene  # noqa: F401  (fixture: photos, landmarks, similarity_Lm3D_all.mat)
from tests.test_models import _authors_encoder_keys, _authors_generator_state


def _write_release_files(root, coeff_bias: torch.Tensor | None = None, seg_gain: float = 1.0,
                         coeff_std: float = 1e-3) -> dict:
    torch.manual_seed(0)
    ref_n3d = ReconNet("resnet50", 257)
    with torch.no_grad():
        ref_n3d.coeff_head.weight.normal_(0, coeff_std)  # the zero-init head would hide a wrong layout
        if coeff_bias is not None:
            ref_n3d.coeff_head.bias.copy_(coeff_bias)
        ref_n3d.seg_head.out.proj.weight.mul_(seg_gain)
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


@pytest.fixture(scope="module")
def release_files(tmp_path_factory):
    """3D_it_500000.pkl (FaceEncoder keys, 'module.' prefix) and inpaint_it_200000.pkl ({'gen', 'dis', 'step'}),
    with the reference networks that hold the same weights."""
    return _write_release_files(tmp_path_factory.mktemp("release"))


def _preset_args(files, scene):
    return ["--set", f"n3d={files['n3d']}", "--set", f"gen={files['gen']}", "--set", "bfm_path=null",
            "--set", f"lm3d_path={scene['lm3d']}"]


@pytest.fixture(scope="module")
def release_exports(release_files, synthetic_scene, tmp_path_factory):  # noqa: F811
    main = cli("scripts/convert_release.py")

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
    main = cli("scripts/remove_mask.py")

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


# ------------------------------------------------------------------------------------------------ test.py, exactly

# dlib's 68 landmarks of scikit-image's astronaut (512 x 512), shifted into the sub-photo [60:260, 120:330] below
_ASTRONAUT_LM = np.array([
    [179, 104], [180, 116], [181, 127], [182, 139], [185, 150], [191, 160], [200, 168], [209, 176], [220, 178],
    [232, 177], [243, 171], [253, 163], [260, 154], [265, 143], [268, 131], [270, 120], [272, 108], [186, 94],
    [192, 88], [200, 87], [208, 89], [216, 92], [236, 93], [244, 91], [252, 91], [260, 92], [265, 99], [226, 102],
    [225, 111], [225, 119], [225, 127], [214, 131], [219, 133], [224, 134], [229, 133], [234, 132], [195, 101],
    [200, 98], [207, 98], [212, 104], [206, 104], [199, 104], [237, 106], [243, 100], [250, 100], [255, 105],
    [250, 107], [244, 107], [201, 139], [209, 139], [218, 139], [224, 141], [230, 140], [238, 140], [246, 141],
    [238, 151], [229, 155], [222, 156], [216, 155], [208, 150], [204, 141], [218, 143], [223, 144], [230, 143],
    [243, 142], [229, 150], [223, 151], [217, 150]], np.float64) - [120.0, 60.0]


def _astronaut():
    skimage_data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(skimage_data.astronaut()[60:260, 120:330])  # the crop reaches past the top edge


def _five_1based(p):
    """test.py's 5 points: 1-based 31, mean(37, 40), mean(43, 46), 49, 55, reordered eyes, nose, mouth corners."""
    return np.stack([(p[36] + p[39]) / 2, (p[42] + p[45]) / 2, p[30], p[48], p[54]])


def _test_py_crop(photo, lm68, lm3d68):
    """test.py's Preprocess, re-derived: POS on y-flipped landmarks (8 unknowns), scale 116 / s, the centre read
    back as h0 - t_y, 8-bit warp with mirrored border, a 10 x 10 box blur outside the photo's truncated corners."""
    import cv2

    h0, w0 = photo.shape[:2]
    xp = _five_1based(np.stack([lm68[:, 0], h0 - 1 - lm68[:, 1]], 1))
    x = np.concatenate([_five_1based(lm3d68), np.ones((5, 1))], 1)
    a = np.zeros((10, 8))
    a[0::2, :4], a[1::2, 4:] = x, x
    k = np.linalg.lstsq(a, xp.reshape(-1), rcond=None)[0]
    s = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    scale = 116.0 / s
    mat = np.array([[scale, 0, 128 - k[3] * scale], [0, scale, 128 - (h0 - k[7]) * scale]])
    c = (np.array([[0, 0, 1], [w0 - 1, h0 - 1, 1]]) @ mat.T).astype(np.int32)
    outside = np.zeros((256, 256, 1))
    outside[:max(c[0, 1], 0)] = 1
    outside[min(c[1, 1], 255):] = 1
    outside[:, :max(c[0, 0], 0)] = 1
    outside[:, min(c[1, 0], 255):] = 1
    warped = cv2.warpAffine(photo, mat, (256, 256), borderMode=cv2.BORDER_REFLECT_101)
    crop = (warped.astype(np.float32) * (1 - outside) + cv2.blur(warped, (10, 10)) * outside).astype(np.uint8)
    return crop, mat, outside


def _test_py_render(model, coeff, size=256):
    """The release's decoder and renderer, re-derived in float64: x f / (10 - z), y f / (10 - z), z f / 10 over
    size / 2 (NDC); face normals cross(c - a, b - a) of that mesh with the triangles' last two corners swapped,
    summed per vertex and normalised; Deng's SH x texture; PyTorch3D's rasterization without perspective
    correction (verts (-x, y, 5 - z), pixel centres at 1 - (2 i + 1) / size, nearest screen-linear z)."""
    lay = model.layout
    c = {k: v.double().numpy() for k, v in lay.split(coeff[0]).items()}
    shape = model.mean_shape.double().numpy() + (model.shape_base.double().numpy()
                                                 @ np.concatenate([c["id"], c["exp"]])).reshape(-1, 3)
    tex = (model.mean_tex.double().numpy() + (model.tex_base.double().numpy() @ c["tex"]).reshape(-1, 3)) / 255
    ax, ay, az = c["angle"]
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    v = shape @ (rz @ ry @ rx).T + c["trans"]
    f = 1015 / 224 * size
    v = np.stack([v[:, 0] * f / (10 - v[:, 2]), v[:, 1] * f / (10 - v[:, 2]), v[:, 2] * f / 10], 1) / (size / 2)
    tri = model.triangles.numpy()[:, [0, 2, 1]]
    fn = np.cross(v[tri[:, 2]] - v[tri[:, 0]], v[tri[:, 1]] - v[tri[:, 0]])
    vn = np.zeros_like(v)
    for i in range(3):
        np.add.at(vn, tri[:, i], fn)
    n = vn / np.linalg.norm(vn, axis=1, keepdims=True)
    a0, a1, a2 = np.pi, 2 * np.pi / np.sqrt(3), 2 * np.pi / np.sqrt(8)
    c0, c1, c2 = 1 / np.sqrt(4 * np.pi), np.sqrt(3) / np.sqrt(4 * np.pi), 3 * np.sqrt(5) / np.sqrt(12 * np.pi)
    x, y, z = n.T
    basis = np.stack([np.full_like(x, a0 * c0), -a1 * c1 * y, a1 * c1 * z, -a1 * c1 * x, a2 * c2 * x * y,
                      -a2 * c2 * y * z, a2 * c2 * 0.5 / np.sqrt(3) * (3 * z * z - 1), -a2 * c2 * x * z,
                      a2 * c2 * 0.5 * (x * x - y * y)], 1)
    gamma = c["gamma"].reshape(3, 9).T.copy()
    gamma[0] += 0.8
    colors = tex * (basis @ gamma)
    r = v * [-1, 1, -1] + [0, 0, 5]
    zbuf = np.full((size, size), np.inf)
    image = np.zeros((size, size, 3))
    for t in model.triangles.numpy():  # PyTorch3D's faces are the model's (the swap only orients the normals)
        p = r[t]
        jj = (size * (1 - p[:, 0]) - 1) / 2  # column / row whose centre each corner sits on
        ii = (size * (1 - p[:, 1]) - 1) / 2
        j0, j1 = max(int(np.ceil(jj.min())), 0), min(int(np.floor(jj.max())), size - 1)
        i0, i1 = max(int(np.ceil(ii.min())), 0), min(int(np.floor(ii.max())), size - 1)
        if j0 > j1 or i0 > i1:
            continue
        gi, gj = np.mgrid[i0:i1 + 1, j0:j1 + 1]
        px, py = 1 - (2 * gj + 1) / size, 1 - (2 * gi + 1) / size
        d = (p[1, 0] - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[1, 1] - p[0, 1]) * (p[2, 0] - p[0, 0])
        w1 = ((px - p[0, 0]) * (p[2, 1] - p[0, 1]) - (py - p[0, 1]) * (p[2, 0] - p[0, 0])) / d
        w2 = ((p[1, 0] - p[0, 0]) * (py - p[0, 1]) - (p[1, 1] - p[0, 1]) * (px - p[0, 0])) / d
        w = np.stack([1 - w1 - w2, w1, w2], -1)
        zz = w @ p[:, 2]
        win = (w >= 0).all(-1) & (zz < zbuf[gi, gj])
        zbuf[gi[win], gj[win]] = zz[win]
        image[gi[win], gj[win]] = w[win] @ colors[t]
    return np.clip(image, 0, 1)


@pytest.fixture(scope="module")
def lit_release_files(tmp_path_factory):
    """Release files whose N_3D turns the head and lights it from one side (so I_3D depends on the normals), and
    whose mask logits vary enough for m to cover part of the crop."""
    from renderer.morphable import CoeffLayout

    bias = torch.zeros(257)
    lay = CoeffLayout()
    bias[lay.slice("angle")] = torch.tensor([-0.1, 0.35, 0.05])
    gamma = torch.zeros(3, 9)
    gamma[:, 0] = 0.1
    gamma[:, 1:4] = torch.tensor([0.3, 0.35, -0.3])
    gamma[:, 4:] = torch.tensor([0.1, -0.1, 0.15, 0.05, -0.05])
    bias[lay.slice("gamma")] = gamma.reshape(27)
    bias[lay.slice("tex")] = 0.5 * torch.randn(80, generator=torch.Generator().manual_seed(2))
    return _write_release_files(tmp_path_factory.mktemp("lit_release"), bias, seg_gain=10.0, coeff_std=2e-5)


def test_release_preset_reproduces_test_py(lit_release_files, synthetic_scene, tmp_path):  # noqa: F811
    """A real photo through remove_mask.py --release-n3d / --release-gen --paste hard: N_G's input (I_n, I_3D, m)
    and the photo it writes equal an independent re-computation of test.py's steps (its networks: the reference
    copies of the same weights)."""
    import cv2
    from scipy.io import loadmat

    from data.io import read_image, write_image
    from models.generator import Generator as NG
    from renderer.morphable import MorphableModel
    from renderer.render import FaceRenderer
    main = cli("scripts/remove_mask.py")

    photo = _astronaut()
    lm3d68 = np.asarray(loadmat(str(synthetic_scene["lm3d"]))["lm"], np.float64)
    write_image(tmp_path / "astronaut.png", photo)
    np.savetxt(tmp_path / "astronaut.txt", _ASTRONAUT_LM)
    seed = 3
    calls = []

    def grab(module, args, output):
        if isinstance(module, NG):
            calls.append(([a.detach().clone() for a in args], output.detach().clone()))

    hook = torch.nn.modules.module.register_module_forward_hook(grab)
    try:
        assert main(["--image", str(tmp_path / "astronaut.png"), "--landmarks", str(tmp_path / "astronaut.txt"),
                     "--release-n3d", str(lit_release_files["n3d"]), "--release-gen", str(lit_release_files["gen"]),
                     "--set", "bfm_path=null", "--set", f"lm3d_path={synthetic_scene['lm3d']}", "--variations", "1",
                     "--paste", "hard", "--seed", str(seed), "--out", str(tmp_path / "out")]) == 0
    finally:
        hook.remove()
    assert len(calls) == 1
    (got_m, got_i3d, got_i_n), raw = calls[0]
    pasted = read_image(tmp_path / "out" / "astronaut_0_keep.png")
    model = MorphableModel.synthetic(seed=0)  # bfm_path null: the embedded stand-in

    crop, mat, outside = _test_py_crop(photo, _ASTRONAUT_LM, lm3d68)
    assert outside[:10].all() and not outside[100:240, 10:240].any()  # the blur is exercised (top rows)
    i_t = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        out = lit_release_files["ref_n3d"](i_t)
        m = (torch.sigmoid(out["seg_logits"]) > 0.1).float()
        m = F.max_pool2d(F.max_pool2d(m, 5, 1, 2), 3, 1, 1)
        i3d = torch.from_numpy(_test_py_render(model, out["coeffs"].double())).permute(2, 0, 1)[None]
        noise = torch.rand(1, 1, 256, 256, generator=torch.Generator().manual_seed(seed))
        i_n = i_t * (1 - m) + noise
    assert 0.05 < m.mean() < 0.95 and (i3d > 0).any(1).float().mean() > 0.2
    assert torch.equal(got_m, m)
    assert (got_i3d - i3d).abs().max() < 1e-4
    assert (got_i_n - i_n).abs().max() < 1e-4
    # the deng shading would have given another I_3D: the test tells the conventions apart
    deng = FaceRenderer(model, 256)(out["coeffs"]).image
    assert (deng[0] - i3d[0].float()).abs().max() > 0.05
    # N_G on test.py's input gives the output that was pasted
    with torch.no_grad():
        assert (lit_release_files["ref_gen"](m, i3d.float(), i_n) - raw).abs().max() < 1e-4

    # test.py's paste-back: its 8-bit N_G output and mask warped back by the inverse scale + shift, hard composite
    h0, w0 = photo.shape[:2]
    inv = np.array([[1 / mat[0, 0], 0, -mat[0, 2] / mat[0, 0]], [0, 1 / mat[1, 1], -mat[1, 2] / mat[1, 1]]])
    out_u8 = (raw[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    back = cv2.warpAffine(out_u8, inv, (w0, h0), borderValue=(255, 255, 255))
    seg = cv2.warpAffine((m[0, 0].numpy() * 255).astype(np.uint8) // 255, inv, (w0, h0))
    want = photo * (1 - seg[..., None]) + back * seg[..., None]
    assert seg.any() and (seg == 0).any()
    assert (pasted.permute(1, 2, 0) - torch.from_numpy(want).float() / 255).abs().max() < 1e-4
    assert (pasted.permute(1, 2, 0).numpy() != photo / 255).any(-1).sum() > 1000  # the paste changed the photo
