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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from models.generator import composite
from tasks.common import resize_square
from tasks.inpaint import noised

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
            try:
                parts["exp"].copy_(model.expression(op, out.shape[0]).to(out))
            except (KeyError, ValueError) as e:
                raise ValueError(f"unknown edit {op!r}: {e.args[0] if e.args else e}") from None
            continue
        name, idx, kind, val = m["name"], m["idx"], m["op"], float(m["val"])
        if name not in parts:
            raise ValueError(f"unknown coefficient block {name!r} in edit {op!r}; valid: {', '.join(parts)}")
        block = parts[name]
        if idx is not None and int(idx) >= block.shape[1]:
            raise ValueError(f"edit {op!r}: index {idx} out of range for {name} ({block.shape[1]} coefficients)")
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
    """images (N,K,3,H,W) final results; raw (N,K,3,H,W) generator outputs; i3d (N,K,3,H,W) rendered priors;
    m (N,1,H,W) occlusion map; coeffs (N,K,C) edited coefficients; base_coeffs (N,C) N_3D's prediction."""

    images: torch.Tensor
    raw: torch.Tensor
    i3d: torch.Tensor
    m: torch.Tensor
    coeffs: torch.Tensor
    base_coeffs: torch.Tensor


class MaskRemover:
    """N_3D + renderer + N_G for inference, with coefficient edits and seeded noise."""

    def __init__(self, prior, generator: torch.nn.Module, use_3d_prior: bool = True, composite: bool = True):
        self.prior = prior  # tasks.inpaint.PriorModule with source n3d
        self.gen = generator.eval()
        self.use_3d_prior = use_3d_prior
        self.composite = composite
        self.device = prior.device
        self.image_size = prior.renderer.image_size

    @property
    def model(self):
        return self.prior.morph

    @classmethod
    def from_checkpoints(cls, inpaint_ckpt: str | Path, n3d_ckpt: str | Path | None = None,
                         device: str | torch.device = "cpu", key: str = "checkpoint") -> MaskRemover:
        """Load RUN/inpaint.pt (EMA generator); N_3D from `n3d_ckpt` or the path recorded in the inpaint export."""
        from engine.checkpoint import load_inference
        from engine.config import build_dataclass
        from tasks.common import MorphableConfig
        from tasks.inpaint import InpaintModelConfig, PriorConfig, PriorModule, build_generator

        device = torch.device(device)
        p = Path(inpaint_ckpt)
        if not p.is_file():
            raise FileNotFoundError(f"{key}: inpainting checkpoint not found: {p} (train it with train_inpaint.py)")
        state = load_inference(p, what=key, expect="g_ema")
        conf = state["config"]
        mc = build_dataclass(InpaintModelConfig, {**conf["model"], "arcface_weights": None})
        prior_cfg = build_dataclass(PriorConfig, {**conf["prior"], "source": "n3d", "n3d_config": None,
                                                  **({"n3d_checkpoint": str(n3d_ckpt)} if n3d_ckpt else {})})
        prior = PriorModule(prior_cfg, build_dataclass(MorphableConfig, conf["morphable"]),
                            int(conf["image_size"]), device)
        gen = build_generator(mc)
        gen.load_state_dict(state["modules"]["g_ema"])
        return cls(prior, gen.to(device), mc.use_3d_prior, mc.composite)

    @torch.no_grad()
    def analyze(self, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """masked (N,3,S,S) [0,1] at the generator's size -> (coeffs (N,C), m (N,1,S,S))."""
        return self.prior.coefficients_and_mask(masked)

    @torch.no_grad()
    def __call__(self, masked: torch.Tensor, edits: list[str] | None = None, seed: int = 0,
                 coeffs: torch.Tensor | None = None, m: torch.Tensor | None = None,
                 grey_prior: bool = False) -> Removal:
        """masked (N,3,S,S) [0,1]; K edits -> Removal with N x K results (one generator batch).

        The noise in the hole is drawn from `seed` (the same noise for every edit, so the edits alone differ).
        `coeffs` / `m` override N_3D's predictions (e.g. ground truth, for ablations). `grey_prior` gives N_G a
        constant 0.5 grey I_3D instead of the render (how much N_G relies on the prior: metrics.control).
        """
        masked = masked.to(self.device).float()
        masked = resize_square(masked, self.image_size)
        edits = list(edits or ["keep"])
        if coeffs is None or m is None:  # N_3D only for what is not given
            base, m_pred = self.analyze(masked)
        base = base if coeffs is None else coeffs.to(self.device).float()
        m = m_pred if m is None else m.to(self.device).float()
        n, k = masked.shape[0], len(edits)
        edited = torch.stack([apply_edit(base, e, self.model) for e in edits], 1)  # (N,K,C)
        i3d = self.prior.render(edited.flatten(0, 1))  # (N*K,3,S,S)
        i3d = torch.full_like(i3d, 0.5) if grey_prior else i3d
        i_n = noised(masked, m, torch.Generator().manual_seed(int(seed)))
        rep = lambda t: t.unsqueeze(1).expand(n, k, *t.shape[1:]).flatten(0, 1)  # noqa: E731
        raw = self.gen(rep(m), i3d if self.use_3d_prior else None, rep(i_n)).float()
        final = composite(raw, rep(masked), rep(m)) if self.composite else raw
        shape = (n, k, 3, self.image_size, self.image_size)
        return Removal(final.view(shape), raw.view(shape), i3d.view(shape), m, edited, base)
