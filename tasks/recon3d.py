"""The N_3D training step (paper section 3.1): mask segmentation + 3DMM regression through a rendered face.

L_3D = w_bce L_bce(+aux) + w_coef L_coef + w_photo L_photo + w_id L_id + w_lm L_lm   (eq. 6; weights in config)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from data.pairs import build_pairs
from engine import dist
from engine.loop import TrainConfig, make_adam
from engine.task import Task
from losses.identity import identity_loss
from losses.recon import coef_l1, landmark_loss, landmark_weights, photo_loss
from losses.seg import bce_ohem
from metrics.geometry import landmark_nme, mask_iou
from tasks.common import (
    DataConfig,
    MorphableConfig,
    build_morphable,
    build_renderer,
    draw_landmarks,
    iterate,
    require_arcface,
)
from tasks.exports import N3DExport, crop_of, load_n3d  # noqa: F401 (load_n3d: re-exported)
from tasks.n3d import Recon3DModelConfig, build_n3d


@dataclass
class Recon3DLossConfig:
    w_bce: float = 1.0
    w_aux: float = 1.0  # the two auxiliary segmentation outputs (BiSeNet-style deep supervision)
    w_coef: float = 1.0
    w_photo: float = 1.0
    w_id: float = 0.1
    w_lm: float = 0.001
    ohem_keep: float = 0.7  # fraction of the hardest pixels kept by OHEM
    ohem_min_kept: int = 0
    lm_weight_nose: float = 20.0
    lm_weight_inner_mouth: float = 20.0
    lm_reference_size: int = 224  # landmarks are measured in pixels of this size, so w_lm means the same anywhere


@dataclass
class Recon3DExperiment:
    data: DataConfig = field(default_factory=DataConfig)
    morphable: MorphableConfig = field(default_factory=MorphableConfig)
    model: Recon3DModelConfig = field(default_factory=Recon3DModelConfig)
    loss: Recon3DLossConfig = field(default_factory=Recon3DLossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        require_arcface(self.loss, self.model)


class Recon3DTask(Task):
    """Step object for engine.loop: owns N_3D, its optimiser and the (parameter-free) renderer."""

    def __init__(self, cfg: Recon3DExperiment, device: torch.device):
        self.cfg, self.device = cfg, device
        self.morph = build_morphable(cfg.morphable)
        self.renderer = build_renderer(cfg.morphable, cfg.data.image_size, device, self.morph)
        self.layout = self.morph.layout
        self.net = build_n3d(cfg.model, self.layout.size).to(device)
        if cfg.train.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if cfg.train.compile:
            self.net.compile(mode=cfg.train.compile_mode)
        self.ddp = dist.wrap_ddp(self.net, device)
        self.modules = {"n3d": self.net}
        self.optimizers = {"n3d": make_adam(self.net.parameters(), cfg.train)}
        self.arcface = None
        if cfg.loss.w_id > 0:
            from models.arcface import ArcFace

            self.arcface = ArcFace(cfg.model.arcface_arch, cfg.model.arcface_weights,
                                   what="model.arcface_weights").to(device)
        lc = cfg.loss
        self.lm_weights = landmark_weights(nose=lc.lm_weight_nose, inner_mouth=lc.lm_weight_inner_mouth,
                                           device=device)
        self.lm_scale = lc.lm_reference_size / cfg.data.image_size
        self._val = None

    # ---------------------------------------------------------------------------------------------- data
    def train_set(self):
        return build_pairs(self.cfg.data, "train", self.morph)

    def val_set(self):
        """The held-out pairs (built once)."""
        if self._val is None:
            self._val = build_pairs(self.cfg.data, "val", self.morph)
        return self._val

    # ---------------------------------------------------------------------------------------------- step
    def forward(self, batch: dict, ctx=None, net=None) -> dict:
        """Network + renderer: returns the outputs every loss and log needs.

        net: the network to run, by default the DDP-wrapped one (training: its forward is a collective that every
        rank must join); one-rank work (images, validation) passes the plain `self.net`.
        """
        autocast = ctx.autocast() if ctx is not None else torch.autocast("cpu", enabled=False)
        with autocast:
            out = (self.ddp if net is None else net)(batch["masked_image"])
        coeffs = out["coeffs"].float()
        with torch.autocast(self.device.type, enabled=False):  # geometry in fp32
            render = self.renderer(coeffs)
        return {"coeffs": coeffs, "seg": out["seg_logits"].float(), "aux": [a.float() for a in out["aux_logits"]],
                "render": render}

    def target_landmarks(self, batch: dict) -> torch.Tensor:
        """q of eq. 5: landmarks of the ground-truth coefficients where known, else the dataset's landmarks."""
        if "coeffs" in batch:
            with torch.no_grad():
                lm = self.renderer.landmarks(batch["coeffs"].float())
            if "coeffs_valid" in batch:  # mixed datasets: fall back per item
                v = batch["coeffs_valid"].view(-1, 1, 1).bool()
                lm = torch.where(v, lm, batch["landmarks"])
            return lm
        return batch["landmarks"]

    def losses(self, batch: dict, fw: dict) -> tuple[torch.Tensor, dict]:
        lc = self.cfg.loss
        m = batch["mask"]
        terms = {"bce": bce_ohem(fw["seg"], m, lc.ohem_keep, lc.ohem_min_kept)}
        if fw["aux"]:
            terms["bce_aux"] = sum(bce_ohem(a, m, lc.ohem_keep, lc.ohem_min_kept) for a in fw["aux"])
        render = fw["render"]
        weights = {"bce": lc.w_bce, "bce_aux": lc.w_aux, "coef": lc.w_coef, "photo": lc.w_photo, "id": lc.w_id,
                   "lm": lc.w_lm}
        if "coeffs" in batch and lc.w_coef > 0:
            gt = batch["coeffs"].float()
            if "coeffs_valid" in batch:
                v = batch["coeffs_valid"].view(-1, 1)
                terms["coef"] = ((fw["coeffs"] - gt).abs() * v).sum() / (v.sum() * gt.shape[1]).clamp_min(1)
            else:
                terms["coef"] = coef_l1(fw["coeffs"], gt)
        face = batch["face_mask"] if "face_mask" in batch else render.mask.detach()
        if "face_mask_valid" in batch:  # datasets without M: the rendered face region stands in
            v = batch["face_mask_valid"].view(-1, 1, 1, 1)
            face = face * v + render.mask.detach() * (1 - v)
        terms["photo"] = photo_loss(render.image, batch["image"], face)
        target_lm = self.target_landmarks(batch)
        terms["lm"] = landmark_loss(render.landmarks * self.lm_scale, target_lm * self.lm_scale, self.lm_weights)
        if self.arcface is not None:
            f_pred = self.arcface(render.image, render.landmarks)
            with torch.no_grad():
                f_true = self.arcface(batch["image"], batch["landmarks"])
            terms["id"] = identity_loss(f_pred, f_true)
        total = sum(weights[k] * v for k, v in terms.items() if weights[k] > 0)
        return total, terms

    def train_step(self, batch: dict, ctx) -> dict:
        fw = self.forward(batch, ctx)
        total, terms = self.losses(batch, fw)
        ctx.optimize(total, self.optimizers["n3d"], "n3d")
        return {"loss": total.detach(), **{k: v.detach() for k, v in terms.items()}}

    # ---------------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self, step: int) -> dict:
        """Held-out pairs: occlusion IoU, landmark NME of N_3D and of the mean face (all coefficients 0)."""
        self.net.eval()
        ious, nme, nme_mean = [], [], []
        for batch in iterate(self.val_set(), self.cfg.train.batch_size, device=self.device):
            out = self.net(batch["masked_image"])
            ious.append(mask_iou((out["seg_logits"] > 0).float(), batch["mask"]))
            gt = self.target_landmarks(batch)
            nme.append(landmark_nme(self.renderer.landmarks(out["coeffs"].float()), gt))
            zeros = self.layout.zeros(gt.shape[0], device=self.device)
            nme_mean.append(landmark_nme(self.renderer.landmarks(zeros), gt))
        self.net.train()
        return {"mask_iou": float(torch.cat(ious).mean()), "lm_nme": float(torch.cat(nme).mean()),
                "lm_nme_meanface": float(torch.cat(nme_mean).mean())}

    @torch.no_grad()
    def images(self, batch: dict) -> dict:
        """Input | predicted vs true mask | rendered face overlaid | landmarks (green true, red predicted)."""
        n = min(4, batch["masked_image"].shape[0])
        b = {k: v[:n] for k, v in batch.items() if torch.is_tensor(v)}
        self.net.eval()
        fw = self.forward(b, net=self.net)  # rank 0 only: not the DDP forward, a collective
        self.net.train()
        r = fw["render"]
        pred_m = (fw["seg"] > 0).float()
        overlay = r.image * r.mask + b["masked_image"] * (1 - r.mask)
        lms = draw_landmarks(b["masked_image"], [self.target_landmarks(b), r.landmarks])
        mask_cmp = torch.cat([pred_m, b["mask"], torch.zeros_like(pred_m)], 1)  # red = predicted, green = true
        return {"n3d/input|masks|render|landmarks": torch.cat([b["masked_image"], mask_cmp, overlay, lms], 0)}

    # -------------------------------------------------------------------------------------------- export
    def export(self, path: str | Path) -> Path:
        """Inference-only N_3D file (tasks.exports.N3DExport) read by train_inpaint.py (prior: n3d), evaluate.py and
        remove_mask.py; it records the crop the model was trained in."""
        cfg = self.cfg
        return N3DExport(cfg.model, cfg.morphable, cfg.data.image_size, self.net.state_dict(),
                         crop_of(cfg.data.train)).save(path)
