"""State-dict checkpoints: atomic writes, safe loads, auto-resume, keep-last-K, inference export.

A checkpoint is a plain dict of tensors / numbers / strings (models, EMA, optimizers, schedulers, step, RNG
states, the resolved config) so it loads with `torch.load(weights_only=True)`: a checkpoint cannot run code.
Writes go to a temporary file in the same directory, are fsync'ed, then `os.replace`d over the final name, so a
kill during a write leaves the previous checkpoint readable (the dead writer's temp file is removed by the next run,
`remove_stale_tmp`), and a failed write (disk full) is one line. Nothing is deleted silently: pruning only removes
readable checkpoints older than the one just written; unreadable ones are moved to `checkpoints/corrupt/`.
"""

from __future__ import annotations

import errno
import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from engine.files import FileReadError, first_line, read_torch

CKPT_PATTERN = re.compile(r"^ckpt_(\d{9})\.pt$")


class CheckpointError(FileReadError):
    """A checkpoint or export that cannot be read or written; one line naming the path and the cause."""


TMP_PATTERN = re.compile(r"^\..+\.tmp(\d+)$")  # atomic_save's temporary files: .<name>.tmp<pid>


def _write_bytes(tmp: Path, state: dict) -> None:
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


def _write_failure(e: BaseException) -> str:
    """Why a write failed, in a few words (torch wraps ENOSPC in a RuntimeError chained to the OSError)."""
    chain, cur = [], e
    while cur is not None and len(chain) < 5:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for c in chain:
        if isinstance(c, OSError) and c.errno == errno.ENOSPC:
            return "no space left on device"
    text = " ".join(str(c) for c in chain)
    if "No space left" in text or "file write failed" in text:
        return "no space left on device (or the write failed)"
    for c in chain:
        if isinstance(c, OSError) and c.strerror:
            return c.strerror
    return first_line(e)


def atomic_save(state: dict, path: str | os.PathLike) -> Path:
    """torch.save to `path` atomically (tmp file + fsync + os.replace); a failed write is one CheckpointError line
    and leaves whatever `path` held before untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        _write_bytes(tmp, state)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        raise CheckpointError(f"cannot write {path}: {_write_failure(e)} (the previous file, if any, is intact)") \
            from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Delete atomic_save's temporary files in `folder` whose writer process is gone (killed mid-write)."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = TMP_PATTERN.match(p.name)
        if m and p.is_file() and not _pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def safe_load(path: str | os.PathLike, map_location="cpu", what: str = "checkpoint") -> dict:
    """Load a dict with weights_only=True; every failure (missing, empty, truncated, code-bearing, not a dict) is
    one CheckpointError line (a FileNotFoundError when missing)."""
    try:
        state = read_torch(path, what, map_location)
    except FileReadError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{what}: {path} holds a {type(state).__name__}, not a checkpoint (a dict)")
    return state


def nonfinite_tensors(tree, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors in a nested dict / list that hold a NaN or an infinity."""
    bad = []
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and not bool(torch.isfinite(tree).all()):
            bad.append(prefix)
    elif isinstance(tree, dict):
        for k, v in tree.items():
            bad += nonfinite_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(tree, list | tuple):
        for i, v in enumerate(tree):
            bad += nonfinite_tensors(v, f"{prefix}[{i}]")
    return bad


