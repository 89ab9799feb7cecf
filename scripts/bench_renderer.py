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

from renderer.render import SHADINGS
from tasks.speed import renderer_speed, shading_diff


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
