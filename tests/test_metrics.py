"""Metrics against reference implementations (scikit-image, pytorch-fid, lpips) and hand computations."""

from __future__ import annotations

import math
from unittest import mock

import lpips
import numpy as np
import pytest
import torch
import torchvision
from pytorch_fid import inception as pfi
from pytorch_fid.fid_score import calculate_frechet_distance
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

import metrics
from metrics.fid import GaussianStats, build_fid_inception_v3


def _pair(n=3, h=40, w=37, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, h, w, generator=g)
    y = (x + noise * torch.randn(n, 3, h, w, generator=g)).clamp(0, 1)
    return y, x  # pred, target


# ---------------------------------------------------------------- pixel metrics


@pytest.mark.parametrize("size", [(32, 32), (40, 37), (64, 48)])
def test_psnr_ssim_match_skimage(size):
    pred, target = _pair(h=size[0], w=size[1])
    p = metrics.psnr(pred, target)
    s = metrics.ssim(pred, target)
    assert p.shape == s.shape == (3,)
    for i in range(3):
        a, b = target[i].numpy(), pred[i].numpy()
        ref_p = peak_signal_noise_ratio(a.astype(np.float64), b.astype(np.float64), data_range=1.0)
        ref_s = structural_similarity(a, b, channel_axis=0, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
        assert p[i].item() == pytest.approx(ref_p, abs=1e-6)
        assert s[i].item() == pytest.approx(ref_s, abs=1e-5)


def test_identical_images_score_perfectly():
    _, x = _pair()
    assert torch.all(metrics.l1(x, x) == 0)
    assert torch.allclose(metrics.ssim(x, x), torch.ones(3, dtype=torch.float64))
    assert torch.all(torch.isinf(metrics.psnr(x, x)))  # documented: +inf, like scikit-image
    capped = metrics.PSNRMetric(max_db=100.0)
    capped.update(x, x)
    assert capped.compute()["psnr"] == 100.0


def test_l1_and_l1_hole_by_hand():
    target = torch.zeros(2, 3, 4, 4)
    pred = torch.zeros(2, 3, 4, 4)
    pred[0, :, :2, :] = 0.5  # top half of image 0 off by 0.5
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, :, :, :2] = 1  # left half occluded: 4 of its 8 pixels are off
    assert metrics.l1(pred, target).tolist() == [0.25, 0.0]
    hole = metrics.l1_hole(pred, target, mask)
    assert hole[0].item() == pytest.approx(0.25)
    assert math.isnan(hole[1].item())  # empty mask: undefined, not counted
    m = metrics.get_metric("l1_hole")
    m.update(pred, target, mask=mask)
    assert m.count == 1 and m.compute()["l1_hole"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="mask"):
        m.update(pred, target)


def test_streaming_mean_equals_batch_and_merge_reset():
    pred, target = _pair(n=6)
    whole = metrics.get_metric("ssim")
    whole.update(pred, target)
    parts = metrics.get_metric("ssim")
    parts.update(pred[:2], target[:2])
    other = metrics.get_metric("ssim")
    other.update(pred[2:], target[2:])
    parts.merge(other)
    expect = metrics.ssim(pred, target).mean().item()
    assert whole.compute()["ssim"] == pytest.approx(expect, abs=1e-12)
    assert parts.compute()["ssim"] == pytest.approx(expect, abs=1e-12)
    assert parts.values.shape == (6,)
    parts.reset()
    assert parts.count == 0 and math.isnan(parts.compute()["ssim"])


# ---------------------------------------------------------------- geometry


def test_mask_iou_by_hand():
    pred = torch.zeros(3, 1, 4, 4)
    true = torch.zeros(3, 1, 4, 4)
    pred[0, 0, :2, :2] = 1  # 4 pixels
    true[0, 0, :2, :3] = 1  # 6 pixels, 4 shared -> IoU 4/6
    true[1, 0, 0, 0] = 1  # predicted nothing -> 0
    # image 2: both empty -> 1
    assert metrics.mask_iou(pred, true).tolist() == pytest.approx([4 / 6, 0.0, 1.0])
    m = metrics.get_metric("mask_iou")
    m.update(pred, true)
    assert m.compute()["mask_iou"] == pytest.approx((4 / 6 + 1) / 3)
    assert m.areas.tolist() == pytest.approx([6 / 16, 1 / 16, 0.0])


