"""Deterministic train/test splits, and per-item seeds.

The FFHQ test set is images 69000..69999 (the last 1000 images of FFHQ's official validation range 60000..69999);
FFHQ 'train' is every other image, 0..68999. The paper leaves 1000 FFHQ images out for testing without saying
which; a contiguous range is the simplest choice anyone can reproduce from the file names alone.
CelebAMask-HQ is used for training only (all 30000 images).
"""

from __future__ import annotations

import numpy as np

from engine.config import ConfigError

__all__ = ["FFHQ_SIZE", "FFHQ_TEST_RANGE", "CELEBAMASK_HQ_SIZE", "ffhq_split", "split_indices", "SPLIT_NAMES",
           "item_seed"]

FFHQ_SIZE = 70000
FFHQ_TEST_RANGE = range(69000, 70000)
CELEBAMASK_HQ_SIZE = 30000
SPLIT_NAMES = ("train", "test", "all")


def ffhq_split(name: str) -> list[int]:
    """FFHQ image indices of a split: 'test' (69000..69999, 1000 images), 'train' (0..68999), 'all' (0..69999)."""
    if name == "test":
        return list(FFHQ_TEST_RANGE)
    if name == "train":
        return list(range(FFHQ_TEST_RANGE.start))
    if name == "all":
        return list(range(FFHQ_SIZE))
    raise ConfigError(f"unknown FFHQ split {name!r}; valid: {', '.join(SPLIT_NAMES)}")


def split_indices(n: int, n_test: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Seeded split of range(n) into (train, test), both sorted ascending; len(test) == n_test.

    The test set is the first n_test entries of ``np.random.default_rng(seed).permutation(n)``.
    """
    if not 0 <= n_test <= n:
        raise ValueError(f"split_indices: need 0 <= n_test <= n, got n_test={n_test}, n={n}")
    perm = np.random.default_rng(seed).permutation(n)
    test = np.sort(perm[:n_test])
    train = np.sort(perm[n_test:])
    return train.tolist(), test.tolist()


def item_seed(*keys: int) -> int:
    """A 63-bit seed derived from a tuple of non-negative ints (np.random.SeedSequence); stable across runs."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & (2**63 - 1)
