"""Train N_G / N_D (3D-guided inpainting GAN, paper section 3.2) on top of a frozen N_3D.

    python train_inpaint.py --config configs/inpaint/demo.yaml [--set key=value] [--dry-run] [--run-dir DIR]
    torchrun --nproc_per_node=2 train_inpaint.py --config configs/inpaint/paper.yaml

With `prior.source: n3d` the prior (I_3D and m) comes from `prior.n3d_checkpoint`; if that file is missing and
`prior.n3d_config` names a 3D config, N_3D is trained first with it (run dir: the checkpoint's folder).
Writes RUN/checkpoints/, RUN/tb/, RUN/metrics.jsonl and RUN/inpaint.pt (EMA generator for evaluation).
"""

import sys
from pathlib import Path

from engine import dist
from engine.config import cli_config, to_dict
from engine.loop import run_training
from engine.run import fail_fast, start_run
from tasks.inpaint import InpaintExperiment, InpaintTask


def ensure_n3d(cfg) -> None:
    """Train the N_3D prior first when its checkpoint is missing and a 3D config is given (rank 0 only).

    An N_3D run that stopped early exports nothing (train_3d.py exits non-zero, and so does this script), so a
    re-run resumes it here; a run whose newest checkpoint is short of the 3D config's `train.steps` (an export
    left by an older version after a stop) is resumed too, never used as the prior.
    """
    p = cfg.prior
    if p.source != "n3d":
        return
    run_dir = Path(p.n3d_checkpoint).parent
    if Path(p.n3d_checkpoint).is_file():
        if not p.n3d_config or _n3d_finished(p.n3d_config, run_dir):
            return
        print(f"N_3D in {run_dir} did not finish its {p.n3d_config} steps: resuming it", flush=True)
    elif not p.n3d_config:
        raise SystemExit(f"error: prior.n3d_checkpoint: file not found: {p.n3d_checkpoint} "
                         "(train it with train_3d.py or set prior.n3d_config)")
    else:
        print(f"N_3D prior missing: training it first with {p.n3d_config} in {run_dir}", flush=True)
    import train_3d

    train_3d.main(["--config", p.n3d_config, "--run-dir", str(run_dir)])  # exits non-zero unless it finished


def _n3d_finished(n3d_config: str, run_dir: Path) -> bool:
    """True unless `run_dir` holds checkpoints and the newest is short of the 3D config's train.steps."""
    from engine.checkpoint import CheckpointManager
    from engine.config import ConfigError, load_config
    from tasks.recon3d import Recon3DExperiment

    ckpts = CheckpointManager(run_dir)
    newest = ckpts.latest()
    if newest is None:
        return True
    try:
        steps = load_config(Recon3DExperiment, n3d_config).train.steps
    except ConfigError as e:
        raise SystemExit(f"config error: prior.n3d_config: {e}") from None
    return ckpts.step_of(newest) >= steps


def main(argv=None) -> int:
    cfg, args = cli_config(InpaintExperiment, argv, description=__doc__, training=True)
    if dist.is_main() and not dist.launched_by_torchrun():
        ensure_n3d(cfg)
    device = start_run(cfg, args.run_dir, cfg.train, args.restart)
    task = fail_fast(InpaintTask, cfg, device)
    train_set = fail_fast(task.train_set)
    fail_fast(task.val_set)
    run_training(task, train_set, cfg.train, args.run_dir, to_dict(cfg), device, restart=args.restart)
    if dist.is_main():
        print(f"EMA generator exported to {task.export(Path(args.run_dir) / 'inpaint.pt')}", flush=True)
    dist.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
