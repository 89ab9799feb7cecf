"""Config sections and builders shared by the tasks: the 3DMM renderer, resizing, in-order batches, image grids."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from data.config import DataConfig
from data.draw import draw_points
from data.io import to_uint8_hwc
from engine.config import path_field

__all__ = ["DataConfig", "MorphableConfig", "build_morphable", "build_renderer", "resize_square", "resize",
           "iterate", "require_arcface", "draw_landmarks", "gray3"]


@dataclass
class MorphableConfig:
    bfm_path: str | None = path_field(kind="file")  # Deng et al.'s BFM_model_front.mat; None = embedded synthetic
    synthetic_seed: int = 0
    synthetic_vertices: int | None = None  # None = the default few-thousand-vertex mesh
    backend: str = "torch"  # rasterizer: torch | nvdiffrast
    # renderer.render.SHADINGS: deng (Deng et al.'s normals and perspective-correct interpolation) | release (the
    # authors' release: normals of the projected mesh, area-weighted; screen-space interpolation)
    shading: str = "deng"

    def __post_init__(self):
        from renderer.render import SHADINGS

        if self.shading not in SHADINGS:
            raise ValueError(f"morphable.shading: unknown shading {self.shading!r}; valid: {', '.join(SHADINGS)}")


def build_morphable(cfg: MorphableConfig):
    from renderer.morphable import MorphableModel

    if cfg.bfm_path:
        return MorphableModel.from_bfm(cfg.bfm_path)
    return MorphableModel.synthetic(seed=cfg.synthetic_seed, n_vertices=cfg.synthetic_vertices)


def build_renderer(cfg: MorphableConfig, image_size: int, device: torch.device | str, model=None):
    """The (parameter-free) FaceRenderer of `model` (default: built from `cfg`) at image_size, with cfg's rasterizer
    backend and shading convention, on `device`."""
    from renderer.render import FaceRenderer

    model = build_morphable(cfg) if model is None else model
    return FaceRenderer(model, image_size, backend=cfg.backend, shading=cfg.shading).to(device)


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,size,size), bilinear with antialiasing (no-op at the right size)."""
    if x.shape[-2:] == (size, size):
        return x
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                           antialias=True)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """resize_square, clamped to [0, 1] (images)."""
    return x if x.shape[-1] == size else resize_square(x, size).clamp(0, 1)


def iterate(dataset, batch_size: int, limit: int | None = None, device: torch.device | str = "cpu"):
    """Deterministic in-order batches of a dataset (validation / evaluation), collated and moved to `device`."""
    from torch.utils.data import default_collate

    from engine.loop import move_to

    n = len(dataset) if limit is None else min(limit, len(dataset))
    for start in range(0, n, batch_size):
        yield move_to(default_collate([dataset[i] for i in range(start, min(n, start + batch_size))]),
                      torch.device(device))


def require_arcface(loss_cfg, model_cfg) -> None:
    """An identity loss through an untrained ArcFace is meaningless: refuse w_id > 0 without its weights."""
    if loss_cfg.w_id > 0 and not model_cfg.arcface_weights:
        raise ValueError("loss.w_id > 0 needs model.arcface_weights (an identity loss through an untrained "
                         "ArcFace is meaningless); set the path or loss.w_id=0")


def draw_landmarks(images: torch.Tensor, landmarks: list[torch.Tensor], colors=((0, 255, 0), (255, 0, 0))):
    """Images (N,3,H,W) [0,1] with landmark sets (each (N,68,2) pixels) drawn as dots -> (N,3,H,W) [0,1]."""
    out = []
    for i in range(images.shape[0]):
        img = to_uint8_hwc(images[i])
        for lms, col in zip(landmarks, colors):
            draw_points(img, lms[i].detach().float().cpu().numpy(), col, max(1, images.shape[-1] // 128), False)
        out.append(torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def gray3(mask: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) -> (N,3,H,W) for image grids."""
    return mask.float().expand(-1, 3, -1, -1)
