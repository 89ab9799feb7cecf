"""Frozen ArcFace identity features F(.) for the identity loss (eq. 4) and the ArcFace-cosine metric.

The trunk is insightface arcface_torch's IResNet (docs/formats.md sec. 2) with identical module names, so a released
``backbone.pth`` loads with ``strict=True`` into ``ArcFace(...).backbone``. Faces are aligned to the 112x112 ArcFace
template with a 5-point similarity transform, warped with ``grid_sample`` so gradients reach the input image.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import ConfigError
from models.weights import load_state_dict_file

__all__ = [
    "ARCFACE_TEMPLATE",
    "IRESNET_LAYERS",
    "IBasicBlock",
    "IResNet",
    "ArcFace",
    "five_points",
    "similarity_transform",
    "invert_affine",
    "warp_affine",
    "align_arcface",
]

# 112x112 template (pixel coordinates, OpenCV convention): left eye, right eye, nose tip, left/right mouth corner.
ARCFACE_TEMPLATE = torch.tensor([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
])
ARCFACE_SIZE = 112

IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
}


class IBasicBlock(nn.Module):
    """Pre-activation-style block: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the shortcut.

    No activation after the sum. (B,in,H,W) -> (B,out,H/stride,W/stride).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, eps=1e-5)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=1e-5)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=1e-5)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch, eps=1e-5),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """arcface_torch IResNet: (B,3,112,112) normalised to [-1,1] -> (B,512) raw (un-normalised) embeddings."""

    def __init__(self, layers: tuple[int, int, int, int], num_features: int = 512):
        super().__init__()
        widths = (64, 128, 256, 512)
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        in_ch = 64
        for k, (n_blocks, width) in enumerate(zip(layers, widths), start=1):
            blocks = [IBasicBlock(in_ch if i == 0 else width, width, stride=2 if i == 0 else 1)
                      for i in range(n_blocks)]
            setattr(self, f"layer{k}", nn.Sequential(*blocks))
            in_ch = width
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        # Random-init runs (no weights file) keep PyTorch's default init: arcface_torch's N(0, 0.1) conv init makes
        # activations grow ~5x per block in eval mode and can overflow float32 in the final normalisation.
        nn.init.ones_(self.features.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.bn2(x).flatten(1)
        return self.features(self.fc(x))


def five_points(landmarks: torch.Tensor) -> torch.Tensor:
    """(B,68,2) iBUG-68 -> (B,5,2): left eye (mean 36,39), right eye (mean 42,45), nose tip 30, mouth 48, 54."""
    lm = landmarks
    return torch.stack([
        (lm[:, 36] + lm[:, 39]) / 2,
        (lm[:, 42] + lm[:, 45]) / 2,
        lm[:, 30],
        lm[:, 48],
        lm[:, 54],
    ], dim=1)


def similarity_transform(src_pts: torch.Tensor, dst_pts: torch.Tensor) -> torch.Tensor:
    """Least-squares 2-D similarity (scale, rotation, translation; no reflection) mapping src onto dst.

    src_pts (B,N,2) or (N,2), dst_pts (B,N,2) or (N,2) -> (B,2,3) matrices A with dst ~ A @ [x, y, 1]^T.
    This is Umeyama's solution restricted to proper rotations, written in closed form: with centred points as
    complex numbers s_i, d_i, the optimum is a = sum(conj(s_i) d_i) / sum |s_i|^2 (= scale * e^{i angle}).
    No SVD, so it is smooth and differentiable in both point sets. Degenerate src (all points equal) -> scale 0.
    """
    if src_pts.dim() == 2:
        src_pts = src_pts.unsqueeze(0)
    if dst_pts.dim() == 2:
        dst_pts = dst_pts.unsqueeze(0)
    src_pts, dst_pts = torch.broadcast_tensors(src_pts, dst_pts)
    src_mean, dst_mean = src_pts.mean(dim=1), dst_pts.mean(dim=1)  # (B,2)
    s, d = src_pts - src_mean[:, None], dst_pts - dst_mean[:, None]
    denom = (s ** 2).sum(dim=(1, 2)).clamp_min(1e-12)
    a = ((s[..., 0] * d[..., 0] + s[..., 1] * d[..., 1]).sum(dim=1)) / denom  # Re(conj(s) d)
    b = ((s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(dim=1)) / denom  # Im(conj(s) d)
    rot = torch.stack([torch.stack([a, -b], dim=-1), torch.stack([b, a], dim=-1)], dim=1)  # (B,2,2)
    trans = dst_mean - (rot @ src_mean.unsqueeze(-1)).squeeze(-1)
    return torch.cat([rot, trans.unsqueeze(-1)], dim=-1)


def invert_affine(mat: torch.Tensor) -> torch.Tensor:
    """Inverse of (B,2,3) affine maps."""
    lin_inv = torch.linalg.inv(mat[:, :, :2])
    return torch.cat([lin_inv, -(lin_inv @ mat[:, :, 2:])], dim=-1)


def _pixel_to_norm(width: int, height: int, ref: torch.Tensor) -> torch.Tensor:
    """3x3 map from pixel coordinates (centres at integers) to grid_sample's align_corners=False coordinates."""
    return ref.new_tensor([[2.0 / width, 0.0, 1.0 / width - 1.0],
                           [0.0, 2.0 / height, 1.0 / height - 1.0],
                           [0.0, 0.0, 1.0]])


def warp_affine(images: torch.Tensor, mat: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """Differentiable ``cv2.warpAffine`` (bilinear, zero border): output(p) = input(mat^-1 p).

    images (B,C,H,W); mat (B,2,3) maps input pixel coordinates to output pixel coordinates; out_size (H_o, W_o).
    Gradients flow to ``images`` (and to ``mat``). Returns (B,C,H_o,W_o).
    """
    b, c, h, w = images.shape
    h_o, w_o = out_size
    bottom = mat.new_tensor([0.0, 0.0, 1.0]).expand(mat.shape[0], 1, 3)
    inv = torch.cat([invert_affine(mat), bottom], dim=1)  # output pixel -> input pixel
    theta = _pixel_to_norm(w, h, mat) @ inv @ torch.linalg.inv(_pixel_to_norm(w_o, h_o, mat))
    grid = F.affine_grid(theta[:, :2].to(images.dtype), [b, c, h_o, w_o], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def align_arcface(images: torch.Tensor, landmarks: torch.Tensor | None) -> torch.Tensor:
    """Crop faces to the 112x112 ArcFace template. images (B,3,H,W) [0,1] -> (B,3,112,112) [0,1].

    landmarks (B,68,2) pixel coordinates: similarity from the 5 derived points to the template (as insightface's
    ``norm_crop``). None: the central square of the image resized to 112 (only sensible for images that are
    already face-centred crops).
    """
    if landmarks is None:
        h, w = images.shape[2:]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crop = images[:, :, top:top + side, left:left + side]
        return F.interpolate(crop, size=(ARCFACE_SIZE, ARCFACE_SIZE), mode="bilinear", align_corners=False,
                             antialias=True)
    template = ARCFACE_TEMPLATE.to(device=landmarks.device, dtype=landmarks.dtype)
    mat = similarity_transform(five_points(landmarks), template)
    return warp_affine(images, mat, (ARCFACE_SIZE, ARCFACE_SIZE))


class ArcFace(nn.Module):
    """Frozen identity encoder. forward(images (B,3,H,W) [0,1], landmarks (B,68,2) or None) -> (B,512), unit norm.

    ``arch``: one of ``IRESNET_LAYERS`` (r18, r34, r50, r100). ``weights``: arcface_torch ``backbone.pth`` path
    (plain state dict, ``module.`` prefixes stripped); None -> random weights and ``.pretrained = False`` (scores
    are then not comparable with published numbers). Parameters never require grad and the module stays in eval
    mode even when a parent calls ``.train()``; gradients still flow to the input images.
    """

    def __init__(self, arch: str = "r50", weights: str | os.PathLike | None = None, what: str = "arcface_weights"):
        super().__init__()
        if arch not in IRESNET_LAYERS:
            raise ConfigError(f"unknown ArcFace arch {arch!r}; valid: {', '.join(IRESNET_LAYERS)}")
        self.arch = arch
        self.backbone = IResNet(IRESNET_LAYERS[arch])
        if weights:
            self.backbone.load_state_dict(load_state_dict_file(weights, what), strict=True)
        self.pretrained = bool(weights)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> ArcFace:
        # BatchNorm must keep its running statistics: the module is a fixed feature extractor.
        return super().train(False)

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        crops = align_arcface(images, landmarks)
        emb = self.backbone((crops - 0.5) / 0.5)
        return F.normalize(emb, dim=1)
