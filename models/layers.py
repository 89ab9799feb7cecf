"""Building blocks shared by N_3D, N_G and N_D.

Segmentation blocks (``ConvBNReLU``, ``AttentionRefinement``, ``FeatureFusion``, ``SegOutput``) follow the
BiSeNet context path used by the authors' FaceEncoder; ``GatedConv`` is the feature gate placed before ResNet's
last stage; the spectrally-normalised blocks (``ConvNormAct``, ``ResBlockIN``, ``UpBlock``, ``DownBlockD``) build
N_G and N_D. Every block keeps the spatial size unless its docstring says otherwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = [
    "sn_conv2d",
    "ConvBNReLU",
    "AttentionRefinement",
    "FeatureFusion",
    "SegOutput",
    "GatedConv",
    "ConvNormAct",
    "ResBlockIN",
    "UpBlock",
    "DownBlockD",
    "global_avg",
]


def global_avg(x: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) -> (B,C,1,1) spatial mean."""
    return x.mean(dim=(2, 3), keepdim=True)


def sn_conv2d(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0,
              bias: bool = True) -> nn.Conv2d:
    """A ``Conv2d`` whose weight is spectrally normalised (one power iteration per training forward).

    Uses ``torch.nn.utils.parametrizations.spectral_norm`` (deep-copyable, unlike the legacy hook, so EMA copies
    work); state-dict keys are ``parametrizations.weight.{original,0._u,0._v}`` (see
    ``models.weights.rename_spectral_norm_keys`` for legacy checkpoints).
    """
    return spectral_norm(nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=bias))


def _kaiming_a1(conv: nn.Conv2d) -> None:
    # BiSeNet's initialisation (kaiming normal, a=1), kept so training from scratch behaves like the release.
    nn.init.kaiming_normal_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ConvBNReLU(nn.Module):
    """Conv (no bias) -> BatchNorm -> ReLU. (B,in,H,W) -> (B,out,H/stride,W/stride)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, padding: int | None = None):
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        _kaiming_a1(self.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class AttentionRefinement(nn.Module):
    """BiSeNet ARM: 3x3 ConvBNReLU, then channel attention from the global mean. (B,in,H,W) -> (B,out,H,W).

    The attention BatchNorm sees (B,out,1,1) inputs, so training mode needs a batch of at least 2.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch, 3)
        self.att_conv = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.att_bn = nn.BatchNorm2d(out_ch)
        _kaiming_a1(self.att_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        att = torch.sigmoid(self.att_bn(self.att_conv(global_avg(feat))))
        return feat * att


class FeatureFusion(nn.Module):
    """BiSeNet FFM: concat -> 1x1 ConvBNReLU -> squeeze-excite re-weighting with a residual.

    forward(a (B,Ca,H,W), b (B,Cb,H,W)) with Ca + Cb = in_ch -> (B,out_ch,H,W).
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.fuse = ConvBNReLU(in_ch, out_ch, 1)
        self.att_down = nn.Conv2d(out_ch, out_ch // 4, 1, bias=False)
        self.att_up = nn.Conv2d(out_ch // 4, out_ch, 1, bias=False)
        _kaiming_a1(self.att_down)
        _kaiming_a1(self.att_up)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        feat = self.fuse(torch.cat([a, b], dim=1))
        att = torch.sigmoid(self.att_up(F.relu(self.att_down(global_avg(feat)))))
        return feat * att + feat


class SegOutput(nn.Module):
    """3x3 ConvBNReLU(in->mid) then a bias-free 1x1 projection to ``n_classes`` logits, same resolution."""

    def __init__(self, in_ch: int, mid_ch: int, n_classes: int = 1):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch, 3)
        self.proj = nn.Conv2d(mid_ch, n_classes, 1, bias=False)
        _kaiming_a1(self.proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.conv(x))


class GatedConv(nn.Module):
    """Per-position, per-channel soft gate: x * sigmoid(conv3x3(relu(bn(conv3x3(x))))). (B,C,H,W) -> (B,C,H,W).

    Lets the coefficient branch suppress features of occluded regions (paper sec. 3.1; the release's ``gated``).
    ``gate`` indices 0 (conv C->C/2), 1 (BN), 3 (conv C/2->C) hold the parameters.
    """

    def __init__(self, channels: int, mid_channels: int | None = None):
        super().__init__()
        mid = channels // 2 if mid_channels is None else mid_channels
        self.gate = nn.Sequential(
            nn.Conv2d(channels, mid, 3, padding=1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, channels, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


def _instance_norm(ch: int) -> nn.InstanceNorm2d:
    # affine, no running statistics: train and eval behave identically (as the release).
    return nn.InstanceNorm2d(ch, affine=True, track_running_stats=False)


class ConvNormAct(nn.Module):
    """Spectral-norm conv (no bias) -> InstanceNorm(affine) -> ReLU. (B,in,H,W) -> (B,out,H/stride,W/stride)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = sn_conv2d(in_ch, out_ch, kernel_size, stride, padding, bias=False)
        self.norm = _instance_norm(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class ResBlockIN(nn.Module):
    """[SN conv3x3, IN, ReLU, SN conv3x3, IN] with a variance-preserving skip: (x + f(x)) / sqrt(2).

    (B,C,H,W) -> (B,C,H,W). ``body`` indices 0, 1, 3, 4 hold the parameters.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            sn_conv2d(channels, channels, 3, padding=1, bias=False),
            _instance_norm(channels),
            nn.ReLU(inplace=True),
            sn_conv2d(channels, channels, 3, padding=1, bias=False),
            _instance_norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.body(x)) / math.sqrt(2.0)


class UpBlock(nn.Module):
    """SN conv3x3 (no bias) -> bilinear x2 (align_corners=True, as the release) -> IN -> ReLU.

    (B,in,H,W) -> (B,out,2H,2W).
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = sn_conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.norm = _instance_norm(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.conv(x), scale_factor=2, mode="bilinear", align_corners=True)
        return F.relu(self.norm(x))


class DownBlockD(nn.Module):
    """Discriminator block: IN(in) -> SN conv3x3 (bias) -> LeakyReLU(0.2) -> AvgPool2. (B,in,H,W) -> (B,out,H/2,W/2)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.norm = _instance_norm(in_ch)
        self.conv = sn_conv2d(in_ch, out_ch, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.leaky_relu(self.conv(self.norm(x)), 0.2), 2)
