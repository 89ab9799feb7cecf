"""The two export formats, each with one owner: ``N3DExport`` (RUN/n3d.pt) and ``InpaintExport`` (RUN/inpaint.pt).
Every writer (train_3d.py's and train_inpaint.py's exports, the release converter) and every reader (tasks.prior,
tasks.removal.MaskRemover) goes through their save / load / build, as LaMa's ``load_checkpoint(train_config, path)``.

On disk (engine.checkpoint.export_inference): {"modules": {name: state_dict}, "config": {...}, "meta": {...}}.
- N_3D: modules {"n3d"}; config {model: Recon3DModelConfig, morphable: MorphableConfig, image_size: int,
  crop: {crop, lm3d_path}}.
- inpainting: modules {"g_ema"}; config {model: InpaintModelConfig, prior: PriorConfig, morphable, image_size,
  inference: InferenceConfig}.
Training-only settings (pretrained-weight paths, init checkpoints) are dropped on load. ``crop`` records the framing
of the crops the networks were trained on, so a photo is aligned into it without flags (tasks.photo); exports
written before it was recorded load with ``crop`` None (photos then take ffhq, or ``--align``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from data.align import FRAMINGS
from engine.config import ConfigError, build_dataclass, path_field, to_dict
from tasks.common import MorphableConfig
from tasks.generator import InpaintModelConfig, build_generator
from tasks.n3d import Recon3DModelConfig, build_n3d

__all__ = ["CROPS", "NOISE_CONVENTIONS", "InferenceConfig", "InpaintExport", "N3DExport", "crop_of", "load_n3d"]

NOISE_CONVENTIONS = ("hole", "release")
# the crops a model can be trained on: data.align's framings, plus meanface (SyntheticFaces: the morphable model's
# mean face as the renderer frames it)
CROPS = ("meanface", *FRAMINGS)


@dataclass
class InferenceConfig:
    """How a model is fed at inference (the ``inference`` entry of an inpainting export).

    noise: ``hole`` (ours: I_n = I_m (1 - m) + u m, u ~ U(0,1) per RGB channel) or ``release`` (the authors' test.py:
        I_n = I_m (1 - m) + u, one channel u ~ U(0,1) over the whole image, broadcast to RGB); tasks.prior.noised.
    framing: the crop the networks expect when inputs must be re-aligned (data.align: ffhq, deng, release; the
        release's); None = inputs come already framed as the model was trained (our exports), nothing is re-aligned
        in evaluation.
    lm3d_path: BFM/similarity_Lm3D_all.mat, needed by the deng / release framings and crops.
    crop: the framing of the training crops (CROPS), which photos are aligned into (tasks.photo); None = not
        recorded (exports written before it was).
    """

    noise: str = "hole"
    framing: str | None = None
    lm3d_path: str | None = path_field(kind="file")
    crop: str | None = None

    def __post_init__(self):
        if self.noise not in NOISE_CONVENTIONS:
            raise ValueError(f"noise must be one of {', '.join(NOISE_CONVENTIONS)}, got {self.noise!r}")
        if self.framing is not None:
            from data.align import get_framing

            get_framing(self.framing)
        if self.crop is not None and self.crop not in CROPS:
            raise ValueError(f"inference.crop must be one of {', '.join(CROPS)}, got {self.crop!r}")


def crop_of(faces: list) -> dict | None:
    """{"crop", "lm3d_path"} of a list of dataset entries (data.config): SyntheticFaces are meanface; a photo
    dataset is its ``framing`` when re-aligned, else ffhq for FFHQ and CelebA-HQ (their images come FFHQ-aligned).
    None when the entries disagree, use a custom template, or include a folder taken as it is (its images may be in
    any crop, e.g. a test set exported in the model's own): nothing reliable to record or check."""
    crops = set()
    for f in faces:
        if getattr(f, "kind", None) == "synthetic":
            crops.add(("meanface", None))
        elif getattr(f, "align_template", None):
            return None
        elif getattr(f, "align", False):
            crops.add((f.framing, f.lm3d_path if FRAMINGS[f.framing].needs_lm3d else None))
        elif getattr(f, "kind", None) == "folder":
            return None
        else:
            crops.add(("ffhq", None))
    if len(crops) != 1:
        return None
    crop, lm3d = crops.pop()
    return {"crop": crop, "lm3d_path": lm3d}


def _missing(key: str, p: Path, what: str, how: str) -> FileNotFoundError:
    return FileNotFoundError(f"{key}: {what} checkpoint not found: {p} ({how})")


@dataclass
class N3DExport:
    """N_3D for inference: its config, weights (ReconNet state dict) and training crop ({crop, lm3d_path} or None)."""

    model: Recon3DModelConfig
    morphable: MorphableConfig
    image_size: int
    weights: dict
    crop: dict | None = None
    meta: dict = field(default_factory=dict)
    source: str = field(default="n3d", repr=False, compare=False)  # "KEY: PATH" for error messages

    def save(self, path: str | Path) -> Path:
        from engine.checkpoint import export_inference

        config = {"model": to_dict(self.model), "morphable": to_dict(self.morphable),
                  "image_size": int(self.image_size)}
        if self.crop is not None:
            config["crop"] = dict(self.crop)
        return export_inference(path, {"n3d": self.weights}, config=config, meta=self.meta)

    @classmethod
    def load(cls, path: str | Path, key: str = "n3d_checkpoint") -> N3DExport:
        """Every problem with the file (missing, unreadable, another kind of export, an incomplete config) is one
        line naming `key` (a FileNotFoundError or a ValueError)."""
        from engine.checkpoint import CheckpointError, load_inference

        p = Path(path)
        if not p.is_file():
            raise _missing(key, p, "N_3D", "train it with train_3d.py")
        state = load_inference(p, map_location="cpu", what=key, expect="n3d")
        weights = state["modules"]["n3d"]
        try:
            conf = state["config"]
            model = build_dataclass(Recon3DModelConfig, {**conf["model"], "imagenet_weights": None,
                                                         "deng_checkpoint": None, "init_checkpoint": None})
            morph = build_dataclass(MorphableConfig, conf["morphable"])
            size = int(conf["image_size"])
            weights["coeff_head.weight"]  # noqa: B018 (the coefficient count is in the head's shape)
        except (KeyError, TypeError, ConfigError) as e:
            raise CheckpointError(f"{key}: {p} is not a complete N_3D export ({type(e).__name__}: {e})") from None
        return cls(model, morph, size, weights, conf.get("crop"), state.get("meta") or {}, f"{key}: {p}")

    def build(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """N_3D with these weights, in eval mode on `device`."""
        from engine.checkpoint import load_module_state

        net = build_n3d(self.model, self.weights["coeff_head.weight"].shape[0])
        load_module_state(net, self.weights, self.source)
        return net.to(device).eval()


def load_n3d(path: str | Path, device: torch.device, key: str = "n3d_checkpoint"):
    """(N_3D in eval mode, MorphableConfig, image_size) from an N_3D export (N3DExport)."""
    e = N3DExport.load(path, key)
    return e.build(device), e.morphable, e.image_size


@dataclass
class InpaintExport:
    """N_G for inference: its config, the EMA generator's weights, the prior settings it was trained with (a
    tasks.prior.PriorConfig as a dict, with the N_3D export's path) and the InferenceConfig."""

    model: InpaintModelConfig
    prior: dict
    morphable: MorphableConfig
    image_size: int
    weights: dict
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    meta: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        from engine.checkpoint import export_inference

        return export_inference(path, {"g_ema": self.weights}, meta=self.meta, config={
            "model": to_dict(self.model), "prior": dict(self.prior), "morphable": to_dict(self.morphable),
            "image_size": int(self.image_size), "inference": to_dict(self.inference)})

    @classmethod
    def load(cls, path: str | Path, key: str = "checkpoint") -> InpaintExport:
        """One line naming `key` for a missing file, another kind of export or an incomplete config."""
        from engine.checkpoint import CheckpointError, load_inference

        p = Path(path)
        if not p.is_file():
            raise _missing(key, p, "inpainting", "train it with train_inpaint.py")
        state = load_inference(p, what=key, expect="g_ema")
        try:
            conf = state["config"]
            model = build_dataclass(InpaintModelConfig, {**conf["model"], "arcface_weights": None,
                                                         "init_checkpoint": None})
            morph = build_dataclass(MorphableConfig, conf["morphable"])
            inference = build_dataclass(InferenceConfig, conf.get("inference") or {}, "inference")
            return cls(model, dict(conf["prior"]), morph, int(conf["image_size"]), state["modules"]["g_ema"],
                       inference, state.get("meta") or {})
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{key}: {p} is not a complete inpainting export ({type(e).__name__}: {e})") \
                from None

    def build(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """N_G (the EMA weights) in eval mode on `device`."""
        gen = build_generator(self.model)
        gen.load_state_dict(self.weights)
        return gen.to(device).eval()
