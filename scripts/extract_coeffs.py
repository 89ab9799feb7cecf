"""Ground-truth 3DMM coefficients for a real dataset, predicted from the UNMASKED images (paper section 3.1: "we use
3D coefficients predicted from the original unmasked face images by the pre-trained model of [Deng et al.]").

    python scripts/extract_coeffs.py --config configs/3d/paper.yaml --which train \
        --deng-checkpoint weights/epoch_20.pth
    python scripts/extract_coeffs.py --config configs/3d/paper.yaml --n3d runs/3d_paper/n3d.pt --out DIR

The faces are read exactly as training reads them (the config's data section: same size and framing), so each
file <coeffs_dir>/<name>.npy (float32 (257,), the layout of renderer.morphable.CoeffLayout) matches the image the
dataset delivers. Each dataset of the list is written to its own `coeffs_dir` (created if needed: the folders the
config trains from; FFHQ and CelebAMask-HQ go to their two folders); `--out DIR` writes a one-dataset list to DIR
instead. The device is the config's `train.device` unless `--device` is given.

Framing. Deng et al.'s network was trained on its own align_img crops (data.align, framing `deng`: 102/s at 224),
and its coefficients describe the face in the crop it saw. So N_3D trains in that framing (as the authors' release
does: `release`, 116/s at 256 = Deng's at 256 to 0.5%): every photo dataset of the list must set `align: true`,
`framing: deng` (or `release`) and `lm3d_path: BFM/similarity_Lm3D_all.mat`; then the coefficients are exact
targets for the dataset's images at any `image_size` (the image is resized to 224 for Deng's network, and the
renderer's focal length scales with the size). Any other framing is refused with one line.

Reproducible: batches are fixed chunks of the dataset order (a resumed run recomputes a partly written chunk
whole, so it sees the same batches as an uninterrupted one), cuDNN runs deterministically, and every file is
written atomically. Existing files are kept (re-running resumes, each missing file written for its own image).
Every image of the list gets its file, or the run ends with exit status 1 naming the images it could not read
(unreadable, or without landmarks); images that a dataset's list asks for but that are not on disk are counted once
up front (training skips them too).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import torch

from engine.config import ConfigError

DENG_INPUT_SIZE = 224
DENG_FRAMINGS = ("deng", "release", "release_exact")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="a 3D training config (its data section is used)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--which", choices=["train", "val"], default="train", help="which data list of the config")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--deng-checkpoint", help="Deng et al.'s epoch_20.pth (net_recon)")
    src.add_argument("--n3d", help="a trained N_3D export (RUN/n3d.pt)")
    p.add_argument("--out", default=None, help="output folder of <name>.npy files for a one-dataset list "
                                                "(default: each dataset's coeffs_dir)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default=None, help="default: the config's train.device")
    return p.parse_args(argv)


def check_deng_framing(fcfgs, key: str) -> None:
    """Deng's coefficients fit only images in Deng's framing: raise one ConfigError naming the first entry that is
    not (synthetic faces carry exact coefficients already)."""
    for i, f in enumerate(fcfgs):
        where = f"{key}[{i}]"
        if f.kind == "synthetic":
            raise ConfigError(f"{where}: synthetic faces carry their exact coefficients; nothing to extract")
        if not f.align or f.framing not in DENG_FRAMINGS:
            raise ConfigError(f"{where}: Deng et al.'s network needs faces in its own framing: set align: true, "
                             f"framing: deng (or release) and lm3d_path (got align={f.align}, framing={f.framing})")


def save_atomic(path: Path, array: np.ndarray) -> None:
    """np.save through a temporary file and os.replace: a killed run never leaves a truncated .npy behind."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    from data.io import CorruptImageError
    from data.pairs import build_dataset
    from data.photos import SkippedItem
    from engine.config import load_config
    from engine.run import fail_fast
    from tasks.common import build_morphable, resize_square
    from tasks.exports import load_n3d
    from tasks.recon3d import Recon3DExperiment

    try:
        cfg = load_config(Recon3DExperiment, args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    device = torch.device(args.device or cfg.train.device)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    fcfgs = getattr(cfg.data, args.which)
    if args.n3d:
        net, _, size = fail_fast(load_n3d, args.n3d, device, "--n3d")
        if size != cfg.data.image_size:
            print(f"note: N_3D was trained at {size} px; images are resized to it", flush=True)
    else:
        from models.recon3d import build_deng_recon

        fail_fast(check_deng_framing, fcfgs, f"data.{args.which}")
        net = fail_fast(build_deng_recon, args.deng_checkpoint, "--deng-checkpoint").to(device)
        size = DENG_INPUT_SIZE
    model = build_morphable(cfg.morphable) if not cfg.morphable.bfm_path else None
    try:
        outs = output_dirs(fcfgs, args.out, f"data.{args.which}")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # the datasets are read without coeffs_dir: the folders are what this run fills
    reads = [dataclasses.replace(f, coeffs_dir=None) if hasattr(f, "coeffs_dir") else f for f in fcfgs]
    parts = [fail_fast(build_dataset, f, cfg.data.image_size, f"data.{args.which}[{i}]", model)
             for i, f in enumerate(reads)]
    jobs = []  # (dataset, its item names, item indices of one batch, output folder)
    bs = max(1, args.batch_size)
    done = total = 0
    for part, out in zip(parts, outs):
        out.mkdir(parents=True, exist_ok=True)
        names = item_names(part)
        total += len(names)
        for s in range(0, len(names), bs):
            chunk = range(s, min(s + bs, len(names)))
            if all((out / f"{names[i]}.npy").is_file() for i in chunk):
                done += len(chunk)
            else:
                jobs.append((part, names, chunk, out))
    absent = sum(getattr(p, "skipped", 0) for p in parts)
    print(f"{total} images ({done} already done)" + (f"; {absent} listed images are not on disk" if absent else "")
          + f" -> {', '.join(map(str, outs))}", flush=True)
    from tqdm import tqdm

    written, failed = 0, []
    with torch.no_grad(), tqdm(total=total - done, desc="coeffs") as bar:
        for part, names, chunk, out in jobs:
            items = []
            for i in chunk:
                try:
                    items.append(load_item(part, i))
                except (CorruptImageError, FileNotFoundError, SkippedItem) as e:
                    failed.append(f"{names[i]} ({e})")
            if items:
                x = resize_square(torch.stack([it["image"] for it in items]).to(device), size)
                coeffs = net(x)["coeffs"].float().cpu().numpy()
                for it, c in zip(items, coeffs):
                    save_atomic(out / f"{it['name']}.npy", c.astype(np.float32))
                    written += 1
            bar.update(len(chunk))
    print(f"wrote {written} coefficient files ({done} already there)")
    if failed:
        print(f"error: {len(failed)} images could not be read, no coefficient file for: {'; '.join(failed[:10])}"
              + (f"; ... ({len(failed) - 10} more)" if len(failed) > 10 else ""), file=sys.stderr)
        return 1
    return 0


def output_dirs(fcfgs, out: str | None, key: str) -> list[Path]:
    """The folder each dataset section's files go to: ``out`` for a one-section list, else each ``coeffs_dir``."""
    if out is not None:
        if len(fcfgs) != 1:
            raise ConfigError(f"--out: {key} has {len(fcfgs)} datasets; leave --out away to write each to its "
                              "coeffs_dir")
        return [Path(out)]
    missing = [f"{key}[{i}]" for i, f in enumerate(fcfgs) if getattr(f, "coeffs_dir", None) is None]
    if missing:
        raise ConfigError(f"{missing[0]}.coeffs_dir is not set: set it (--set) or give --out for a one-dataset list")
    return [Path(f.coeffs_dir) for f in fcfgs]


def load_item(part, i: int) -> dict:
    """Item i of a dataset exactly: photo datasets raise for a bad item instead of substituting the next one."""
    return part.load(i) if hasattr(part, "load") and hasattr(part, "records") else part[i]


def item_names(part) -> list[str]:
    """Item names without decoding the images where the dataset can tell them (photo datasets keep records)."""
    recs = getattr(part, "records", None)
    if recs is not None and all(hasattr(r, "name") for r in recs):
        return [r.name for r in recs]
    return [part[i]["name"] for i in range(len(part))]


if __name__ == "__main__":
    sys.exit(main())
