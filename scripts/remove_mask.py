"""Remove face masks from a photo, with K controllable variations per face.

    python scripts/remove_mask.py --image PHOTO.jpg --checkpoint runs/inpaint_paper/inpaint.pt \
        --variations 4 [--edit "exp[3]=+1.5"] [--edit smile,brighter] --out OUT_DIR

Every face is found (by default `--detector masked`, data.detectors.MaskedFaceDetector: dlib's CNN over an image
pyramid, a HOG fallback, the nose and mouth half-way between the 68-point predictor and a mean face placed from the
eyes;
`--detector dlib_cnn` for dlib's CNN at one scale, `--detector dlib` for dlib's faster HOG, `--detector insightface`,
or `--landmarks FILE`: 68 rows "x y", or 5 rows: left eye, right eye, nose tip, left mouth corner, right mouth
corner, in image pixels), optionally re-located by N_3D (`--refine N`, data.detectors.
RefinedDetector), aligned to the model's crop, run through N_3D and N_G with each edit (see tasks/removal.py for the
edit syntax and presets), and pasted back into the original photo: only N_3D's occluded region (grown by
tasks.removal.SEAM_MARGIN = 2 px, so the feathered seam lies outside it) changes. Faces too small for the model's
input get a warning.
Writes OUT/<stem>_<k>_<edit>.png for each variation and OUT/<stem>_grid.png (input + all variations); `--debug`
adds OUT/<stem>_debug.png (per face: detection, 5 points on the aligned crop, aligned crop, m, I_3D, output) and
OUT/<stem>_region.png (white where the photo may change).

The authors' released weights run as they are, with the release's settings (tasks/release.py; configs/release.yaml
is the preset, every key overridable with --set KEY=VALUE):

    python scripts/remove_mask.py --image PHOTO.jpg --release-n3d 3D_it_500000.pkl \
        --release-gen inpaint_it_200000.pkl [--release-config configs/release.yaml] [--set mask_threshold=0.2] --out OUT

(converted on the fly; scripts/convert_release.py writes the same exports once, for --checkpoint).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Eyes' outer corners closer than this many pixels (at a 256 px model input; scaled with the input) get a warning.
SMALL_FACE_SPAN = 64
DEFAULT_REFINE = 2  # N_3D refinement rounds for detected faces (BENCHMARKS.md, "Masked faces")

PRESET_ORDER = ["keep", "neutral", "smile", "open_mouth", "pucker", "big_smile", "surprise", "brighter", "darker"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", required=True, help="a JPEG/PNG photo")
    p.add_argument("--checkpoint", default="runs/inpaint_demo/inpaint.pt", help="RUN/inpaint.pt of train_inpaint.py")
    p.add_argument("--n3d-checkpoint", default=None,
                   help="N_3D export (default: the one the generator was trained with)")
    p.add_argument("--variations", type=int, default=4, help="number of preset variations (first K presets)")
    p.add_argument("--edit", action="append", default=[], help="extra edit, e.g. 'exp[3]=+1.5' or 'smile,brighter'")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--detector", default="masked", help="landmark detector: masked (robust to masks, BENCHMARKS.md) "
                                                         "| dlib_cnn (dlib's CNN) | dlib (HOG) | insightface")
    p.add_argument("--insightface-root", default=None, help="insightface model-pack root (for --detector insightface)")
    p.add_argument("--det-threshold", type=float, default=None,
                   help="dlib detection score threshold (default: the detector's own: 0.3 for dlib / dlib_cnn, 0 for "
                        "masked)")
    p.add_argument("--landmarks", default=None,
                   help="landmark file (.txt/.npy) instead of a detector: 68 x 2, or 5 x 2 (left eye, right eye, "
                        "nose tip, left / right mouth corner)")
    p.add_argument("--refine", type=int, default=None, metavar="N",
                   help="re-locate each detected face N times with the model's N_3D (align, reconstruct, take the "
                        "3D face's landmarks): default 2 for detections, 0 for --landmarks (trusted as given)")
    p.add_argument("--debug", action="store_true", help="also write <stem>_debug.png and <stem>_region.png")
    p.add_argument("--align", choices=["ffhq", "meanface", "deng", "release"], default=None,
                   help="crop framing (data.align): default the model's own (the release's: release) or ffhq; "
                        "meanface = the morphable model's mean face as the renderer frames it (models trained on "
                        "SyntheticFaces)")
    p.add_argument("--lm3d", default=None, help="BFM/similarity_Lm3D_all.mat for --align deng / release when the "
                                                "export does not carry it (models trained in Deng's framing)")
    p.add_argument("--release-n3d", default=None, help="the authors' 3D_it_500000.pkl (with --release-gen)")
    p.add_argument("--release-gen", default=None, help="the authors' inpaint_it_200000.pkl (with --release-n3d)")
    p.add_argument("--release-config", default=None, help="release preset YAML (default: built-in, as "
                                                          "configs/release.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a release-preset value, e.g. --set mask_threshold=0.2 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def edit_list(k: int, extra: list[str], model) -> list[str]:
    """The first k presets this model supports, then the user's edits."""
    named = getattr(model, "expression_names", None)
    usable = [e for e in PRESET_ORDER if named or e in ("keep", "neutral", "brighter", "darker")]
    return usable[:max(k, 0)] + list(extra)


