"""What the training loop (engine.loop) needs from a task and from its training data, declared as Protocols.

A task subclasses `Task` (for the defaults of the optional methods) and supplies the step; the loop knows nothing
about models. Rank rules: `train_step` runs on every rank (it may run collectives: DDP forwards, all-reduces);
`validate` and `images` run on rank 0 only while the other ranks wait, so they must run no collective (use the plain
modules, never the DDP wrappers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from engine.loop import StepContext


class Task(Protocol):
    """modules: everything to checkpoint (raw modules, not DDP wrappers; EMA copies too); optimizers: by name."""

    modules: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, torch.Tensor]:
        """One optimisation step through `ctx.optimize(...)`; -> detached scalar tensors to log."""
        ...

    def validate(self, step: int) -> dict[str, float]:
        """Held-out numbers, written to RUN/metrics.jsonl (rank 0 only, no collective). Default: none."""
        return {}

    def images(self, batch: Any) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) [0, 1] grids for TensorBoard from a training batch (rank 0 only, no collective).
        Default: none."""
        return {}

    def state_dict(self) -> dict:
        """Extra task state to checkpoint (plain tensors / numbers). Default: none."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""


@runtime_checkable
class EpochData(Protocol):
    """Training data whose items depend on the epoch (e.g. new synthetic masks each epoch)."""

    def set_epoch(self, epoch: int) -> None: ...


@runtime_checkable
class CountedData(Protocol):
    """Training data that can skip unreadable items and says what its folders hold.

    skipped_flags: (len,) bool, the items skipped at load so far, in memory shared with the DataLoader workers (so
    the main process sees what they found); index_report: lines for the user, printed once per run.
    """

    @property
    def skipped_flags(self) -> torch.Tensor: ...

    @property
    def index_report(self) -> list[str]: ...


TASK_METHODS = ("modules", "optimizers", "train_step", "validate", "images", "state_dict", "load_state_dict")


def check_task(task: Any) -> None:
    """A one-line TypeError naming what a task lacks (a task that subclasses Task lacks nothing optional)."""
    missing = [m for m in TASK_METHODS if not hasattr(task, m)]
    if missing:
        raise TypeError(f"{type(task).__name__} is not an engine.task.Task: it lacks {', '.join(missing)} "
                        "(subclass engine.task.Task for the optional methods' defaults)")
