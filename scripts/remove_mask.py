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
`--animate "keep>open_mouth>smile" --frames 48 --fps 24 --out result.mp4` (or .gif) writes one clip instead: the
coefficients eased from each edit to the next (tasks/animate.py), the same noise in every frame, as the web editor
(app.py) animates.
Writes OUT/<stem>_<k>_<edit>.png for each variation and OUT/<stem>_grid.png (input + all variations); `--debug`
adds OUT/<stem>_debug.png (per face: detection, 5 points on the aligned crop, aligned crop, m, I_3D, output) and
OUT/<stem>_region.png (white where the photo may change).

The pipeline is tasks/photo.py (find_faces -> prepare_faces -> remove_from_photo); this script parses and prints.

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
from pathlib import Path

import numpy as np
import torch

from tasks.photo import ALIGN_CHOICES, DEFAULT_DETECTOR, PASTE_MODES


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default=None, help="a JPEG/PNG photo")
    p.add_argument("--video", default=None, help="a video (MP4, MOV, MKV, ...): --out is then the output video "
                   "file; one edit (--edit, applied left to right) or --animate over each face track")
    p.add_argument("--checkpoint", default="runs/inpaint_demo/inpaint.pt", help="RUN/inpaint.pt of train_inpaint.py")
    p.add_argument("--n3d-checkpoint", default=None,
                   help="N_3D export (default: the one the generator was trained with)")
    p.add_argument("--variations", type=int, default=4, help="number of preset variations (first K presets)")
    p.add_argument("--edit", action="append", default=[], help="extra edit, e.g. 'exp[3]=+1.5' or 'smile,brighter'")
    p.add_argument("--out", required=True,
                   help="output folder (photos), or the output .mp4 / .gif (--animate, --video)")
    p.add_argument("--detector", default=DEFAULT_DETECTOR,
                   help="landmark detector: masked (robust to masks, BENCHMARKS.md) | dlib_cnn (dlib's CNN) | dlib "
                        "(HOG) | insightface")
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
    p.add_argument("--align", choices=list(ALIGN_CHOICES), default=None,
                   help="crop framing (data.align): default the model's own (the release's: release_exact) or ffhq; "
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
    p.add_argument("--paste", choices=list(PASTE_MODES), default="feather",
                   help="feather: the result blended in with a feathered seam just outside N_3D's m (default); "
                        "hard: taken whole inside m, as the release's test.py composites")
    p.add_argument("--animate", default=None, metavar="KEYS",
                   help="animate instead: edits separated by '>' (e.g. 'keep>open_mouth>smile'), eased from one to the "
                        "next with the same noise in every frame; --out is then an .mp4 or .gif file (with --video: "
                        "eased over each face track)")
    p.add_argument("--frames", type=int, default=48, help="frames of an --animate clip")
    p.add_argument("--fps", type=float, default=24, help="frame rate of an --animate clip")
    p.add_argument("--redetect-every", type=int, default=0, metavar="N",
                   help="--video: run the detector every N frames to find faces that enter while others are tracked "
                        "(default 0: only while no face is tracked)")
    p.add_argument("--fuse", type=float, default=None, metavar="A",
                   help="--video: the new frame's weight when the fill is blended with the previous one, moved by the "
                        "face's 3D motion (default 0.3, about 3 frames of memory; 1 = no blending)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.animate and Path(args.out).suffix.lower() not in (".mp4", ".gif"):
        p.error(f"--animate writes one clip: --out must end in .mp4 or .gif, got {args.out!r}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if bool(args.image) == bool(args.video):
        print("error: give --image PHOTO or --video VIDEO", file=sys.stderr)
        return 2
    if args.video:
        return video_main(args)
    from data.io import CorruptImageError, read_image, write_image
    from tasks.animate import animate_photo, check_keyframes, frame_times, parse_keyframes
    from tasks.photo import (
        DEFAULT_REFINE,
        check_edits,
        debug_strip,
        find_faces,
        load_remover,
        model_notes,
        photo_framing,
        prepare_faces,
        preset_edits,
        remove_from_photo,
        to_uint8,
    )

    try:
        image = read_image(args.image)
    except (FileNotFoundError, CorruptImageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        remover = load_remover(args.checkpoint, args.n3d_checkpoint, args.device, args.release_n3d, args.release_gen,
                               args.release_config, args.overrides, args.lm3d, args.align)
        framing = photo_framing(remover, args.align)
        edits = preset_edits(args.variations, args.edit, remover.model)
        for note in model_notes(remover, framing):
            print(f"note: {note}", flush=True)
        check_edits(edits, remover.model)  # a bad edit stops before any work
        keys = parse_keyframes(args.animate) if args.animate else None
        if keys:
            check_keyframes(keys, remover.model)
            frame_times(args.frames)
        found = find_faces(to_uint8(image), args.detector, args.landmarks, args.det_threshold, args.insightface_root)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    if not found:
        print(f"no face found in {args.image} (try --detector insightface, or give --landmarks FILE)",
              file=sys.stderr)
        return 1
    rounds = args.refine if args.refine is not None else (0 if args.landmarks else DEFAULT_REFINE)
    faces = prepare_faces(remover, image, found, refine=rounds, framing=framing)
    for face in faces:
        for note in face.notes:
            print(note, file=sys.stderr)
    if keys:
        from data.video import write_video

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        n = write_video(animate_photo(remover, image, faces, keys, args.frames, args.seed, args.paste), args.out,
                        fps=args.fps)
        print(f"{len(faces)} face(s); wrote {n} frames ({' > '.join(keys)}) at {args.fps:g} fps to {args.out}")
        return 0
    out = remove_from_photo(remover, image, faces, edits, seed=args.seed, paste=args.paste)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    names = []
    for k, (e, photo) in enumerate(zip(edits, out.images)):
        path = out_dir / f"{stem}_{k}_{re.sub(r'[^A-Za-z0-9_.+-]+', '_', e)[:40]}.png"
        write_image(path, photo)
        names.append(path.name)
    from torchvision.utils import save_image

    save_image(torch.stack([image, *out.images]), out_dir / f"{stem}_grid.png", nrow=len(edits) + 1, padding=4)
    if args.debug:
        rows = [debug_strip(image, f, r, framing) for f, r in zip(out.faces, out.removals)]
        write_image(out_dir / f"{stem}_debug.png", np.concatenate(rows, axis=0))
        write_image(out_dir / f"{stem}_region.png", out.region.float()[None])
    print(f"{len(faces)} face(s); wrote {len(names)} variations ({', '.join(edits)}) and {stem}_grid.png to {out_dir}")
    return 0


def video_main(args) -> int:
    """--video: tasks.video.remove_from_video; one line per outcome."""
    from data.landmarks import load_landmarks_file
    from data.video import OUTPUT_EXTENSIONS, VideoError, probe
    from tasks.animate import parse_keyframes
    from tasks.photo import load_remover, model_notes, photo_framing
    from tasks.video import VideoOptions, VideoRemover, describe_video, remove_from_video

    out = Path(args.out)
    try:
        if out.suffix.lower() not in OUTPUT_EXTENSIONS or out.is_dir():
            raise ValueError(f"--out must be a video file ({', '.join(OUTPUT_EXTENSIONS)}) with --video, got {out}")
        info = probe(args.video)
        remover = load_remover(args.checkpoint, args.n3d_checkpoint, args.device, args.release_n3d, args.release_gen,
                               args.release_config, args.overrides, args.lm3d, args.align)
        framing = photo_framing(remover, args.align)
        for note in model_notes(remover, framing):
            print(f"note: {note}", flush=True)
        animate = args.animate
        opts = VideoOptions(edit=",".join(args.edit) or "keep", keyframes=parse_keyframes(animate) if animate else None,
                            seed=args.seed, detector=args.detector, paste=args.paste,
                            first_landmarks=load_landmarks_file(args.landmarks, counts=(68, 5)) if args.landmarks
                            else None, redetect_every=args.redetect_every,
                            **({} if args.fuse is None else {"fuse": args.fuse}))
        VideoRemover(remover, opts, n_frames=info.frames, framing=framing)  # bad options: one line, before any frame
    except (FileNotFoundError, ValueError, KeyError, VideoError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    print(describe_video(info), flush=True)
    run = remove_from_video(remover, args.video, out, opts, n_frames=info.frames, framing=framing)
    for line in run.warnings:
        print(line, file=sys.stderr)
    for line in run.notes:
        print(line)
    return 130 if run.report.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
