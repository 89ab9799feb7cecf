"""Time the face renderer: ms per 224 x 224 face with a BFM-sized synthetic mesh at batch 8.

Measures the full forward pass (shape, normals, SH shading, projection, rasterization, interpolation) and the
forward + backward pass (gradients w.r.t. the coefficients), for every backend that can run on the device and
every shading convention (renderer.render.SHADINGS: deng, release).

    python scripts/bench_renderer.py [--device cpu] [--quick] [--shading deng release]
    python scripts/bench_renderer.py --shading-diff     # how far the release's shading is from Deng's

``--shading-diff`` renders 8 poses and lights (+-30 deg yaw, pitch and roll, translations, directional SH light,
one over-exposed face) of a BFM-shaped mesh (the synthetic model at 15,851 vertices, the size of the stand-in the
release was checked on) at 256 px with both conventions and reports the vertex-normal angle and the I_3D
difference (mean / p99 / max, in 1/255, over pixels either render covers).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from renderer.camera import project  # noqa: E402
from renderer.lighting import sh_shading  # noqa: E402
from renderer.morphable import MorphableModel  # noqa: E402
from renderer.render import SHADINGS, FaceRenderer  # noqa: E402
from tasks.speed import renderer_speed  # noqa: E402


def shading_coeffs(model: MorphableModel) -> torch.Tensor:
    """8 coefficient vectors (8, K): +-30 deg yaw, pitch and roll, translations, a directional SH light each, one
    face over-exposed; identity, expression and texture from sample_coeffs (seed 0)."""
    c = model.sample_coeffs(8, generator=torch.Generator().manual_seed(0))
    lay = model.layout
    deg = math.pi / 180.0
    angles = torch.tensor([[0, 30, 0], [0, -30, 0], [30, 0, 0], [-30, 0, 0], [0, 0, 30], [0, 0, -30],
                           [15, 20, -10], [-10, -25, 15]], dtype=torch.float32) * deg
    trans = torch.tensor([[0, 0, 0], [0.3, 0, 0], [0, 0.3, 0], [-0.2, -0.2, 0], [0, 0, 1.0], [0, 0, -1.0],
                          [0.2, 0.1, 0.5], [-0.1, 0.2, -0.5]], dtype=torch.float32)
    c[:, lay.slice("angle")] = angles
    c[:, lay.slice("trans")] = trans
    gamma = torch.zeros(8, 3, 9)
    light = torch.nn.functional.normalize(torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
                                          + torch.tensor([0.0, 0.3, 1.0]), dim=-1)
    gamma[:, :, 1:4] = (0.4 * torch.stack([-light[:, 1], light[:, 2], -light[:, 0]], -1)).unsqueeze(1)
    gamma[7, :, 0] = 0.8  # over-exposed: the render clips
    c[:, lay.slice("gamma")] = gamma.reshape(8, 27)
    return c


def shading_diff(n_vertices: int = 15851, size: int = 256) -> dict:
    """Deng's vs the release's shading on a BFM-shaped mesh (module doc): normal angles in degrees, I_3D in 1/255."""
    model = MorphableModel.synthetic(seed=0, n_vertices=n_vertices)
    coeffs = shading_coeffs(model)
    deng, rel = FaceRenderer(model, size), FaceRenderer(model, size, shading="release")
    with torch.no_grad():
        a, b = deng(coeffs), rel(coeffs)
        pix = project(a.vertices, deng.focal, size)
        na, nb = deng.vertex_normals(a.vertices, pix), rel.vertex_normals(a.vertices, pix)
        # each convention alone: the release's normals with perspective-correct interpolation, and Deng's normals
        # with screen-space interpolation
        lights = deng.model.albedo(model.layout.split(coeffs)["tex"])
        gamma = model.layout.split(coeffs)["gamma"]
        only = {}
        for key, normals, pc in (("normals_only", nb, True), ("interpolation_only", na, False)):
            colors = lights * sh_shading(normals, gamma)
            frags = deng.rasterizer.rasterize(pix, a.vertices[..., 2], model.triangles, size, perspective_correct=pc)
            only[key] = deng.rasterizer.interpolate(colors, frags).clamp(0, 1).permute(0, 3, 1, 2)
    angle = torch.rad2deg(torch.acos((na * nb).sum(-1).clamp(-1.0, 1.0))).flatten().double()
    covered = ((a.mask + b.mask) > 0).expand_as(a.image)

    def stats(x):
        return {"mean": float(x.mean()), "p99": float(torch.quantile(x, 0.99)), "max": float(x.max())}

    def image_stats(img):
        return stats(((a.image - img).abs() * 255.0)[covered].double())

    return {"vertices": model.n_vertices, "triangles": model.n_triangles, "image_size": size, "faces": 8,
            "normal_angle_deg": stats(angle), "i3d_abs_diff_255": image_stats(b.image),
            "i3d_abs_diff_255_normals_only": image_stats(only["normals_only"]),
            "i3d_abs_diff_255_interpolation_only": image_stats(only["interpolation_only"]),
            "coverage_differs_px": int((a.mask != b.mask).sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--shading", nargs="+", default=["deng"], choices=list(SHADINGS))
    ap.add_argument("--shading-diff", action="store_true", help="measure the release's shading against Deng's")
    args = ap.parse_args(argv)
    if args.shading_diff:
        print(json.dumps(shading_diff(), indent=2))
        return 0
    print(json.dumps(renderer_speed(args.device, args.quick, args.batch, args.size, shadings=tuple(args.shading)),
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