def find_faces(args, image_u8: np.ndarray) -> list[np.ndarray]:
    """The faces' landmarks, (68, 2) or (5, 2) each, largest face first."""
    from data.detectors import get_detector
    from data.landmarks import load_landmarks_file

    if args.landmarks:
        return [load_landmarks_file(args.landmarks, counts=(68, 5))]
    if args.detector in ("dlib", "dlib_cnn", "masked"):
        kw = {} if args.det_threshold is None else {"threshold": args.det_threshold}
    else:
        kw = {"root": args.insightface_root} if args.insightface_root else {}
    return get_detector(args.detector, **kw).detect(image_u8)


def debug_row(photo: torch.Tensor, found: np.ndarray, lm: np.ndarray, al, res, template_px: np.ndarray | None,
              tile: int = 256) -> np.ndarray:
    """One face's row of the --debug grid, (tile, 6 * tile, 3) uint8: the detection (detector points red, the
    points used green), the 5 points on the aligned crop (green) with the template's target points (blue; None for
    the POS framings, which have no 2D template), the aligned crop, m, I_3D and the first output."""
    import cv2

    from data.align import five_points, transform_points, warp_affine

    def u8(t: torch.Tensor) -> np.ndarray:
        arr = t.detach().cpu().float().clamp(0, 1).expand(3, -1, -1).permute(1, 2, 0).numpy()
        return cv2.resize((arr * 255 + 0.5).astype(np.uint8), (tile, tile), interpolation=cv2.INTER_LINEAR)

    def dots(img: np.ndarray, pts: np.ndarray, colour, r: int = 2) -> None:
        for x, y in np.asarray(pts, np.float64):
            cv2.circle(img, (int(round(x)), int(round(y))), r, colour, -1, cv2.LINE_AA)

    # the photo around this face (its landmarks' box, 2.2x; black outside the photo), the detector's points and the
    # points used
    pts_all = np.concatenate([np.asarray(found, np.float64), np.asarray(lm, np.float64)])
    centre, side = (pts_all.min(0) + pts_all.max(0)) / 2, 2.2 * max(np.ptp(pts_all, 0).max(), 8.0)
    k = tile / side
    fit = np.array([[k, 0, tile / 2 - k * centre[0]], [0, k, tile / 2 - k * centre[1]]])
    det = (warp_affine(photo.permute(1, 2, 0).numpy(), fit, (tile, tile), border=cv2.BORDER_CONSTANT) * 255 + 0.5)
    det = np.ascontiguousarray(det.clip(0, 255).astype(np.uint8))
    dots(det, transform_points(found, fit), (255, 40, 40))
    dots(det, transform_points(lm, fit), (40, 220, 40))
    s = tile / al.image.shape[-1]
    five_crop = five_points(np.asarray(al.landmarks)) if len(lm) == 68 else np.asarray(al.landmarks)
    pts = u8(al.image)
    if template_px is not None:
        dots(pts, (template_px + 0.5) * s - 0.5, (60, 90, 255), 4)
    dots(pts, (five_crop + 0.5) * s - 0.5, (40, 220, 40), 3)
    return np.concatenate([det, pts, u8(al.image), u8(res.m[0]), u8(res.i3d[0, 0]), u8(res.images[0, 0])], axis=1)


