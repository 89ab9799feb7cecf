"""Shrink a face-image folder once, so that training decodes small files.

    python scripts/prepare_images.py data/ffhq/images1024x1024 data/ffhq256 --size 256 [--workers 16]
    python scripts/prepare_images.py CelebA-HQ-img celeba256 --size 256 \\
        --landmarks-dir celeba_landmarks --landmarks-out celeba256_landmarks

Decoding is the data loader's largest cost on real photos: a 1024 px FFHQ PNG takes ~17 ms on one core, a 256 px
one ~1 ms (BENCHMARKS.md). Every image below SRC is written to DST under the same relative path (the extension
follows --format), scaled with INTER_AREA so that its shorter side is --size (aspect kept; smaller images are only
re-encoded). Point the dataset's ``root`` at DST: FFHQ rescales its json landmarks to the size it finds;
per-image landmark files (``<stem>.npy`` / ``.txt``, pixels of the image they belong to) are rescaled into
--landmarks-out. Outputs newer than their source are kept, so an interrupted run resumes; unreadable images are
reported and skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import cv2

from data.io import CorruptImageError, list_images, read_image_uint8, write_image
from data.landmarks import find_landmarks_file, load_landmarks_file, save_landmarks_file
from data.photos import scale_points


def target_size(w: int, h: int, size: int) -> tuple[int, int]:
    """(w', h') with the shorter side ``size`` and the aspect kept; the input size if it is already that small."""
    short = min(w, h)
    if short <= size:
        return w, h
    return max(1, round(w * size / short)), max(1, round(h * size / short))


def prepare_one(job: tuple) -> tuple[str, str]:
    """Resize one image (and its landmark file) -> (status, message); status in written / kept / corrupt."""
    src, dst, size, lm_in, lm_out = job
    lm_file = find_landmarks_file(lm_in, src.stem) if lm_in is not None else None
    lm_done = lm_file is None or (lm_out / lm_file.name).is_file()
    if lm_done and dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
        return "kept", ""
    try:
        img = read_image_uint8(src)
    except (CorruptImageError, FileNotFoundError) as e:
        return "corrupt", str(e)
    h, w = img.shape[:2]
    nw, nh = target_size(w, h, size)
    if (nw, nh) != (w, h):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    if lm_file is not None:
        try:
            lm = load_landmarks_file(lm_file)
        except ValueError as e:
            return "corrupt", str(e)
        save_landmarks_file(lm_out / lm_file.name, scale_points(lm, (w, h), (nw, nh)))
    tmp = dst.with_name(f".{dst.stem}.tmp{os.getpid()}{dst.suffix}")
    write_image(tmp, img)
    os.replace(tmp, dst)  # atomic: an interrupted run never leaves a half-written image that looks done
    return "written", ""


def _init_worker() -> None:
    cv2.setNumThreads(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="folder of images (searched recursively)")
    p.add_argument("dst", help="output folder (same relative paths)")
    p.add_argument("--size", type=int, default=256, help="shorter side of the output images (default 256)")
    p.add_argument("--format", choices=("png", "jpg", "keep"), default="png",
                   help="output format (default png: lossless; jpg decodes ~4x faster again)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--landmarks-dir", default=None, help="per-image landmark files to rescale (<stem>.npy/.txt)")
    p.add_argument("--landmarks-out", default=None, help="where the rescaled landmark files go")
    args = p.parse_args(argv)
    src, dst = Path(args.src), Path(args.dst)
    if args.size <= 0:
        p.error("--size must be positive")
    if (args.landmarks_dir is None) != (args.landmarks_out is None):
        p.error("--landmarks-dir and --landmarks-out go together")
    if not src.is_dir():
        print(f"prepare_images: source folder not found: {src}", file=sys.stderr)
        return 2
    if dst.resolve() == src.resolve():
        print("prepare_images: DST must differ from SRC (the originals would be overwritten)", file=sys.stderr)
        return 2
    lm_in = lm_out = None
    if args.landmarks_dir is not None:
        lm_in, lm_out = Path(args.landmarks_dir), Path(args.landmarks_out)
        if not lm_in.is_dir():
            print(f"prepare_images: landmarks folder not found: {lm_in}", file=sys.stderr)
            return 2
        lm_out.mkdir(parents=True, exist_ok=True)
    inside = dst.resolve()
    images = [q for q in list_images(src) if inside not in q.resolve().parents]  # DST may sit inside SRC
    if not images:
        print(f"prepare_images: no images below {src}", file=sys.stderr)
        return 2
    jobs = []
    for path in images:
        rel = path.relative_to(src)
        out = dst / (rel if args.format == "keep" else rel.with_suffix("." + args.format))
        out.parent.mkdir(parents=True, exist_ok=True)
        jobs.append((path, out, args.size, lm_in, lm_out))
    counts = {"written": 0, "kept": 0, "corrupt": 0}
    t0 = time.perf_counter()
    workers = max(1, min(args.workers, len(jobs)))
    if workers == 1:
        results = map(prepare_one, jobs)
    else:  # spawn, not fork: forking a process whose OpenMP / cv2 thread pools have run can deadlock the children
        pool = get_context("spawn").Pool(workers, initializer=_init_worker)
        results = pool.imap(prepare_one, jobs, chunksize=16)
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="prepare_images", dynamic_ncols=True)
    try:
        for (path, *_), (status, msg) in zip(jobs, results):
            counts[status] += 1
            bar.update(1)
            if status == "corrupt":
                bar.write(f"prepare_images: skipped {path}: {msg}", file=sys.stderr)
    finally:
        bar.close()
        if workers > 1:
            pool.terminate()
    dt = time.perf_counter() - t0
    print(f"prepare_images: {counts['written']} written, {counts['kept']} already done, {counts['corrupt']} "
          f"unreadable; {len(jobs) / max(dt, 1e-9):.0f} images/s with {workers} workers -> {dst}")
    return 0 if counts["written"] + counts["kept"] else 1


if __name__ == "__main__":
    sys.exit(main())
