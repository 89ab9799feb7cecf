"""How well each detector finds and aligns *masked* faces: faces found and 5-point NME per detector.

    python scripts/benchmark_landmarks.py [--seeds 4] [--synthetic 16] [--detectors dlib,dlib_cnn,masked]
                                          [--n3d runs/3d_demo/n3d.pt] [--refine 2] [--json OUT.json]

Sets (each face masked by our synthesiser, data.synth.MaskedPairSynthesizer, once per seed):
  astronaut  scikit-image's astronaut (the real face photo a registry package ships), FFHQ-framed at 256 px
             (eyes ~62 px apart), in 12 variants: mirrored or not x roll -12 / 0 / +12 degrees x crop scale 1, 1.3.
             Reference: dlib HOG + 68 points on the *unmasked* variant (the faces a detector sees unmasked).
  insightface  the real faces insightface's wheel ships (data/images: the six of the group photo t1.jpg and
             Tom_Hanks_54745.png), each FFHQ-framed at 256 px, rolled -12 / 0 / +12 degrees, masked with 2 seeds
             (``--seeds`` halved); reference as the astronaut's. Several are turned or tilted: a harder set.
  synthetic  held-out SyntheticFaces at 256 px; reference: their exact (renderer) landmarks.
A detection counts as found when its eye midpoint is within one inter-ocular distance of the reference's; the NME
is the mean distance of the 5 alignment points (data.align.five_points: eye centres, nose tip, mouth corners) over
the reference's eye-centre distance, on the faces found. ``--n3d`` adds each detector followed by ``--refine``
rounds of N_3D refinement (data.detectors.RefinedDetector) on the synthetic set, in the framing a model trained on
SyntheticFaces expects (the mean face as the renderer frames it); on the photo set that needs an N_3D trained on
real faces (``--n3d-photos``). Results go to BENCHMARKS.md by hand. The sets and the measure are
metrics/detection.py; the refinement is tasks.photo.refine_faces' (data.detectors.RefinedDetector with N_3D).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def get_any_detector(name: str):
    """data.detectors' registry, plus ``mtcnn`` and ``mediapipe`` (measuring only)."""
    from data.detectors import MEASURING_DETECTORS, get_detector

    return MEASURING_DETECTORS[name]() if name in MEASURING_DETECTORS else get_detector(name)


def n3d_refiner(base, n3d_path: str, iterations: int, device: str = "cpu"):
    """``base`` followed by N_3D refinement with the export at ``n3d_path``, in the SyntheticFaces framing (the
    mean face as the renderer frames it)."""
    from data.detectors import RefinedDetector
    from tasks.photo import meanface_template
    from tasks.prior import PriorModule

    prior = PriorModule.from_n3d(n3d_path, device, "--n3d")
    return RefinedDetector(base, prior.predict_landmarks, prior.renderer.image_size, iterations,
                           template=meanface_template(prior))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=4, help="masks per face")
    p.add_argument("--synthetic", type=int, default=16, help="synthetic faces (0: none)")
    p.add_argument("--detectors", default="dlib,dlib_cnn,masked", help="comma-separated data.detectors detector names "
                                                                "(and mtcnn / mediapipe, if importable)")
    p.add_argument("--n3d", default=None, help="N_3D export for the refinement rows (e.g. runs/3d_demo/n3d.pt)")
    p.add_argument("--n3d-photos", action="store_true", help="refinement rows on the photo set too (an N_3D "
                                                             "trained on real faces)")
    p.add_argument("--refine", type=int, default=2, help="N_3D refinement rounds")
    p.add_argument("--no-photos", action="store_true", help="skip the photo sets")
    p.add_argument("--photos", default="astronaut,insightface", help="photo sets (astronaut, insightface)")
    p.add_argument("--json", default=None, help="write the results here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from metrics.detection import photo_sets, score, synthetic_sets

    try:
        detectors = {name: get_any_detector(name) for name in args.detectors.split(",") if name}
        sets = {}
        photos = [] if args.no_photos else [w for w in args.photos.split(",") if w]
        unknown = sorted(set(photos) - {"astronaut", "insightface"})
        if unknown:
            raise ValueError(f"--photos: unknown set {unknown[0]!r} (astronaut, insightface)")
        for which in photos:
            sets[which] = photo_sets(args.seeds if which == "astronaut" else max(args.seeds // 2, 1), which)
        if args.synthetic > 0:
            sets["synthetic"] = synthetic_sets(args.synthetic, args.seeds)
        refined = {}
        if args.n3d:
            refined = {f"{n}+n3d x{args.refine}": n3d_refiner(d, args.n3d, args.refine) for n, d in detectors.items()}
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    rows = []
    print("| set | detector | unmasked: found / NME | masked: found | masked: 5-pt NME (mean / max) | s / image |")
    print("|---|---|---|---|---|---|")
    for set_name, (unmasked, masked) in sets.items():
        dets = dict(detectors)
        if set_name == "synthetic" or args.n3d_photos:
            dets.update(refined)
        for name, det in dets.items():
            u, m = score(det, unmasked), score(det, masked)
            rows.append({"set": set_name, "detector": name, "unmasked": u, "masked": m})
            print(f"| {set_name} | {name} | {u['found']}/{u['total']} / {u['nme']:.3f} | {m['found']}/{m['total']} "
                  f"| {m['nme']:.3f} / {m['nme_max']:.3f} | {m['s_per_image']:.2f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