def load_module_state(module: torch.nn.Module, state_dict: dict, what: str) -> None:
    """`module.load_state_dict(state_dict)` (strict), with missing / unexpected keys and shape mismatches as one
    CheckpointError line naming the first differing keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)} here" for k in own
              if k in state_dict and torch.is_tensor(state_dict[k]) and state_dict[k].shape != own[k].shape]
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (file vs model), first: {'; '.join(shapes[:3])}")
    if missing:
        problems.append(f"{len(missing)} keys missing from the file, first: {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, first: {', '.join(unexpected[:3])}")
    if problems:
        raise CheckpointError(f"{what}: does not fit the model built from the config: {'; '.join(problems)}")
    module.load_state_dict(state_dict)


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
    """`RUN/checkpoints/ckpt_<step>.pt`, newest readable wins, the last `keep_last` kept.

    Unreadable checkpoints found while resuming are moved to `RUN/checkpoints/corrupt/` (never deleted, never
    counted by the pruning); if the folder holds checkpoints and none is readable, resuming stops with one line.
    """

    def __init__(self, run_dir: str | os.PathLike, keep_last: int = 3):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last
        self.loaded: Path | None = None  # the file load_latest read

    def path_for(self, step: int) -> Path:
        return self.dir / f"ckpt_{step:09d}.pt"

    @staticmethod
    def step_of(path: Path) -> int:
        return int(CKPT_PATTERN.match(path.name).group(1))

    def list(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted((p for p in self.dir.iterdir() if CKPT_PATTERN.match(p.name)), key=self.step_of)

    def latest(self) -> Path | None:
        ckpts = self.list()
        return ckpts[-1] if ckpts else None

    def save(self, state: dict, step: int) -> Path:
        """Write the checkpoint of `step`, then delete all but the newest `keep_last` of those up to `step`."""
        path = atomic_save(state, self.path_for(step))
        older = [p for p in self.list() if self.step_of(p) <= step]
        for old in older[: -self.keep_last] if self.keep_last > 0 else []:
            old.unlink(missing_ok=True)
        return path

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move an unreadable checkpoint to `checkpoints/corrupt/` (kept for inspection), with a warning."""
        dest = self.dir / "corrupt" / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        print(f"warning: {reason}; moved to {dest}", flush=True)
        return dest

    def load_latest(self, map_location="cpu", quarantine: bool = False) -> dict | None:
        """Newest readable checkpoint (None when there is none at all); its path is kept in `self.loaded`.

        An unreadable newer one is skipped with a warning (moved to corrupt/ when `quarantine`). Checkpoints that are
        all unreadable raise CheckpointError: starting over from step 0 would silently lose the run.
        """
        self.loaded = None
        found = self.list()
        unreadable: list[tuple[Path, str]] = []
        for path in reversed(found):
            try:
                state = safe_load(path, map_location, what="checkpoint")
            except CheckpointError as e:
                unreadable.append((path, str(e)))
                if not quarantine:
                    print(f"warning: {e}; trying an older checkpoint", flush=True)
                continue
            for bad, reason in unreadable if quarantine else ():
                self.quarantine(bad, reason)
            self.loaded = path
            return state
        if found:  # left in place: a re-run must stop here again, not start over
            raise CheckpointError(f"none of the {len(found)} checkpoints in {self.dir} is readable (newest: "
                                  f"{unreadable[0][1]}); pass --restart to start this run over from step 0")
        return None

    def set_aside(self) -> Path | None:
        """--restart: move every checkpoint (readable or not) to `checkpoints/restarted_<n>/`; nothing is deleted."""
        found = self.list()
        if not found:
            return None
        n = 0
        while (self.dir / f"restarted_{n}").exists():
            n += 1
        dest = self.dir / f"restarted_{n}"
        dest.mkdir(parents=True)
        for p in found:
            os.replace(p, dest / p.name)
        return dest

    def last_good(self, map_location="cpu") -> Path | None:
        """The newest checkpoint that loads and whose module weights are all finite (read-only check)."""
        for path in reversed(self.list()):
            try:
                state = safe_load(path, map_location)
            except CheckpointError:
                continue
            if not nonfinite_tensors(state.get("modules", {})):
                return path
        return None


def export_inference(path: str | os.PathLike, modules: dict[str, dict], config: dict | None = None,
                     meta: dict | None = None) -> Path:
    """Small inference-only file: {'modules': {name: state_dict}, 'config': ..., 'meta': ...} (no optimizer)."""
    state = {"modules": modules, "config": config or {}, "meta": meta or {}}
    return atomic_save(state, path)


def load_inference(path: str | os.PathLike, map_location="cpu", what: str = "checkpoint",
                   expect: str | None = None) -> dict:
    """Load an inference export, or pull the modules out of a full training checkpoint.

    expect: a module name the file must hold (``'n3d'`` for N_3D exports, ``'g_ema'`` for inpainting exports); a
    file of another kind is one line naming what it holds instead.
    """
    state = safe_load(path, map_location, what=what)
    if not isinstance(state.get("modules"), dict):
        raise CheckpointError(f"{what}: {path} is not a checkpoint of this project (no 'modules' entry; top-level "
                              f"keys: {', '.join(map(str, list(state)[:8])) or 'none'})")
    if expect is not None and expect not in state["modules"]:
        kinds = {"n3d": "an N_3D export (n3d.pt from train_3d.py)",
                 "g_ema": "an inpainting export (inpaint.pt from train_inpaint.py)"}
        held = ", ".join(map(str, state["modules"])) or "none"
        found = next((kinds[k] for k in kinds if k in state["modules"]), f"a file holding modules {held}")
        raise CheckpointError(f"{what}: {path} is {found}, expected {kinds.get(expect, repr(expect))}")
    return state
