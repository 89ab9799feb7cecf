"""Write the deterministic evaluation test set to a folder, so other methods run on exactly the same inputs.

    python scripts/export_testset.py --config configs/eval/ffhq1000.yaml --out testset_ffhq1000

Writes OUT/masked/<name>.png (inputs), OUT/mask/<name>.png (binary occlusion maps, 255 = occluded),
OUT/gt/<name>.png (ground truth), OUT/landmarks/<name>.txt (68 rows "x y") and OUT/index.json. Score another
method's outputs (OUT_PRED/<name>.png) with `python evaluate.py --config ... --predictions OUT_PRED`.
The PNGs round to 8 bits half up (``metrics.quantize``), as evaluate.py rounds the test items for its own rows, so
every method, ours included, sees the same inputs.
"""

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    from data.io import write_image
    from data.landmarks import save_landmarks_file
    from engine.config import ConfigError, load_config, to_dict, validate_paths
    from engine.run import fail_fast
    from tasks.common import build_morphable, iterate
    from tasks.evaluation import EvalExperiment, build_testset

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:
        cfg = load_config(EvalExperiment, args.config, args.overrides)
        validate_paths(cfg.test)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    testset = fail_fast(build_testset, cfg, build_morphable(cfg.morphable) if not cfg.morphable.bfm_path else None)
    out = Path(args.out)
    for sub in ("masked", "mask", "gt", "landmarks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    names = []
    bar = tqdm(total=len(testset), desc="export", dynamic_ncols=True)
    for batch in iterate(testset, 16):
        bar.update(len(batch["name"]))
        for i, name in enumerate(batch["name"]):
            write_image(out / "masked" / f"{name}.png", batch["masked_image"][i])
            write_image(out / "mask" / f"{name}.png", batch["mask"][i].expand(3, -1, -1))
            write_image(out / "gt" / f"{name}.png", batch["image"][i])
            save_landmarks_file(out / "landmarks" / f"{name}.txt", batch["landmarks"][i])
            names.append(name)
    bar.close()
    (out / "index.json").write_text(json.dumps({"names": names, "test": to_dict(cfg.test)}, indent=1) + "\n")
    print(f"wrote {len(names)} test items to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
