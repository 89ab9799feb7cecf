"""The one training loop. It knows nothing about models: a task object supplies the step.

A task provides
    modules:     dict[str, nn.Module]        everything to checkpoint (raw modules, not DDP wrappers; EMA too)
    optimizers:  dict[str, Optimizer]
    train_step(batch, ctx) -> dict[str, Tensor]     detached scalar tensors to log; uses ctx.optimize(...)
and optionally
    validate(step) -> dict[str, float]              run on rank 0, written to RUN/metrics.jsonl
    images(batch) -> dict[str, Tensor]              (N,3,H,W) grids for TensorBoard
    state_dict() / load_state_dict(d)               extra task state (plain tensors / numbers)

The loop owns: data order (seeded, rank-sharded, resumable mid-epoch), the lr schedule (x`lr_drop_factor` at
`lr_drop_at` of training, as the paper), bf16 autocast on CUDA, gradient clipping, non-finite detection (the run
stops with a clear message and the last good checkpoint intact), periodic validation, images, checkpoints and
auto-resume from the newest checkpoint in the run directory.
"""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from engine import dist
from engine.checkpoint import CheckpointManager, rng_state, set_rng_state
from engine.logging import RunLogger, Throughput

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings shared by every training script."""

    steps: int = 1000
    batch_size: int = 8  # per rank
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    lr_drop_at: float = 0.5  # fraction of `steps` at which lr is multiplied by lr_drop_factor
    lr_drop_factor: float = 0.1
    grad_clip: float = 0.0  # max global grad norm per optimizer; 0 = off
    device: str = "cpu"
    amp: bool = True  # bf16 autocast on CUDA (CPU always runs fp32)
    channels_last: bool = False
    # torch.compile the trained networks in place (nn.Module.compile: checkpoint keys unchanged). Not N_D: R1's
    # double backward does not go through compiled graphs. Off by default: unmeasured on a GPU so far (BENCHMARKS.md)
    compile: bool = False
    # torch.compile's mode: "reduce-overhead" also captures CUDA graphs (against launch overhead at the paper's
    # small batches), "max-autotune" searches kernels; unmeasured on a GPU so far
    compile_mode: str = "default"
    seed: int = 0
    deterministic: bool = False
    num_workers: int = 0
    log_every: int = 10
    image_every: int = 200  # 0 = never
    val_every: int = 200  # 0 = only at the end
    ckpt_every: int = 500
    keep_last: int = 3
    max_minutes: float = 0.0  # stop (with a checkpoint) after this wall time; 0 = no limit

    def __post_init__(self):
        if self.steps <= 0 or self.batch_size <= 0:
            raise ValueError("steps and batch_size must be positive")
        if not 0.0 <= self.lr_drop_at <= 1.0:
            raise ValueError("lr_drop_at must be a fraction in [0, 1]")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be cpu or cuda[:N], got {self.device!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")


class NonFiniteLossError(RuntimeError):
    pass


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Step schedule: 1 before `lr_drop_at * steps`, `lr_drop_factor` after."""
    return cfg.lr_drop_factor if step >= int(cfg.lr_drop_at * cfg.steps) else 1.0


def make_adam(params, cfg: TrainConfig, lr: float | None = None) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=cfg.lr if lr is None else lr, betas=tuple(cfg.betas))


@dataclass
class StepContext:
    """Handed to `task.train_step`: autocast and the optimiser step in one place."""

    cfg: TrainConfig
    device: torch.device
    step: int = 0
    grad_norms: dict = field(default_factory=dict)

    @property
    def use_amp(self) -> bool:
        return self.cfg.amp and self.device.type == "cuda"

    def autocast(self):
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def optimize(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, name: str = "") -> None:
        """zero_grad -> backward -> optional clipping -> step (bf16 needs no loss scaling)."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            self.grad_norms[name] = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip).detach()
        optimizer.step()


def move_to(batch, device: torch.device, channels_last: bool = False):
    if isinstance(batch, torch.Tensor):
        x = batch.to(device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x
    if isinstance(batch, dict):
        return {k: move_to(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(move_to(v, device, channels_last) for v in batch)
    return batch


def _init_worker(worker_id: int) -> None:
    """Seed numpy/random from the loader's per-worker torch seed; one thread each (workers share the cores)."""
    import random

    import numpy as np

    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


