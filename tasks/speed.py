"""Speed measurements the benchmark scripts report (scripts/bench_synth.py, scripts/bench_renderer.py,
scripts/benchmark.py): masked-pair synthesis per CPU core, and the face renderer per backend."""

from __future__ import annotations

import itertools
import math
import time

import cv2
import numpy as np
import torch

from data.masks.canonical import posed_landmarks
from data.masks.library import MaskLibrary
from data.synth import MaskedPairSynthesizer
from renderer.camera import project
from renderer.lighting import sh_shading
from renderer.morphable import MorphableModel
from renderer.raster import RASTERIZERS
from renderer.render import FaceRenderer


def synthesis_speed(quick: bool = False, size: int = 256, library: MaskLibrary | None = None) -> dict:
    """Time ``MaskedPairSynthesizer.synth`` -> {"pairs_per_s", "ms_per_pair", "library_load_s", ...}."""
    cv_threads, threads = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    try:
        n_shapes, n_tex = (60, 60) if quick else (900, 800)
        t0 = time.perf_counter()
        lib = library if library is not None else MaskLibrary.procedural(0, n_shapes, n_tex).preload()
        load_s = time.perf_counter() - t0
        synth = MaskedPairSynthesizer(lib)
        rng = np.random.default_rng(0)
        n_faces = 16
        faces = []
        for _ in range(n_faces):
            lm = posed_landmarks(yaw=rng.uniform(-30, 30), roll=rng.uniform(-15, 15),
                                 mouth_open=rng.uniform(0, 0.2), size=size)
            img = torch.from_numpy(rng.uniform(0.2, 0.8, (3, size, size)).astype(np.float32))
            faces.append((img, torch.from_numpy(lm)))
        for k in range(20):  # warm-up
            synth.synth(*faces[k % n_faces], k)
        # rounds of different pairs: the median is the figure, the best shows what a quiet core does (single runs
        # on a shared VM vary by 10-30 %)
        rounds, per_round = (2, 100) if quick else (4, 500)
        times = []
        for r in range(rounds):
            t0 = time.perf_counter()
            for k in range(per_round):
                synth.synth(*faces[k % n_faces], 1000 + r * per_round + k)
            times.append((time.perf_counter() - t0) / per_round)
    finally:
        cv2.setNumThreads(cv_threads)
        torch.set_num_threads(threads)
    med, best = float(np.median(times)), min(times)
    res = {"pairs_per_s": round(1 / med, 1), "ms_per_pair": round(med * 1000, 3),
           "best_pairs_per_s": round(1 / best, 1), "size": size, "pairs": rounds * per_round, "rounds": rounds,
           "library": repr(lib), "library_load_s": round(load_s, 2), "threads": 1}
    print(f"bench_synth: {res['pairs_per_s']} pairs/s per core at {size}x{size} ({res['ms_per_pair']} ms/pair, "
          f"median of {rounds} rounds; best {res['best_pairs_per_s']}; library {lib!r} loaded in "
          f"{res['library_load_s']} s)")
    return res


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


def renderer_speed(device: str = "cpu", quick: bool = False, batch: int = 8, size: int = 224,
                   n_vertices: int = BFM_VERTICES, shadings: tuple[str, ...] = ("deng",)) -> dict:
    """Benchmark every available backend with each shading; returns {"backend" or "backend/shading": {...ms per
    face...}} plus mesh/device info (the key is the backend alone for deng, the default shading).

    quick: fewer repeats and a smaller mesh (~6000 vertices), for smoke tests.
    """
    dev = torch.device(device)
    model = MorphableModel.synthetic(seed=0, n_vertices=None if quick else n_vertices).to(dev)
    coeffs = model.sample_coeffs(batch, generator=torch.Generator().manual_seed(0))
    repeats = 2 if quick else 10  # best of 10: single runs on a shared 2-core VM vary by 20-30 %
    result = {"device": str(dev), "batch": batch, "image_size": size, "vertices": model.n_vertices,
              "triangles": model.n_triangles, "threads": torch.get_num_threads(), "backends": {}}
    for backend, shading in itertools.product(RASTERIZERS, shadings):
        name = backend if shading == "deng" else f"{backend}/{shading}"
        try:
            renderer = FaceRenderer(model, size, backend=backend, shading=shading).to(dev)
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
