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
real faces (``--n3d-photos``). Results go to BENCHMARKS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.io import to_uint8_hwc  # noqa: E402

SIZE = 256


@dataclass
class Case:
    """One masked face: image (H, W, 3) uint8 RGB, reference (68, 2) landmarks, a label."""

    image: np.ndarray
    reference: np.ndarray
    label: str


def nme5(points: np.ndarray, reference: np.ndarray) -> float:
    """Mean 5-point distance over the reference's eye-centre distance; points / reference (68, 2) or (5, 2)."""
    from data.align import five_points

    p = points if len(points) == 5 else five_points(np.asarray(points, np.float64))
    r = reference if len(reference) == 5 else five_points(np.asarray(reference, np.float64))
    return float(np.linalg.norm(p - r, axis=1).mean() / np.linalg.norm(r[1] - r[0]))


def match(detections: list[np.ndarray], reference: np.ndarray) -> np.ndarray | None:
    """The detection whose eye midpoint is nearest the reference's, if within one inter-ocular distance."""
    from data.align import five_points

    r = five_points(np.asarray(reference, np.float64)) if len(reference) == 68 else reference
    centre, iod = (r[0] + r[1]) / 2, np.linalg.norm(r[1] - r[0])
    best, best_d = None, iod
    for d in detections:
        p = five_points(np.asarray(d, np.float64)) if len(d) == 68 else d
        dist = np.linalg.norm((p[0] + p[1]) / 2 - centre)
        if dist < best_d:
            best, best_d = d, dist
    return best


def score(detector, cases: list[Case]) -> dict:
    """-> {found, total, nme (mean over found), nme_max, s_per_image} of ``detector`` on ``cases``."""
    errs, t0 = [], time.perf_counter()
    for c in cases:
        hit = match(detector.detect(c.image), c.reference)
        if hit is not None:
            errs.append(nme5(hit, c.reference))
    dt = (time.perf_counter() - t0) / max(len(cases), 1)
    return {"found": len(errs), "total": len(cases), "nme": float(np.mean(errs)) if errs else float("nan"),
            "nme_max": float(np.max(errs)) if errs else float("nan"), "s_per_image": dt}


def astronaut_variants() -> list[tuple[np.ndarray, str]]:
    """12 unmasked 256 px views of scikit-image's astronaut (mirror x roll x scale), (H, W, 3) uint8."""
    from skimage import data as skdata

    from data.align import align_face
    from data.detectors import DlibDetector

    photo = skdata.astronaut()
    lm = DlibDetector().detect(photo)[0]
    out = []
    for mirror in (False, True):
        src = photo[:, ::-1].copy() if mirror else photo
        lm_src = lm.copy()
        if mirror:  # mirrored landmarks are no longer iBUG-ordered: detect again on the mirrored photo
            lm_src = DlibDetector().detect(src)[0]
        for scale in (1.0, 1.3):
            crop = align_face(src, lm_src, SIZE, scale=scale).image
            for roll in (-12, 0, 12):
                out.append((_roll(crop, roll), f"astronaut{'_m' if mirror else ''}_s{scale}_r{roll}"))
    return out


def masked_cases(views: list[tuple[np.ndarray, np.ndarray, str]], seeds: int) -> list[Case]:
    """Each (unmasked image, reference landmarks, label) masked with seeds 0 .. seeds-1."""
    from data.synth import MaskedPairSynthesizer

    synth = MaskedPairSynthesizer()
    cases = []
    for i, (img, ref, label) in enumerate(views):
        x = torch.from_numpy(img).permute(2, 0, 1).float() / 255
        for s in range(seeds):
            masked, _ = synth.synth(x, torch.from_numpy(np.asarray(ref, np.float32)), (s, i))
            cases.append(Case(to_uint8_hwc(masked), np.asarray(ref, np.float64), f"{label}/seed{s}"))
    return cases


def insightface_variants() -> list[tuple[np.ndarray, str]]:
    """The faces of the photos in insightface's wheel (t1.jpg, Tom_Hanks_54745.png), FFHQ-framed at 256 px and
    rolled -12 / 0 / +12 degrees, (H, W, 3) uint8; FileNotFoundError when insightface is not installed."""
    import importlib.util

    from data.align import align_face
    from data.detectors import DlibDetector
    from data.io import read_image_uint8

    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("insightface photo set: the insightface package is not installed")
    root = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
    hanks = read_image_uint8(root / "Tom_Hanks_54745.png")  # a 112 px ArcFace crop: enlarged, with a border
    hanks = cv2.copyMakeBorder(cv2.resize(hanks, (224, 224), interpolation=cv2.INTER_CUBIC), 64, 64, 64, 64,
                               cv2.BORDER_REFLECT101)
    hog, out = DlibDetector(), []
    for name, src in (("t1", read_image_uint8(root / "t1.jpg")), ("hanks", hanks)):
        for j, lm in enumerate(hog.detect(src)):
            crop = align_face(src, lm, SIZE).image
            out.extend((_roll(crop, roll), f"{name}{j}_r{roll}") for roll in (-12, 0, 12))
    return out