def test_landmark_nme_by_hand():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 68, 2, generator=g) * 50
    target[:, 36] = torch.tensor([10.0, 20.0])
    target[:, 45] = torch.tensor([30.0, 20.0])  # inter-ocular distance 20
    pred = target + torch.tensor([3.0, 4.0])  # every point off by 5
    pred[1] = target[1]
    assert metrics.landmark_nme(pred, target).tolist() == pytest.approx([0.25, 0.0])


# ---------------------------------------------------------------- bins


def test_bins_by_area():
    scores = {"l1": [1.0, 2.0, 3.0, 4.0, 5.0, float("nan")], "psnr": [10, 20, 30, 40, 50, 60]}
    areas = [0.05, 0.08, 0.15, 0.45, 1.0, 0.05]
    out = metrics.bin_by_area(scores, areas)
    assert list(out) == ["[0,0.1)", "[0.1,0.2)", "[0.2,0.3)", "[0.3,0.4)", "[0.4,1]"]
    assert out["[0,0.1)"] == {"count": 3, "l1": 1.5, "psnr": 30.0}  # NaN l1 left out of the l1 mean only
    assert out["[0.1,0.2)"]["l1"] == 3.0
    assert out["[0.2,0.3)"]["count"] == 0 and math.isnan(out["[0.2,0.3)"]["psnr"])
    assert out["[0.4,1]"] == {"count": 2, "l1": 4.5, "psnr": 45.0}


def test_bin_metrics_uses_recorded_masks():
    pred, target = _pair(n=4, h=16, w=16)
    mask = torch.zeros(4, 1, 16, 16)
    mask[0, :, :2] = 1  # area 2/16 = 0.125
    mask[1, :, :8] = 1  # 0.5
    mask[2, :, :1] = 1  # 0.0625
    l1m, psnrm = metrics.get_metric("l1"), metrics.get_metric("psnr")
    for m in (l1m, psnrm):
        m.update(pred, target, mask=mask)
    out = metrics.bin_metrics([l1m, psnrm])
    per = metrics.l1(pred, target)
    assert out["[0,0.1)"]["count"] == 2  # images 2 and 3 (empty mask)
    assert out["[0,0.1)"]["l1"] == pytest.approx(((per[2] + per[3]) / 2).item())
    assert out["[0.4,1]"]["l1"] == pytest.approx(per[1].item())
    with pytest.raises(ValueError, match="mask"):
        metrics.bin_metrics([metrics.get_metric("l1")])


# ---------------------------------------------------------------- registry


def test_registry():
    names = metrics.available()
    for name in ["l1", "l1_hole", "psnr", "ssim", "lpips", "fid", "arcface_cos", "mask_iou", "landmark_nme",
                 "diversity"]:
        assert name in names
    with pytest.raises(ValueError) as err:
        metrics.get_metric("psnrr")
    assert "psnrr" in str(err.value) and "ssim" in str(err.value) and "fid" in str(err.value)
    m = metrics.get_metric("psnr", data_range=1.0)
    assert isinstance(m, metrics.PSNRMetric) and m.comparable and m.higher_is_better
    assert metrics.available("image") == ["arcface_cos", "fid", "l1", "l1_hole", "lpips", "psnr", "ssim"]
    assert metrics.available("mask") == ["mask_iou"] and metrics.available("landmarks") == ["landmark_nme"]


# ---------------------------------------------------------------- Frechet distance and streaming statistics


