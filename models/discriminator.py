"""N_D: the VGG-like discriminator (paper sec. 3.2; StarGAN v2 layout as in the authors' release).

    (B,3,S,S) -> SN conv3x3 -> C -> [IN, SN conv3x3, LeakyReLU 0.2, AvgPool2] x (log2 S - 2)  (widths x2, <= max)
    -> LeakyReLU -> SN conv4x4 (valid, 4x4 -> 1x1) -> LeakyReLU -> SN conv1x1 -> 1 logit

At 256 px with base 64: six blocks 64->128->256->512->512->512->512, as the release.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import DownBlockD, sn_conv2d
from models.weights import rename_by_prefix

__all__ = ["Discriminator", "key_map_authors_release"]


class Discriminator(nn.Module):
    """forward(images (B,3,S,S) in [0,1]) -> (B,) real/fake logits. ``image_size`` S: a power of two >= 8."""

    def __init__(self, image_size: int = 256, base_channels: int = 64, max_channels: int = 512):
        super().__init__()
        n_blocks = int(round(math.log2(image_size))) - 2
        if 2 ** (n_blocks + 2) != image_size or n_blocks < 1:
            raise ValueError(f"Discriminator image_size must be a power of two >= 8, got {image_size}")
        self.image_size = image_size
        self.stem = sn_conv2d(3, base_channels, 3, padding=1)
        blocks, ch = [], base_channels
        for _ in range(n_blocks):
            out = min(2 * ch, max_channels)
            blocks.append(DownBlockD(ch, out))
            ch = out
        self.blocks = nn.Sequential(*blocks)
        self.head_conv = sn_conv2d(ch, ch, 4)
        self.out = sn_conv2d(ch, 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"Discriminator built for {self.image_size} px, got {tuple(images.shape[-2:])}")
        h = F.leaky_relu(self.blocks(self.stem(images)), 0.2)
        h = F.leaky_relu(self.head_conv(h), 0.2)
        return self.out(h).reshape(images.shape[0])


def key_map_authors_release(state_dict: Mapping[str, torch.Tensor], n_blocks: int = 6) -> dict[str, torch.Tensor]:
    """Convert a release-style discriminator state dict (``main.<i>`` Sequential, legacy spectral norm) to ours.

    Best effort: the public release ships only the generator's weights (``['gen']``); untested on a real file.
    """
    pairs = [("main.0.", "stem.")]
    pairs += [(f"main.{1 + i}.", f"blocks.{i}.") for i in range(n_blocks)]
    pairs += [(f"main.{n_blocks + 2}.", "head_conv."), (f"main.{n_blocks + 4}.", "out.")]
    out = rename_by_prefix(state_dict, pairs, "authors' N_D weights")
    return out
