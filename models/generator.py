"""N_G: the inpainting generator (paper sec. 3.2; layout of the authors' release, docs/formats.md sec. 5).

    concat(m, I_3D, I_n) (B,7,H,W) -> SN conv7x7 -> 64 -> SN conv4x4/2 -> 128 -> SN conv4x4/2 -> 256
    -> n_res residual blocks (256) -> up (SN conv3x3 + bilinear x2) -> 128 -> up -> 64 -> SN conv7x7 -> 3 -> sigmoid

Every conv is spectrally normalised and bias-free, every norm is InstanceNorm(affine). Widths scale with
``base_channels`` (64 in the paper). ``n_down`` (2 in the paper and the release) sets the number of stride-2 stages,
so the residual blocks work at 1 / 2**n_down of the input: at 256 px the paper's 64 x 64. H and W must be multiples
of 2**n_down.

``prior_blend`` (not in the paper; off by default) adds a second 7x7 head that predicts a per-pixel gate a in [0,1]:
output = a * I_3D + (1 - a) * G(x). Copying the rendered face then costs the network one gate value instead of a
pixel-exact identity map through the down/up path, which a short training cannot learn (docs/demo.md, "N_G").
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from models.layers import ConvNormAct, ResBlockIN, UpBlock, sn_conv2d
from models.weights import rename_by_prefix

__all__ = ["Generator", "composite", "key_map_authors_release", "AUTHORS_INPUT_PERMUTATION"]

# Our input channel c holds the release's channel AUTHORS_INPUT_PERMUTATION[c]: the release feeds
# cat(I_n[0:3], I_3D[3:6], m[6]), we feed cat(m, I_3D, I_n).
AUTHORS_INPUT_PERMUTATION = (6, 3, 4, 5, 0, 1, 2)


class Generator(nn.Module):
    """forward(m (B,1,H,W) {0,1}, i3d (B,3,H,W) [0,1] or None, i_n (B,3,H,W) [0,1]) -> (B,3,H,W) in [0,1].

    ``use_3d_prior=False`` (ablation): 4 input channels concat(m, I_n); ``i3d`` is ignored and may be None.
    ``prior_blend=True`` (needs ``use_3d_prior``): the output blends I_3D and the generated image by a learned gate;
    ``forward(..., return_gate=True)`` also returns the gate (B,1,H,W) in [0,1].
    """

    def __init__(self, base_channels: int = 64, n_res: int = 6, use_3d_prior: bool = True, n_down: int = 2,
                 prior_blend: bool = False):
        super().__init__()
        if n_down < 0:
            raise ValueError(f"n_down must be >= 0, got {n_down}")
        if prior_blend and not use_3d_prior:
            raise ValueError("model.prior_blend needs model.use_3d_prior: there is no I_3D to blend")
        self.use_3d_prior, self.prior_blend = use_3d_prior, prior_blend
        in_ch = 7 if use_3d_prior else 4
        widths = [base_channels * 2 ** i for i in range(n_down + 1)]  # 64, 128, 256 in the paper (n_down = 2)
        self.stem = ConvNormAct(in_ch, widths[0], 7, padding=3)
        self.down = nn.Sequential(*[ConvNormAct(a, b, 4, stride=2, padding=1) for a, b in zip(widths, widths[1:])])
        self.res = nn.Sequential(*[ResBlockIN(widths[-1]) for _ in range(n_res)])
        self.up = nn.Sequential(*[UpBlock(b, a) for a, b in zip(widths[::-1][1:], widths[::-1])])
        self.head = sn_conv2d(widths[0], 3, 7, padding=3, bias=False)
        # the gate starts at sigmoid(0) = 0.5 everywhere: neither source is preferred before training
        self.gate = sn_conv2d(widths[0], 1, 7, padding=3, bias=True) if prior_blend else None
        if self.gate is not None:
            nn.init.zeros_(self.gate.bias)

    def forward(self, m: torch.Tensor, i3d: torch.Tensor | None, i_n: torch.Tensor,
                return_gate: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.use_3d_prior:
            if i3d is None:
                raise ValueError("Generator(use_3d_prior=True) needs the rendered face i3d")
            x = torch.cat([m, i3d, i_n], dim=1)
        else:
            x = torch.cat([m, i_n], dim=1)
        h = self.up(self.res(self.down(self.stem(x))))
        out = torch.sigmoid(self.head(h))
        gate = None
        if self.gate is not None:
            gate = torch.sigmoid(self.gate(h))
            out = gate * i3d + (1 - gate) * out
        return (out, gate) if return_gate else out


def composite(pred: torch.Tensor, masked_image: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Keep visible pixels, take the prediction inside the mask: pred * m + masked_image * (1 - m). (B,3,H,W)."""
    return pred * m + masked_image * (1 - m)


def _authors_prefix_map(n_enc: int, n_dec: int) -> list[tuple[str, str]]:
    """Release ``encoder.main.i`` / ``decoder.main.i`` Sequential indices -> our module paths."""
    pairs = [
        ("encoder.main.0.", "stem.conv."), ("encoder.main.1.", "stem.norm."),
        ("encoder.main.3.", "down.0.conv."), ("encoder.main.4.", "down.0.norm."),
        ("encoder.main.6.", "down.1.conv."), ("encoder.main.7.", "down.1.norm."),
    ]
    pairs += [(f"encoder.main.{9 + i}.main.", f"res.{i}.body.") for i in range(n_enc)]
    pairs += [(f"decoder.main.{i}.main.", f"res.{n_enc + i}.body.") for i in range(n_dec)]
    j = n_dec
    pairs += [
        (f"decoder.main.{j}.conv.", "up.0.conv."), (f"decoder.main.{j + 1}.", "up.0.norm."),
        (f"decoder.main.{j + 3}.conv.", "up.1.conv."), (f"decoder.main.{j + 4}.", "up.1.norm."),
        (f"decoder.main.{j + 6}.", "head."),
    ]
    return pairs


def key_map_authors_release(state_dict: Mapping[str, torch.Tensor], n_enc_res: int = 3,
                            n_dec_res: int = 3) -> dict[str, torch.Tensor]:
    """Convert the release's generator state dict (``inpaint_it_200000.pkl['gen']``) to ``Generator()``'s.

    Strips ``module.``, renames the Sequential indices, converts legacy spectral-norm keys
    (``weight_orig/_u/_v``), and permutes the first conv's input channels (and its power-iteration vector ``v``)
    from the release's (I_n, I_3D, m) order to ours (m, I_3D, I_n) so the network computes the same function.
    Best effort from the release's module definitions; NOT yet tested against the real file.
    """
    pairs = _authors_prefix_map(n_enc_res, n_dec_res)
    out = rename_by_prefix(state_dict, pairs, "authors' N_G weights")
    perm = list(AUTHORS_INPUT_PERMUTATION)
    w_key, v_key = "stem.conv.parametrizations.weight.original", "stem.conv.parametrizations.weight.0._v"
    if w_key in out:
        weight = out[w_key]
        out[w_key] = weight[:, perm].contiguous()
        if v_key in out:  # v lives in the flattened (in, kh, kw) space of the weight matrix
            out[v_key] = out[v_key].view(weight.shape[1], -1)[perm].reshape(-1).contiguous()
    return out
