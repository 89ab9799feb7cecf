"""N_G's configuration and its one builder: training (tasks.inpaint), export loading and inference (tasks.removal)
and the release converter (tasks.release) build N_G here, so they always agree. Imports nothing from tasks/."""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import path_field

__all__ = ["InpaintModelConfig", "build_generator"]


@dataclass
class InpaintModelConfig:
    base_channels: int = 64
    n_res: int = 6
    use_3d_prior: bool = True  # false: N_G sees only (m, I_n) (ablation "no 3D prior")
    n_down: int = 2  # stride-2 stages of N_G (2 in the paper: residual blocks at 1/4 of the input size)
    prior_blend: bool = False  # N_G's output = gate * I_3D + (1 - gate) * generated (not in the paper; docs/demo.md)
    # an inpainting export to fine-tune from (its EMA generator starts N_G; e.g. the release's, convert_release.py)
    init_checkpoint: str | None = path_field(kind="file")
    d_base_channels: int = 64
    d_max_channels: int = 512
    composite: bool = True  # final result = prediction inside m, the input outside
    ema_decay: float = 0.999
    arcface_weights: str | None = path_field(kind="file")
    arcface_arch: str = "r50"

    def __post_init__(self):
        if self.prior_blend and not self.use_3d_prior:
            raise ValueError("model.prior_blend needs model.use_3d_prior: there is no I_3D to blend")


def build_generator(mc: InpaintModelConfig):
    """N_G as configured (training, export loading and inference build it here, so they always agree)."""
    from models.generator import Generator

    return Generator(mc.base_channels, mc.n_res, use_3d_prior=mc.use_3d_prior, n_down=mc.n_down,
                     prior_blend=mc.prior_blend)
