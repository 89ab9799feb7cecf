"""The generation API: masked face -> N_3D -> edited 3DMM coefficients -> rendered prior -> N_G.

    remover = MaskRemover.from_checkpoints("runs/inpaint_demo/inpaint.pt", device="cpu")
    out = remover(masked, edits=["neutral", "smile", "open_mouth", "exp[3]=+1.5"], seed=0)
    out.images  # (N, K, 3, H, W): one result per edit, all K for one input in one generator batch

Edit strings (comma-separated operations, applied left to right to N_3D's coefficients):
- a preset name: expression presets of the morphable model (`neutral`, `smile`, `open_mouth`, ... for the embedded
  synthetic model; BFM's expression PCA is unnamed, so only `neutral` there), plus `keep` (no change),
  `brighter` / `darker` (ambient light of the SH illumination, +-0.3 per colour), `frontal` (angles to 0);
- `NAME[i]=v` sets coefficient i of the named block (id, exp, tex, angle, gamma, trans) to v; `NAME[i]=+v` or
  `NAME[i]=-v` adds v; `NAME=0` sets the whole block; `NAME*=s` scales the whole block.
Identical inputs, edits and seed give identical outputs.

``remove`` is the one removal pipeline (prior -> edits -> I_3D -> noise -> N_G -> composite): MaskRemover, training
validation (tasks.inpaint), evaluate.py's model rows and controllability (tasks.evaluation, tasks.control),
remove_mask.py and scripts/benchmark.py all run it, so validation and evaluation scores come from the same code.

Inference settings that belong to a model travel in its export (tasks.exports.InferenceConfig): the noise
convention its N_G was trained with, the crop it was trained on (photos are aligned into it: tasks.photo) and, for
the authors' release, the framing inputs are re-aligned into (one channel of U(0, 1) over the whole image, the
release framing 116/s at 256). Our train_inpaint.py exports take inputs as framed (3-channel noise in the hole).
With a framing, ``in_frame`` takes an image in any framing plus its landmarks, aligns it, and maps the results back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data.align import FRAMINGS
from data.landmarks import rescale_points
from engine.config import ConfigError
from models.generator import composite
from tasks.common import resize_square
from tasks.exports import InferenceConfig, InpaintExport
from tasks.prior import dilate, noised

__all__ = ["InferenceConfig", "MaskRemover", "Removal", "apply_edit", "available_edits", "remove", "seam_region"]


GLOBAL_EDITS = ("keep", "neutral", "brighter", "darker", "frontal")  # apply to every morphable model


def available_edits(model) -> list[str]:
    """The preset edit names ``model`` supports: GLOBAL_EDITS, then its expression presets (none for BFM, whose
    expression PCA is unnamed). ``NAME[i]=v`` edits apply to every model."""
    from renderer.morphable import EXPRESSION_PRESETS

    names = list(GLOBAL_EDITS)
    if getattr(model, "expression_names", None):
        names += [p for p in EXPRESSION_PRESETS if p != "neutral"]
    return names


_OP = re.compile(r"^(?P<name>[a-z_]+)(\[(?P<idx>\d+)\])?\s*(?P<op>\*=|=)\s*(?P<val>[+-]?\d*\.?\d+(e[+-]?\d+)?)$")


def apply_edit(coeffs: torch.Tensor, edit: str, model) -> torch.Tensor:
    """coeffs (N, K) -> edited copy; see the module doc for the syntax. Unknown names raise a one-line error."""
    layout = model.layout
    out = coeffs.clone()
    parts = layout.split(out)  # views into `out`
    for op in [s.strip() for s in edit.split(",") if s.strip()]:
        if op == "keep":
            continue
        if op == "neutral":
            parts["exp"].zero_()
            continue
        if op in ("brighter", "darker"):
            g = parts["gamma"].view(out.shape[0], 3, -1)
            g[:, :, 0] += 0.3 if op == "brighter" else -0.3
            continue
        if op == "frontal":
            parts["angle"].zero_()
            continue
        m = _OP.match(op)
        if m is None:
            if op not in available_edits(model):
                raise ConfigError(f"unknown edit {op!r}: model {getattr(model, 'name', '?')} has "
                                  f"{', '.join(available_edits(model))} (and NAME[i]=v on the blocks "
                                  f"{', '.join(parts)})")
            parts["exp"].copy_(model.expression(op, out.shape[0]).to(out))
            continue
        name, idx, kind, val = m["name"], m["idx"], m["op"], float(m["val"])
        if name not in parts:
            raise ConfigError(f"unknown coefficient block {name!r} in edit {op!r}; valid: {', '.join(parts)}")
        block = parts[name]
        if idx is not None and int(idx) >= block.shape[1]:
            raise ConfigError(f"edit {op!r}: index {idx} out of range for {name} ({block.shape[1]} coefficients)")
        target = block if idx is None else block[:, int(idx)]
        if kind == "*=":
            target.mul_(val)
        elif m["val"][0] in "+-" and idx is not None:
            target.add_(val)
        else:
            target.fill_(val)
    return out


@dataclass
class Removal:
    """images (N,K,3,S,S) final results; raw (N,K,3,S,S) generator outputs; i3d (N,K,3,S,S) rendered priors;
    m (N,1,S,S) occlusion map; coeffs (N,K,C) edited coefficients; base_coeffs (N,C) N_3D's prediction (in the
    model's own crop); all in [0,1] at the model's size S except the coefficients."""

    images: torch.Tensor
    raw: torch.Tensor
    i3d: torch.Tensor
    m: torch.Tensor
    coeffs: torch.Tensor
    base_coeffs: torch.Tensor
    landmarks: torch.Tensor | None = None  # (N,68,2) of base_coeffs, in pixels of the images given to the call
    i_n: torch.Tensor | None = None  # (N,3,S,S) N_G's noised input (the same for every edit), in the model's crop
    edits: list[str] | None = None  # the K edits, in order

    def pick(self, edits: list[str]) -> Removal:
        """The results of `edits` (each one of self.edits) in that order, as if only they had been asked for."""
        col = [self.edits.index(e) for e in edits]
        return Removal(self.images[:, col], self.raw[:, col], self.i3d[:, col], self.m, self.coeffs[:, col],
                       self.base_coeffs, self.landmarks, self.i_n, list(edits))


@torch.no_grad()
def remove(gen: torch.nn.Module, prior, masked: torch.Tensor, edits: list[str] | None = None, seed: int = 0,
           coeffs: torch.Tensor | None = None, m: torch.Tensor | None = None, *, use_3d_prior: bool = True,
           composite_output: bool = True, noise: str = "hole", grey_prior: bool = False) -> Removal:
    """The removal pipeline, the one every caller runs (validation, evaluate.py, remove_mask.py, the benchmark):
    prior -> edits -> I_3D -> noise -> N_G -> composite.

    gen: N_G; prior: a tasks.prior.PriorModule (its renderer's size S is the model's size); masked (N,3,H,W) [0,1],
    resized to S. K edits (apply_edit strings; default ["keep"]) run in one generator batch of N x K, all with the
    same noise, drawn from `seed` under the `noise` convention (tasks.prior.noised). `coeffs` (N,C) / `m`
    (N,1,S,S) {0,1} replace N_3D's predictions (the ground-truth prior); N_3D runs only for what is not given.
    use_3d_prior: False for an N_G trained without I_3D; composite_output: the input outside m; grey_prior: a
    constant 0.5 grey I_3D instead of the render (how much N_G relies on the prior: metrics.control).
    """
    device, size = prior.device, prior.renderer.image_size
    masked = masked.to(device).float()
    in_size = masked.shape[-1]
    masked = resize_square(masked, size)
    edits = list(edits or ["keep"])
    if coeffs is None or m is None:
        base, m_pred = prior.coefficients_and_mask(masked)
    base = base if coeffs is None else coeffs.to(device).float()
    m = m_pred if m is None else m.to(device).float()
    n, k = masked.shape[0], len(edits)
    edited = torch.stack([apply_edit(base, e, prior.morph) for e in edits], 1)  # (N,K,C)
    if grey_prior:  # nothing to render
        i3d = torch.full((n * k, 3, size, size), 0.5, device=device)
    else:
        i3d = prior.render(edited.flatten(0, 1))  # (N*K,3,S,S)
    i_n = noised(masked, m, torch.Generator().manual_seed(int(seed)), noise)
    rep = lambda t: t.unsqueeze(1).expand(n, k, *t.shape[1:]).flatten(0, 1)  # noqa: E731
    raw = gen(rep(m), i3d if use_3d_prior else None, rep(i_n)).float()
    final = composite(raw, rep(masked), rep(m)) if composite_output else raw
    shape = (n, k, 3, size, size)
    lm = rescale_points(prior.renderer.landmarks(base), in_size / size)
    return Removal(final.view(shape), raw.view(shape), i3d.view(shape), m, edited, base, lm, i_n, edits)


SEAM_MARGIN = 2  # pixels at the model's size


def seam_region(m: torch.Tensor) -> torch.Tensor:
    """The region a photo takes from a result, m (N,1,S,S) {0,1} grown by SEAM_MARGIN pixels: paste_back's
    feathered seam then lies outside N_3D's (already ``prior.mask_dilate``-grown) m, so m itself is replaced whole.
    Scoring (MaskRemover.in_frame) pastes m exactly, as every row of evaluate.py is composited."""
    return dilate(m, SEAM_MARGIN)


class MaskRemover:
    """N_3D + renderer + N_G for inference, with coefficient edits and seeded noise."""

    def __init__(self, prior, generator: torch.nn.Module, use_3d_prior: bool = True, composite: bool = True,
                 inference: InferenceConfig | None = None):
        self.prior = prior  # tasks.prior.PriorModule with source n3d
        self.gen = generator.eval()
        self.use_3d_prior = use_3d_prior
        self.composite = composite
        self.device = prior.device
        self.image_size = prior.renderer.image_size
        self.inference = inference or InferenceConfig()
        self.framing = self.inference.framing
        self.lm3d = None
        if self.framing is not None:
            from data.align import get_framing, load_lm3d

            if get_framing(self.framing).needs_lm3d:
                if not self.inference.lm3d_path:
                    raise ConfigError(f"inference.lm3d_path: framing {self.framing!r} needs "
                                     "BFM/similarity_Lm3D_all.mat")
                self.lm3d = load_lm3d(self.inference.lm3d_path, "inference.lm3d_path")
        elif self.inference.lm3d_path and self.inference.crop in FRAMINGS and FRAMINGS[self.inference.crop].needs_lm3d:
            from data.align import load_lm3d

            try:  # only photos need it (tasks.photo asks for --lm3d when it is missing); evaluation does not
                self.lm3d = load_lm3d(self.inference.lm3d_path, "inference.lm3d_path")
            except (FileNotFoundError, ValueError):
                self.lm3d = None

    @property
    def model(self):
        return self.prior.morph

    @classmethod
    def from_checkpoints(cls, inpaint_ckpt: str | Path, n3d_ckpt: str | Path | None = None,
                         device: str | torch.device = "cpu", key: str = "checkpoint",
                         inference: dict | None = None) -> MaskRemover:
        """Load RUN/inpaint.pt (EMA generator); N_3D from `n3d_ckpt` or the path recorded in the inpaint export.

        ``inference``: entries overriding the export's InferenceConfig (e.g. ``{"noise": "hole"}``).
        """
        import dataclasses

        from engine.config import build_dataclass
        from tasks.prior import PriorConfig, PriorModule

        device = torch.device(device)
        export = InpaintExport.load(inpaint_ckpt, key)
        prior_cfg = build_dataclass(PriorConfig, {**export.prior, "source": "n3d", "n3d_config": None,
                                                  **({"n3d_checkpoint": str(n3d_ckpt)} if n3d_ckpt else {})})
        prior = PriorModule(prior_cfg, export.morphable, export.image_size, device)
        inf = dataclasses.replace(export.inference, **(inference or {}))
        return cls(prior, export.build(device), export.model.use_3d_prior, export.model.composite, inf)

    @torch.no_grad()
    def analyze(self, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """masked (N,3,S,S) [0,1] at the generator's size -> (coeffs (N,C), m (N,1,S,S))."""
        return self.prior.coefficients_and_mask(masked)

    def predict_landmarks(self, crops: torch.Tensor) -> torch.Tensor:
        """crops (N,3,S,S) [0,1] in the model's framing -> (N,68,2) N_3D's landmarks in crop pixels
        (PriorModule.predict_landmarks; data.detectors.RefinedDetector's ``predict``)."""
        return self.prior.predict_landmarks(crops)

    @torch.no_grad()
    def __call__(self, masked: torch.Tensor, edits: list[str] | None = None, seed: int = 0,
                 coeffs: torch.Tensor | None = None, m: torch.Tensor | None = None,
                 grey_prior: bool = False) -> Removal:
        """masked (N,3,H,W) [0,1]; K edits -> Removal with N x K results (one generator batch): ``remove`` with
        this model's settings. `coeffs` / `m` replace N_3D's predictions (the ground-truth prior); `grey_prior` gives
        N_G a constant 0.5 grey I_3D."""
        return remove(self.gen, self.prior, masked, edits, seed, coeffs, m, use_3d_prior=self.use_3d_prior,
                      composite_output=self.composite, noise=self.inference.noise, grey_prior=grey_prior)

    @torch.no_grad()
    def in_frame(self, masked: torch.Tensor, landmarks: torch.Tensor, edits: list[str] | None = None,
                 seed: int = 0) -> Removal:
        """masked (N,3,H,W) [0,1] in any framing, landmarks (N,68,2) its pixels -> a Removal in that same frame.

        Each image is aligned into the model's framing (``self.framing``; ffhq when the model has none), run, and
        images / raw / i3d / m are warped back; outside the warped-back m the input is kept (feathered blend).
        ``coeffs`` stay in the model's crop, ``landmarks`` are mapped back into the input's pixels.
        """
        from data.align import align_face, invert_transform, paste_back, transform_points, warp_affine

        masked = masked.float().cpu()
        size = self.image_size
        aligned = [align_face(img, lm.cpu().numpy(), size, framing=self.framing or "ffhq", lm3d=self.lm3d)
                   for img, lm in zip(masked, landmarks)]
        res = self(torch.stack([a.image for a in aligned]), edits, seed=seed)
        h, w = masked.shape[-2:]

        def back(t: torch.Tensor, transform: np.ndarray) -> torch.Tensor:  # (C,S,S) crop -> (C,H,W) input frame
            arr = warp_affine(t.cpu().permute(1, 2, 0).numpy(), invert_transform(transform), (h, w))
            return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

        images, raw, i3d, m, lms = [], [], [], [], []
        for i, a in enumerate(aligned):
            m_i = (back(res.m[i], a.transform) > 0.5).float()
            m.append(m_i)
            images.append(torch.stack([paste_back(masked[i], res.images[i, k].cpu(), a.transform,
                                                  mask=res.m[i].cpu()) for k in range(res.images.shape[1])]))
            raw.append(torch.stack([back(x, a.transform) for x in res.raw[i]]))
            i3d.append(torch.stack([back(x, a.transform) for x in res.i3d[i]]))
            lms.append(transform_points(res.landmarks[i].cpu(), invert_transform(a.transform)))  # crop -> input
        dev = self.device
        return Removal(torch.stack(images).to(dev), torch.stack(raw).to(dev), torch.stack(i3d).to(dev),
                       torch.stack(m).to(dev), res.coeffs, res.base_coeffs, torch.stack(lms).to(dev), res.i_n,
                       res.edits)
