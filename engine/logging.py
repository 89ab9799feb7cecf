"""Run logging: TensorBoard scalars and image grids, jsonl files, tqdm progress with throughput (rank 0 only)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import torch


def _clean(v):
    """JSON-safe value: tensors to numbers, non-finite floats to None-free strings."""
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(_clean(record)) + "\n")
        f.flush()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunLogger:
    """Writes `RUN/tb/` (TensorBoard), `RUN/log.jsonl` (training scalars) and `RUN/metrics.jsonl` (validation).

    Does nothing on ranks other than 0 (`enabled=False`).
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._tb = None
        self._want_tb = tensorboard
        self._bar = None
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)

    LOGS = ("metrics.jsonl", "log.jsonl", "tb")

    def set_aside(self) -> Path | None:
        """--restart: move the run's logs (LOGS) to `RUN/restarted_<n>/` before anything new is written, so the new
        run's numbers are not mixed with the old ones; nothing is deleted. Returns the folder (None: no logs)."""
        found = [self.run_dir / name for name in self.LOGS if (self.run_dir / name).exists()]
        if not found or not self.enabled:
            return None
        n = 0
        while (self.run_dir / f"restarted_{n}").exists():
            n += 1
        dest = self.run_dir / f"restarted_{n}"
        dest.mkdir()
        for p in found:
            os.replace(p, dest / p.name)
        return dest

    @property
    def tb(self):
        if self._tb is None and self.enabled and self._want_tb:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"))
        return self._tb

    def scalars(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        if not self.enabled:
            return
        for k, v in values.items():
            if self.tb is not None and v is not None and isinstance(v, int | float):
                self.tb.add_scalar(f"{prefix}/{k}", v, step)
        append_jsonl(self.run_dir / "log.jsonl", {"step": step, "split": prefix, **values})

    def metrics(self, step: int, values: dict[str, float]) -> None:
        """Validation numbers: TensorBoard `val/*` and one line of RUN/metrics.jsonl."""
        if not self.enabled:
            return
        for k, v in values.items():
            if self.tb is not None and isinstance(v, int | float):
                self.tb.add_scalar(f"val/{k}", v, step)
        append_jsonl(self.run_dir / "metrics.jsonl", {"step": step, **values})

    def images(self, step: int, grids: dict[str, torch.Tensor], nrow: int = 8) -> None:
        """grids: name -> (N,3,H,W) in [0,1] (or one (3,H,W) image)."""
        if not self.enabled or self.tb is None:
            return
        from torchvision.utils import make_grid

        for name, x in grids.items():
            x = x.detach().float().clamp(0, 1).cpu()
            img = make_grid(x, nrow=nrow, padding=2) if x.dim() == 4 else x
            self.tb.add_image(name, img, step)

    def progress(self, total: int, initial: int = 0, desc: str = "train"):
        if not self.enabled:
            return None
        from tqdm import tqdm

        self._bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=sys.stdout,
                         mininterval=1.0, disable=os.environ.get("NO_PROGRESS") == "1")
        return self._bar

    def update_progress(self, n: int, postfix: dict | None = None) -> None:
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()},
                                      refresh=False)
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


class Throughput:
    """Images per second between calls."""

    def __init__(self):
        self.t = time.perf_counter()
        self.n = 0

    def add(self, n: int) -> None:
        self.n += n

    def rate(self) -> float:
        now = time.perf_counter()
        r = self.n / max(now - self.t, 1e-9)
        self.t, self.n = now, 0
        return r
