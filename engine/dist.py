"""Rank-agnostic distributed helpers.

Un-initialised, everything behaves as rank 0 of a world of 1, so the same code runs on a laptop, under
`torchrun --nproc_per_node=2` on CPU (gloo) and on GPUs (nccl). torchrun is detected from its environment
variables (RANK, WORLD_SIZE, LOCAL_RANK).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as torch_dist


def is_initialized() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def get_rank() -> int:
    return torch_dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return torch_dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return get_rank() == 0


def print0(*args, **kwargs) -> None:
    if is_main():
        print(*args, **kwargs, flush=True)


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: str = "cpu") -> torch.device:
    """Join the torchrun process group if launched by torchrun; return this rank's device.

    gloo on CPU, nccl on CUDA. Without torchrun this is a no-op and returns `device`.
    """
    dev = torch.device(device)
    if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1 and not is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if dev.type == "cuda":
            torch.cuda.set_device(local_rank)
            dev = torch.device("cuda", local_rank)
        torch_dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    elif dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def cleanup() -> None:
    if is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        torch_dist.barrier()


def seed_everything(seed: int, rank: int | None = None) -> int:
    """Seed python, numpy and torch with `seed + rank` (each rank draws different noise); return it."""
    s = int(seed) + (get_rank() if rank is None else rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    return s


def set_deterministic(enabled: bool) -> None:
    """Bitwise-reproducible kernels (slower); needed for resume == uninterrupted checks."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def wrap_ddp(module: torch.nn.Module, device: torch.device, **kwargs) -> torch.nn.Module:
    """DDP-wrap a trainable network when the world is larger than 1 (geometry modules are never wrapped)."""
    if get_world_size() == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, **kwargs)


def all_reduce_mean(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average a dict of scalar tensors over ranks, in one collective (no per-key sync)."""
    if not values or get_world_size() == 1:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])
    torch_dist.all_reduce(stacked)
    stacked /= get_world_size()
    return dict(zip(keys, stacked.unbind(0)))


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if `flag` is True on any rank (one tiny collective)."""
    if get_world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return bool(t.item())


def count_flagged(flags: torch.Tensor, device: torch.device) -> int:
    """How many items are flagged on any rank: (N,) bool flags per rank -> the size of their union (one collective)."""
    if get_world_size() == 1:
        return int(flags.sum())
    t = flags.to(device=device, dtype=torch.uint8)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return int(t.sum())


class ResumableSampler(torch.utils.data.Sampler):
    """Seeded, rank-sharded epoch sampler that can start mid-epoch (for exact resume).

    Epoch e uses the permutation of torch.Generator(seed + e); rank r takes items r, r + world, ... of it, padded
    by wrap-around so every rank has the same count. `start` skips the first `start` items of this rank's share.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int | None = None,
                 world: int | None = None):
        if n <= 0:
            raise ValueError("the dataset is empty")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank = get_rank() if rank is None else rank
        self.world = get_world_size() if world is None else world
        self.per_rank = -(-n // self.world)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.per_rank - self.start

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world
        order = (order * (total // self.n + 1))[:total]
        mine = order[self.rank::self.world]
        return iter(mine[self.start:])


def replica_checksums(modules: dict[str, torch.nn.Module]) -> list[float]:
    """Each rank's float64 checksum of every parameter (one value per rank; equal = in sync).

    Buffers are left out: DDP broadcasts them from rank 0 at each forward, so after the last step each rank's
    BatchNorm statistics legitimately differ (rank 0's are the ones saved).
    """
    total = torch.zeros((), dtype=torch.float64)
    for name in sorted(modules):
        for i, t in enumerate(modules[name].parameters()):
            # position-weighted so that swapped tensors do not cancel out
            total += (t.detach().double().cpu().flatten() * (1 + (i % 7))).sum()
    if get_world_size() == 1:
        return [float(total)]
    gathered = [None] * get_world_size()
    torch_dist.all_gather_object(gathered, float(total))
    return gathered
