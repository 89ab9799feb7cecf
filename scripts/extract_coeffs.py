"""Ground-truth 3DMM coefficients for a real dataset, predicted from the UNMASKED images (paper section 3.1: "we use
3D coefficients predicted from the original unmasked face images by the pre-trained model of [Deng et al.]").

    python scripts/extract_coeffs.py --config configs/3d/paper.yaml --which train \
        --deng-checkpoint weights/epoch_20.pth --out data/ffhq/coeffs --device cuda
    python scripts/extract_coeffs.py --config configs/3d/paper.yaml --n3d runs/3d_paper/n3d.pt --out DIR

The faces are read exactly as training reads them (the config's data section: same size and framing), so each
file OUT/<name>.npy (float32 (257,), the layout of renderer.morphable.CoeffLayout) matches the image the dataset
delivers; point the dataset's `coeffs_dir` at OUT.

Framing. Deng et al.'s network was trained on its own align_img crops (data.align, framing `deng`: 102/s at 224),
and its coefficients describe the face in the crop it saw. So N_3D trains in that framing (as the authors' release
does: `release`, 116/s at 256 = Deng's at 256 to 0.5%): every photo dataset of the list must set `align: true`,
`framing: deng` (or `release`) and `lm3d_path: BFM/similarity_Lm3D_all.mat`; then the coefficients are exact
targets for the dataset's images at any `image_size` (the image is resized to 224 for Deng's network, and the
renderer's focal length scales with the size). Any other framing is refused with one line.

Reproducible: batches are fixed chunks of the dataset order (a resumed run recomputes a partly written chunk
whole, so it sees the same batches as an uninterrupted one), cuDNN runs deterministically, and every file is
written atomically. Existing files are kept (re-running resumes); unreadable images are skipped and counted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import ConfigError  # noqa: E402

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
    p.add_argument("--out", required=True, help="output folder of <name>.npy files")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
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
    from data.pairs import build_faces
    from engine.config import load_config
    from engine.run import fail_fast
    from tasks.common import build_morphable, resize_square
    from tasks.recon3d import Recon3DExperiment, load_n3d

    try:
        cfg = load_config(Recon3DExperiment, args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
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
    faces = fail_fast(build_faces, fcfgs, cfg.data.image_size, f"data.{args.which}", model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = _names(faces)
    bs = max(1, args.batch_size)
    chunks = [range(s, min(s + bs, len(faces))) for s in range(0, len(faces), bs)]
    todo = [c for c in chunks if not all((out / f"{names[i]}.npy").is_file() for i in c)]
    print(f"{len(faces)} images, {sum(len(c) for c in chunks) - sum(len(c) for c in todo)} already done",
          flush=True)
    from tqdm import tqdm

    written = 0
    with torch.no_grad(), tqdm(total=sum(len(c) for c in todo), desc="coeffs") as bar:
        for chunk in todo:
            items = [faces[i] for i in chunk]
            x = resize_square(torch.stack([it["image"] for it in items]).to(device), size)
            coeffs = net(x)["coeffs"].float().cpu().numpy()
            for it, c in zip(items, coeffs):
                save_atomic(out / f"{it['name']}.npy", c.astype(np.float32))
                written += 1
            bar.update(len(items))
    print(f"wrote {written} coefficient files to {out} (skipped unreadable: {getattr(faces, 'skipped', 0)})")
    return 0


def _names(faces) -> list[str]:
    """Item names without decoding the images where the datasets can tell them (photo datasets keep records)."""
    parts = getattr(faces, "datasets", None) or [faces]
    out = []
    for part in parts:
        recs = getattr(part, "records", None)
        if recs is not None and all(hasattr(r, "name") for r in recs):
            out += [r.name for r in recs]
        else:
            out += [part[i]["name"] for i in range(len(part))]
    return out


if __name__ == "__main__":
    sys.exit(main())
