"""Networks: shapes, initialisation, gradient paths, weight loading (N_3D, ArcFace, N_G, N_D)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from models.arcface import (
    ARCFACE_TEMPLATE,
    IRESNET_LAYERS,
    ArcFace,
    align_arcface,
    five_points,
    similarity_transform,
    warp_affine,
)
from models.discriminator import Discriminator
from models.discriminator import key_map_authors_release as d_key_map
from models.generator import AUTHORS_INPUT_PERMUTATION, Generator, composite
from models.generator import key_map_authors_release as g_key_map
from models.recon3d import (
    DENG_FINAL_LAYER_SIZES,
    build_recon3d,
    key_map_authors_release,
    load_deng_net_recon,
)


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return build_recon3d("resnet18")


@pytest.fixture(scope="module")
def r50():
    torch.manual_seed(0)
    return build_recon3d("resnet50")


# ---------------------------------------------------------------------------------------------------- N_3D


def test_recon_shapes_train_and_eval(r18):
    x = torch.rand(2, 3, 64, 64)
    r18.train()
    out = r18(x)
    assert out["coeffs"].shape == (2, 257)
    assert out["seg_logits"].shape == (2, 1, 64, 64)
    assert [tuple(a.shape) for a in out["aux_logits"]] == [(2, 1, 64, 64)] * 2
    r18.eval()
    with torch.no_grad():
        out = r18(x[:1])
    assert out["seg_logits"].shape == (1, 1, 64, 64) and out["aux_logits"] == []
    r18.train()


def test_recon_resnet50_forward_and_zero_init(r50):
    r50.train()
    out = r50(torch.rand(2, 3, 64, 64))
    assert out["coeffs"].shape == (2, 257) and out["seg_logits"].shape == (2, 1, 64, 64)
    assert len(out["aux_logits"]) == 2
    assert torch.equal(out["coeffs"], torch.zeros(2, 257))  # zero-init head -> mean face
    assert r50.seg_head.arm16.conv.conv.in_channels == 1024 and r50.coeff_head.in_channels == 2048


def test_recon_coeffs_exactly_zero_at_init(r18):
    out = r18(torch.rand(2, 3, 64, 64))
    assert torch.equal(out["coeffs"], torch.zeros_like(out["coeffs"]))


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="resnet18.*resnet34.*resnet50"):
        build_recon3d("vgg16")


def _grad_norm(module: nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_recon_gradients_reach_backbone():
    torch.manual_seed(1)
    model = build_recon3d("resnet18").train()
    x = torch.rand(2, 3, 64, 64)
    out = model(x)
    (out["seg_logits"].mean() + sum(a.mean() for a in out["aux_logits"])).backward()
    assert _grad_norm(model.backbone.layer1) > 0 and _grad_norm(model.backbone.layer3) > 0
    assert _grad_norm(model.backbone.layer4) == 0  # segmentation reads layer1-3 only
    model.zero_grad(set_to_none=True)
    # The zero-initialised head blocks gradients to the trunk on step 0; give it weights first.
    with torch.no_grad():
        model.coeff_head.weight.normal_(0, 0.01)
    model(x)["coeffs"].pow(2).sum().backward()
    assert _grad_norm(model.backbone.layer4) > 0 and _grad_norm(model.gated) > 0
    assert _grad_norm(model.backbone.layer1) > 0


def _fake_deng_net_recon(model) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    width = model.coeff_head.in_channels
    sd = {f"backbone.{k}": (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone())
          for k, v in model.backbone.state_dict().items()}
    for i, c in enumerate(DENG_FINAL_LAYER_SIZES):
        sd[f"final_layers.{i}.weight"] = torch.randn(c, width, 1, 1, generator=g)
        sd[f"final_layers.{i}.bias"] = torch.randn(c, generator=g)
    return sd


def test_deng_net_recon_loading_order(tmp_path):
    model = build_recon3d("resnet18")
    sd = _fake_deng_net_recon(model)
    torch.save({"net_recon": sd, "opt_00": {"state": {}}}, tmp_path / "epoch_20.pth")
    loaded = build_recon3d("resnet18", deng_checkpoint=str(tmp_path / "epoch_20.pth"))
    w, b = loaded.coeff_head.weight, loaded.coeff_head.bias
    start = 0
    for i, c in enumerate(DENG_FINAL_LAYER_SIZES):  # id, exp, tex, angle, gamma, trans_xy, trans_z
        assert torch.equal(w[start:start + c], sd[f"final_layers.{i}.weight"])
        assert torch.equal(b[start:start + c], sd[f"final_layers.{i}.bias"])
        start += c
    assert start == 257
    assert torch.equal(loaded.backbone.conv1.weight, sd["backbone.conv1.weight"])
    # plain state dict with DataParallel prefixes loads the same
    other = build_recon3d("resnet18")
    load_deng_net_recon(other, {f"module.{k}": v for k, v in sd.items()})
    assert torch.equal(other.coeff_head.weight, w)


def test_missing_weights_file_one_line(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError) as err:
        build_recon3d("resnet18", deng_checkpoint=str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="imagenet_weights"):
        build_recon3d("resnet18", imagenet_weights=str(path))


def test_imagenet_backbone_file(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "resnet18.pth")  # includes fc.*, which is dropped
    model = build_recon3d("resnet18", imagenet_weights=str(tmp_path / "resnet18.pth"))
    assert torch.equal(model.backbone.layer2[0].conv1.weight, ref.layer2[0].conv1.weight)


_CBR = ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked")
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _authors_encoder_keys(backbone_keys) -> list[str]:
    """FaceEncoder module names of the release (docs/formats.md sec. 5)."""
    keys = [f"feat.{k}" for k in backbone_keys] + ["coeff.weight", "coeff.bias"]
    keys += ["gated.ConvMask.0.weight", "gated.ConvMask.0.bias", "gated.ConvMask.3.weight", "gated.ConvMask.3.bias"]
    keys += [f"gated.ConvMask.1.{s}" for s in _BN]
    for s in ("8", "16"):
        keys += [f"cp.arm{s}.conv.{c}" for c in _CBR] + [f"cp.arm{s}.conv_atten.weight"]
        keys += [f"cp.arm{s}.bn_atten.{b}" for b in _BN] + [f"cp.conv_head{s}.{c}" for c in _CBR]
    keys += [f"cp.conv_avg.{c}" for c in _CBR] + [f"ffm.convblk.{c}" for c in _CBR]
    keys += ["ffm.conv1.weight", "ffm.conv2.weight"]
    for head in ("conv_out", "conv_out8", "conv_out16"):
        keys += [f"{head}.conv.{c}" for c in _CBR] + [f"{head}.conv_out.weight"]
    return keys


def test_authors_encoder_key_map(r50):
    ours = r50.state_dict()
    backbone_keys = list(r50.backbone.state_dict())
    authors = {f"module.{k}": torch.zeros(1) for k in _authors_encoder_keys(backbone_keys)}
    mapped = key_map_authors_release(authors)
    assert set(mapped) == set(ours)
    # shapes of the release's layers (FaceEncoder definitions) land on our parameters of the same shape
    expected = {
        "cp.arm8.conv.conv.weight": (256, 512, 3, 3), "cp.arm16.conv.conv.weight": (256, 1024, 3, 3),
        "cp.conv_avg.conv.weight": (256, 1024, 1, 1), "ffm.convblk.conv.weight": (256, 512, 1, 1),
        "ffm.conv1.weight": (64, 256, 1, 1), "conv_out.conv_out.weight": (1, 256, 1, 1),
        "conv_out8.conv.conv.weight": (128, 256, 3, 3), "gated.ConvMask.0.weight": (512, 1024, 3, 3),
        "gated.ConvMask.3.weight": (1024, 512, 3, 3), "coeff.weight": (257, 2048, 1, 1),
    }
    for key, shape in expected.items():
        (new_key,) = key_map_authors_release({key: torch.zeros(1)})
        assert tuple(ours[new_key].shape) == shape, key
    with pytest.raises(ValueError, match="unrecognised"):
        key_map_authors_release({"module.something.else": torch.zeros(1)})


# ---------------------------------------------------------------------------------------------------- ArcFace


def _expected_iresnet_shapes(layers) -> dict[str, tuple[int, ...]]:
    """arcface_torch IResNet state-dict names and shapes (docs/formats.md sec. 2)."""
    def bn(prefix, c):
        return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}

    ref = {"conv1.weight": (64, 3, 3, 3), **bn("bn1", 64), "prelu.weight": (64,)}
    in_ch = 64
    for k, (n, w) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
        for i in range(n):
            p = f"layer{k}.{i}"
            c_in = in_ch if i == 0 else w
            ref.update(bn(f"{p}.bn1", c_in))
            ref[f"{p}.conv1.weight"] = (w, c_in, 3, 3)
            ref.update(bn(f"{p}.bn2", w))
            ref[f"{p}.prelu.weight"] = (w,)
            ref[f"{p}.conv2.weight"] = (w, w, 3, 3)
            ref.update(bn(f"{p}.bn3", w))
            if i == 0:
                ref[f"{p}.downsample.0.weight"] = (w, c_in, 1, 1)
                ref.update(bn(f"{p}.downsample.1", w))
        in_ch = w
    ref.update(bn("bn2", 512))
    ref.update({"fc.weight": (512, 25088), "fc.bias": (512,), **bn("features", 512)})
    return ref


@pytest.fixture(scope="module")
def arcface_r50():
    torch.manual_seed(0)
    return ArcFace("r50")


def test_arcface_r50_state_dict_matches_arcface_torch(arcface_r50):
    assert IRESNET_LAYERS["r50"] == (3, 4, 14, 3) and IRESNET_LAYERS["r100"] == (3, 13, 30, 3)
    ref = _expected_iresnet_shapes(IRESNET_LAYERS["r50"])
    ours = {k: tuple(v.shape) for k, v in arcface_r50.backbone.state_dict().items()}
    assert ours == ref
    original = {k: v.clone() for k, v in arcface_r50.backbone.state_dict().items()}
    fake = {k: (torch.full(s, 0.5) if s else torch.tensor(7)) for k, s in ref.items()}
    arcface_r50.backbone.load_state_dict(fake, strict=True)
    assert float(arcface_r50.backbone.fc.weight[0, 0]) == 0.5
    arcface_r50.backbone.load_state_dict(original, strict=True)  # the fixture is shared
    assert arcface_r50.pretrained is False


def test_arcface_loads_weights_file(tmp_path):
    ref = _expected_iresnet_shapes(IRESNET_LAYERS["r18"])
    g = torch.Generator().manual_seed(0)
    fake = {f"module.{k}": (torch.rand(s, generator=g) + 0.5 if s else torch.tensor(1)) for k, s in ref.items()}
    torch.save(fake, tmp_path / "backbone.pth")
    model = ArcFace("r18", weights=str(tmp_path / "backbone.pth"))
    assert model.pretrained is True
    assert torch.equal(model.backbone.layer3[1].conv2.weight, fake["module.layer3.1.conv2.weight"])
    with pytest.raises(FileNotFoundError, match="arcface_weights"):
        ArcFace("r18", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="r50"):
        ArcFace("r77")


def test_arcface_frozen_eval_and_input_gradients(arcface_r50):
    parent = nn.Sequential(nn.Conv2d(3, 3, 1), arcface_r50)
    parent.train()
    assert not arcface_r50.training and not any(m.training for m in arcface_r50.modules())
    assert not any(p.requires_grad for p in arcface_r50.parameters())
    images = torch.rand(2, 3, 96, 96, requires_grad=True)
    lm = torch.rand(2, 68, 2) * 40 + 28
    emb = arcface_r50(images, lm)
    assert emb.shape == (2, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    emb[:, 0].sum().backward()
    assert images.grad is not None and float(images.grad.abs().sum()) > 0
    assert all(p.grad is None for p in arcface_r50.parameters())
    assert arcface_r50(torch.rand(1, 3, 64, 80), None).shape == (1, 512)


def test_similarity_transform_matches_skimage():
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(0)
    src = rng.uniform(50, 200, size=(5, 2))
    dst = ARCFACE_TEMPLATE.numpy().astype(np.float64)
    if hasattr(SimilarityTransform, "from_estimate"):
        ref = SimilarityTransform.from_estimate(src, dst)
    else:
        ref = SimilarityTransform()
        ref.estimate(src, dst)
    ours = similarity_transform(torch.from_numpy(src), torch.from_numpy(dst))[0].numpy()
    np.testing.assert_allclose(ours, ref.params[:2], rtol=1e-6, atol=1e-8)


def test_align_identity_and_cv2_warp():
    # Landmarks whose 5 points are the template itself: alignment is the identity on a 112 image.
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 112, 112, generator=g)
    lm = torch.zeros(1, 68, 2)
    t = ARCFACE_TEMPLATE
    lm[0, 36] = lm[0, 39] = t[0]
    lm[0, 42] = lm[0, 45] = t[1]
    lm[0, 30], lm[0, 48], lm[0, 54] = t[2], t[3], t[4]
    torch.testing.assert_close(five_points(lm)[0], t)
    torch.testing.assert_close(align_arcface(img, lm), img, atol=1e-5, rtol=0)
    # A general similarity: compare with cv2.warpAffine (bilinear) away from the border.
    smooth = cv2.GaussianBlur(np.random.default_rng(1).random((160, 160, 3)).astype(np.float32), (0, 0), 3)
    mat = np.array([[0.6, -0.2, 10.0], [0.2, 0.6, -5.0]], dtype=np.float32)
    ref = cv2.warpAffine(smooth, mat, (112, 112), flags=cv2.INTER_LINEAR)
    ours = warp_affine(torch.from_numpy(smooth).permute(2, 0, 1)[None], torch.from_numpy(mat)[None], (112, 112))
    ours = ours[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours[8:-8, 8:-8], ref[8:-8, 8:-8], atol=2e-3)


# ---------------------------------------------------------------------------------------------------- N_G / N_D


@pytest.mark.parametrize("size,width", [(64, 16), (256, 8)])
def test_generator_shapes_and_range(size, width):
    torch.manual_seed(0)
    gen = Generator(base_channels=width)
    m = (torch.rand(2, 1, size, size) > 0.5).float()
    out = gen(m, torch.rand(2, 3, size, size), torch.rand(2, 3, size, size))
    assert out.shape == (2, 3, size, size)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_generator_without_3d_prior_and_composite():
    gen = Generator(base_channels=16, n_res=2, use_3d_prior=False)
    assert gen.stem.conv.in_channels == 4
    m = torch.zeros(1, 1, 64, 64)
    m[..., 20:40, 10:50] = 1
    masked = torch.rand(1, 3, 64, 64)
    out = gen(m, None, masked)
    assert out.shape == (1, 3, 64, 64)
    comp = composite(out, masked, m)
    assert torch.equal(comp[..., :20, :], masked[..., :20, :])
    assert torch.equal(comp[..., 20:40, 10:50], out[..., 20:40, 10:50])
    with pytest.raises(ValueError, match="i3d"):
        Generator(base_channels=8, n_res=1)(m, None, masked)


def _authors_generator_state(base: int = 64) -> dict[str, torch.Tensor]:
    """Release-style keys (ResEncoder/ResDecoder Sequentials, legacy spectral norm), random values."""
    g = torch.Generator().manual_seed(0)
    sd = {}

    def sn(prefix, c_out, c_in, k):
        sd[f"{prefix}.weight_orig"] = torch.randn(c_out, c_in, k, k, generator=g)
        sd[f"{prefix}.weight_u"] = torch.randn(c_out, generator=g)
        sd[f"{prefix}.weight_v"] = torch.randn(c_in * k * k, generator=g)

    def inorm(prefix, c):
        sd[f"{prefix}.weight"] = torch.randn(c, generator=g)
        sd[f"{prefix}.bias"] = torch.randn(c, generator=g)

    c1, c2, c3 = base, 2 * base, 4 * base
    sn("module.encoder.main.0", c1, 7, 7), inorm("module.encoder.main.1", c1)
    sn("module.encoder.main.3", c2, c1, 4), inorm("module.encoder.main.4", c2)
    sn("module.encoder.main.6", c3, c2, 4), inorm("module.encoder.main.7", c3)
    for p in [f"module.encoder.main.{9 + i}" for i in range(3)] + [f"module.decoder.main.{i}" for i in range(3)]:
        sn(f"{p}.main.0", c3, c3, 3), inorm(f"{p}.main.1", c3), sn(f"{p}.main.3", c3, c3, 3), inorm(f"{p}.main.4", c3)
    sn("module.decoder.main.3.conv", c2, c3, 3), inorm("module.decoder.main.4", c2)
    sn("module.decoder.main.6.conv", c1, c2, 3), inorm("module.decoder.main.7", c1)
    sn("module.decoder.main.9", 3, c1, 7)
    return sd


def test_generator_authors_key_map_and_channel_permutation():
    authors = _authors_generator_state(base=16)
    gen = Generator(base_channels=16)
    gen.load_state_dict(g_key_map(authors), strict=True)
    # The stem must compute the same function on our channel order as the release's legacy-SN conv on theirs.
    legacy = nn.utils.spectral_norm(nn.Conv2d(7, 16, 7, padding=3, bias=False))
    legacy.load_state_dict({k.split("main.0.")[1]: v for k, v in authors.items() if "encoder.main.0." in k})
    legacy.eval(), gen.eval()
    m, i3d, i_n = torch.rand(1, 1, 16, 16), torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        theirs = legacy(torch.cat([i_n, i3d, m], dim=1))
        ours = gen.stem.conv(torch.cat([m, i3d, i_n], dim=1))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert AUTHORS_INPUT_PERMUTATION == (6, 3, 4, 5, 0, 1, 2)


@pytest.mark.parametrize("size,width", [(64, 16), (256, 8)])
def test_discriminator_shapes(size, width):
    disc = Discriminator(size, base_channels=width)
    assert len(disc.blocks) == int(np.log2(size)) - 2
    assert disc(torch.rand(2, 3, size, size)).shape == (2,)
    assert disc(torch.rand(1, 3, size, size)).shape == (1,)


def test_discriminator_paper_widths_and_key_map():
    disc = Discriminator(256)
    widths = [b.conv.out_channels for b in disc.blocks]
    assert widths == [128, 256, 512, 512, 512, 512] and disc.stem.out_channels == 64
    ours = disc.state_dict()
    legacy = {}
    for key, value in ours.items():  # rebuild the release's Sequential names from ours
        key = key.replace("parametrizations.weight.original", "weight_orig")
        key = key.replace("parametrizations.weight.0._u", "weight_u")
        key = key.replace("parametrizations.weight.0._v", "weight_v")
        for old, new in [("stem.", "main.0."), ("head_conv.", "main.8."), ("out.", "main.10.")] + [
                (f"blocks.{i}.", f"main.{i + 1}.") for i in range(6)]:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        legacy["module." + key] = value
    mapped = d_key_map(legacy)
    assert set(mapped) == set(ours)
    with pytest.raises(ValueError, match="power of two"):
        Discriminator(100)


def test_generator_n_down_sets_the_bottleneck_and_keeps_the_paper_layout():
    from models.generator import Generator

    paper = Generator(base_channels=8, n_res=1)
    assert [k for k in paper.state_dict()] == [k for k in Generator(8, 1, n_down=2).state_dict()]
    assert len(paper.down) == 2 and len(paper.up) == 2
    m, x = torch.zeros(1, 1, 16, 16), torch.rand(1, 3, 16, 16)
    for n_down, side in ((0, 16), (1, 8), (2, 4)):
        gen = Generator(base_channels=8, n_res=1, n_down=n_down)
        h = gen.down(gen.stem(torch.cat([m, x, x], 1)))
        assert h.shape == (1, 8 * 2 ** n_down, side, side)
        assert gen(m, x, x).shape == (1, 3, 16, 16)


def test_generator_prior_blend_gate_mixes_i3d_and_generation():
    torch.manual_seed(0)
    plain, blend = Generator(8, 1), Generator(8, 1, prior_blend=True)
    assert not any(k.startswith("gate.") for k in plain.state_dict())  # the paper's / release's layout unchanged
    assert set(blend.state_dict()) - set(plain.state_dict()) == {
        "gate.bias", "gate.parametrizations.weight.original", "gate.parametrizations.weight.0._u",
        "gate.parametrizations.weight.0._v"}
    m, i3d, i_n = torch.ones(2, 1, 16, 16), torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    out, gate = blend(m, i3d, i_n, return_gate=True)
    assert gate.shape == (2, 1, 16, 16) and float(gate.min()) >= 0 and float(gate.max()) <= 1
    generated = torch.sigmoid(blend.head(blend.up(blend.res(blend.down(blend.stem(torch.cat([m, i3d, i_n], 1)))))))
    torch.testing.assert_close(out, gate * i3d + (1 - gate) * generated)
    (out * i3d).sum().backward()  # the gate learns: its gradient is non-zero
    assert float(blend.gate.bias.grad.abs()) > 0
    with torch.no_grad():  # a saturated gate copies I_3D exactly, whatever the rest of the network does
        blend.gate.bias.fill_(1e4)
        torch.testing.assert_close(blend(m, i3d, i_n), i3d)
    with pytest.raises(ValueError, match="use_3d_prior"):
        Generator(8, 1, use_3d_prior=False, prior_blend=True)


def test_prior_blend_copies_the_prior_faster_than_the_paper_generator():
    """One batch whose hole is exactly I_3D: 60 Adam steps bring the gated N_G far closer than the paper's."""
    g = torch.Generator().manual_seed(0)
    i3d = torch.rand(4, 3, 16, 16, generator=g)
    m = torch.zeros(4, 1, 16, 16)
    m[..., 4:12, 3:13] = 1
    i_n = i3d * (1 - m) + torch.rand(4, 3, 16, 16, generator=g) * m
    losses = {}
    for blend in (False, True):
        torch.manual_seed(0)
        gen = Generator(8, 1, prior_blend=blend)
        opt = torch.optim.Adam(gen.parameters(), lr=1e-3)
        for _ in range(60):
            loss = ((gen(m, i3d, i_n) - i3d).abs() * m).sum() / m.sum() / 3
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses[blend] = float(loss)
    assert losses[True] < 0.5 * losses[False], losses
