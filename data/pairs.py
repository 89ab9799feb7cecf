"""Masked training / test pairs, concatenation, and the factory that builds datasets from their config sections.

``build_faces`` is the one place a list of dataset sections (data.config) becomes a dataset: one member is itself,
several are a ``ConcatFaces``. ``build_pairs`` is the one place faces meet the mask synthesiser, for training,
validation and test alike.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from data.config import DataConfig, FaceDataConfig, SynthesizerConfig, TestSetConfig
from data.photos import FFHQ, N_COEFFS, CelebAMaskHQ, ImageFolderFaces
from data.splits import item_seed
from data.synthetic import SyntheticFaces
from engine.config import ConfigError, convert_value

__all__ = ["MaskedPairs", "ConcatFaces", "DATASETS", "build_dataset", "build_faces", "read_dataset_config",
           "build_synthesizer", "build_pairs"]


def skipped_flags(dataset) -> torch.Tensor:
    """(len(dataset),) bool: the items a dataset skipped at load (shared with its DataLoader workers); all False for
    datasets that never skip (synthetic faces)."""
    flags = getattr(dataset, "skipped_flags", None)
    return flags if flags is not None else torch.zeros(len(dataset), dtype=torch.bool)


class MaskedPairs(Dataset):
    """A face dataset with synthetic face masks: adds ``masked_image`` (3, S, S) and ``mask`` m (1, S, S) {0, 1}.

    ``synthesizer.synth(image, landmarks, seed) -> (masked, m)`` (data.synth.MaskedPairSynthesizer). Seeds:
    fixed=True: item_seed(seed, i), the same mask for item i forever (test sets); fixed=False:
    item_seed(seed, epoch, i) with ``set_epoch(e)`` (call it before each epoch; with persistent DataLoader workers
    the new epoch does not reach the workers, as with DistributedSampler).
    """

    def __init__(self, faces: Dataset, synthesizer: Any, seed: int = 0, fixed: bool = False) -> None:
        self.faces = faces
        self.synthesizer = synthesizer
        self.seed = int(seed)
        self.fixed = bool(fixed)
        self.epoch = 0
        self.image_size = getattr(faces, "image_size", None)
        self.provides = frozenset(getattr(faces, "provides", frozenset()))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def skipped(self) -> int:
        return int(getattr(self.faces, "skipped", 0))

    @property
    def skipped_flags(self) -> torch.Tensor:
        return skipped_flags(self.faces)

    @property
    def index_report(self) -> list[str]:
        return list(getattr(self.faces, "index_report", ()))

    def item_seed(self, i: int) -> int:
        return item_seed(self.seed, i) if self.fixed else item_seed(self.seed, self.epoch, i)

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.faces[i])
        masked, m = self.synthesizer.synth(item["image"], item["landmarks"], self.item_seed(i % len(self)))
        item["masked_image"] = masked
        item["mask"] = m
        return item


class ConcatFaces(Dataset):
    """Concatenation of face datasets (e.g. FFHQ + CelebAMask-HQ, as the paper trains) with uniform batch keys.

    Optional keys (``face_mask``, ``coeffs``) that some but not all members provide are filled with zeros where
    missing, and ``<key>_valid`` (0-dim float32 tensor, 1 = real) is added to every item; ``source`` (int) names
    the member dataset. All members must share ``image_size``.
    """

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        if not datasets:
            raise ValueError("ConcatFaces: no datasets")
        self.datasets = list(datasets)
        sizes = {getattr(d, "image_size", None) for d in self.datasets}
        if len(sizes) != 1:
            raise ValueError(f"ConcatFaces: member datasets have different image_size values {sorted(map(str, sizes))}")
        self.image_size = sizes.pop()
        provided = [frozenset(getattr(d, "provides", frozenset())) for d in self.datasets]
        self.provides = frozenset.union(*provided)
        self._partial = sorted(k for k in self.provides if not all(k in p for p in provided))
        self._ends = np.cumsum([len(d) for d in self.datasets]).tolist()

    @property
    def skipped(self) -> int:
        return sum(int(getattr(d, "skipped", 0)) for d in self.datasets)

    @property
    def skipped_flags(self) -> torch.Tensor:
        return torch.cat([skipped_flags(d) for d in self.datasets])

    @property
    def index_report(self) -> list[str]:
        return [line for d in self.datasets for line in getattr(d, "index_report", ())]

    def set_epoch(self, epoch: int) -> None:
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    def __len__(self) -> int:
        return self._ends[-1]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for ConcatFaces of length {len(self)}")
        i %= len(self)
        src = bisect.bisect_right(self._ends, i)
        item = dict(self.datasets[src][i - (self._ends[src - 1] if src else 0)])
        s = self.image_size
        for key in self._partial:
            present = key in item
            if not present:
                item[key] = torch.zeros(1, s, s) if key == "face_mask" else torch.zeros(N_COEFFS)
            item[f"{key}_valid"] = torch.tensor(1.0 if present else 0.0)
        item["source"] = src
        return item


# ---------------------------------------------------------------------------------------------------------------------
# factory

DATASETS: dict[str, Callable[..., Dataset]] = {
    "ffhq": FFHQ,
    "celebamask_hq": CelebAMaskHQ,
    "folder": ImageFolderFaces,
    "synthetic": SyntheticFaces,
}


def build_dataset(cfg: FaceDataConfig | Mapping[str, Any], image_size: int, key: str = "data",
                  model: Any = None) -> Dataset:
    """One face dataset from its config section (data.config; a plain mapping is read into that section first, so
    an unknown kind or key is the same one-line ConfigError naming ``key``).

    image_size: the output side S; model: the MorphableModel synthetic faces render with (None: their default).
    """
    if isinstance(cfg, Mapping):
        cfg = read_dataset_config(cfg, key)
    opts = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "kind"}
    if cfg.kind == "synthetic":
        opts["model"] = model
    return DATASETS[cfg.kind](image_size=image_size, config_key=key, **opts)


def build_faces(cfgs: Sequence[FaceDataConfig | Mapping[str, Any]], image_size: int, key: str = "data",
                model: Any = None) -> Dataset:
    """A list of dataset sections -> one dataset: a single member is itself, several are their ``ConcatFaces``."""
    parts = [build_dataset(c, image_size, f"{key}[{i}]", model) for i, c in enumerate(cfgs)]
    if not parts:
        raise ConfigError(f"{key}: no datasets")
    return parts[0] if len(parts) == 1 else ConcatFaces(parts)


def read_dataset_config(data: Mapping[str, Any], key: str = "data") -> FaceDataConfig:
    """A plain mapping -> its kind's dataset section (engine.config's checks: kind, unknown keys, types)."""
    return convert_value(dict(data), FaceDataConfig, key)


# ---------------------------------------------------------------------------------------------------------------------
# masked pairs of a split


def build_synthesizer(mask_library: str | None, synth: SynthesizerConfig):
    """The masked-pair synthesiser: the library at ``mask_library`` (None = procedural) with ``synth``'s options."""
    from data.synth import MaskedPairSynthesizer

    library = None
    if mask_library:
        from data.masks.library import MaskLibrary

        library = MaskLibrary.from_dir(mask_library)
    return MaskedPairSynthesizer(library=library, **synth.kwargs())


