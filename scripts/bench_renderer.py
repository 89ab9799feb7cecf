"""Time the face renderer: ms per 224 x 224 face with a BFM-sized synthetic mesh at batch 8.

Measures the full forward pass (shape, normals, SH shading, projection, rasterization, interpolation) and the
forward + backward pass (gradients w.r.t. the coefficients), for every backend that can run on the device.

    python scripts/bench_renderer.py [--device cpu] [--quick]
"""

from __future__ import annotations

import argparse
import json

from tasks.speed import renderer_speed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args(argv)
    print(json.dumps(renderer_speed(args.device, args.quick, args.batch, args.size), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
