"""Write a procedural mask library to disk, with contact sheets and an optional preview of masked faces.

    python scripts/make_masks.py --shapes 900 --textures 800 --seed 0 [--out assets/masks] [--preview]

Output: OUT/shapes/shape_NNNNN.{png,tex.png,json} (RGBA template, texture weight, anchors + parameters),
OUT/textures/texture_NNNNN.{png,json}, OUT/contact_sheet.png, and with --preview OUT/preview.png (64 synthesised
pairs). Item i depends only on (seed, i): the same seed rewrites the same files and a larger library extends a
smaller one (data/masks/writer.py). Load the result with ``data.masks.MaskLibrary.from_dir(OUT)``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from data.masks.writer import write_library, write_preview


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", type=int, default=900)
    ap.add_argument("--textures", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="assets/masks", help="library folder (default assets/masks, git-ignored)")
    ap.add_argument("--preview", action="store_true", help="also write OUT/preview.png (64 masked faces)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if (Path(args.out) / "__init__.py").is_file():  # e.g. data/masks, the mask code itself
        ap.error(f"--out {args.out} is a Python package folder (source code); write the library elsewhere, "
                 "e.g. assets/masks (the default)")
    summary = write_library(args.out, args.shapes, args.textures, args.seed, args.quiet)
    print(json.dumps(summary))
    if args.preview:
        from data.masks.library import MaskLibrary

        write_preview(args.out, MaskLibrary.from_dir(args.out), seed=args.seed, quiet=args.quiet)
    return summary


if __name__ == "__main__":
    main()
