"""Start-of-run boilerplate shared by the entry scripts: distributed init, seeding, run directory, saved config."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from engine import dist
from engine.checkpoint import CheckpointManager
from engine.config import ConfigError, build_dataclass, dump_yaml, load_yaml, resume_conflicts, to_dict
from engine.files import FileReadError


def check_resumable(cfg, run_dir: str | Path) -> None:
    """A run with checkpoints resumes only with the model config it was started with (RUN/config.yaml): the
    differing keys are named in one line. `train.*` (e.g. more `train.steps`) may change."""
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file() or not CheckpointManager(run_dir).list():
        return
    try:
        old = load_yaml(saved)
        try:  # through today's dataclasses, so a key added since with its default is no conflict
            old = to_dict(build_dataclass(type(cfg), old))
        except (ConfigError, TypeError, ValueError):
            pass  # a key removed since: compare the file as it is
        diff = resume_conflicts(old, to_dict(cfg))
    except ConfigError as e:
        _config_exit(f"{e} (pass --restart to start the run over)")
    if diff:
        _config_exit(f"{run_dir} was trained with another model config, its checkpoints do not fit: "
                     f"{'; '.join(diff[:4])}{' ...' if len(diff) > 4 else ''} (use another --run-dir, or --restart "
                     "to start this one over)")


def _config_exit(msg: str):
    print(f"config error: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def start_run(cfg, run_dir: str, train_cfg, restart: bool = False) -> torch.device:
    """Join torchrun if launched by it, seed (seed + rank), set determinism, write RUN/config.yaml on rank 0.

    cfg: the whole resolved config dataclass; train_cfg: its `TrainConfig` part. Returns this rank's device.
    Resuming with another model config than RUN/config.yaml's stops with one line (unless `restart`).
    """
    if not restart:
        check_resumable(cfg, run_dir)
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


# What a build step raises for the user's mistakes: a bad option (ConfigError), a missing file, a file that is not
# what its key says (FileReadError, CheckpointError). Anything else is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, FileNotFoundError, FileReadError)


def fail_fast(fn, *args, **kwargs):
    """Run a build step; config errors and missing or unreadable files become one `error:` line and exit status 2
    (USER_ERRORS). Any other exception, e.g. a KeyError or ValueError of a programming error, propagates."""
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS as e:
        msg = e.args[0] if e.args else repr(e)
        print(f"error: {msg}", flush=True)
        raise SystemExit(2) from None