def build_pairs(cfg: DataConfig | TestSetConfig, which: str, model: Any = None) -> Dataset:
    """The masked pairs of one split, from its section:

    - ``"train"``: ``cfg.train`` (a DataConfig), new masks every epoch from ``mask_seed``;
    - ``"val"``: ``cfg.val``, a fixed mask per item from ``val_mask_seed``;
    - ``"test"``: ``cfg.faces`` (a TestSetConfig), a fixed mask per item from ``mask_seed``, the first ``limit``.

    model: the MorphableModel synthetic faces render with (None: their default).
    """
    if which == "test":
        faces, key, seed = cfg.faces, "test.faces", cfg.mask_seed
    elif which in ("train", "val"):
        faces, key = (cfg.train, "data.train") if which == "train" else (cfg.val, "data.val")
        seed = cfg.mask_seed if which == "train" else cfg.val_mask_seed
    else:
        raise ValueError(f"build_pairs: which must be train, val or test, got {which!r}")
    pairs = MaskedPairs(build_faces(faces, cfg.image_size, key, model), build_synthesizer(cfg.mask_library, cfg.synth),
                        seed=seed, fixed=which != "train")
    limit = getattr(cfg, "limit", None) if which == "test" else None
    if limit is not None and limit < len(pairs):
        return torch.utils.data.Subset(pairs, range(limit))
    return pairs