def main(argv=None) -> int:
    args = parse_args(argv)
    from data.align import align_face, alignment_template, five_points, paste_back, pasted_region
    from data.detectors import RefinedDetector
    from data.io import CorruptImageError, read_image, write_image
    from data.landmarks import eye_span
    from tasks.removal import MaskRemover, seam_region

    try:
        image = read_image(args.image)
    except (FileNotFoundError, CorruptImageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if bool(args.release_n3d) != bool(args.release_gen):
        print("error: --release-n3d and --release-gen go together", file=sys.stderr)
        return 2
    if (args.overrides or args.release_config) and not args.release_n3d:
        print("error: --set / --release-config change the release preset: give --release-n3d and --release-gen",
              file=sys.stderr)
        return 2
    tmp = None
    try:
        if args.release_n3d:
            from scripts.convert_release import load_release_config
            from tasks.release import convert_release

            cfg = load_release_config(args.release_config, [*args.overrides, f"n3d={args.release_n3d}",
                                                             f"gen={args.release_gen}"])
            tmp = tempfile.TemporaryDirectory(prefix="release_")
            _, inpaint = convert_release(cfg, tmp.name)
            remover = MaskRemover.from_checkpoints(inpaint, args.n3d_checkpoint, args.device, key="--release-gen")
        else:
            inference = None
            if args.lm3d:
                inference = {"lm3d_path": args.lm3d, "framing": args.align if args.align != "meanface" else None}
            remover = MaskRemover.from_checkpoints(args.checkpoint, args.n3d_checkpoint, args.device,
                                                   key="--checkpoint", inference=inference)
        align = args.align or remover.framing or "ffhq"
        if align in ("deng", "release") and remover.lm3d is None:
            raise ValueError(f"--align {align} needs --lm3d BFM/similarity_Lm3D_all.mat (or an export carrying "
                             "inference.lm3d_path, as the release's)")
        edits = edit_list(args.variations, args.edit, remover.model)
        if remover.model.expression_names and align == "ffhq":
            print("note: this checkpoint was trained on the embedded synthetic faces (e.g. the demo's); real photos "
                  "need a model trained on real faces (configs/*/paper.yaml)", flush=True)
        from tasks.removal import apply_edit

        for e in edits:  # reject a bad edit before any work
            apply_edit(torch.zeros(1, remover.model.layout.size), e, remover.model)
        u8 = (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        found = find_faces(args, u8)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    finally:
        if tmp is not None:  # the exports are loaded: the converted files are no longer needed
            tmp.cleanup()
    if not found:
        print(f"no face found in {args.image} (try --detector insightface, or give --landmarks FILE)",
              file=sys.stderr)
        return 1
    template, framing = None, align if align != "meanface" else "ffhq"
    if align == "meanface":
        r = remover.prior.renderer
        mean_lm = r.landmarks(remover.model.layout.zeros(1, device=remover.device))[0].cpu().numpy()
        template = (five_points(mean_lm) + 0.5) / r.image_size
    size = remover.image_size
    faces = found
    rounds = args.refine if args.refine is not None else (0 if args.landmarks else DEFAULT_REFINE)
    if rounds > 0:
        refiner = RefinedDetector(None, remover.predict_landmarks, size, rounds, template=template,
                                  framing=framing, lm3d=remover.lm3d)
        faces = [refiner.refine(image, lm) for lm in found]
        if refiner.rejected:
            print(f"note: N_3D refinement moved the eyes of {refiner.rejected} face(s) too far (a model that does not "
                  "fit this photo?): the detector's points are used there", file=sys.stderr)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    results = [image.clone() for _ in edits]
    changes = torch.zeros(image.shape[-2:], dtype=torch.bool)
    rows = []
    min_span = SMALL_FACE_SPAN * size / 256
    for i, lm in enumerate(faces):
        span = eye_span(lm)
        if span < min_span:
            print(f"warning: face {i + 1} is small ({span:.0f} px between the outer eye corners, under {min_span:.0f} "
                  f"for this {size} px model): its result will be blurry", file=sys.stderr)
        al = align_face(image, lm, size, template=template, framing=framing, lm3d=remover.lm3d)
        res = remover(al.image[None], edits, seed=args.seed)
        region = seam_region(res.m[0:1])[0].cpu()  # all that changes in the photo
        for k in range(len(edits)):
            results[k] = paste_back(results[k], res.images[0, k].cpu(), al.transform, mask=region)
        changes |= torch.from_numpy(pasted_region(region, al.transform, image.shape[-2:]))
        if args.debug:
            target = alignment_template(size, template=template) if framing == "ffhq" else None
            rows.append(debug_row(image, found[i], lm, al, res, target))
    names = []
    for k, e in enumerate(edits):
        tag = re.sub(r"[^A-Za-z0-9_.+-]+", "_", e)[:40]
        path = out_dir / f"{stem}_{k}_{tag}.png"
        write_image(path, results[k])
        names.append(path.name)
    from torchvision.utils import save_image

    save_image(torch.stack([image, *results]), out_dir / f"{stem}_grid.png", nrow=len(edits) + 1, padding=4)
    if args.debug:
        write_image(out_dir / f"{stem}_debug.png", np.concatenate(rows, axis=0))
        write_image(out_dir / f"{stem}_region.png", changes.float()[None])
    print(f"{len(faces)} face(s); wrote {len(names)} variations ({', '.join(edits)}) and {stem}_grid.png to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
