"""The one training loop. It knows nothing about models: a task object supplies the step (engine.task.Task:
modules, optimizers, train_step; optionally validate, images, state_dict / load_state_dict, run on rank 0 only).

The loop owns: data order (seeded, rank-sharded, resumable mid-epoch), the lr schedule (x`lr_drop_factor` at
`lr_drop_at` of training, as the paper), bf16 autocast on CUDA, gradient clipping, non-finite detection (the run
stops with a clear message and the last good checkpoint intact), periodic validation, images, checkpoints and
auto-resume from the newest checkpoint in the run directory.

Nothing is lost and no bad state is left behind: a checkpoint is written only from finite weights; unreadable
checkpoints are moved to `checkpoints/corrupt/` at resume (all unreadable: stop, `--restart` starts over); temp files
of killed writers are removed at start; a run stopped early (SIGTERM, Ctrl-C, `max_minutes`) saves a checkpoint and
exits non-zero (`StoppedEarly`: 128 + the signal, 124 for the time limit), so no export is made from a partial model.
Under AMP a step with non-finite gradients is skipped (as GradScaler would) and counted; `max_skipped_steps` such
steps in a row stop the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from engine import dist
from engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    load_module_state,
    nonfinite_tensors,
    remove_stale_tmp,
    rng_state,
    set_rng_state,
)
from engine.logging import RunLogger, Throughput
from engine.task import CountedData, EpochData, Task, check_task

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
    max_skipped_steps: int = 20  # AMP: this many non-finite steps in a row (each skipped) stop the run

    def __post_init__(self):
        if self.steps <= 0 or self.batch_size <= 0:
            raise ValueError("steps and batch_size must be positive")
        if not 0.0 <= self.lr_drop_at <= 1.0:
            raise ValueError("lr_drop_at must be a fraction in [0, 1]")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be cpu or cuda[:N], got {self.device!r}")
        if self.max_skipped_steps < 1:
            raise ValueError(f"max_skipped_steps must be >= 1, got {self.max_skipped_steps}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")


class NonFiniteLossError(RuntimeError):
    pass


class StoppedEarly(Exception):
    """Training stopped before `steps` (signal or time limit) with a checkpoint saved; `code` is the exit status."""

    def __init__(self, step: int, code: int, why: str):
        super().__init__(f"stopped early at step {step} ({why}); checkpoint saved, nothing exported: re-run the same "
                         "command to resume")
        self.step, self.code = step, code


class Aborted(Exception):
    """A second Ctrl-C: stop now, without a checkpoint of the current step."""

    def __init__(self, step: int):
        super().__init__(f"aborted by a second Ctrl-C during step {step + 1}; no checkpoint of it was written "
                         "(re-run the same command to resume from the newest one)")


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
    skip_nonfinite: bool | None = None  # skip optimiser steps with non-finite gradients; None = under AMP only
    step_skipped: bool = False  # set by optimize() when it skipped; the loop resets it each step

    @property
    def use_amp(self) -> bool:
        return self.cfg.amp and self.device.type == "cuda"

    def _grads_finite(self, optimizer: torch.optim.Optimizer) -> bool:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        return not grads or bool(torch.stack(torch._foreach_norm(grads)).isfinite().all())

    def autocast(self):
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def optimize(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, name: str = "") -> None:
        """zero_grad -> backward -> optional clipping -> step (bf16 needs no loss scaling).

        Under AMP (or `skip_nonfinite`) a non-finite gradient skips the step, as GradScaler does (one host sync,
        as GradScaler's), and sets `step_skipped`.
        """
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        skip = self.use_amp if self.skip_nonfinite is None else self.skip_nonfinite
        if skip and not self._grads_finite(optimizer):
            optimizer.zero_grad(set_to_none=True)
            self.step_skipped = True
            return
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
    """Seed numpy/random from the loader's per-worker torch seed; one thread each (workers share the cores).

    Signals: a terminal's Ctrl-C (SIGINT) and a scheduler's SIGTERM reach the whole process group; workers ignore
    them and the main process stops the run (workers end with it). OpenCV: see `_workers_forked`.
    """
    import random
    import sys

    import numpy as np

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)
    torch.set_num_threads(1)
    if "cv2" not in sys.modules:  # the main process had no OpenCV: a fresh one here can be limited safely
        with contextlib.suppress(ImportError):
            import cv2

            cv2.setNumThreads(1)


@contextlib.contextmanager
def _workers_forked():
    """Around forking DataLoader workers: they inherit a one-thread OpenCV.

    `cv2.setNumThreads` in a forked child hangs forever once the parent has used OpenCV's thread pool (the child
    waits for pool threads that were not forked), so the limit is set in the parent just for the fork and restored
    after; OpenCV runs its calls serially in a child with that setting. Without OpenCV in the main process, each worker
    imports a fresh one and limits it (`_init_worker`).
    """
    import sys

    cv2 = sys.modules.get("cv2")
    n = cv2.getNumThreads() if cv2 is not None else None
    if cv2 is not None:
        cv2.setNumThreads(1)
    try:
        yield
    finally:
        if cv2 is not None:
            cv2.setNumThreads(n)


class Trainer:
    """Runs `cfg.steps` optimisation steps of `task` over `dataset`, resuming from `run_dir` if possible.

    restart: set the run's checkpoints (`checkpoints/restarted_<n>/`) and logs (`restarted_<n>/`: metrics.jsonl,
    log.jsonl, tb/) aside and start from step 0.
    """

    def __init__(self, task: Task, dataset, cfg: TrainConfig, run_dir: str, config_dict: dict | None = None,
                 device: torch.device | None = None, collate_fn=None, restart: bool = False):
        check_task(task)
        self.task, self.dataset, self.cfg = task, dataset, cfg
        self.run_dir = run_dir
        self.config_dict = config_dict or {}
        self.device = device or torch.device(cfg.device)
        self.collate_fn = collate_fn
        self.restart = restart
        self.logger = RunLogger(run_dir, enabled=dist.is_main())
        self.ckpts = CheckpointManager(run_dir, cfg.keep_last)
        self.step = 0
        self.sampler = dist.ResumableSampler(len(dataset), seed=cfg.seed)
        self.steps_per_epoch = len(self.sampler) // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"the dataset ({len(dataset)} items over {dist.get_world_size()} ranks) is smaller "
                             f"than one batch ({cfg.batch_size})")
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if cfg.num_workers > cpus:
            dist.print0(f"note: train.num_workers={cfg.num_workers} loader processes share the {cpus} CPUs this "
                        "process may use (each runs one thread); fewer may be faster here")
        self._stop_requested = False
        self._stop_signal: int | None = None
        self.skipped_steps = 0  # AMP: optimiser steps skipped for non-finite gradients

    # ------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        state = {
            "step": self.step,
            "modules": {k: m.state_dict() for k, m in self.task.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.task.optimizers.items()},
            "rng": rng_state(),
            "config": self.config_dict,
        }
        if extra := self.task.state_dict():
            state["task"] = extra
        return state

    def load_state_dict(self, state: dict, path="checkpoint") -> None:
        for k, m in self.task.modules.items():
            if k not in state.get("modules", {}):
                raise CheckpointError(f"{path}: has no module '{k}' (holds: {', '.join(state.get('modules', {}))})")
            load_module_state(m, state["modules"][k], f"{path} module '{k}'")
        for k, o in self.task.optimizers.items():
            try:
                o.load_state_dict(state["optimizers"][k])
            except (KeyError, ValueError) as e:
                raise CheckpointError(f"{path}: optimizer '{k}' does not fit: {e}") from None
        if "task" in state:
            self.task.load_state_dict(state["task"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])

    def resume(self) -> bool:
        """Rank 0 tidies the run (dead writers' temp files, --restart, unreadable checkpoints), then every rank
        loads the newest readable checkpoint."""
        if dist.is_main():
            for folder in (self.ckpts.dir, Path(self.run_dir)):
                for p in remove_stale_tmp(folder):
                    print(f"removed {p} (left by a writer that was killed)", flush=True)
            if self.restart and (moved := self.ckpts.set_aside()):
                print(f"--restart: the previous checkpoints are in {moved}; starting from step 0", flush=True)
            if self.restart and (moved := self.logger.set_aside()):
                print(f"--restart: the previous logs (metrics.jsonl, log.jsonl, tb/) are in {moved}", flush=True)
        state = self.ckpts.load_latest(map_location=self.device, quarantine=True) if dist.is_main() else None
        dist.barrier()
        if not dist.is_main():
            state = self.ckpts.load_latest(map_location=self.device)
        if state is None:
            return False
        self.load_state_dict(state, self.ckpts.loaded)
        dist.print0(f"resumed from {self.ckpts.loaded} (step {self.step})")
        return True

    def save(self) -> None:
        """Checkpoint the current step; non-finite weights are never written (identical on every rank)."""
        bad = nonfinite_tensors({k: m.state_dict() for k, m in self.task.modules.items()})
        if bad:
            raise NonFiniteLossError(
                f"non-finite weights at step {self.step} ({len(bad)} tensors, first: {', '.join(bad[:3])}); not "
                f"saved, {self._last_good()}")
        if dist.is_main():
            self.ckpts.save(self.state_dict(), self.step)
        dist.barrier()

    def _last_good(self) -> str:
        good = self.ckpts.last_good() if dist.is_main() else None
        return f"the last good checkpoint (verified finite) is {good}" if good else "there is no good checkpoint"

    # -------------------------------------------------------------------------------------------- loop
    def _set_lr(self) -> float:
        f = lr_factor(self.step, self.cfg)
        for opt in self.task.optimizers.values():
            for g in opt.param_groups:
                g.setdefault("base_lr", g["lr"])
                g["lr"] = g["base_lr"] * f
        return self.cfg.lr * f

    def _loader(self, epoch: int, start_batch: int):
        """An iterator over this rank's batches of `epoch` from batch `start_batch` on (workers started)."""
        self.sampler.set_epoch(epoch, start=start_batch * self.cfg.batch_size)
        if isinstance(self.dataset, EpochData):
            self.dataset.set_epoch(epoch)
        dataset = self.dataset
        # The loader gets its own generator so creating it never consumes the global RNG (exact resume). Workers
        # are forked anew each epoch (the dataset's epoch reaches them); torch's warning about more workers than
        # CPUs would repeat each time: the Trainer says it once instead.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This DataLoader will create")
            loader = DataLoader(dataset, batch_size=self.cfg.batch_size, sampler=self.sampler, drop_last=True,
                                num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda",
                                collate_fn=self.collate_fn, worker_init_fn=_init_worker,
                                generator=torch.Generator().manual_seed(self.cfg.seed + epoch),
                                persistent_workers=False)
            if self.cfg.num_workers == 0:
                return iter(loader)
            with _workers_forked():
                return iter(loader)

    def skipped_images(self) -> int:
        """Training images skipped at load so far by any rank or loader worker, each bad file once (the dataset's
        optional `skipped_flags`: one bool per item, shared with its workers). A collective: every rank calls it."""
        if not isinstance(self.dataset, CountedData):
            return 0
        return dist.count_flagged(self.dataset.skipped_flags, self.device)

    def _check_finite(self, bad: torch.Tensor, since: int) -> None:
        if bool(bad):
            raise NonFiniteLossError(
                f"non-finite loss between steps {since + 1} and {self.step}; stopped without saving, "
                f"{self._last_good()}")

    def _request_stop(self, signum, frame):
        """SIGTERM / first Ctrl-C: checkpoint at the next step boundary, then stop; a second Ctrl-C aborts."""
        if self._stop_requested and signum == signal.SIGINT:
            raise Aborted(self.step)
        self._stop_requested = True
        self._stop_signal = signum
        dist.print0(f"\nsignal {signum}: stopping after this step with a checkpoint (Ctrl-C again to abort)")

    def _early_stop(self, timeout: bool) -> StoppedEarly:
        if self._stop_signal is not None:
            return StoppedEarly(self.step, 128 + self._stop_signal, signal.Signals(self._stop_signal).name)
        if timeout:
            return StoppedEarly(self.step, 124, f"train.max_minutes={self.cfg.max_minutes:g} reached")
        return StoppedEarly(self.step, 143, "another rank was stopped")

    def run(self) -> dict:
        """Train to `cfg.steps`; returns the last logged means. Raises StoppedEarly after an early stop."""
        cfg = self.cfg
        self.resume()
        if self.step >= cfg.steps:
            dist.print0(f"already trained: step {self.step} >= {cfg.steps}")
            return {"step": self.step}
        for line in self.dataset.index_report if isinstance(self.dataset, CountedData) else ():
            dist.print0(f"training data: {line}")  # what the data folders hold, once per run
        old_handlers = {}
        with contextlib.suppress(ValueError):  # not in the main thread
            for sig in (signal.SIGTERM, signal.SIGINT):
                old_handlers[sig] = signal.signal(sig, self._request_stop)
        ctx = StepContext(cfg, self.device)
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        checked_at = self.step
        sums: dict[str, torch.Tensor] = {}
        n_sums = 0
        skipped_in_row = 0
        thr = Throughput()
        t_start = time.time()
        self.logger.progress(cfg.steps, initial=self.step)
        world = dist.get_world_size()
        last_logs: dict = {}
        stop = timeout = False
        try:
            while self.step < cfg.steps:
                epoch, offset = divmod(self.step, self.steps_per_epoch)
                for batch in self._loader(epoch, offset):
                    lr = self._set_lr()
                    ctx.step = self.step
                    ctx.step_skipped = False
                    batch = move_to(batch, self.device, cfg.channels_last)
                    logs = self.task.train_step(batch, ctx)
                    self.step += 1
                    thr.add(cfg.batch_size * world)
                    if ctx.step_skipped:  # its (non-finite) losses are not logged, nor stop the run
                        self.skipped_steps += 1
                        skipped_in_row += 1
                        if skipped_in_row >= cfg.max_skipped_steps:
                            raise NonFiniteLossError(
                                f"{skipped_in_row} steps in a row with non-finite gradients (skipped), up to step "
                                f"{self.step}; {self._last_good()}")
                        logs = {}
                    else:
                        skipped_in_row = 0
                    for k, v in logs.items():
                        v = v.detach().float()
                        bad |= ~torch.isfinite(v)
                        sums[k] = sums[k] + v if k in sums else v
                    n_sums += bool(logs)
                    if self.device.type == "cpu":  # a host check is free on CPU: stop at the first bad step
                        self._check_finite(bad, checked_at)
                    last = self.step >= cfg.steps
                    if (self.step % cfg.log_every == 0 or last) and n_sums:
                        self._check_finite(bad, checked_at)
                        checked_at = self.step
                        means = dist.all_reduce_mean({k: v / n_sums for k, v in sums.items()})
                        last_logs = {k: float(v) for k, v in means.items()}
                        scal = {**last_logs, "lr": lr, "images_per_s": thr.rate()}
                        if self.skipped_steps:
                            scal["skipped_steps"] = self.skipped_steps
                        self.logger.scalars(self.step, scal)
                        self.logger.update_progress(n_sums, {k: last_logs[k] for k in list(last_logs)[:3]})
                        sums, n_sums = {}, 0
                    if cfg.image_every and (self.step % cfg.image_every == 0 or last) and dist.is_main():
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
                    raise self._early_stop(timeout)
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
        """Task validation (rank 0, RUN/metrics.jsonl) and the skipped-image total (console and RUN/log.jsonl)."""
        out = {}
        skipped = self.skipped_images()
        if dist.is_main():
            out = self.task.validate(self.step)
            if out:
                self.logger.metrics(self.step, out)
            self.logger.scalars(self.step, {"skipped_images": skipped}, prefix="data")
            dist.print0(f"step {self.step}: {skipped} training images skipped so far (unreadable or unusable)")
        dist.barrier()
        return out


def run_training(task, dataset, cfg: TrainConfig, run_dir: str, config_dict: dict | None = None,
                 device: torch.device | None = None, collate_fn=None, restart: bool = False) -> dict:
    """Build a Trainer and run it; every way a run ends short of `cfg.steps` is one line and a non-zero exit.

    Exit status: 3 non-finite loss or weights, 2 an unreadable / unwritable checkpoint, 128 + signal (130 Ctrl-C,
    143 SIGTERM) or 124 (train.max_minutes) after an early stop, checkpoint saved and nothing to export.
    """
    trainer = Trainer(task, dataset, cfg, run_dir, config_dict, device, collate_fn, restart)
    try:
        return trainer.run()
    except NonFiniteLossError as e:
        dist.print0(f"error: {e}")
        raise SystemExit(3) from None
    except CheckpointError as e:
        print(f"error: {e}", flush=True)
        raise SystemExit(2) from None
    except StoppedEarly as e:
        dist.print0(str(e))
        raise SystemExit(e.code) from None
    except Aborted as e:
        dist.print0(str(e))
        raise SystemExit(128 + signal.SIGINT) from None
