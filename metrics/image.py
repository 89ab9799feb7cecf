"""Pixel metrics on image pairs: L1, L1 inside the occlusion mask, PSNR, SSIM.

All functions take batches (N,3,H,W) (any channel count C works) with values in [0, data_range] and return one value
per image, (N,) float64, computed in float64 so averages over a test set do not drift.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.config import ConfigError

from .base import PerImageMetric


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"expected two (N,C,H,W) tensors of equal shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")


def l1(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over all pixels and channels of each image.

    Args:
        pred, target: (N,C,H,W), values in [0,1].
    Returns:
        (N,) float64, 0 for identical images.
    """
    _check_pair(pred, target)
    diff = (pred.to(torch.float64) - target.to(torch.float64)).abs()
    return diff.flatten(1).mean(dim=1)


def l1_hole(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean absolute error inside the occlusion mask: sum(|pred - target| * m) / (C * sum(m)).

    Args:
        pred, target: (N,C,H,W), values in [0,1].
        mask: (N,1,H,W) occlusion map m in {0,1} (1 = occluded by the face mask).
    Returns:
        (N,) float64; NaN for an image whose mask is empty (undefined; PerImageMetric does not count it).
    """
    _check_pair(pred, target)
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != pred.shape[0] or mask.shape[2:] != pred.shape[2:]:
        raise ValueError(f"mask must be (N,1,H,W) matching images {tuple(pred.shape)}, got {tuple(mask.shape)}")
    m = mask.to(torch.float64)
    diff = (pred.to(torch.float64) - target.to(torch.float64)).abs()
    num = (diff * m).flatten(1).sum(dim=1)
    den = pred.shape[1] * m.flatten(1).sum(dim=1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, math.nan))


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image, 10 log10(data_range^2 / MSE), MSE over all pixels and channels.

    Same definition as ``skimage.metrics.peak_signal_noise_ratio(target_i, pred_i, data_range=data_range)`` applied
    to each image. Identical images (MSE 0) give +inf, as scikit-image does; there is no cap here (PSNRMetric can cap).

    Args:
        pred, target: (N,C,H,W), values in [0, data_range].
    Returns:
        (N,) float64 in dB.
    """
    _check_pair(pred, target)
    mse = (pred.to(torch.float64) - target.to(torch.float64)).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)  # mse 0 -> division gives inf -> +inf dB


def gaussian_kernel1d(sigma: float = 1.5, radius: int = 5, dtype=torch.float64, device=None) -> Tensor:
    """Normalised 1-D Gaussian taps exp(-x^2 / 2 sigma^2), x = -radius..radius. Returns (2 radius + 1,)."""
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _filter_valid(x: Tensor, k: Tensor) -> Tensor:
    """Separable 'valid' (no padding) filtering of every channel of x (N,C,H,W) with the 1-D kernel k."""
    c = x.shape[1]
    kh = k.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    kw = k.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    return F.conv2d(F.conv2d(x, kh, groups=c), kw, groups=c)


GREY_WEIGHTS = (0.2125, 0.7154, 0.0721)  # skimage.color.rgb2gray (ITU-R BT.709 luma)

# name -> (description for reports, ssim() keyword arguments). Published inpainting tables use all three.
SSIM_CONVENTIONS: dict[str, tuple[str, dict]] = {
    "wang": ("Wang et al. 2004: Gaussian window 11 px, sigma 1.5, population covariance, mean over RGB channels "
             "(skimage gaussian_weights=True, use_sample_covariance=False)", {}),
    "skimage": ("scikit-image defaults: uniform 7x7 window, sample covariance, mean over RGB channels",
                {"window": "uniform", "win_size": 7, "sample_covariance": True}),
    "edgeconnect": ("EdgeConnect's metrics script (LaFIn builds on it): grey (skimage rgb2gray), uniform 51x51 "
                    "window, sample covariance", {"window": "uniform", "win_size": 51, "sample_covariance": True,
                                                  "grey": True}),
}


