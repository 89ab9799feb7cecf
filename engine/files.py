"""The one reader of torch files (checkpoints, exports, third-party weights), with one-line errors.

Every failure is a :class:`FileReadError` (a ValueError, so `engine.run.fail_fast` and the scripts' handlers turn
it into one line) naming what was asked for (config key or argument), the path and what is wrong: missing, empty,
truncated, code-bearing (refused: files load with ``weights_only=True`` only), not a mapping.

Numpy scalars, dtypes and plain arrays (step counters, learning rates next to the tensors of third-party files)
are allowed while loading: they are data, and rebuilding them runs no code of the file's choosing.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["FileReadError", "NUMPY_SAFE_GLOBALS", "read_torch", "first_line"]


class FileReadError(ValueError):
    """A file exists (or should) but cannot be used; the message is one line naming the key, the path, the cause."""


def _numpy_safe_globals() -> list:
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [type(np.dtype(t)) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                          np.uint32, np.uint64, np.float16, np.float32, np.float64,
                                          np.complex64, np.complex128)]
    return [scalar, _reconstruct, np.ndarray, np.dtype, *dtypes]


NUMPY_SAFE_GLOBALS = _numpy_safe_globals()


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name (some carry no message)."""
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()
    return type(e).__name__


def read_torch(path: str | os.PathLike, what: str = "file", map_location="cpu"):
    """``torch.load(path, weights_only=True)`` with every failure as one FileReadError line.

    what: the config key or argument the path came from (named first in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise FileReadError(f"{what}: file not found: {path}")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise FileReadError(f"{what}: cannot read {path}: {e.strerror or first_line(e)}") from None
    if size == 0:
        raise FileReadError(f"{what}: {path} is empty (0 bytes; an interrupted copy or write?)")
    try:
        with torch.serialization.safe_globals(NUMPY_SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = _unsafe_globals(path)
        if found:
            raise FileReadError(f"{what}: refused to load {path}: it holds pickled objects, not only tensors "
                                f"({found}); loading it could run code") from None
        raise FileReadError(f"{what}: {path} is not a torch file, or is damaged ({_short(e)})") from None
    except (EOFError, zipfile.BadZipFile) as e:
        raise FileReadError(f"{what}: {path} is truncated ({size} bytes; {_short(e)})") from None
    except OSError as e:
        raise FileReadError(f"{what}: cannot read {path}: {e.strerror or _short(e)}") from None
    except Exception as e:  # noqa: BLE001 - torch's readers raise RuntimeError, KeyError, ... on damaged bytes
        msg = _short(e)
        cause = "truncated or damaged" if "zip archive" in msg or "EOF" in msg else "not a torch file, or is damaged"
        raise FileReadError(f"{what}: {path} is {cause} ({size} bytes; {type(e).__name__}: {msg})") from None


def _short(e: BaseException) -> str:
    """The first sentence of the first line of an exception's message (torch appends paragraphs of advice)."""
    line = first_line(e)
    return line.split(". ")[0][:160]


def _unsafe_globals(path: Path) -> str:
    """'pickled objects: a.B, c.D' for a refused file, or '' when torch cannot list them."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - only used to enrich an error message
        return ""
    return f"pickled objects: {', '.join(names[:4])}" if names else ""