@pytest.mark.parametrize("dim,n", [(8, 50), (32, 20)])  # (32, 20): singular covariances
def test_frechet_distance_matches_pytorch_fid(dim, n):
    rng = np.random.default_rng(dim)
    f1 = rng.normal(size=(n, dim))
    f2 = rng.normal(size=(n, dim)) * 1.5 + 0.3
    m1, s1 = f1.mean(0), np.cov(f1, rowvar=False)
    m2, s2 = f2.mean(0), np.cov(f2, rowvar=False)
    ours = metrics.frechet_distance(m1, s1, m2, s2)
    ref = calculate_frechet_distance(m1, s1, m2, s2)
    assert ours == pytest.approx(ref, rel=1e-6, abs=1e-6)
    assert abs(metrics.frechet_distance(m1, s1, m1, s1)) < 1e-5 * np.trace(s1)


def test_gaussian_stats_streaming_equals_batch():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(37, 6)) * 3 + 100  # offset: where sums of outer products lose digits
    stats = GaussianStats(6)
    for chunk in np.array_split(feats, [1, 5, 20]):
        stats.update(chunk)
    other = GaussianStats(6)
    other.update(torch.from_numpy(feats[:10]))
    half = GaussianStats(6)
    half.update(feats[10:])
    other.merge(half)
    for s in (stats, other):
        assert s.n == 37
        np.testing.assert_allclose(s.mu, feats.mean(0), rtol=1e-12)
        np.testing.assert_allclose(s.sigma, np.cov(feats, rowvar=False), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- FID metric (small stand-in network: fast)


class _TinyFeatures(nn.Module):
    dim = 8
    pretrained = False
    identity = "tiny:seed0"

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x):
        return torch.tanh(self.conv(x * 4 - 2)).mean(dim=(2, 3)) + x.flatten(1)[:, :8]


def test_fid_metric_identical_sets_zero_and_cache(tmp_path):
    g = torch.Generator().manual_seed(0)
    real = torch.rand(40, 3, 16, 16, generator=g)
    fake = torch.rand(40, 3, 16, 16, generator=g) ** 2
    fid = metrics.get_metric("fid", feature_net=_TinyFeatures(), cache_dir=tmp_path, reference_id="test:40",
                             batch_size=16)
    assert not fid.comparable and not fid.has_reference
    for i in range(0, 40, 16):
        fid.update(real[i:i + 16], real[i:i + 16])
    assert abs(fid.compute()["fid"]) < 1e-8  # identical sets
    assert fid.cache_path.is_file()

    direct = metrics.FID(feature_net=_TinyFeatures(), batch_size=64)
    direct.update(fake, real)
    value = direct.compute()["fid"]
    feats_f, feats_r = direct.features(fake), direct.features(real)
    ref = calculate_frechet_distance(feats_f.mean(0), np.cov(feats_f, rowvar=False), feats_r.mean(0),
                                     np.cov(feats_r, rowvar=False))
    assert value > 0 and value == pytest.approx(ref, rel=1e-6)

    cached = metrics.FID(feature_net=_TinyFeatures(), cache_dir=tmp_path, reference_id="test:40")
    assert cached.has_reference and cached.ref_stats.n == 40
    cached.update(fake, target=torch.zeros(40, 3, 16, 16))  # target ignored: reference comes from the cache
    assert cached.compute()["fid"] == pytest.approx(value, rel=1e-9)
    other_set = metrics.FID(feature_net=_TinyFeatures(), cache_dir=tmp_path, reference_id="test:41")
    assert not other_set.has_reference and other_set.cache_path != cached.cache_path


