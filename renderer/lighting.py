"""Second-order spherical-harmonics illumination with Deng et al.'s constants (27 gamma coefficients)."""

from __future__ import annotations

import math

import torch

SH_A = (math.pi, 2.0 * math.pi / math.sqrt(3.0), 2.0 * math.pi / math.sqrt(8.0))
SH_C = (1.0 / math.sqrt(4.0 * math.pi), math.sqrt(3.0) / math.sqrt(4.0 * math.pi),
        3.0 * math.sqrt(5.0) / math.sqrt(12.0 * math.pi))
INIT_LIGHT = 0.8  # added to band 0 of each colour, so gamma = 0 gives a plain ambient light


def sh_basis(normals: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The 9 SH basis values (already scaled by the a_l c_l constants) at unit normals (..., 3) -> (..., 9), the
    9 stacked along ``dim`` of the result (e.g. dim=1: (B, V, 3) -> (B, 9, V))."""
    nx, ny, nz = normals.unbind(-1)
    a0c0 = SH_A[0] * SH_C[0]
    a1c1 = SH_A[1] * SH_C[1]
    a2c2 = SH_A[2] * SH_C[2]
    return torch.stack([
        torch.full_like(nx, a0c0),
        -a1c1 * ny,
        a1c1 * nz,
        -a1c1 * nx,
        a2c2 * nx * ny,
        -a2c2 * ny * nz,
        0.5 * a2c2 / math.sqrt(3.0) * (3.0 * nz * nz - 1.0),
        -a2c2 * nx * nz,
        0.5 * a2c2 * (nx * nx - ny * ny),
    ], dim=dim)


def sh_shading(normals: torch.Tensor, gamma: torch.Tensor, init_light: float = INIT_LIGHT) -> torch.Tensor:
    """Per-vertex irradiance.

    normals (B, V, 3) unit, camera-space; gamma (B, 27) colour-major (9 R, 9 G, 9 B). Returns (B, V, 3) >= ~0
    (unbounded above); multiply by albedo for the vertex colour.
    """
    g = gamma.reshape(-1, 3, 9) + torch.tensor([init_light] + [0.0] * 8, dtype=gamma.dtype, device=gamma.device)
    # (B, 3, 9) @ (B, 9, V): a long output row per colour; (B, V, 9) @ (B, 9, 3) is ~2x slower on CPU
    return (g @ sh_basis(normals, dim=1)).transpose(1, 2)
