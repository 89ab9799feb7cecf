"""The 3D prior of N_G (paper section 3.1): where I_3D and the occlusion map m come from, and the noised input I_n.

At test time a frozen N_3D predicts the 3DMM coefficients and m from the masked image, and the renderer turns the
coefficients into I_3D; the ablation ``source: gt`` takes both from the ground truth. Training
(tasks.inpaint), validation, evaluation and remove_mask.py all get their prior from ``PriorModule`` and their I_n from
``noised``; the removal itself is tasks.removal.remove.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from data.landmarks import rescale_points
from engine.config import path_field
from tasks.common import MorphableConfig, build_morphable, build_renderer, resize_square
from tasks.exports import NOISE_CONVENTIONS, N3DExport, load_n3d

__all__ = ["NOISE_CONVENTIONS", "PriorConfig", "PriorModule", "dilate", "load_n3d", "noised"]


@dataclass
class PriorConfig:
    """Where I_3D and m come from: a frozen N_3D (`n3d`, as at test time) or the ground truth (`gt`, ablation)."""

    source: Literal["n3d", "gt"] = "n3d"
    n3d_checkpoint: str | None = None  # RUN/n3d.pt written by train_3d.py
    n3d_config: str | None = path_field(kind="file")  # if the checkpoint is missing: train it with this 3D config
    mask_threshold: float = 0.5  # m = sigmoid(seg) > threshold
    mask_dilate: int = 0  # dilate the predicted m by this many pixels (covers soft mask edges)
    # Refit N_3D's lighting to the visible skin (the model's skin region outside m) in closed form, over the first
    # `light_fit_bands` SH bands (0 = off, the paper: N_3D's coefficients as they are; 2 = ambient + directional).
    # FaceRenderer.fit_lighting; `light_fit_ridge` pulls towards N_3D's lighting.
    light_fit_bands: int = 0
    light_fit_ridge: float = 1e-3
    # Training only, with source n3d: each training sample takes the ground-truth coefficients and mask instead of
    # N_3D's with this probability (0 = the paper's recipe). Validation and inference always use `source`.
    train_gt_fraction: float = 0.0
    # Training only, with source n3d: on the samples that keep N_3D's prior, these coefficient blocks (id, exp, tex,
    # angle, gamma, trans) come from the ground truth ([] = the paper: all N_3D's). With [exp], N_G is trained on
    # N_3D's pose, shape, colour and mask as inexact as at test time, but on the expression the output must show,
    # as an edit gives it at test time: it learns to follow I_3D's expression without copying N_3D's errors.
    train_gt_blocks: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not 0.0 <= self.train_gt_fraction <= 1.0:
            raise ValueError(f"prior.train_gt_fraction must be in [0, 1], got {self.train_gt_fraction}")
        from renderer.morphable import CoeffLayout

        bad = sorted(set(self.train_gt_blocks) - set(CoeffLayout.ORDER))
        if bad:
            raise ValueError(f"prior.train_gt_blocks: unknown coefficient block(s) {', '.join(bad)}; valid: "
                             f"{', '.join(CoeffLayout.ORDER)}")
        if self.light_fit_bands not in (0, 1, 2, 3):
            raise ValueError(f"prior.light_fit_bands must be 0 (off), 1, 2 or 3, got {self.light_fit_bands}")
        if not self.light_fit_ridge > 0:
            raise ValueError(f"prior.light_fit_ridge must be > 0, got {self.light_fit_ridge}")


def noised(masked: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None,
           convention: str = "hole") -> torch.Tensor:
    """N_G's input I_n for masked (N,3,H,W) [0,1] and m (N,1,H,W) {0,1} -> (N,3,H,W).

    convention ``hole`` (ours): I_n = I_m (1 - m) + u m, u ~ U(0,1) per RGB channel; ``release`` (the authors'
    test.py): I_n = I_m (1 - m) + u, one channel u ~ U(0,1) over the whole image, broadcast to RGB.
    The noise comes from ``generator`` (a CPU generator: the same noise on every device) or, when None, from the
    global RNG of masked's device (training: re-drawn at every call).
    """
    if convention not in NOISE_CONVENTIONS:
        raise ValueError(f"noise must be one of {', '.join(NOISE_CONVENTIONS)}, got {convention!r}")
    device = masked.device if generator is None else "cpu"
    if convention == "hole":
        noise = torch.rand(masked.shape, generator=generator, device=device)
        return masked * (1 - m) + noise.to(masked.device) * m
    noise = torch.rand(m.shape, generator=generator, device=device)
    return masked * (1 - m) + noise.to(masked.device)


def dilate(m: torch.Tensor, pixels: int) -> torch.Tensor:
    """Max filter of m (N,1,H,W) {0,1} over a (2 pixels + 1) square: m grown by `pixels` on every side."""
    return F.max_pool2d(m, 2 * pixels + 1, stride=1, padding=pixels) if pixels > 0 else m


class PriorModule(torch.nn.Module):
    """I_3D and m for a batch of masked images: from a frozen N_3D + renderer, or from the ground truth.

    An nn.Module so that ``.to(device)`` and ``modules()`` see N_3D and the renderer; it has no trainable
    parameters (N_3D is frozen and in eval mode) and is not checkpointed by the training loop (its weights are
    the N_3D export's). ``morph`` is the morphable model N_3D's coefficients belong to.
    """

    def __init__(self, cfg: PriorConfig, morph_cfg: MorphableConfig, image_size: int | None, device: torch.device,
                 key: str = "prior.n3d_checkpoint"):
        super().__init__()
        self.cfg, self.device = cfg, device
        self.n3d, self.n3d_size = None, None
        self.crop = None  # the N_3D export's training crop ({crop, lm3d_path}), when recorded
        if cfg.source == "n3d":
            export = N3DExport.load(cfg.n3d_checkpoint, key)
            self.n3d = export.build(device).requires_grad_(False)
            morph_cfg, self.n3d_size, self.crop = export.morphable, export.image_size, export.crop
        self.morph = build_morphable(morph_cfg)
        self.renderer = build_renderer(morph_cfg, image_size or self.n3d_size, device, self.morph)

    @classmethod
    def from_n3d(cls, path: str, device: str | torch.device = "cpu", key: str = "n3d_checkpoint") -> PriorModule:
        """N_3D alone from its export (e.g. for landmark refinement), rendering at N_3D's own size."""
        return cls(PriorConfig(n3d_checkpoint=str(path)), MorphableConfig(), None, torch.device(device), key)

    @torch.no_grad()
    def predict_landmarks(self, crops: torch.Tensor) -> torch.Tensor:
        """crops (N,3,H,H) [0,1] in the model's framing -> (N,68,2) landmarks of N_3D's reconstruction in crop
        pixels (data.detectors.RefinedDetector's ``predict``)."""
        crops = crops.to(self.device).float()
        size, render = crops.shape[-1], self.renderer.image_size
        coeffs, _ = self.coefficients_and_mask(resize_square(crops, render))
        lm = self.renderer.landmarks(coeffs)
        return rescale_points(lm, size / render)  # pixel centres at integers at both sizes

    @torch.no_grad()
    def coefficients_and_mask(self, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """N_3D on masked (N,3,H,W) [0,1] (resized to its training size): coeffs (N,K), m (N,1,H,W) {0,1}.

        With ``light_fit_bands`` the lighting is then refitted to the visible skin of `masked` (H = the renderer's
        size, as tasks.removal.remove gives it).
        """
        out = self.n3d(resize_square(masked, self.n3d_size))
        logits = out["seg_logits"].float()
        if logits.shape[-1] != masked.shape[-1]:
            logits = F.interpolate(logits, size=masked.shape[-2:], mode="bilinear", align_corners=False)
        m = dilate((torch.sigmoid(logits) > self.cfg.mask_threshold).float(), self.cfg.mask_dilate)
        coeffs = out["coeffs"].float()
        if self.cfg.light_fit_bands:
            with torch.autocast(self.device.type, enabled=False):
                size = self.renderer.image_size
                keep = 1 - resize_square(m, size).round()
                coeffs = self.renderer.fit_lighting(coeffs, resize_square(masked.float(), size), keep,
                                                    self.cfg.light_fit_bands, self.cfg.light_fit_ridge)
        return coeffs, m

    @torch.no_grad()
    def forward(self, batch: dict, gt_fraction: float = 0.0,
                gt_blocks: tuple[str, ...] = ()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The training prior of a batch of pairs -> (I_3D (N,3,H,W) [0,1], m (N,1,H,W) {0,1}, coeffs (N,K)).

        Source n3d: ``gt_blocks`` (names of CoeffLayout blocks) replace N_3D's with the ground truth's; then each
        sample independently takes all the ground-truth coefficients and mask with probability ``gt_fraction``
        (drawn from the global RNG, so a resumed run draws the same).
        """
        if self.cfg.source == "gt":
            coeffs, m = batch["coeffs"].float(), batch["mask"]
        else:
            coeffs, m = self.coefficients_and_mask(batch["masked_image"])
            lay = self.morph.layout
            for name in gt_blocks:
                coeffs[:, lay.slice(name)] = batch["coeffs"].float()[:, lay.slice(name)]
            if gt_fraction > 0:
                pick = (torch.rand(coeffs.shape[0]) < gt_fraction).to(coeffs.device)
                coeffs = torch.where(pick[:, None], batch["coeffs"].float(), coeffs)
                m = torch.where(pick[:, None, None, None], batch["mask"].to(m), m)
        return self.render(coeffs), m, coeffs

    @torch.no_grad()
    def render(self, coeffs: torch.Tensor) -> torch.Tensor:
        """coeffs (N,K) -> I_3D (N,3,H,W) [0,1], always in float32 (outside any autocast)."""
        with torch.autocast(self.device.type, enabled=False):
            return self.renderer(coeffs.float()).image
