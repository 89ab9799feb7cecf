"""Start-of-run boilerplate shared by the entry scripts: distributed init, seeding, run directory, saved config."""

from __future__ import annotations

from pathlib import Path

import torch

from engine import dist
from engine.config import dump_yaml


def start_run(cfg, run_dir: str, train_cfg) -> torch.device:
    """Join torchrun if launched by it, seed (seed + rank), set determinism, write RUN/config.yaml on rank 0.

    cfg: the whole resolved config dataclass; train_cfg: its `TrainConfig` part. Returns this rank's device.
    """
    if train_cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("config error: train.device is 'cuda' but CUDA is not available here "
                         "(use --set train.device=cpu)")
    device = dist.init_distributed(train_cfg.device)
    dist.set_deterministic(train_cfg.deterministic)
    dist.seed_everything(train_cfg.seed)
    if dist.is_main():
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "config.yaml").write_text(dump_yaml(cfg))
    dist.barrier()
    return device


def fail_fast(fn, *args, **kwargs):
    """Run a build step; missing files and bad options become one `error:` line and exit status 2."""
    try:
        return fn(*args, **kwargs)
    except (FileNotFoundError, KeyError, ValueError) as e:
        msg = e.args[0] if e.args else repr(e)
        print(f"error: {msg}", flush=True)
        raise SystemExit(2) from None
