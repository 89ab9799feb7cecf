"""Evaluate mask removal: the paper's Table 2 (L1, PSNR, SSIM, ArcFace cosine, FID) plus LPIPS, L1 in the hole,
N_3D's mask IoU and landmark error, diversity and controllability, against OpenCV baselines and ablations.

    python evaluate.py --config configs/eval/demo.yaml [--checkpoint RUN/inpaint.pt] [--predictions DIR [--rescore]]
        [--ssim-convention wang|skimage|edgeconnect]

With --predictions only that folder is scored (every test item's image is checked first), unless --rescore asks
for the config's checkpoint, ablations and baselines too.

Writes RUN/results.json, RUN/results.md (one row per method, scores by mask-area bin) and RUN/grid.png
(rows: input, each method, ground truth; RUN/grid_rows.txt names them). Same checkpoint + config -> same results.json.
"""

import sys

from engine.config import cli_config
from engine.run import fail_fast
from tasks.evaluation import EvalExperiment, Evaluator


def add_args(parser):
    parser.add_argument("--checkpoint", default=None, help="RUN/inpaint.pt (overrides the config's checkpoint)")
    parser.add_argument("--predictions", default=None,
                        help="folder of another method's outputs for the exported test set (DIR/<name>.png); "
                             "only they are scored unless --rescore (or --checkpoint) is given")
    parser.add_argument("--rescore", action="store_true",
                        help="with --predictions: also score the config's checkpoint, ablations and baselines")
    parser.add_argument("--ssim-convention", default=None,
                        help="SSIM setting (overrides ssim_convention): wang (Gaussian 11, sigma 1.5, RGB; default), "
                             "skimage (uniform 7x7, RGB) or edgeconnect (grey, uniform 51x51), to match published "
                             "tables")


def main(argv=None) -> int:
    cfg, args = cli_config(EvalExperiment, argv, description=__doc__, extra_args=add_args)
    if args.predictions and not args.rescore:  # scoring another method's outputs: ours are scored already
        cfg.checkpoint, cfg.ablations, cfg.baselines = None, {}, []
    if args.checkpoint:
        cfg.checkpoint = args.checkpoint
    if args.ssim_convention:
        cfg.ssim_convention = args.ssim_convention
    evaluator = fail_fast(Evaluator, cfg, args.run_dir, args.predictions)
    from tqdm import tqdm

    def stage(total, desc):
        return tqdm(total=total, desc=desc, dynamic_ncols=True)

    with tqdm(total=len(evaluator.testset), desc="evaluate", dynamic_ncols=True) as bar:
        results = evaluator.run(progress=bar.update, stage=stage)
    print((evaluator.out_dir / "results.md").read_text())
    print(f"wrote {evaluator.out_dir}/results.json, results.md, grid.png")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
