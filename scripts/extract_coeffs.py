"""Ground-truth 3DMM coefficients for a real dataset, predicted from the UNMASKED images (paper section 3.1: "we use
3D coefficients predicted from the original unmasked face images by the pre-trained model of [Deng et al.]").

    python scripts/extract_coeffs.py --config configs/3d/paper.yaml --which train \
        --deng-checkpoint weights/epoch_20.pth --out data/ffhq/coeffs --device cuda
    python scripts/extract_coeffs.py --config configs/3d/paper.yaml --n3d runs/3d_paper/n3d.pt --out DIR

The faces are read exactly as training reads them (the config's data section: same size and framing), so each
file OUT/<name>.npy (float32 (257,), the layout of renderer.morphable.CoeffLayout) matches the image the dataset
delivers; point the dataset's `coeffs_dir` at OUT. Existing files are kept (re-running resumes); unreadable images
are skipped and counted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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


def main(argv=None) -> int:
    args = parse_args(argv)
    from engine.config import ConfigError, load_config
    from engine.run import fail_fast
    from tasks.common import build_faces, build_morphable, resize_square
    from tasks.recon3d import Recon3DExperiment, load_n3d

    try:
        cfg = load_config(Recon3DExperiment, args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if args.n3d:
        net, _, size = fail_fast(load_n3d, args.n3d, device, "--n3d")
        if size != cfg.data.image_size:
            print(f"note: N_3D was trained at {size} px; images are resized to it", flush=True)
    else:
        from models.recon3d import build_recon3d

        net = fail_fast(build_recon3d, "resnet50", 257, deng_checkpoint=args.deng_checkpoint).to(device).eval()
        size = 224  # Deng et al.'s input size
    model = build_morphable(cfg.morphable) if not cfg.morphable.bfm_path else None
    faces = fail_fast(build_faces, getattr(cfg.data, args.which), cfg.data.image_size, f"data.{args.which}", model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(len(faces)) if not (out / f"{_name(faces, i)}.npy").is_file()]
    print(f"{len(faces)} images, {len(faces) - len(todo)} already done", flush=True)
    from tqdm import tqdm

    written = 0
    with torch.no_grad(), tqdm(total=len(todo), desc="coeffs") as bar:
        for start in range(0, len(todo), args.batch_size):
            items = [faces[i] for i in todo[start:start + args.batch_size]]
            x = resize_square(torch.stack([it["image"] for it in items]).to(device), size)
            coeffs = net(x)["coeffs"].float().cpu().numpy()
            for it, c in zip(items, coeffs):
                np.save(out / f"{it['name']}.npy", c.astype(np.float32))
                written += 1
            bar.update(len(items))
    print(f"wrote {written} coefficient files to {out} (skipped unreadable: {getattr(faces, 'skipped', 0)})")
    return 0


def _name(faces, i: int) -> str:
    """The item name without decoding the image where the dataset can tell it (photo datasets keep records)."""
    recs = getattr(faces, "records", None)
    if recs is not None and hasattr(recs[i], "name"):
        return recs[i].name
    return faces[i]["name"]


if __name__ == "__main__":
    sys.exit(main())