def test_metrics_of_one_context_share_its_networks_settings_and_fid_reference(tmp_path, monkeypatch):
    seen = []  # batch sizes the FID network ran on

    class Counting(_TinyFeatures):
        def forward(self, x):
            seen.append(len(x))
            return super().forward(x)

    monkeypatch.setattr(metrics.context, "FIDInception", lambda weights_path=None, key="": Counting())
    ctx = metrics.MetricContext(cache_dir=tmp_path, test_set_id="test:8", psnr_max_db=50.0, ssim_convention="skimage")
    assert metrics.build_metric("psnr", ctx).max_db == 50.0
    assert metrics.build_metric("ssim", ctx).convention == "skimage"
    assert metrics.build_metric("lpips", ctx).model is metrics.build_metric("diversity", ctx).lpips.model
    a, b = metrics.build_metric("fid", ctx), metrics.build_metric("fid", ctx)  # two methods, one test set
    assert a.net is b.net and a.reference is b.reference

    g = torch.Generator().manual_seed(0)
    real = torch.rand(8, 3, 16, 16, generator=g)
    fake = torch.rand(8, 3, 16, 16, generator=g) ** 2
    for i in (0, 4):
        a.update(fake[i:i + 4], real[i:i + 4])
        b.update(real[i:i + 4], real[i:i + 4])
    assert seen == [4] * 6  # per batch: a's and b's predictions, the reference once
    direct = metrics.FID(feature_net=_TinyFeatures())
    direct.update(fake, real)
    assert a.compute()["fid"] == pytest.approx(direct.compute()["fid"], rel=1e-6)  # batches of 4 vs 8
    assert abs(b.compute()["fid"]) < 1e-8 and a.cache_path.is_file()

    seen.clear()  # the next run on the same test set reads the reference from the cache
    c = metrics.build_metric("fid", metrics.MetricContext(cache_dir=tmp_path, test_set_id="test:8"))
    c.update(fake, real)
    assert c.has_reference and seen == [8] and c.compute()["fid"] == pytest.approx(a.compute()["fid"], rel=1e-6)
    d = metrics.build_metric("fid", metrics.MetricContext(test_set_id="test:8"))
    d.update(fake[:4], real[:4])
    d.reference.add(real[:4], 0, d.features)  # images 0-3 once more (another method): skipped
    assert d.ref_stats.n == 4
    with pytest.raises(ValueError, match="images from 8 given, but 4 accumulated"):
        d.reference.add(real[4:], 8, d.features)  # a gap: not the test set in order


# ---------------------------------------------------------------- FID Inception (299 px on CPU: 2 images only)


def test_fid_inception_builds_without_pytorch_fids_private_or_downloading_parts(monkeypatch):
    def download(*args, **kwargs):
        raise AssertionError("pytorch-fid's downloading constructor was called")

    # built from torchvision parts and pytorch-fid's public blocks only: no private helper, nothing patched in
    monkeypatch.delattr(pfi, "_inception_v3")
    monkeypatch.setattr(pfi, "fid_inception_v3", download)
    monkeypatch.setattr(pfi, "load_state_dict_from_url", download)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 48, 48, generator=g)
    a = metrics.FIDInception(seed=0)
    fa = a(x)
    assert fa.shape == (2, 2048) and torch.isfinite(fa).all() and fa.std() > 1e-3
    assert not a.pretrained and not metrics.FID(feature_net=a).comparable


def test_fid_inception_features_equal_pytorch_fids_own_model(tmp_path, monkeypatch):
    """pool3 features of FIDInception and of pytorch-fid's own InceptionV3 (its public constructor) with the same
    seeded random weights in pytorch-fid's file format. Theirs reads the file without a download: it lies where
    torch.hub caches FID_WEIGHTS_URL (TORCH_HOME/hub/checkpoints/<the URL's file name>)."""
    torch.manual_seed(1)
    net = build_fid_inception_v3()
    for module in net.modules():  # O(1) activations (the default init shrinks them to ~1e-8)
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    path = hub / pfi.FID_WEIGHTS_URL.rsplit("/", 1)[1]
    torch.save(net.state_dict(), path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    theirs = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    ours = metrics.FIDInception(weights_path=path)
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(2, 3, 48, 48, generator=g), torch.rand(1, 3, 48, 48, generator=g) ** 3])
    with torch.no_grad():
        expect = theirs(x)[0].flatten(1)
    assert ours.pretrained and ours.identity.startswith("pt_inception:sha1=")
    assert expect.shape == (3, 2048) and expect.std() > 1e-3
    assert torch.equal(ours(x), expect)  # the same modules, called the same way: bit for bit