def ssim_window(convention: str = "wang") -> int:
    """Side of the SSIM window of a named convention (images must be at least that large)."""
    if convention not in SSIM_CONVENTIONS:
        raise ValueError(f"unknown SSIM convention {convention!r}; valid: {', '.join(SSIM_CONVENTIONS)}")
    kw = SSIM_CONVENTIONS[convention][1]
    return kw.get("win_size") or 2 * int(3.5 * 1.5 + 0.5) + 1


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0, sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03, window: str = "gaussian", win_size: int | None = None, sample_covariance: bool = False,
         grey: bool = False) -> Tensor:
    """Structural similarity per image (Wang et al. 2004), averaged over channels.

    Default conventions (those of ``skimage.metrics.structural_similarity(..., channel_axis=...,
    data_range=data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``, which this matches to
    ~1e-7): Gaussian window of 11 taps (radius int(3.5 sigma + 0.5) = 5, sigma 1.5), applied separably and only where
    the window fits inside the image ('valid', no padding, so the SSIM map is (H-10)x(W-10)); local statistics are
    weighted means and population (not sample) covariances; C1 = (K1 R)^2, C2 = (K2 R)^2 with K1 = 0.01, K2 = 0.03,
    R = data_range; the SSIM map is averaged per channel, then over channels. Computed in float64.

    ``window="uniform"`` with ``win_size`` (odd) and ``sample_covariance=True`` gives scikit-image's default
    (win_size 7) and, with ``grey=True`` (RGB -> skimage's rgb2gray luma first) and win_size 51, EdgeConnect's
    script; ``SSIM_CONVENTIONS`` names these settings. skimage filters with 'reflect' padding and then crops
    (win_size - 1) / 2 pixels per side, which is exactly the 'valid' map used here.

    Args:
        pred, target: (N,C,H,W), values in [0, data_range], H and W >= the window (C = 3 when grey).
    Returns:
        (N,) float64 in [-1,1]; 1 for identical images.
    """
    _check_pair(pred, target)
    if window not in ("gaussian", "uniform"):
        raise ValueError(f"ssim window must be 'gaussian' or 'uniform', got {window!r}")
    size = win_size if win_size is not None else 2 * int(3.5 * sigma + 0.5) + 1
    if size < 1 or size % 2 == 0:
        raise ValueError(f"ssim window size must be odd and positive, got {size}")
    if min(pred.shape[-2:]) < size:
        raise ValueError(f"ssim needs images of at least {size}x{size}, got {tuple(pred.shape)}")
    x = pred.to(torch.float64)
    y = target.to(torch.float64)
    if grey:
        if x.shape[1] != 3:
            raise ValueError(f"grey SSIM needs RGB images, got {x.shape[1]} channels")
        w = torch.tensor(GREY_WEIGHTS, dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
        x, y = (x * w).sum(1, keepdim=True), (y * w).sum(1, keepdim=True)
    if window == "gaussian":
        k = gaussian_kernel1d(sigma, size // 2, dtype=torch.float64, device=x.device)
    else:
        k = torch.full((size,), 1.0 / size, dtype=torch.float64, device=x.device)
    cov_norm = size * size / (size * size - 1) if sample_covariance else 1.0
    mx, my = _filter_valid(x, k), _filter_valid(y, k)
    vx = cov_norm * (_filter_valid(x * x, k) - mx * mx)
    vy = cov_norm * (_filter_valid(y * y, k) - my * my)
    cxy = cov_norm * (_filter_valid(x * y, k) - mx * my)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(2, 3)).mean(dim=1)


class L1Metric(PerImageMetric):
    """Mean L1 over whole images. update(pred, target, mask=None): images (N,3,H,W) in [0,1]."""

    name = "l1"
    higher_is_better = False
    by_area = True

    def per_image(self, pred, target, mask=None, landmarks=None):
        return l1(pred, target)


class L1HoleMetric(PerImageMetric):
    """Mean L1 inside the occlusion mask. update(pred, target, mask): mask (N,1,H,W) required."""

    name = "l1_hole"
    higher_is_better = False
    by_area = True

    def per_image(self, pred, target, mask=None, landmarks=None):
        if mask is None:
            raise ValueError("l1_hole needs the occlusion mask: update(pred, target, mask=m)")
        return l1_hole(pred, target, mask)


class PSNRMetric(PerImageMetric):
    """Mean of per-image PSNR (dB). Identical images give +inf, which makes the mean inf unless ``max_db`` caps
    each per-image value (default: no cap, so a leak of the ground truth shows up). ``exact`` counts the image
    pairs that were identical (infinite PSNR before the cap); ``compute()`` reports it as ``psnr_exact``."""

    name = "psnr"
    by_area = True

    def __init__(self, data_range: float = 1.0, max_db: float | None = None) -> None:
        self.data_range = data_range
        self.max_db = max_db
        super().__init__()

    @classmethod
    def from_context(cls, ctx) -> PSNRMetric:
        return cls(max_db=ctx.psnr_max_db)

    def reset(self) -> None:
        super().reset()
        self.exact = 0

    def per_image(self, pred, target, mask=None, landmarks=None):
        v = psnr(pred, target, self.data_range)
        self.exact += int(torch.isinf(v).sum())
        return v if self.max_db is None else v.clamp(max=self.max_db)

    def merge(self, other: PSNRMetric) -> None:
        super().merge(other)
        self.exact += other.exact

    def compute(self) -> dict[str, float]:
        return {**super().compute(), "psnr_exact": self.exact}


class SSIMMetric(PerImageMetric):
    """Mean of per-image SSIM under a named convention (``SSIM_CONVENTIONS``; see ``ssim``)."""

    name = "ssim"
    by_area = True

    def __init__(self, data_range: float = 1.0, convention: str = "wang") -> None:
        ssim_window(convention)  # validates the name
        self.data_range = data_range
        self.convention = convention
        super().__init__()

    @classmethod
    def from_context(cls, ctx) -> SSIMMetric:
        win = ssim_window(ctx.ssim_convention)
        if ctx.image_size is not None and ctx.image_size < win:
            raise ConfigError(f"ssim_convention {ctx.ssim_convention}: its {win}x{win} window needs test images of at "
                             f"least {win} px, got {ctx.image_size}")
        return cls(convention=ctx.ssim_convention)

    def per_image(self, pred, target, mask=None, landmarks=None):
        return ssim(pred, target, self.data_range, **SSIM_CONVENTIONS[self.convention][1])
