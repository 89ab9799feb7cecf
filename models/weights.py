"""Reading third-party weight files: existence check, state-dict extraction, prefix stripping.

All readers go through ``engine.files.read_torch`` (``torch.load(weights_only=True)``, numpy scalars allowed): the
files we load (torchvision ImageNet weights, Deng et al.'s ``epoch_20.pth``, arcface_torch ``backbone.pth``, the
authors' ``*.pkl``) are plain dicts of tensors. A file that needs more (pickled objects, code) is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from engine.files import FileReadError, read_torch

__all__ = ["require_file", "load_state_dict_file", "strip_prefix", "rename_spectral_norm_keys"]


def require_file(path: str | os.PathLike, what: str) -> str:
    """Return ``str(path)`` or raise a one-line ``FileNotFoundError`` naming ``what`` (argument / config key)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: weights file not found: {path}")
    return path


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Remove a leading ``prefix`` (DataParallel/DDP's ``module.``) from every key that has it."""
    n = len(prefix)
    return {(k[n:] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def load_state_dict_file(path: str | os.PathLike, what: str, inner_key: str | None = None) -> dict[str, torch.Tensor]:
    """Load a state dict from ``path`` on the CPU, with ``module.`` prefixes stripped.

    ``inner_key``: the file holds a dict whose entry ``inner_key`` (e.g. ``'net_recon'``) is the state dict; a file
    without it is refused, naming the keys it has. Without ``inner_key`` the file itself is the state dict. Entries
    that are not tensors (numpy step counters, strings) are ignored. Every failure is one ``ValueError`` line
    (``engine.files.FileReadError``) naming ``what`` and the path.
    """
    path = require_file(path, what)
    obj = read_torch(path, what)
    if not isinstance(obj, Mapping):
        raise FileReadError(f"{what}: expected a state dict in {path}, got {type(obj).__name__}")
    if inner_key is not None:
        if inner_key not in obj:
            raise FileReadError(f"{what}: {path} has no '{inner_key}' entry (keys: {_key_list(obj)})")
        obj = obj[inner_key]
        if not isinstance(obj, Mapping):
            raise FileReadError(f"{what}: '{inner_key}' in {path} is a {type(obj).__name__}, not a state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise FileReadError(f"{what}: no tensors found in {path}, not a state dict (keys: {_key_list(obj)})")
    return strip_prefix(tensors)


def _key_list(obj: Mapping, n: int = 8) -> str:
    keys = sorted(map(str, obj))
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "") if keys else "none"


def rename_spectral_norm_keys(key: str) -> str:
    """Map a legacy ``torch.nn.utils.spectral_norm`` key to the ``parametrizations`` API used here.

    ``X.weight_orig`` -> ``X.parametrizations.weight.original``, ``X.weight_u`` -> ``X.parametrizations.weight.0._u``,
    ``X.weight_v`` -> ``X.parametrizations.weight.0._v``; any other key is returned unchanged. Both APIs compute
    ``W / (u^T W v)`` with ``W`` reshaped to (out, -1), so the stored tensors carry over as they are.
    """
    for old, new in (
        ("weight_orig", "parametrizations.weight.original"),
        ("weight_u", "parametrizations.weight.0._u"),
        ("weight_v", "parametrizations.weight.0._v"),
    ):
        if key.endswith("." + old) or key == old:
            return key[: len(key) - len(old)] + new
    return key


def rename_by_prefix(state_dict: Mapping[str, torch.Tensor], pairs: list[tuple[str, str]],
                     what: str) -> dict[str, torch.Tensor]:
    """Rename keys by the first matching (old prefix, new prefix) pair, after stripping 'module.' and converting
    old spectral-norm names; any key no pair matches raises one FileReadError naming `what` (the file is not the
    weights it is said to be)."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in strip_prefix(state_dict).items():
        for old, new in pairs:
            if key.startswith(old):
                out[rename_spectral_norm_keys(new + key[len(old):])] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise FileReadError(f"{what}: {len(unknown)} unrecognised keys, e.g. {unknown[:5]}")
    return out
