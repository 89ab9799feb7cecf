"""What FID's cached reference statistics depend on, written as one string for the cache key.

The reference images are the test set's ground truth. They change when the test-set config changes (dataset, root,
split, count, size, seeds), when the morphable model that renders synthetic faces changes, and when image files
under the same root are replaced, added or removed. ``reference_id`` covers all of these, so any such change misses
the cache instead of loading statistics of other images.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from torch import nn


def file_stats(paths: Iterable[str | os.PathLike]) -> list[list]:
    """[path, size in bytes, mtime in ns] per file, in the given order (a missing file gets size -1, mtime -1)."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append([str(p), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([str(p), -1, -1])
    return out


def file_sha1(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha1 of a file's bytes (names a weights file in cache keys, a checkpoint in results.json)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def module_fingerprint(module: nn.Module) -> str:
    """sha1 over the names, dtypes, shapes and bytes of a module's buffers and parameters (e.g. a MorphableModel,
    whose bases are non-persistent buffers); the same model loaded from the same file gives the same value."""
    h = hashlib.sha1()
    tensors = [*module.named_buffers(), *module.named_parameters()]
    for name, t in sorted(tensors, key=lambda kv: kv[0]):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def dataset_files(dataset) -> list[Path]:
    """Image files behind a test set: walks Subset -> MaskedPairs -> ConcatFaces -> photo datasets (their
    ``records``); synthetic datasets have none."""
    if hasattr(dataset, "records"):
        return [r.path for r in dataset.records]
    for attr in ("dataset", "faces"):  # torch Subset, data.pairs.MaskedPairs
        if hasattr(dataset, attr):
            return dataset_files(getattr(dataset, attr))
    return [p for d in getattr(dataset, "datasets", []) for p in dataset_files(d)]


def reference_id(test_config: dict, image_size: int, files: Iterable[str | os.PathLike],
                 extra_files: Iterable[str | os.PathLike] = (), model_fingerprint: str | None = None) -> str:
    """One JSON string describing the reference images (see the module doc).

    Args:
        test_config: the test-set config as a dict (``engine.config.to_dict``).
        image_size: side of the reference images in pixels.
        files: the image files they are read from (``dataset_files``), with sizes and mtimes.
        extra_files: other files that shape them (e.g. FFHQ's landmark json, which places aligned crops).
        model_fingerprint: ``module_fingerprint`` of the morphable model that renders synthetic faces; None when
            no face is synthetic.
    """
    return json.dumps({"test": test_config, "image_size": int(image_size), "files": file_stats(files),
                       "extra_files": file_stats(extra_files), "morphable": model_fingerprint}, sort_keys=True)
