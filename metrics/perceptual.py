"""LPIPS (the ``lpips`` package, trunk weights from a local file, never downloaded) and diversity among variations."""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import lpips
import torch
from torch import Tensor

from engine.files import FileReadError

from .base import Metric, PerImageMetric

_TRUNKS = {"alex": "alexnet", "vgg": "vgg16", "vgg16": "vgg16"}


def _trunk_state_from_file(model: lpips.LPIPS, path: Path, key: str) -> dict[str, Tensor]:
    """Map torchvision ``features.<i>.*`` (or bare ``<i>.*``) keys onto lpips' trunk ``slice<k>.<i>.*`` keys."""
    from engine.files import read_torch
    state = read_torch(path, key)  # one line for an empty / truncated / code-bearing file
    if not isinstance(state, dict):
        raise FileReadError(f"{key}: {path} does not hold a state dict")
    trunk = model.net.state_dict()
    mapped = {}
    for name in trunk:
        _, rest = name.split(".", 1)  # "slice2.3.weight" -> "3.weight": lpips keeps torchvision's feature indices
        for src in (f"features.{rest}", rest):
            if src in state:
                mapped[name] = state[src]
                break
        else:
            raise FileReadError(f"{key}: {path} has no 'features.{rest}' (expected torchvision "
                             f"{_TRUNKS[model.pnet_type]} weights)")
        if mapped[name].shape != trunk[name].shape:
            raise FileReadError(f"{key}: {path}: features.{rest} has shape {tuple(mapped[name].shape)}, expected "
                             f"{tuple(trunk[name].shape)}")
    return mapped


def load_lpips(net: str = "alex", backbone_weights: str | os.PathLike | None = None, seed: int = 0,
               key: str = "lpips backbone weights") -> lpips.LPIPS:
    """Build ``lpips.LPIPS`` (v0.1, with the linear heads shipped inside the lpips package) without any download.

    Args:
        net: "alex" or "vgg" (trunk: torchvision AlexNet / VGG16 ``features``).
        backbone_weights: torchvision ImageNet weights of the trunk (e.g. alexnet-owt-7be5be79.pth or
            vgg16-397923af.pth; keys ``features.<i>.weight|bias``, or a bare ``features`` state dict). None: a random
            trunk from ``seed``; the result is then not comparable with published LPIPS values.
        key: name of the setting that gave the path, for error messages.
    Returns:
        the frozen model in eval mode, with ``.pretrained`` (bool) set. Call it as ``model(x, y, normalize=True)``
        with x, y (N,3,H,W) in [0,1] -> (N,1,1,1).
    """
    if net not in _TRUNKS:
        raise ValueError(f"lpips net must be one of {sorted(_TRUNKS)}, got {net!r}")
    path = None
    if backbone_weights is not None:
        path = Path(backbone_weights)
        if not path.is_file():
            raise FileNotFoundError(f"{key}: weights file not found: {path}")
    # pnet_rand=True keeps torchvision from downloading the trunk; pretrained=True loads the package's linear heads.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(pretrained|weights).*", category=UserWarning)  # lpips' old API
        torch.manual_seed(seed)
        model = lpips.LPIPS(pretrained=True, net=net, version="0.1", pnet_rand=True, verbose=False)
    if path is not None:
        model.net.load_state_dict(_trunk_state_from_file(model, path, key))
    model.pretrained = path is not None
    model.requires_grad_(False)
    return model.eval()


class LPIPSMetric(PerImageMetric):
    """Mean per-image LPIPS distance (lower = more similar).

    Args:
        net, backbone_weights, seed, key: see ``load_lpips``; or pass a ready ``model`` (an lpips.LPIPS).
        device: where the network runs.
    Call ``metric(x, y)`` (x, y (N,3,H,W) in [0,1]) -> (N,) float32 distances without accumulating (for diversity);
    ``update(pred, target, mask=None)`` accumulates.
    """

    name = "lpips"
    higher_is_better = False

    def __init__(self, net: str = "alex", backbone_weights: str | os.PathLike | None = None, seed: int = 0,
                 device: str | torch.device = "cpu", key: str = "lpips backbone weights",
                 model: lpips.LPIPS | None = None) -> None:
        self.device = torch.device(device)
        self.model = (model if model is not None else load_lpips(net, backbone_weights, seed, key)).to(self.device)
        super().__init__()

    @classmethod
    def from_context(cls, ctx) -> LPIPSMetric:
        return cls(model=ctx.lpips_network, device=ctx.device)

    @property
    def pretrained(self) -> bool:
        return bool(getattr(self.model, "pretrained", False))

    @property
    def comparable(self) -> bool:
        return self.pretrained

    @torch.no_grad()
    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        x = x.to(self.device, torch.float32)
        y = y.to(self.device, torch.float32)
        return self.model(x, y, normalize=True).flatten()

    __call__ = distance

    def per_image(self, pred, target, mask=None, landmarks=None):
        return self.distance(pred, target)


def diversity(variations: Tensor, lpips_fn: Callable[[Tensor, Tensor], Tensor]) -> float:
    """Mean pairwise LPIPS among K variations of one input.

    Args:
        variations: (K,3,H,W) in [0,1], K >= 2.
        lpips_fn: (x, y) (P,3,H,W) in [0,1] -> (P,) distances (e.g. an LPIPSMetric).
    Returns:
        mean over the K(K-1)/2 unordered pairs (float; 0 when all variations are equal).
    """
    k = variations.shape[0]
    if variations.dim() != 4 or k < 2:
        raise ValueError(f"diversity needs (K,3,H,W) with K >= 2, got {tuple(variations.shape)}")
    i, j = zip(*itertools.combinations(range(k), 2))
    d = lpips_fn(variations[list(i)], variations[list(j)])
    return float(d.to(torch.float64).mean())


class DiversityMetric(Metric):
    """Mean over inputs of the mean pairwise LPIPS among each input's K variations (higher = more diverse).

    Args:
        lpips_metric: an LPIPSMetric to measure with; default: one built from ``lpips_kwargs``.
    ``update(variations)``: (K,3,H,W) for one input or (N,K,3,H,W) for N inputs.
    """

    name = "diversity"
    kind = "variations"

    def __init__(self, lpips_metric: LPIPSMetric | None = None, **lpips_kwargs) -> None:
        self.lpips = lpips_metric if lpips_metric is not None else LPIPSMetric(**lpips_kwargs)
        self.reset()

    @classmethod
    def from_context(cls, ctx) -> DiversityMetric:
        return cls(lpips_metric=LPIPSMetric.from_context(ctx))

    @property
    def comparable(self) -> bool:
        return self.lpips.comparable

    def reset(self) -> None:
        self._sum = 0.0
        self._count = 0

    def update(self, variations: Tensor) -> None:
        groups = variations.unsqueeze(0) if variations.dim() == 4 else variations
        if groups.dim() != 5:
            raise ValueError(f"diversity: expected (K,3,H,W) or (N,K,3,H,W), got {tuple(variations.shape)}")
        for g in groups:
            self._sum += diversity(g, self.lpips.distance)
            self._count += 1

    def merge(self, other: DiversityMetric) -> None:
        self._sum += other._sum
        self._count += other._count

    def compute(self) -> dict[str, float]:
        return {self.name: self._sum / self._count if self._count else float("nan")}
