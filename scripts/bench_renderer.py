"""Time the face renderer: ms per 224 x 224 face with a BFM-sized synthetic mesh at batch 8.

Measures the full forward pass (shape, normals, SH shading, projection, rasterization, interpolation) and the
forward + backward pass (gradients w.r.t. the coefficients), for every backend that can run on the device.

    python scripts/bench_renderer.py [--device cpu] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from renderer.morphable import MorphableModel  # noqa: E402
from renderer.raster import RASTERIZERS  # noqa: E402
from renderer.render import FaceRenderer  # noqa: E402

BFM_VERTICES = 35709


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats: int) -> float:
    fn()  # warm-up (allocator, lazy init)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def run(device: str = "cpu", quick: bool = False, batch: int = 8, size: int = 224,
        n_vertices: int = BFM_VERTICES) -> dict:
    """Benchmark every available backend; returns {backend: {...ms per face...}} plus mesh/device info.

    quick: fewer repeats and a smaller mesh (~6000 vertices), for smoke tests.
    """
    dev = torch.device(device)
    model = MorphableModel.synthetic(seed=0, n_vertices=None if quick else n_vertices).to(dev)
    coeffs = model.sample_coeffs(batch, generator=torch.Generator().manual_seed(0))
    repeats = 2 if quick else 10  # best of 10: single runs on a shared 2-core VM vary by 20-30 %
    result = {"device": str(dev), "batch": batch, "image_size": size, "vertices": model.n_vertices,
              "triangles": model.n_triangles, "threads": torch.get_num_threads(), "backends": {}}
    for name in RASTERIZERS:
        try:
            renderer = FaceRenderer(model, size, backend=name).to(dev)
            with torch.no_grad():
                renderer(coeffs)  # surfaces device errors (e.g. nvdiffrast on CPU tensors)
        except RuntimeError as exc:
            result["backends"][name] = {"skipped": str(exc)}
            continue

        def forward(renderer=renderer):
            with torch.no_grad():
                renderer(coeffs)

        def forward_backward(renderer=renderer):
            c = coeffs.clone().requires_grad_(True)
            out = renderer(c)
            (out.image.mean() + out.landmarks.mean() * 1e-3).backward()

        t_fwd = _time(forward, dev, repeats)
        t_fb = _time(forward_backward, dev, repeats)
        result["backends"][name] = {"forward_ms_per_face": 1000.0 * t_fwd / batch,
                                    "forward_backward_ms_per_face": 1000.0 * t_fb / batch}
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args(argv)
    print(json.dumps(run(args.device, args.quick, args.batch, args.size), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
