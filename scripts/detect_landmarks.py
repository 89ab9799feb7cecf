"""Detect 68 landmarks once for every image of a folder: the landmark files CelebAMask-HQ needs (it ships none).

    python scripts/detect_landmarks.py data/CelebAMask-HQ/CelebA-HQ-img data/CelebAMask-HQ/landmarks --workers 16

Writes OUT/<stem>.npy ((68, 2) float32, pixels of the image as stored, pixel centres at integers: the
``landmarks_dir`` format of data.landmarks) for the largest face of each image, found by a data.detectors detector
(``--detector``, default ``dlib``: HOG + the 68-point predictor, offline; CelebA-HQ's faces are unmasked and
frontal). About 0.8 s an image on one core (30,000 images: ~7 h), so it runs ``--workers`` processes with a
progress bar. Existing files are kept (an interrupted run resumes); images without a face or unreadable ones are
listed in OUT/no_landmarks.txt (the datasets skip them) and counted.
"""

from __future__ import annotations

import argparse
import os
import sys
from multiprocessing import get_context
from pathlib import Path

_DETECTOR = None


def _init_worker(detector: str) -> None:
    import cv2

    from data.detectors import get_detector

    global _DETECTOR
    cv2.setNumThreads(1)
    _DETECTOR = get_detector(detector)


def detect_one(job: tuple[Path, Path]) -> tuple[str, str]:
    """(image, output file) -> (status, message); status in written / no_face / corrupt."""
    from data.io import CorruptImageError, read_image_uint8
    from data.landmarks import save_landmarks_file

    src, dst = job
    try:
        img = read_image_uint8(src)
    except (CorruptImageError, FileNotFoundError) as e:
        return "corrupt", str(e)
    faces = _DETECTOR.detect(img, src.stem)
    if not faces:
        return "no_face", "no face found"
    tmp = dst.with_name(f".{dst.stem}.tmp{os.getpid()}.npy")
    save_landmarks_file(tmp, faces[0])
    os.replace(tmp, dst)  # atomic: an interrupted run never leaves a truncated file that looks done
    return "written", ""


def main(argv: list[str] | None = None) -> int:
    from data.detectors import DETECTORS
    from data.io import list_images

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="folder of images (searched recursively)")
    p.add_argument("out", help="folder of <stem>.npy landmark files")
    p.add_argument("--detector", default="dlib", choices=sorted(set(DETECTORS) - {"file", "insightface"}),
                   help="data.detectors detector (default dlib)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    src, out = Path(args.src), Path(args.out)
    if not src.is_dir():
        print(f"detect_landmarks: source folder not found: {src}", file=sys.stderr)
        return 2
    images = list_images(src)
    if not images:
        print(f"detect_landmarks: no images below {src}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(q, out / f"{q.stem}.npy") for q in images]
    todo = [j for j in jobs if not j[1].is_file()]
    print(f"detect_landmarks: {len(images)} images, {len(images) - len(todo)} already done -> {out}", flush=True)
    from tqdm import tqdm

    counts = {"written": 0, "no_face": 0, "corrupt": 0}
    missed = []
    workers = max(1, min(args.workers, len(todo)))
    if workers == 1:
        _init_worker(args.detector)
        results = map(detect_one, todo)
    else:  # spawn: each worker loads its own dlib models; forking after OpenCV's threads ran can deadlock
        pool = get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(args.detector,))
        results = pool.imap(detect_one, todo, chunksize=4)
    bar = tqdm(total=len(todo), desc="landmarks", dynamic_ncols=True)
    try:
        for (path, _), (status, msg) in zip(todo, results):
            counts[status] += 1
            bar.update(1)
            if status != "written":
                missed.append(f"{path}\t{msg}")
    finally:
        bar.close()
        if workers > 1:
            pool.terminate()
    if missed:
        (out / "no_landmarks.txt").write_text("\n".join(missed) + "\n")
    print(f"detect_landmarks: {counts['written']} written, {len(images) - len(todo)} already done, "
          f"{counts['no_face']} without a face, {counts['corrupt']} unreadable"
          + (f" (listed in {out / 'no_landmarks.txt'})" if missed else ""))
    return 0 if counts["written"] + len(images) - len(todo) else 1


if __name__ == "__main__":
    sys.exit(main())
