"""Train N_3D (mask segmentation + 3DMM reconstruction, paper section 3.1).

    python train_3d.py --config configs/3d/demo.yaml [--set train.steps=100] [--dry-run] [--run-dir DIR]
    torchrun --nproc_per_node=2 train_3d.py --config configs/3d/paper.yaml

Writes RUN/config.yaml, RUN/checkpoints/, RUN/tb/ (TensorBoard), RUN/metrics.jsonl (validation) and RUN/n3d.pt
(inference export used by train_inpaint.py, evaluate.py and scripts/remove_mask.py). Re-running the same command
resumes from the newest checkpoint.
"""

import sys
from pathlib import Path

from engine import dist
from engine.config import cli_config, to_dict
from engine.loop import run_training
from engine.run import fail_fast, start_run
from tasks.recon3d import Recon3DExperiment, Recon3DTask


def main(argv=None) -> int:
    cfg, args = cli_config(Recon3DExperiment, argv, description=__doc__, training=True)
    device = start_run(cfg, args.run_dir, cfg.train, args.restart)
    task = fail_fast(Recon3DTask, cfg, device)
    train_set = fail_fast(task.train_set)
    fail_fast(task.val_set)
    run_training(task, train_set, cfg.train, args.run_dir, to_dict(cfg), device, restart=args.restart)
    if dist.is_main():
        path = task.export(Path(args.run_dir) / "n3d.pt")
        print(f"N_3D exported to {path}", flush=True)
    dist.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
