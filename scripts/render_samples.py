"""Render a grid of synthetic 3DMM faces (varied identity, expression, pose, lighting) with landmarks drawn.

    python scripts/render_samples.py --out samples.png --n 16 --size 224 --seed 0
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np
import torch

from data.draw import draw_points, label, tile_grid
from data.io import to_uint8
from renderer.morphable import MorphableModel
from renderer.render import FaceRenderer

# cycled per tile: (label, expression preset, yaw in degrees)
_PLAN = [("neutral", "neutral", 0.0), ("open_mouth", "open_mouth", 0.0), ("smile", "smile", 0.0),
         ("yaw -30", "neutral", -30.0), ("yaw +30", "neutral", 30.0), ("smile yaw+20", "smile", 20.0),
         ("open yaw-20", "open_mouth", -20.0), ("random", None, None)]


def sample_grid(model: MorphableModel, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Coefficients (n, size) following _PLAN, with random identity, texture and lighting."""
    g = torch.Generator().manual_seed(seed)
    coeffs = model.sample_coeffs(n, generator=g)
    parts = model.layout.split(coeffs.clone())
    labels = []
    for i in range(n):
        label, preset, yaw = _PLAN[i % len(_PLAN)]
        if preset is not None:
            parts["exp"][i] = model.expression(preset)[0]
            parts["angle"][i] = torch.tensor([0.0, math.radians(yaw), 0.0])
        labels.append(label)
    return model.layout.join(parts), labels


def draw_landmarks(img: np.ndarray, lmk: np.ndarray) -> np.ndarray:
    """img (H, W, 3) uint8 RGB, lmk (68, 2) -> copy with iBUG groups drawn in different colours."""
    out = img.copy()
    groups = [(0, 17, (255, 255, 0)), (17, 27, (255, 128, 0)), (27, 36, (0, 255, 0)), (36, 48, (0, 200, 255)),
              (48, 68, (255, 0, 255))]
    for a, b, col in groups:
        draw_points(out, lmk[a:b], col)
    return out


def make_grid(images: list[np.ndarray], labels: list[str], cols: int) -> np.ndarray:
    tiles = [label(im.copy(), lab, (3, 12), 0.35, outline=False) for im, lab in zip(images, labels)]
    return tile_grid(tiles, cols)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output PNG path")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-seed", type=int, default=0, help="seed of the synthetic model's random bases")
    ap.add_argument("--n-vertices", type=int, default=None, help="synthetic mesh size (default ~6000)")
    ap.add_argument("--bfm", default=None, help="render with BFM_model_front.mat instead of the synthetic model")
    ap.add_argument("--no-landmarks", action="store_true")
    ap.add_argument("--backend", default="torch")
    args = ap.parse_args(argv)

    model = MorphableModel.from_bfm(args.bfm) if args.bfm else MorphableModel.synthetic(args.model_seed,
                                                                                      args.n_vertices)
    renderer = FaceRenderer(model, args.size, backend=args.backend)
    if model.expression_names:
        coeffs, labels = sample_grid(model, args.n, args.seed)
    else:
        coeffs = model.sample_coeffs(args.n, generator=torch.Generator().manual_seed(args.seed))
        labels = ["random"] * args.n
    with torch.no_grad():
        out = renderer(coeffs)
    imgs = to_uint8(out.image.permute(0, 2, 3, 1).numpy())
    lmks = out.landmarks.numpy()
    tiles = [im if args.no_landmarks else draw_landmarks(im, lm) for im, lm in zip(imgs, lmks)]
    grid = make_grid(tiles, labels, cols=min(args.n, 4))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out} ({args.n} faces, {model.n_vertices} vertices, {model.n_triangles} triangles)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
