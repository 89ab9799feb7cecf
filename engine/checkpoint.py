"""State-dict checkpoints: atomic writes, safe loads, auto-resume, keep-last-K, inference export.

A checkpoint is a plain dict of tensors / numbers / strings (models, EMA, optimizers, schedulers, step, RNG
states, the resolved config) so it loads with `torch.load(weights_only=True)`: a checkpoint cannot run code.
Writes go to a temporary file in the same directory, are fsync'ed, then `os.replace`d over the final name, so a
kill during a write leaves the previous checkpoint readable.
"""

from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

CKPT_PATTERN = re.compile(r"^ckpt_(\d{9})\.pt$")


class CheckpointError(RuntimeError):
    pass


def _write_bytes(tmp: Path, state: dict) -> None:
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


def atomic_save(state: dict, path: str | os.PathLike) -> Path:
    """torch.save to `path` atomically (tmp file + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        _write_bytes(tmp, state)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def safe_load(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load with weights_only=True; a file holding pickled objects is refused with one clear line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"refused to load {path}: it holds pickled objects, not only tensors ({first})") \
            from None
    except (RuntimeError, EOFError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from None


# ---------------------------------------------------------------------------------------------- RNG capture
def rng_state() -> dict:
    """Python, numpy and torch (CPU + CUDA) RNG states as tensors/ints (weights_only-loadable)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": {"version": py[0], "state": torch.tensor(py[1], dtype=torch.int64), "gauss": py[2]},
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------- run directories
class CheckpointManager:
    """`RUN/checkpoints/ckpt_<step>.pt`, newest wins, the last `keep_last` kept."""

    def __init__(self, run_dir: str | os.PathLike, keep_last: int = 3):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    def path_for(self, step: int) -> Path:
        return self.dir / f"ckpt_{step:09d}.pt"

    def list(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        found = [p for p in self.dir.iterdir() if CKPT_PATTERN.match(p.name)]
        return sorted(found, key=lambda p: int(CKPT_PATTERN.match(p.name).group(1)))

    def latest(self) -> Path | None:
        ckpts = self.list()
        return ckpts[-1] if ckpts else None

    def save(self, state: dict, step: int) -> Path:
        path = atomic_save(state, self.path_for(step))
        for old in self.list()[: -self.keep_last] if self.keep_last > 0 else []:
            old.unlink(missing_ok=True)
        return path

    def load_latest(self, map_location="cpu") -> dict | None:
        """Newest readable checkpoint (an unreadable newest one falls back to the one before, with a warning)."""
        for path in reversed(self.list()):
            try:
                return safe_load(path, map_location)
            except CheckpointError as e:
                print(f"warning: {e}; trying an older checkpoint", flush=True)
        return None


def export_inference(path: str | os.PathLike, modules: dict[str, dict], config: dict | None = None,
                     meta: dict | None = None) -> Path:
    """Small inference-only file: {'modules': {name: state_dict}, 'config': ..., 'meta': ...} (no optimizer)."""
    state = {"modules": modules, "config": config or {}, "meta": meta or {}}
    return atomic_save(state, path)


def load_inference(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load an inference export, or pull the modules out of a full training checkpoint."""
    state = safe_load(path, map_location)
    if "modules" not in state:
        raise CheckpointError(f"{path}: not a checkpoint of this project (no 'modules' entry)")
    return state