def _roll(img: np.ndarray, degrees: float) -> np.ndarray:
    rot = cv2.getRotationMatrix2D(((SIZE - 1) / 2, (SIZE - 1) / 2), degrees, 1.0)
    return cv2.warpAffine(img, rot, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def photo_sets(seeds: int, which: str = "astronaut") -> tuple[list[Case], list[Case]]:
    """(unmasked, masked) cases of a photo set (``astronaut`` or ``insightface``); the reference is HOG + 68 points
    on the unmasked view (views where HOG finds no face are left out)."""
    from data.detectors import DlibDetector

    hog = DlibDetector()
    views = []
    variants = astronaut_variants() if which == "astronaut" else insightface_variants()
    for img, label in variants:
        found = hog.detect(img)
        if found:
            views.append((img, found[0], label))
    unmasked = [Case(img, ref, label) for img, ref, label in views]
    return unmasked, masked_cases(views, seeds)


def synthetic_sets(num: int, seeds: int) -> tuple[list[Case], list[Case]]:
    """(unmasked, masked) held-out SyntheticFaces at 256 px with their exact landmarks."""
    from data.synthetic import SyntheticFaces

    faces = SyntheticFaces(num, SIZE, offset=2_000_000)
    views = [(to_uint8_hwc(faces[i]["image"]), faces[i]["landmarks"].numpy(), f"synthetic{i}") for i in range(num)]
    return [Case(img, ref, label) for img, ref, label in views], masked_cases(views, seeds)


class MTCNNDetector:
    """facenet-pytorch's MTCNN (weights in its wheel), 5 points per face, for measuring only: the package pins
    torch < 2.3, so it is not a project dependency (``pip install --no-deps --target DIR facenet-pytorch`` and
    ``PYTHONPATH=DIR`` to measure it)."""

    name = "mtcnn"

    def __init__(self) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError:
            raise ImportError("mtcnn: `import facenet_pytorch` failed (see MTCNNDetector's docstring)") from None
        self._net = MTCNN(keep_all=True, device="cpu")

    def detect(self, image: np.ndarray, name: str | None = None) -> list[np.ndarray]:
        _, _, points = self._net.detect(image, landmarks=True)
        return [] if points is None else [np.asarray(p, np.float32) for p in points]


class MediaPipeDetector:
    """mediapipe's face mesh (BlazeFace + 468 points, the .tflite files in mediapipe 0.10's wheel), reduced to the
    5 points, for measuring only: its wheel pins protobuf < 5 and pulls jax, matplotlib and opencv-contrib, so it is
    not a project dependency (``pip install --no-deps --target DIR mediapipe==0.10.14`` plus absl-py, attrs,
    flatbuffers, protobuf<5, matplotlib, and ``PYTHONPATH=DIR``)."""

    name = "mediapipe"
    # image-left eye corners, image-right eye corners, nose tip, image-left and image-right mouth corners
    _EYES, _NOSE, _MOUTH = ((33, 133), (362, 263)), 1, (61, 291)

    def __init__(self) -> None:
        try:
            from mediapipe.python.solutions.face_mesh import FaceMesh
        except ImportError:
            raise ImportError("mediapipe: `import mediapipe` failed (see MediaPipeDetector's docstring)") from None
        self._mesh = FaceMesh(static_image_mode=True, max_num_faces=8)

    def detect(self, image: np.ndarray, name: str | None = None) -> list[np.ndarray]:
        h, w = image.shape[:2]
        res = self._mesh.process(np.ascontiguousarray(image))
        out = []
        for face in res.multi_face_landmarks or []:
            p = np.array([[q.x * w - 0.5, q.y * h - 0.5] for q in face.landmark], np.float32)
            e = [p[list(i)].mean(0) for i in self._EYES]
            out.append(np.stack([e[0], e[1], p[self._NOSE], p[self._MOUTH[0]], p[self._MOUTH[1]]]))
        return out


def get_any_detector(name: str):
    """data.detectors' registry, plus ``mtcnn`` and ``mediapipe`` (measuring only)."""
    from data.detectors import get_detector

    extra = {"mtcnn": MTCNNDetector, "mediapipe": MediaPipeDetector}
    return extra[name]() if name in extra else get_detector(name)


def n3d_refiner(base, n3d_path: str, iterations: int, device: str = "cpu"):
    """``base`` followed by N_3D refinement with the export at ``n3d_path`` (the SyntheticFaces framing: the mean
    face as the renderer frames it, data.align ffhq similarity onto its 5 points)."""
    from data.align import five_points
    from data.detectors import RefinedDetector
    from tasks.common import build_morphable, build_renderer, resize_square
    from tasks.recon3d import load_n3d

    net, morph_cfg, size = load_n3d(n3d_path, torch.device(device), "--n3d")
    morph = build_morphable(morph_cfg)
    renderer = build_renderer(morph_cfg, size, device, morph)
    mean_lm = renderer.landmarks(morph.layout.zeros(1))[0].numpy()
    template = (five_points(mean_lm) + 0.5) / size

    def predict(crops: torch.Tensor) -> torch.Tensor:
        return renderer.landmarks(net(resize_square(crops.to(device), size))["coeffs"].float())

    return RefinedDetector(base, predict, size, iterations, template=template)


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
