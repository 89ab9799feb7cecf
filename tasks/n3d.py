"""N_3D's configuration and its one builder: training (tasks.recon3d), the export (tasks.exports), inference
(tasks.prior) and the release converter build N_3D here, so they always agree. Imports nothing from tasks/."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine.config import ConfigError, path_field
from engine.files import FileReadError

__all__ = ["Recon3DModelConfig", "build_n3d"]


@dataclass
class Recon3DModelConfig:
    backbone: str = "resnet50"  # resnet50 | resnet34 | resnet18
    imagenet_weights: str | None = path_field(kind="file")  # torchvision ResNet state dict
    deng_checkpoint: str | None = path_field(kind="file")  # Deng et al.'s epoch_20.pth (net_recon)
    init_checkpoint: str | None = path_field(kind="file")  # an N_3D export to fine-tune (e.g. the release's n3d.pt)
    arcface_weights: str | None = path_field(kind="file")  # insightface arcface_torch backbone.pth
    arcface_arch: str = "r50"
    # Per coefficient group (id, exp, tex, angle, gamma, trans): a fixed factor on the head's outputs; absent = 1,
    # the paper's raw head. Adam moves every output by about lr per step whatever its natural size, so a group with
    # a small one (translation ~0.03 dm, lighting ~0.1) is swamped by that noise unless its output is scaled down.
    head_scale: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        from renderer.morphable import CoeffLayout

        unknown = sorted(set(self.head_scale) - set(CoeffLayout.ORDER))
        if unknown:
            raise ConfigError(f"model.head_scale: unknown coefficient group(s) {', '.join(unknown)}; valid: "
                              f"{', '.join(CoeffLayout.ORDER)}")
        bad = {k: v for k, v in self.head_scale.items() if not float(v) > 0}
        if bad:
            raise ConfigError(f"model.head_scale: factors must be > 0, got {bad}")

    def coeff_scale(self, layout) -> torch.Tensor | None:
        """(layout.size,) factors for ReconNet's head, or None when head_scale is empty (the raw head)."""
        if not self.head_scale:
            return None
        scale = torch.ones(layout.size)
        for name, factor in self.head_scale.items():
            scale[layout.slice(name)] = float(factor)
        return scale


def build_n3d(model_cfg: Recon3DModelConfig, n_coeffs: int):
    """N_3D (models.recon3d) with `n_coeffs` outputs as configured; ``init_checkpoint`` loads an export's weights."""
    from models.recon3d import build_recon3d
    from renderer.morphable import CoeffLayout

    scale = None
    if model_cfg.head_scale:  # laid out as Deng's 257 = id 80 | exp 64 | tex 80 | angle 3 | gamma 27 | trans 3
        if n_coeffs != CoeffLayout().size:
            raise ConfigError(f"model.head_scale: needs the {CoeffLayout().size}-coefficient layout, "
                              f"got {n_coeffs}")
        scale = model_cfg.coeff_scale(CoeffLayout())
    net = build_recon3d(model_cfg.backbone, n_coeffs, imagenet_weights=model_cfg.imagenet_weights,
                        deng_checkpoint=model_cfg.deng_checkpoint, coeff_scale=scale)
    if model_cfg.init_checkpoint:  # fine-tuning: every weight from an export of the same architecture
        from engine.checkpoint import CheckpointError, load_inference

        try:
            weights = load_inference(model_cfg.init_checkpoint)["modules"]["n3d"]  # tasks.exports.N3DExport
        except (CheckpointError, KeyError) as e:
            raise FileReadError(f"model.init_checkpoint: not an N_3D export: {e}") from None
        try:
            net.load_state_dict(weights)
        except RuntimeError as e:
            raise FileReadError(f"model.init_checkpoint: {model_cfg.init_checkpoint} does not fit backbone "
                             f"{model_cfg.backbone!r} with {n_coeffs} coefficients: {str(e).splitlines()[0]}") \
                from None
    return net
