"""Loss functions against hand computations on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from losses.adversarial import d_bce, g_nonsaturating, r1_penalty
from losses.identity import identity_loss
from losses.inpaint import pixel_l1, tv_loss
from losses.recon import coef_l1, landmark_loss, landmark_weights, photo_loss
from losses.seg import bce_ohem
from models.discriminator import Discriminator


def _bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_bce_ohem_keeps_exactly_the_hardest_pixels():
    # 10 pixels, target 1; logits 0..9 -> losses strictly decreasing; keep_ratio 0.3 keeps logits 0, 1, 2.
    logits = torch.arange(10.0).reshape(1, 1, 2, 5)
    target = torch.ones_like(logits)
    expected = sum(_bce(v, 1.0) for v in (0.0, 1.0, 2.0)) / 3
    assert float(bce_ohem(logits, target, keep_ratio=0.3)) == pytest.approx(expected, rel=1e-6)
    # min_kept wins over the ratio
    expected5 = sum(_bce(float(v), 1.0) for v in range(5)) / 5
    assert float(bce_ohem(logits, target, keep_ratio=0.1, min_kept=5)) == pytest.approx(expected5, rel=1e-6)
    # keep_ratio 1 is plain BCE (eq. 1)
    plain = sum(_bce(float(v), 1.0) for v in range(10)) / 10
    assert float(bce_ohem(logits, target, keep_ratio=1.0)) == pytest.approx(plain, rel=1e-6)


def test_bce_ohem_gradient_only_on_kept_pixels_and_per_image():
    logits = torch.tensor([[-3.0, 2.0, 0.5, 4.0]]).reshape(1, 1, 2, 2).requires_grad_()
    target = torch.tensor([[1.0, 0.0, 1.0, 1.0]]).reshape(1, 1, 2, 2)
    # losses: bce(-3,1)=3.05, bce(2,0)=2.13, bce(0.5,1)=0.47, bce(4,1)=0.018 -> keep the first two
    loss = bce_ohem(logits, target, keep_ratio=0.5)
    assert float(loss) == pytest.approx((_bce(-3, 1) + _bce(2, 0)) / 2, rel=1e-6)
    loss.backward()
    grad = logits.grad.flatten()
    assert grad[0] != 0 and grad[1] != 0 and grad[2] == 0 and grad[3] == 0
    # per image: image 0 easy (logit 5, target 1), image 1 hard; each image keeps its own top half
    two = torch.tensor([5.0, 4.0, -1.0, -2.0]).reshape(2, 1, 1, 2)
    tgt = torch.ones_like(two)
    per_image = (_bce(4.0, 1) + _bce(-2.0, 1)) / 2
    pooled = (_bce(-1.0, 1) + _bce(-2.0, 1)) / 2
    assert float(bce_ohem(two, tgt, keep_ratio=0.5, per_image=True)) == pytest.approx(per_image, rel=1e-6)
    assert float(bce_ohem(two, tgt, keep_ratio=0.5)) == pytest.approx(pooled, rel=1e-6)


def test_coef_l1():
    pred = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.5, 0.5]])
    target = torch.tensor([[0.0, 0.0, 0.0], [0.5, 1.5, 0.5]])
    assert float(coef_l1(pred, target)) == pytest.approx((1 + 2 + 0 + 0 + 1 + 0) / 6)


def test_photo_loss_hand_and_empty_region():
    rendered = torch.zeros(1, 3, 1, 3)
    image = torch.zeros(1, 3, 1, 3)
    image[0, :, 0, 0] = torch.tensor([3.0, 4.0, 0.0])  # distance 5
    image[0, :, 0, 1] = torch.tensor([1.0, 0.0, 0.0])  # distance 1
    image[0, :, 0, 2] = torch.tensor([9.0, 9.0, 9.0])  # outside the region
    mask = torch.tensor([1.0, 1.0, 0.0]).reshape(1, 1, 1, 3)
    assert float(photo_loss(rendered, image, mask)) == pytest.approx((5 + 1) / 2, rel=1e-6)
    empty = photo_loss(rendered.requires_grad_(), image, torch.zeros_like(mask))
    assert torch.isfinite(empty) and float(empty) == 0.0
    empty.backward()
    assert torch.isfinite(rendered.grad).all()
    # identical images: finite gradient despite the norm's kink at 0
    same = torch.rand(1, 3, 4, 4, requires_grad=True)
    photo_loss(same, same.detach(), torch.ones(1, 1, 4, 4)).backward()
    assert torch.isfinite(same.grad).all()


def test_landmark_weights_indices():
    w = landmark_weights()
    assert w.shape == (68,)
    twenty = set(range(27, 36)) | set(range(60, 68))
    for i in range(68):
        assert float(w[i]) == (20.0 if i in twenty else 1.0), i
    assert float(landmark_weights(nose=5, inner_mouth=7)[30]) == 5.0
    assert float(landmark_weights(nose=5, inner_mouth=7)[65]) == 7.0


def test_landmark_loss_hand():
    pred = torch.zeros(2, 68, 2)
    target = torch.zeros(2, 68, 2)
    pred[0, 0] = torch.tensor([3.0, 4.0])  # sq 25, weight 1
    pred[1, 30] = torch.tensor([1.0, 1.0])  # sq 2, weight 20
    w = landmark_weights()
    expected = ((25 * 1) / 68 + (2 * 20) / 68) / 2
    assert float(landmark_loss(pred, target, w)) == pytest.approx(expected, rel=1e-6)
    assert float(landmark_loss(pred, target)) == pytest.approx(expected, rel=1e-6)


def test_identity_loss():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # cos 1 and cos 0
    assert float(identity_loss(a, b)) == pytest.approx(0.5, abs=1e-6)


def test_pixel_l1_and_tv():
    pred = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])  # (1,1,2,2)
    assert float(pixel_l1(pred, torch.zeros_like(pred))) == pytest.approx(7 / 4)
    # dx: (1-0), (4-2) -> 1 + 4; dy: (2-0), (4-1) -> 4 + 9; / (H W C) = 4
    assert float(tv_loss(pred)) == pytest.approx((1 + 4 + 4 + 9) / 4)
    assert float(tv_loss(torch.ones(2, 3, 5, 5))) == 0.0


def test_g_and_d_bce():
    fake = torch.tensor([0.0, 2.0])
    real = torch.tensor([1.0, -1.0])
    sig = torch.sigmoid
    g = -(torch.log(sig(fake))).mean()
    d = -(torch.log(sig(real))).mean() - (torch.log(1 - sig(fake))).mean()
    assert float(g_nonsaturating(fake)) == pytest.approx(float(g), rel=1e-6)
    assert float(d_bce(real, fake)) == pytest.approx(float(d), rel=1e-6)


def test_r1_penalty_linear_discriminator():
    # D(x) = sum(w * x) -> dD/dx = w for every sample -> penalty 0.5 * ||w||^2
    w = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]], requires_grad=True)
    x = torch.rand(3, 1, 2, 2, requires_grad=True)
    logits = (w * x).sum(dim=(1, 2, 3))
    pen = r1_penalty(logits, x)
    assert float(pen) == pytest.approx(0.5 * (1 + 4 + 0.25 + 9), rel=1e-6)
    pen.backward()  # create_graph: the penalty trains D; d(0.5||w||^2)/dw = w
    torch.testing.assert_close(w.grad, w.detach())
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(logits, torch.rand(3, 1, 2, 2))


def test_r1_penalty_through_spectral_norm_discriminator():
    torch.manual_seed(0)
    disc = Discriminator(32, base_channels=8)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    pen = r1_penalty(disc(x), x)
    pen.backward()
    assert torch.isfinite(pen) and float(pen) > 0
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in disc.parameters())


def test_losses_return_scalars():
    x = torch.rand(2, 3, 8, 8)
    for value in (pixel_l1(x, x), tv_loss(x), g_nonsaturating(torch.zeros(2)), coef_l1(x, x),
                  bce_ohem(torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8))):
        assert isinstance(value, torch.Tensor) and value.dim() == 0