def test_fid_weights_missing_or_wrong(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError) as err:
        metrics.FIDInception(weights_path=missing, key="eval.fid_weights")
    msg = str(err.value)
    assert "\n" not in msg and str(missing) in msg and "eval.fid_weights" in msg
    wrong = tmp_path / "wrong.pth"
    torch.save({"a": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="wrong.pth") as err:
        metrics.FIDInception(weights_path=wrong)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- LPIPS and diversity


def test_lpips_random_trunk_matches_package():
    pred, target = _pair(n=2, h=64, w=64, noise=0.2)
    ours = metrics.get_metric("lpips", net="alex", seed=3)
    torch.manual_seed(3)
    ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    with torch.no_grad():
        expect = ref(pred, target, normalize=True).flatten()
    torch.testing.assert_close(ours(pred, target), expect)
    assert not ours.comparable
    assert torch.all(ours(target, target).abs() < 1e-6)
    ours.update(pred, target)
    assert ours.compute()["lpips"] == pytest.approx(expect.double().mean().item(), rel=1e-6)


def test_lpips_backbone_from_file(tmp_path):
    pred, target = _pair(n=2, h=64, w=64, noise=0.2)
    torch.manual_seed(7)
    alex = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet.pth"
    torch.save(alex.state_dict(), path)
    ours = metrics.LPIPSMetric(net="alex", backbone_weights=path)
    # lpips' own wiring of a "pretrained" torchvision trunk, with torchvision's download swapped for our model.
    with mock.patch.object(lpips.pretrained_networks.tv, "alexnet", lambda *args, **kw: alex):
        ref = lpips.LPIPS(net="alex", pnet_rand=False, verbose=False).eval()
    with torch.no_grad():
        expect = ref(pred, target, normalize=True).flatten()
    torch.testing.assert_close(ours(pred, target), expect)
    assert ours.comparable
    features_only = tmp_path / "features.pth"
    torch.save(alex.features.state_dict(), features_only)
    torch.testing.assert_close(metrics.LPIPSMetric(backbone_weights=features_only)(pred, target), expect)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        metrics.LPIPSMetric(backbone_weights=tmp_path / "missing.pth")


def test_diversity():
    lp = metrics.LPIPSMetric(seed=0)
    g = torch.Generator().manual_seed(0)
    v = torch.rand(3, 3, 32, 32, generator=g)
    pairs = [lp(v[i:i + 1], v[j:j + 1]).item() for i, j in [(0, 1), (0, 2), (1, 2)]]
    assert metrics.diversity(v, lp) == pytest.approx(sum(pairs) / 3, rel=1e-5)
    assert metrics.diversity(v[:1].expand(4, -1, -1, -1), lp) == pytest.approx(0.0, abs=1e-6)
    div = metrics.get_metric("diversity", lpips_metric=lp)
    div.update(torch.stack([v, v[:1].expand(3, -1, -1, -1)]))
    assert div.compute()["diversity"] == pytest.approx(sum(pairs) / 6, rel=1e-5)
    assert not div.comparable


# ---------------------------------------------------------------- identity cosine


class _FakeArcFace:
    def __init__(self, pretrained):
        self.pretrained = pretrained
        self.seen_landmarks = None

    def __call__(self, images, landmarks=None):
        self.seen_landmarks = landmarks
        e = torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1) - 0.5
        return torch.nn.functional.normalize(e, dim=1)


def test_identity_cosine():
    pred, target = _pair(n=2, h=32, w=32, noise=0.3)
    embed = _FakeArcFace(pretrained=True)
    m = metrics.get_metric("arcface_cos", embed=embed)
    assert m.comparable
    lm = torch.zeros(2, 68, 2)
    m.update(target, target, landmarks=lm)
    assert m.compute()["arcface_cos"] == pytest.approx(1.0)
    assert embed.seen_landmarks is lm
    m.reset()
    m.update(pred, target)
    expect = (embed(pred) * embed(target)).sum(1).double().mean().item()
    assert m.compute()["arcface_cos"] == pytest.approx(expect, rel=1e-6)
    assert not metrics.IdentityCosineMetric(_FakeArcFace(pretrained=False)).comparable
    assert not metrics.IdentityCosineMetric(lambda x, lm=None: x.flatten(1)).comparable


