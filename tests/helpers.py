"""Helpers shared by the tests: tiny CPU configs (32 px, resnet18, a few synthetic faces), free ports, scripts run
through their command line."""

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def script_env(**extra: str) -> dict:
    """The environment of a test's subprocess: this checkout first on PYTHONPATH (never another checkout's code,
    whichever one the venv has installed), one OpenMP thread, no progress bars."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", **extra}


def run_script(script: str, *args, check: bool = True, timeout: float = 400) -> subprocess.CompletedProcess:
    """Run ``python SCRIPT ARGS`` (a path relative to the repository root) from the root, as a user does."""
    r = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                       env=script_env(), timeout=timeout, cwd=ROOT)
    if check and r.returncode != 0:
        raise AssertionError(f"{script} exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_data(image_size=32, n_train=16, n_val=8):
    return {
        "image_size": image_size,
        "train": [{"kind": "synthetic", "num": n_train, "offset": 0}],
        "val": [{"kind": "synthetic", "num": n_val, "offset": 1_000_000}],
    }


def tiny_train(**kw):
    base = {"steps": 4, "batch_size": 4, "lr": 1e-3, "device": "cpu", "log_every": 2, "image_every": 0,
            "val_every": 0, "ckpt_every": 2, "deterministic": True}
    base.update(kw)
    return base


def cli(script: str):
    """``python SCRIPT ARGS`` in this process, as a function argv -> exit status: the script runs as ``__main__``
    from its file (not imported as a module), so fixtures that patch the library (monkeypatch) and capsys apply."""
    import runpy

    def run(argv) -> int:
        saved = sys.argv
        sys.argv = [str(ROOT / script), *map(str, argv)]
        try:
            runpy.run_path(str(ROOT / script), run_name="__main__")
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv = saved
        return 0

    return run


def script_module(script: str):
    """A benchmark script loaded from its file as a module of its own (not as part of a package), for tests of its
    harness."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"script_{Path(script).stem}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
