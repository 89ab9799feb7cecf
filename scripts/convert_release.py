"""Convert the authors' released weights into this project's exports, with the release's inference settings.

    python scripts/convert_release.py --config configs/release.yaml --out runs/release
    python scripts/convert_release.py --config configs/release.yaml --set n3d=PATH --set gen=PATH --out DIR

Writes OUT/n3d.pt and OUT/inpaint.pt (tasks/release.py): then

    python evaluate.py --config configs/eval/ffhq1000.yaml --checkpoint runs/release/inpaint.pt   # or an ablations row
    python scripts/remove_mask.py --image PHOTO --checkpoint runs/release/inpaint.pt --out OUT
    python train_inpaint.py --config configs/inpaint/paper.yaml --set prior.n3d_checkpoint=runs/release/n3d.pt

The inpainting export records the N_3D export's path as given here (evaluate.py / remove_mask.py take
--n3d-checkpoint if it moves). Missing files and key layouts that are not the release's stop with one line.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="the release preset (configs/release.yaml); default: built-in")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value, e.g. --set mask_threshold=0.2 (repeatable)")
    p.add_argument("--out", required=True, help="output folder for n3d.pt and inpaint.pt")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from engine.config import ConfigError
    from engine.run import fail_fast
    from tasks.release import convert_release, load_release_config

    try:
        cfg = load_release_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    n3d, inpaint = fail_fast(convert_release, cfg, args.out)
    print(f"wrote {n3d} and {inpaint} (release settings: {cfg.image_size} px, framing {cfg.framing}, mask > "
          f"{cfg.mask_threshold} dilated {cfg.mask_dilate} px, noise {cfg.noise})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
