"""N_3D: joint 3DMM-coefficient regression and mask segmentation (paper sec. 3.1).

Layout (as the authors' FaceEncoder, docs/formats.md sec. 5):

    x (B,3,H,W) in [0,1] -> ResNet stem -> layer1 (w1, H/4) -> layer2 (w2, H/8) -> layer3 (w3, H/16)
      segmentation: BiSeNet context path on layer2/layer3 + fusion with layer1 -> 1 logit, upsampled to (H,W)
      coefficients: GatedConv(layer3) -> layer4 (w4, H/32) -> global mean -> 1x1 conv -> n_coeffs (zero-init)

For ResNet-50, (w1, w2, w3, w4) = (256, 512, 1024, 2048) and the segmentation width is 256, the release's sizes;
smaller backbones scale every segmentation width by w3 / 1024. Inputs are not mean/std normalised (Deng et al.).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from engine.config import ConfigError
from engine.files import FileReadError
from models.layers import AttentionRefinement, ConvBNReLU, FeatureFusion, GatedConv, SegOutput, global_avg
from models.weights import load_state_dict_file, rename_by_prefix, strip_prefix

__all__ = [
    "BACKBONES",
    "DengReconNet",
    "ReconNet",
    "SegHead",
    "build_deng_recon",
    "build_recon3d",
    "load_imagenet_backbone",
    "load_deng_net_recon",
    "load_deng_checkpoint",
    "key_map_authors_release",
    "load_authors_release",
    "DENG_FINAL_LAYER_SIZES",
]

# Deng et al.'s seven final 1x1 convs: id, exp, tex, angle, gamma, trans_xy, trans_z -- concatenated this is our
# coefficient layout order (id 80 | exp 64 | tex 80 | angle 3 | gamma 27 | trans 3).
DENG_FINAL_LAYER_SIZES = (80, 64, 80, 3, 27, 2, 1)


@dataclass(frozen=True)
class BackboneSpec:
    """A torchvision ResNet constructor and its four stage widths."""

    build: Callable[..., torchvision.models.ResNet]
    widths: tuple[int, int, int, int]


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(torchvision.models.resnet18, (64, 128, 256, 512)),
    "resnet34": BackboneSpec(torchvision.models.resnet34, (64, 128, 256, 512)),
    "resnet50": BackboneSpec(torchvision.models.resnet50, (256, 512, 1024, 2048)),
}


def _backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; valid: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


class SegHead(nn.Module):
    """BiSeNet-style context path + fusion over layer1-3 features, with one main and two auxiliary 1-logit heads.

    forward(f4 (B,w1,H/4), f8 (B,w2,H/8), f16 (B,w3,H/16), size (H,W), with_aux) ->
        (main (B,1,H,W), [aux8 (B,1,H,W), aux16 (B,1,H,W)] or []); logits, bilinear (align_corners=True) upsampled.
    aux8 reads the context feature at 1/4 resolution, aux16 the one at 1/8 (the release's conv_out8 / conv_out16).
    """

    def __init__(self, w1: int, w2: int, w3: int, mid: int):
        super().__init__()
        self.arm8 = AttentionRefinement(w2, mid)
        self.arm16 = AttentionRefinement(w3, mid)
        self.conv_head8 = ConvBNReLU(mid, mid, 3)
        self.conv_head16 = ConvBNReLU(mid, mid, 3)
        self.conv_avg = ConvBNReLU(w3, mid, 1)
        self.ffm = FeatureFusion(w1 + mid, mid)
        self.out = SegOutput(mid, mid, 1)
        self.out8 = SegOutput(mid, mid // 2, 1)
        self.out16 = SegOutput(mid, mid // 2, 1)

    def forward(self, f4: torch.Tensor, f8: torch.Tensor, f16: torch.Tensor, size: tuple[int, int],
                with_aux: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        context = self.conv_avg(global_avg(f16))  # (B,mid,1,1), broadcast over f16's grid
        ctx16 = self.arm16(f16) + context
        ctx16 = self.conv_head16(F.interpolate(ctx16, size=f8.shape[2:], mode="nearest"))  # 1/8
        ctx8 = self.arm8(f8) + ctx16
        ctx8 = self.conv_head8(F.interpolate(ctx8, size=f4.shape[2:], mode="nearest"))  # 1/4
        main = self._up(self.out(self.ffm(f4, ctx8)), size)
        aux = [self._up(self.out8(ctx8), size), self._up(self.out16(ctx16), size)] if with_aux else []
        return main, aux

    @staticmethod
    def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ReconNet(nn.Module):
    """N_3D. forward(x (B,3,H,W) in [0,1], H and W multiples of 32) -> dict:

    - ``coeffs`` (B, n_coeffs): 3DMM coefficients in the layout of ``renderer.morphable.CoeffLayout``;
      exactly 0 at initialisation (zero-initialised head), i.e. the mean face.
    - ``seg_logits`` (B,1,H,W): occlusion-mask logits (sigmoid -> P(occluded)).
    - ``aux_logits``: [(B,1,H,W), (B,1,H,W)] auxiliary logits in training mode, ``[]`` in eval mode.

    BatchNorm on pooled (B,C,1,1) features means training mode needs a batch of at least 2 per device.
    Submodules: ``backbone`` (torchvision ResNet, ``fc`` = Identity), ``gated``, ``seg_head``, ``coeff_head``.
    """

    def __init__(self, backbone: str = "resnet50", n_coeffs: int = 257, seg_channels: int | None = None,
                 coeff_scale: torch.Tensor | None = None):
        super().__init__()
        spec = _backbone_spec(backbone)
        self.backbone_name = backbone
        self.n_coeffs = n_coeffs
        self.backbone = spec.build(weights=None)
        self.backbone.fc = nn.Identity()  # no classifier: no fc.* keys, matching Deng's and the release's files
        w1, w2, w3, w4 = spec.widths
        mid = seg_channels if seg_channels is not None else max(w3 // 4, 16)
        self.gated = GatedConv(w3)
        self.seg_head = SegHead(w1, w2, w3, mid)
        self.coeff_head = nn.Conv2d(w4, n_coeffs, 1)
        nn.init.zeros_(self.coeff_head.weight)
        nn.init.zeros_(self.coeff_head.bias)
        # The head's outputs times a fixed per-coefficient factor (None = 1: the paper's, Deng's and the release's raw
        # head). Not in the state dict, so every published file loads either way; the export's config rebuilds it.
        if coeff_scale is not None and tuple(coeff_scale.shape) != (n_coeffs,):
            raise ValueError(f"coeff_scale must have shape ({n_coeffs},), got {tuple(coeff_scale.shape)}")
        self.register_buffer("coeff_scale", None if coeff_scale is None else coeff_scale.float().clone(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        bb = self.backbone
        h = bb.maxpool(bb.relu(bb.bn1(bb.conv1(x))))
        f4 = bb.layer1(h)
        f8 = bb.layer2(f4)
        f16 = bb.layer3(f8)
        seg, aux = self.seg_head(f4, f8, f16, x.shape[2:], with_aux=self.training)
        f32 = bb.layer4(self.gated(f16))
        coeffs = self.coeff_head(global_avg(f32)).flatten(1)
        if self.coeff_scale is not None:
            coeffs = coeffs * self.coeff_scale
        return {"coeffs": coeffs, "seg_logits": seg, "aux_logits": aux}


class DengReconNet(nn.Module):
    """Deng et al.'s ReconNetWrapper as a network: ResNet (no fc) -> global mean -> 1x1 conv -> coefficients.

    forward(x (B,3,224,224) in [0,1], Deng's align_img framing (data.align, framing "deng")) ->
    {"coeffs": (B, n_coeffs)}. No gate and no segmentation head: Deng's network has neither, so nothing in it is
    left at a fresh initialisation when its checkpoint is loaded (``build_deng_recon``). ``backbone`` and
    ``coeff_head`` have ReconNet's names, so ``load_deng_net_recon`` fills either.
    """

    def __init__(self, backbone: str = "resnet50", n_coeffs: int = 257):
        super().__init__()
        spec = _backbone_spec(backbone)
        self.backbone = spec.build(weights=None)
        self.backbone.fc = nn.Identity()
        self.coeff_head = nn.Conv2d(spec.widths[3], n_coeffs, 1)
        nn.init.zeros_(self.coeff_head.weight)
        nn.init.zeros_(self.coeff_head.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.backbone(x)  # (B, w4): torchvision's average pool, flattened, fc = Identity
        return {"coeffs": self.coeff_head(feat[:, :, None, None]).flatten(1)}


def load_imagenet_backbone(model: ReconNet, path: str | os.PathLike, what: str = "imagenet_weights") -> None:
    """Load a torchvision ImageNet ResNet state dict file (``fc.*`` dropped) into ``model.backbone`` (strict)."""
    sd = load_state_dict_file(path, what)
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    model.backbone.load_state_dict(sd, strict=True)


def load_deng_net_recon(model: ReconNet | DengReconNet, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load Deng et al.'s ``net_recon`` weights: ``backbone.*`` -> backbone, ``final_layers.{0..6}`` -> coeff head.

    The seven final convs (out 80, 64, 80, 3, 27, 2, 1) are concatenated along the output channel, which is
    exactly our coefficient order. Into a ReconNet (N_3D initialisation for training) the gate and segmentation
    head keep their current weights (seeded by ``train.seed``; they are trained); into a ``DengReconNet`` nothing
    is left over, which is what coefficient extraction needs.
    """
    sd = strip_prefix(state_dict)
    backbone_sd = {k[len("backbone."):]: v for k, v in sd.items()
                   if k.startswith("backbone.") and not k.startswith("backbone.fc.")}
    if not backbone_sd:
        raise FileReadError("Deng net_recon: no 'backbone.*' keys found")
    model.backbone.load_state_dict(backbone_sd, strict=True)
    n_final = len(DENG_FINAL_LAYER_SIZES)
    try:
        weights = [sd[f"final_layers.{i}.weight"] for i in range(n_final)]
        biases = [sd[f"final_layers.{i}.bias"] for i in range(n_final)]
    except KeyError as e:
        raise FileReadError(f"Deng net_recon: missing key {e.args[0]}") from None
    weight, bias = torch.cat(weights, dim=0), torch.cat(biases, dim=0)
    if weight.shape != model.coeff_head.weight.shape:
        raise FileReadError(f"Deng net_recon: final layers give {tuple(weight.shape)}, coefficient head expects "
                         f"{tuple(model.coeff_head.weight.shape)}")
    with torch.no_grad():
        model.coeff_head.weight.copy_(weight)
        model.coeff_head.bias.copy_(bias)


def load_deng_checkpoint(model: ReconNet | DengReconNet, path: str | os.PathLike,
                         what: str = "deng_checkpoint") -> None:
    """Load Deng et al.'s checkpoint file (dict with ``'net_recon'`` or a plain ``net_recon`` state dict)."""
    load_deng_net_recon(model, load_state_dict_file(path, what, inner_key="net_recon"))


def build_deng_recon(path: str | os.PathLike, what: str = "deng_checkpoint") -> DengReconNet:
    """Deng et al.'s network from their checkpoint (``epoch_20.pth``), in eval mode: the exact function they ship."""
    model = DengReconNet("resnet50", 257)
    load_deng_checkpoint(model, path, what)
    return model.eval()


# Authors' FaceEncoder key prefixes -> ours (first match wins; docs/formats.md sec. 5 and the release's module names).
_AUTHORS_PREFIXES: tuple[tuple[str, str], ...] = (
    ("feat.", "backbone."),
    ("coeff.", "coeff_head."),
    ("gated.ConvMask.", "gated.gate."),
    *(pair for s in ("8", "16") for pair in (
        (f"cp.arm{s}.conv_atten.", f"seg_head.arm{s}.att_conv."),
        (f"cp.arm{s}.bn_atten.", f"seg_head.arm{s}.att_bn."),
        (f"cp.arm{s}.conv.", f"seg_head.arm{s}.conv."),
        (f"cp.conv_head{s}.", f"seg_head.conv_head{s}."),
        (f"conv_out{s}.conv_out.", f"seg_head.out{s}.proj."),
        (f"conv_out{s}.conv.", f"seg_head.out{s}.conv."),
    )),
    ("cp.conv_avg.", "seg_head.conv_avg."),
    ("ffm.convblk.", "seg_head.ffm.fuse."),
    ("ffm.conv1.", "seg_head.ffm.att_down."),
    ("ffm.conv2.", "seg_head.ffm.att_up."),
    ("conv_out.conv_out.", "seg_head.out.proj."),
    ("conv_out.conv.", "seg_head.out.conv."),
)


def key_map_authors_release(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the authors' FaceEncoder keys (``3D_it_500000.pkl``, DataParallel ``module.`` prefix) to ReconNet's.

    Best effort from the release's module names; NOT yet tested against the real file. Raises ``FileReadError``
    listing any key it cannot place. Load the result with ``ReconNet(backbone="resnet50").load_state_dict(...)``.
    """
    return rename_by_prefix(state_dict, list(_AUTHORS_PREFIXES), "authors' N_3D weights")


def load_authors_release(model: ReconNet, path: str | os.PathLike, what: str = "authors_checkpoint") -> None:
    """Load the authors' released N_3D file into a ResNet-50 ReconNet (strict; untested against the real file)."""
    model.load_state_dict(key_map_authors_release(load_state_dict_file(path, what)), strict=True)


def build_recon3d(backbone: str = "resnet50", n_coeffs: int = 257, imagenet_weights: str | None = None,
                  deng_checkpoint: str | None = None, seg_channels: int | None = None,
                  coeff_scale: torch.Tensor | None = None) -> ReconNet:
    """Build N_3D; optionally initialise the backbone from ImageNet weights, then from Deng et al.'s net_recon.

    ``imagenet_weights``: torchvision ResNet state-dict file. ``deng_checkpoint``: Deng et al.'s ``epoch_20.pth``
    (backbone + coefficient head; needs ``backbone="resnet50"`` and ``n_coeffs=257``). Missing files raise
    ``FileNotFoundError`` naming the argument. Unknown backbone -> ``ValueError`` listing the valid names.
    ``coeff_scale``: (n_coeffs,) factors applied to the head's outputs (ReconNet), None = the raw head.
    """
    model = ReconNet(backbone=backbone, n_coeffs=n_coeffs, seg_channels=seg_channels, coeff_scale=coeff_scale)
    if imagenet_weights:
        load_imagenet_backbone(model, imagenet_weights)
    if deng_checkpoint:
        load_deng_checkpoint(model, deng_checkpoint)
    return model