def test_summarize_marks_comparability():
    pred, target = _pair(n=2, h=16, w=16)
    ms = [metrics.get_metric("l1"), metrics.get_metric("arcface_cos", embed=_FakeArcFace(pretrained=False))]
    for m in ms:
        m.update(pred, target)
    out = metrics.summarize(ms)
    assert out["l1"]["comparable"] and not out["arcface_cos"]["comparable"]
    assert out["l1"]["higher_is_better"] is False


# ---------------------------------------------------------------- scoring conventions


def test_quantize_rounds_half_up_like_the_png_writer(tmp_path):
    from data.io import read_image, write_image

    k = torch.arange(255, dtype=torch.float32)
    halves = (k + 0.5) / 255  # 255 x is exactly k + 0.5 here: the tie case
    assert torch.equal(halves * 255, k + 0.5)
    assert torch.equal(metrics.quantize(halves), (k + 1) / 255)  # half up (torch.round would give even k)
    assert torch.equal(metrics.quantize(torch.tensor([-0.2, 1.3])), torch.tensor([0.0, 1.0]))
    img = torch.rand(3, 9, 11, generator=torch.Generator().manual_seed(0))
    img[0, 0, :5] = halves[:5]
    write_image(tmp_path / "x.png", img)
    assert torch.equal(metrics.quantize(img), read_image(tmp_path / "x.png"))  # bit for bit what a PNG gives back


def test_fid_features_see_half_up_quantised_images():
    seen = []

    class Record(nn.Module):
        dim, pretrained, identity = 3, False, "record"

        def forward(self, x):
            seen.append(x.clone())
            return x.mean(dim=(2, 3))

    x = (torch.arange(48, dtype=torch.float32) + 0.5).div(255).view(1, 3, 4, 4)
    metrics.FID(feature_net=Record()).features(x)
    assert torch.equal(seen[0], metrics.quantize(x)) and not torch.equal(seen[0], torch.round(x * 255) / 255)


@pytest.mark.parametrize("convention", ["wang", "skimage", "edgeconnect"])
def test_ssim_conventions_match_their_references(convention):
    from skimage.color import rgb2gray

    pred, target = _pair(n=2, h=64, w=57, noise=0.15)
    m = metrics.SSIMMetric(convention=convention)
    got = m.update(pred.double(), target.double())
    for i in range(2):
        a, b = target[i].double().permute(1, 2, 0).numpy(), pred[i].double().permute(1, 2, 0).numpy()
        if convention == "wang":
            ref = structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False)
        elif convention == "skimage":  # the library's defaults
            ref = structural_similarity(a, b, channel_axis=2, data_range=1.0)
        else:  # EdgeConnect's scripts/metrics.py: grey images, window 51
            ref = structural_similarity(rgb2gray(a), rgb2gray(b), data_range=1.0, win_size=51)
        assert got[i].item() == pytest.approx(ref, abs=1e-13)


def test_ssim_conventions_differ_and_bad_settings_fail():
    pred, target = _pair(n=2, h=64, w=64, noise=0.15)
    values = {c: metrics.SSIMMetric(convention=c).update(pred, target).mean().item()
              for c in ("wang", "skimage", "edgeconnect")}
    assert len({round(v, 4) for v in values.values()}) == 3
    with pytest.raises(ValueError, match="unknown SSIM convention 'gauss'; valid: wang, skimage, edgeconnect"):
        metrics.SSIMMetric(convention="gauss")
    with pytest.raises(ValueError, match="at least 51x51"):
        metrics.SSIMMetric(convention="edgeconnect").update(pred[..., :40, :40], target[..., :40, :40])


def test_psnr_cap_counts_exact_pairs_and_merges():
    pred, target = _pair(n=3)
    a = metrics.PSNRMetric(max_db=100.0)
    a.update(torch.cat([target[:2], pred[2:]]), target)  # two exact pairs, one noisy
    b = metrics.PSNRMetric(max_db=100.0)
    b.update(target[:1], target[:1])
    a.merge(b)
    out = a.compute()
    noisy = metrics.psnr(pred[2:], target[2:]).item()
    assert out["psnr_exact"] == 3 and out["psnr"] == pytest.approx((300.0 + noisy) / 4, abs=1e-12)
    a.reset()
    assert a.compute()["psnr_exact"] == 0