class Trainer:
    """Runs `cfg.steps` optimisation steps of `task` over `dataset`, resuming from `run_dir` if possible."""

    def __init__(self, task, dataset, cfg: TrainConfig, run_dir: str, config_dict: dict | None = None,
                 device: torch.device | None = None, collate_fn=None):
        self.task, self.dataset, self.cfg = task, dataset, cfg
        self.run_dir = run_dir
        self.config_dict = config_dict or {}
        self.device = device or torch.device(cfg.device)
        self.collate_fn = collate_fn
        self.logger = RunLogger(run_dir, enabled=dist.is_main())
        self.ckpts = CheckpointManager(run_dir, cfg.keep_last)
        self.step = 0
        self.sampler = dist.ResumableSampler(len(dataset), seed=cfg.seed)
        self.steps_per_epoch = len(self.sampler) // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"the dataset ({len(dataset)} items over {dist.get_world_size()} ranks) is smaller "
                             f"than one batch ({cfg.batch_size})")
        self._stop_requested = False

    # ------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        state = {
            "step": self.step,
            "modules": {k: m.state_dict() for k, m in self.task.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.task.optimizers.items()},
            "rng": rng_state(),
            "config": self.config_dict,
        }
        if hasattr(self.task, "state_dict"):
            state["task"] = self.task.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        for k, m in self.task.modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.task.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        if "task" in state and hasattr(self.task, "load_state_dict"):
            self.task.load_state_dict(state["task"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])

    def resume(self) -> bool:
        state = self.ckpts.load_latest(map_location=self.device)
        if state is None:
            return False
        self.load_state_dict(state)
        dist.print0(f"resumed from {self.ckpts.latest()} (step {self.step})")
        return True

    def save(self) -> None:
        if dist.is_main():
            self.ckpts.save(self.state_dict(), self.step)
        dist.barrier()

    # -------------------------------------------------------------------------------------------- loop
    def _set_lr(self) -> float:
        f = lr_factor(self.step, self.cfg)
        for opt in self.task.optimizers.values():
            for g in opt.param_groups:
                g.setdefault("base_lr", g["lr"])
                g["lr"] = g["base_lr"] * f
        return self.cfg.lr * f

    def _loader(self, epoch: int, start_batch: int) -> DataLoader:
        self.sampler.set_epoch(epoch, start=start_batch * self.cfg.batch_size)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        # The loader gets its own generator so creating it never consumes the global RNG (exact resume).
        return DataLoader(self.dataset, batch_size=self.cfg.batch_size, sampler=self.sampler, drop_last=True,
                          num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda",
                          collate_fn=self.collate_fn, worker_init_fn=_init_worker,
                          generator=torch.Generator().manual_seed(self.cfg.seed + epoch),
                          persistent_workers=False)

    def _check_finite(self, bad: torch.Tensor, since: int) -> None:
        if bool(bad):
            raise NonFiniteLossError(
                f"non-finite loss between steps {since + 1} and {self.step}; stopped without saving, the last "
                f"good checkpoint is {self.ckpts.latest() or 'none'}")

    def _request_stop(self, signum, frame):
        """SIGTERM / first Ctrl-C: checkpoint at the next step boundary, then return; a second Ctrl-C aborts."""
        if self._stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._stop_requested = True
        dist.print0(f"\nsignal {signum}: stopping after this step with a checkpoint (Ctrl-C again to abort)")

    def run(self) -> dict:
        cfg = self.cfg
        self.resume()
        if self.step >= cfg.steps:
            dist.print0(f"already trained: step {self.step} >= {cfg.steps}")
            return {"step": self.step}
        old_handlers = {}
        with contextlib.suppress(ValueError):  # not in the main thread
            for sig in (signal.SIGTERM, signal.SIGINT):
                old_handlers[sig] = signal.signal(sig, self._request_stop)
        ctx = StepContext(cfg, self.device)
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        checked_at = self.step
        sums: dict[str, torch.Tensor] = {}
        n_sums = 0
        thr = Throughput()
        t_start = time.time()
        self.logger.progress(cfg.steps, initial=self.step)
        world = dist.get_world_size()
        last_logs: dict = {}
        stop = False
        try:
            while self.step < cfg.steps:
                epoch, offset = divmod(self.step, self.steps_per_epoch)
                for batch in self._loader(epoch, offset):
                    lr = self._set_lr()
                    ctx.step = self.step
                    batch = move_to(batch, self.device, cfg.channels_last)
                    logs = self.task.train_step(batch, ctx)
                    self.step += 1
                    thr.add(cfg.batch_size * world)
                    for k, v in logs.items():
                        v = v.detach().float()
                        bad |= ~torch.isfinite(v)
                        sums[k] = sums[k] + v if k in sums else v
                    n_sums += 1
                    if self.device.type == "cpu":  # a host check is free on CPU: stop at the first bad step
                        self._check_finite(bad, checked_at)
                    last = self.step >= cfg.steps
                    if self.step % cfg.log_every == 0 or last:
                        self._check_finite(bad, checked_at)
                        checked_at = self.step
                        means = dist.all_reduce_mean({k: v / n_sums for k, v in sums.items()})
                        last_logs = {k: float(v) for k, v in means.items()}
                        scal = {**last_logs, "lr": lr, "images_per_s": thr.rate()}
                        self.logger.scalars(self.step, scal)
                        self.logger.update_progress(n_sums, {k: last_logs[k] for k in list(last_logs)[:3]})
                        sums, n_sums = {}, 0
                    if cfg.image_every and (self.step % cfg.image_every == 0 or last) and dist.is_main() \
                            and hasattr(self.task, "images"):
                        with torch.no_grad():
                            self.logger.images(self.step, self.task.images(batch))
                    timeout = cfg.max_minutes > 0 and (time.time() - t_start) > 60 * cfg.max_minutes
                    stop = self._stop_requested or timeout
                    if world > 1:  # ranks must agree on the step they stop at: decided at logging steps only
                        stop = dist.any_rank(stop, self.device) if self.step % cfg.log_every == 0 else False
                    if (cfg.val_every and self.step % cfg.val_every == 0) or last or stop:
                        self.validate()
                    if self.step % cfg.ckpt_every == 0 or last or stop:
                        self._check_finite(bad, checked_at)
                        checked_at = self.step
                        self.save()
                    if last or stop:
                        break
                if stop:
                    dist.print0(f"stopping early at step {self.step} (checkpoint saved)")
                    break
            if world > 1:  # DDP must keep replicas bitwise equal; say so (or fail loudly) at the end
                checksums = dist.replica_checksums(self.task.modules)
                if len(set(checksums)) != 1:
                    raise RuntimeError(f"ranks hold different weights at step {self.step}: checksums {checksums}")
                dist.print0(f"all {world} ranks hold identical weights (checksum {checksums[0]:.10e})")
        finally:
            self.logger.close()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        return {"step": self.step, **last_logs}

    def validate(self) -> dict:
        out = {}
        if dist.is_main() and hasattr(self.task, "validate"):
            out = self.task.validate(self.step) or {}
            self.logger.metrics(self.step, out)
        dist.barrier()
        return out


def run_training(task, dataset, cfg: TrainConfig, run_dir: str, config_dict: dict | None = None,
                 device: torch.device | None = None, collate_fn=None) -> dict:
    """Build a Trainer and run it; a non-finite loss prints one line and exits with status 3."""
    trainer = Trainer(task, dataset, cfg, run_dir, config_dict, device, collate_fn)
    try:
        return trainer.run()
    except NonFiniteLossError as e:
        dist.print0(f"error: {e}")
        raise SystemExit(3) from None

