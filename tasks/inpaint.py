"""The N_G / N_D training step (paper section 3.2): 3D-guided inpainting GAN with alternating D and G steps.

L_G = w_pix L_pix + w_id L_id + w_tv L_tv + w_adv L_adv            (eq. 10; weights in config)
L_D = BCE(real, fake) + w_r1 R1(real)                               (eq. 11, StarGAN v2 style)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch

from data.pairs import build_pairs
from engine import dist
from engine.config import to_dict
from engine.loop import TrainConfig, make_adam
from engine.task import Task
from losses.adversarial import d_bce, g_nonsaturating, r1_penalty
from losses.identity import identity_loss
from losses.inpaint import pixel_l1, pixel_l1_masked, tv_loss
from metrics import DEFAULT_PSNR_MAX_DB, MetricContext, as_exported, build_metric, score_batch
from tasks.baselines import telea
from tasks.common import DataConfig, MorphableConfig, gray3, iterate, require_arcface
from tasks.exports import InferenceConfig, InpaintExport, crop_of
from tasks.generator import InpaintModelConfig, build_generator
from tasks.prior import PriorConfig, PriorModule, noised
from tasks.removal import remove


@dataclass
class InpaintLossConfig:
    w_pix: float = 10.0
    w_pix_hole: float = 0.0  # an extra L1 over the occlusion map m only (mean over its pixels); the paper has none
    w_id: float = 0.1
    w_tv: float = 0.1
    w_adv: float = 0.01
    w_r1: float = 1.0
    d_every: int = 1  # a D step every this many G steps


@dataclass
class InpaintExperiment:
    data: DataConfig = field(default_factory=lambda: DataConfig(image_size=256))
    morphable: MorphableConfig = field(default_factory=MorphableConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    model: InpaintModelConfig = field(default_factory=InpaintModelConfig)
    loss: InpaintLossConfig = field(default_factory=InpaintLossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        require_arcface(self.loss, self.model)
        if self.prior.source == "n3d" and not self.prior.n3d_checkpoint:
            raise ValueError("prior.source=n3d needs prior.n3d_checkpoint (RUN/n3d.pt from train_3d.py)")
        if self.prior.source == "gt" or self.prior.train_gt_fraction > 0 or self.prior.train_gt_blocks:
            for i, d in enumerate(self.data.train):
                if d.kind != "synthetic" and not d.coeffs_dir:
                    raise ValueError(f"data.train[{i}].coeffs_dir: the ground-truth prior (prior.source=gt, "
                                     "prior.train_gt_fraction > 0 or prior.train_gt_blocks) needs coefficients "
                                     "(scripts/extract_coeffs.py)")


def compute_d_loss(d, real: torch.Tensor, fake: torch.Tensor, lc: InpaintLossConfig, autocast) -> tuple:
    """L_D of eq. 11: BCE on real vs generated images + w_r1 R1 on the real ones.

    d: N_D (DDP-wrapped under torchrun: its forward is a collective); real, fake: (N,3,H,W) [0,1], fake detached;
    autocast: a context factory (StepContext.autocast). -> (loss, {"d_loss": BCE, "r1": R1}), unweighted terms.
    """
    real_in = real.detach().requires_grad_(True)
    with autocast():
        real_logits = d(real_in).float()
        fake_logits = d(fake).float()
    l_bce = d_bce(real_logits, fake_logits)
    l_r1 = r1_penalty(real_logits, real_in) if lc.w_r1 > 0 else real.new_zeros(())
    return l_bce + lc.w_r1 * l_r1, {"d_loss": l_bce, "r1": l_r1}


def compute_g_loss(pred: torch.Tensor, real: torch.Tensor, m: torch.Tensor, landmarks: torch.Tensor,
                   lc: InpaintLossConfig, disc, arcface, autocast) -> tuple:
    """L_G of eq. 10: w_pix L_pix + w_tv L_tv (+ w_pix_hole L1 in m) + w_adv L_adv + w_id L_id.

    pred, real: (N,3,H,W) [0,1]; m: (N,1,H,W) {0,1}; landmarks: (N,68,2) of `real`; disc: the plain (not DDP) N_D,
    frozen here, so only G's gradient is made and DDP's reducer waits for no D gradient; arcface: None without
    L_id. -> (loss, {term: unweighted value}).
    """
    terms = {"pix": pixel_l1(pred, real), "tv": tv_loss(pred)}
    weights = {"pix": lc.w_pix, "tv": lc.w_tv, "adv": lc.w_adv, "id": lc.w_id, "pix_hole": lc.w_pix_hole}
    if lc.w_pix_hole > 0:
        terms["pix_hole"] = pixel_l1_masked(pred, real, m)
    if lc.w_adv > 0:
        disc.requires_grad_(False)
        with autocast():
            terms["adv"] = g_nonsaturating(disc(pred).float())
        disc.requires_grad_(True)
    if arcface is not None:
        with torch.no_grad():
            f_true = arcface(real, landmarks)
        terms["id"] = identity_loss(arcface(pred, landmarks), f_true)
    return sum(weights[k] * v for k, v in terms.items()), terms


class InpaintTask(Task):
    """Step object for engine.loop: N_G, N_D, the EMA of N_G, their optimisers, and the frozen prior."""

    def __init__(self, cfg: InpaintExperiment, device: torch.device):
        from models.discriminator import Discriminator

        self.cfg, self.device = cfg, device
        mc = cfg.model
        self.prior = PriorModule(cfg.prior, cfg.morphable, cfg.data.image_size, device)
        self.gen = build_generator(mc).to(device)
        if mc.init_checkpoint:  # before DDP (which broadcasts rank 0's weights) and the EMA copy
            from engine.checkpoint import load_inference, load_module_state

            state = load_inference(mc.init_checkpoint, what="model.init_checkpoint", expect="g_ema")
            load_module_state(self.gen, state["modules"]["g_ema"], f"model.init_checkpoint: {mc.init_checkpoint}")
        self.disc = Discriminator(cfg.data.image_size, mc.d_base_channels, mc.d_max_channels).to(device)
        if cfg.train.channels_last:
            for m in (self.gen, self.disc):
                m.to(memory_format=torch.channels_last)
        self.g_ddp = dist.wrap_ddp(self.gen, device)
        self.d_ddp = dist.wrap_ddp(self.disc, device)
        # after DDP has broadcast rank 0's initial weights, so every rank's EMA starts from the same G
        self.g_ema = copy.deepcopy(self.gen).eval().requires_grad_(False)
        if cfg.train.compile:  # after the copy: a compiled module's deep copy would still call the original
            self.gen.compile(mode=cfg.train.compile_mode)
        self.modules = {"gen": self.gen, "disc": self.disc, "g_ema": self.g_ema}
        self.optimizers = {"gen": make_adam(self.gen.parameters(), cfg.train),
                           "disc": make_adam(self.disc.parameters(), cfg.train)}
        self.arcface = None
        if cfg.loss.w_id > 0:
            from models.arcface import ArcFace

            self.arcface = ArcFace(mc.arcface_arch, mc.arcface_weights, what="model.arcface_weights").to(device)
        self._val = None

    # ---------------------------------------------------------------------------------------------- data
    def train_set(self):
        return build_pairs(self.cfg.data, "train", self.prior.morph)

    def val_set(self):
        """The held-out pairs (built once)."""
        if self._val is None:
            self._val = build_pairs(self.cfg.data, "val", self.prior.morph)
        return self._val

    # ---------------------------------------------------------------------------------------------- step
    def generate(self, net, i3d, m, i_n) -> torch.Tensor:
        return net(m, i3d if self.cfg.model.use_3d_prior else None, i_n)

    @torch.no_grad()
    def update_ema(self) -> None:
        d = self.cfg.model.ema_decay
        for pe, p in zip(self.g_ema.parameters(), self.gen.parameters()):
            pe.lerp_(p.detach(), 1 - d)
        for be, b in zip(self.g_ema.buffers(), self.gen.buffers()):
            be.copy_(b)

    def train_step(self, batch: dict, ctx) -> dict:
        """A D step (every `loss.d_every` steps, when adversarial) then a G step and the EMA update."""
        lc, pc = self.cfg.loss, self.cfg.prior
        i3d, m, _ = self.prior(batch, pc.train_gt_fraction, tuple(pc.train_gt_blocks))
        i_n = noised(batch["masked_image"], m)
        logs = {}
        if lc.w_adv > 0 and ctx.step % lc.d_every == 0:
            with torch.no_grad(), ctx.autocast():
                fake = self.generate(self.g_ddp, i3d, m, i_n).float()
            d_loss, d_terms = compute_d_loss(self.d_ddp, batch["image"], fake, lc, ctx.autocast)
            ctx.optimize(d_loss, self.optimizers["disc"], "disc")
            logs.update({k: v.detach() for k, v in d_terms.items()})
        with ctx.autocast():
            pred = self.generate(self.g_ddp, i3d, m, i_n).float()
        g_loss, g_terms = compute_g_loss(pred, batch["image"], m, batch["landmarks"], lc, self.disc, self.arcface,
                                         ctx.autocast)
        ctx.optimize(g_loss, self.optimizers["gen"], "gen")
        self.update_ema()
        logs.update(g_loss=g_loss.detach(), **{k: v.detach() for k, v in g_terms.items()})
        return logs

    # ---------------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def predict(self, batch: dict, net=None, seed: int = 0) -> dict:
        """Deterministic inference on a batch (noise from `seed`) through tasks.removal.remove, as evaluate.py runs
        it: the EMA generator by default; the prior is N_3D's, or the batch's coefficients and mask (source gt).
        -> output, raw, i3d, i_n (N,3,H,W) [0,1] and m (N,1,H,W) {0,1}."""
        net = self.g_ema if net is None else net
        gt = {"coeffs": batch["coeffs"], "m": batch["mask"]} if self.cfg.prior.source == "gt" else {}
        r = remove(net, self.prior, batch["masked_image"], ["keep"], seed, **gt,
                   use_3d_prior=self.cfg.model.use_3d_prior, composite_output=self.cfg.model.composite)
        return {"output": r.images[:, 0], "raw": r.raw[:, 0], "i3d": r.i3d[:, 0], "m": r.m, "i_n": r.i_n}

    @torch.no_grad()
    def validate(self, step: int) -> dict:
        """Held-out pairs scored as evaluate.py scores them (``metrics.score_batch``: 8-bit inputs and outputs, the
        same metric objects and PSNR cap): L1 inside the true mask and PSNR of N_G (EMA) and of OpenCV Telea."""
        ctx = MetricContext(self.device, psnr_max_db=DEFAULT_PSNR_MAX_DB)
        rows = {"": [build_metric(n, ctx) for n in ("l1_hole", "psnr")],
                "telea_": [build_metric(n, ctx) for n in ("l1_hole", "psnr")]}
        for bi, batch in enumerate(iterate(self.val_set(), self.cfg.train.batch_size, device=self.device)):
            batch = as_exported(batch)
            score_batch(rows[""], self.predict(batch, seed=bi)["output"], batch)
            score_batch(rows["telea_"], telea(batch["masked_image"], batch["mask"]), batch)
        return {prefix + m.name: m.compute()[m.name] for prefix, ms in rows.items() for m in ms}

    @torch.no_grad()
    def images(self, batch: dict) -> dict:
        """I_m | m | I_3D | I_n | output | I (with model.prior_blend also the gate: white = I_3D copied)."""
        n = min(4, batch["image"].shape[0])
        b = {k: v[:n] for k, v in batch.items() if torch.is_tensor(v)}
        p = self.predict(b)
        rows = [b["masked_image"], gray3(p["m"]), p["i3d"], p["i_n"], p["output"], b["image"]]
        if self.g_ema.gate is not None:
            _, gate = self.g_ema(p["m"], p["i3d"], p["i_n"], return_gate=True)
            return {"inpaint/masked|m|I3D|In|output|real|gate": torch.cat([*rows, gray3(gate)], 0)}
        return {"inpaint/masked|m|I3D|In|output|real": torch.cat(rows, 0)}

    # -------------------------------------------------------------------------------------------- export
    def export(self, path: str | Path) -> Path:
        """Inference-only inpainting file (tasks.exports.InpaintExport), recording the crop the model was trained
        on, so remove_mask.py aligns photos into it without flags."""
        cfg = self.cfg
        crop = crop_of(cfg.data.train) or {}
        inference = InferenceConfig(crop=crop.get("crop"), lm3d_path=crop.get("lm3d_path"))
        return InpaintExport(cfg.model, to_dict(cfg.prior), cfg.morphable, cfg.data.image_size,
                             self.g_ema.state_dict(), inference).save(path)
