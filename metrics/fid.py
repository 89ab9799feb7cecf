"""FID: pytorch-fid's Inception features (weights from a local file), streaming Gaussian statistics, reference
statistics shared by every method on one test set and cached, and the Frechet distance.

The Inception is assembled here from torchvision's ``inception_v3`` and pytorch-fid's public ``FIDInception*``
blocks, in the layout of pytorch-fid's ``InceptionV3``: nothing of pytorch-fid is patched (its constructor would
download the weights), so it is thread-safe and uses none of its private helpers.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import torch
from pytorch_fid import inception as pfi
from scipy import linalg
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models import inception_v3

from engine.files import FileReadError

from .base import Metric, quantize
from .reference import file_sha1


def build_fid_inception_v3() -> nn.Module:
    """The architecture of pytorch-fid's ``fid_inception_v3``, without downloading its weights: torchvision's
    Inception v3 (1008 classes, no aux head, no weight init of its own, as pytorch-fid builds it) with the Mixed
    blocks replaced by pytorch-fid's public FIDInception* blocks (TensorFlow's pooling).

    Parameters get PyTorch's default initialisation from the global RNG (seed it before calling).
    """
    net = inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net


def pool3_blocks(net: nn.Module) -> nn.Sequential:
    """The layers of ``net`` (``build_fid_inception_v3``) up to the 2048-d final average pool, in the order of
    pytorch-fid's ``InceptionV3`` blocks 0-3 (the same modules, called the same way: the same features).
    (N,3,299,299) in [-1,1] -> (N,2048,1,1)."""
    return nn.Sequential(
        net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
        net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d,
        net.Mixed_6e, net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1)))


def _check_state(net: nn.Module, state, path: Path, key: str) -> None:
    """One-line FileReadError unless ``state`` has exactly the keys and shapes of ``net``'s state dict."""
    if not isinstance(state, dict):
        raise FileReadError(f"{key}: {path} does not hold a state dict")
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    bad_shape = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or bad_shape:
        raise FileReadError(f"{key}: {path} is not pytorch-fid's Inception state dict ({len(missing)} keys missing, "
                         f"e.g. {missing[:1]}; {len(unexpected)} unexpected, e.g. {unexpected[:1]}; "
                         f"{len(bad_shape)} with other shapes, e.g. {bad_shape[:1]})")


class FIDInception(nn.Module):
    """The features of pytorch-fid's ``InceptionV3`` (2048-d final average pool, bit for bit) with weights from a
    local file, never downloaded.

    Args:
        weights_path: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (a state dict of ``fid_inception_v3``).
            None: random weights from ``seed`` (He-normal convolutions); ``pretrained`` is then False and FID
            values are not comparable with published ones (useful for CPU demos and tests only).
        seed: seed of the random initialisation (used only when weights_path is None).
        key: name of the setting that gave weights_path, used in error messages (e.g. "eval.fid_weights").
    Attributes:
        dim (2048), pretrained (bool), identity (str naming the weights: file sha1 or random seed; part of the
        reference-statistics cache key).
    Call: images (N,3,H,W) in [0,1] (any size; resized bilinearly to 299x299 and mapped to [-1,1] inside, exactly as
    pytorch-fid) -> (N,2048) float32 features.
    """

    dim = 2048

    def __init__(self, weights_path: str | os.PathLike | None = None, seed: int = 0,
                 key: str = "fid inception weights") -> None:
        super().__init__()
        if weights_path is not None:
            path = Path(weights_path)
            if not path.is_file():
                raise FileNotFoundError(f"{key}: weights file not found: {path}")
            raw = build_fid_inception_v3()
            from engine.files import read_torch
            state = read_torch(path, key)  # one line for an empty / truncated / code-bearing file
            _check_state(raw, state, path, key)
            raw.load_state_dict(state)
            self.pretrained = True
            self.identity = f"pt_inception:sha1={file_sha1(path)}"
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                raw = build_fid_inception_v3()
                # PyTorch's default conv init shrinks activations ~10x per layer (features ~1e-8); He init keeps
                # them O(1), so a random-weight FID at least reacts to the images.
                for module in raw.modules():
                    if isinstance(module, nn.Conv2d):
                        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            self.pretrained = False
            self.identity = f"fid_inception_v3:random-he-init:seed={seed}"
        self.blocks = pool3_blocks(raw).requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FIDInception:
        return super().train(False)  # a frozen feature extractor: BN must keep its running statistics

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        # pytorch-fid's input transform: bilinear to 299x299 (align_corners=False), then [0,1] -> [-1,1]
        x = F.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return self.blocks(2 * x - 1).flatten(1)


class GaussianStats:
    """Streaming mean and covariance of feature vectors, in float64, without keeping the features.

    Batches are combined with the pairwise update of Chan et al. (mean and centred second moment), which stays
    accurate where the textbook sum of outer products loses digits. ``sigma`` is the unbiased covariance (ddof=1),
    as ``np.cov(features, rowvar=False)`` used by pytorch-fid.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.n = 0
        self.mean = np.zeros(dim, dtype=np.float64)
        self.m2 = np.zeros((dim, dim), dtype=np.float64)

    def update(self, feats: Tensor | np.ndarray) -> None:
        """feats: (N,dim)."""
        if isinstance(feats, Tensor):
            feats = feats.detach().to("cpu", torch.float64).numpy()
        f = np.asarray(feats, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != self.dim:
            raise ValueError(f"expected features (N,{self.dim}), got {f.shape}")
        if len(f) == 0:
            return
        mean_b = f.mean(axis=0)
        centred = f - mean_b
        self._combine(len(f), mean_b, centred.T @ centred)

    def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        n_a, n = self.n, self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.n = n

    def merge(self, other: GaussianStats) -> None:
        if other.n:
            self._combine(other.n, other.mean, other.m2)

    @property
    def mu(self) -> np.ndarray:
        return self.mean.copy()

    @property
    def sigma(self) -> np.ndarray:
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 samples, have {self.n}")
        return self.m2 / (self.n - 1)

    @classmethod
    def from_moments(cls, mu: np.ndarray, sigma: np.ndarray, n: int) -> GaussianStats:
        stats = cls(len(mu))
        stats.n = int(n)
        stats.mean = np.asarray(mu, dtype=np.float64).copy()
        stats.m2 = np.asarray(sigma, dtype=np.float64) * (n - 1)
        return stats


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
    |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)).

    Same numerical recipe as ``pytorch_fid.fid_score.calculate_frechet_distance``: scipy's matrix square root of the
    product; if that is not finite, eps is added to both diagonals; a small imaginary part from rounding is dropped
    (a large one raises ValueError).

    Args:
        mu1, mu2: (D,) means; sigma1, sigma2: (D,D) covariances.
    Returns:
        the distance (float, >= 0 up to rounding; 0 for equal statistics).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} {mu2.shape}, sigma {s1.shape} {s2.shape}")
    root = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(root).all():
        offset = np.eye(len(s1)) * eps
        root = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: matrix square root has imaginary part {np.abs(root.imag).max():g}")
        root = root.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))


def reference_key(reference_id: str, network_identity: str, quantize: bool) -> str:
    """sha1 naming cached reference statistics: the reference images' description (see
    ``metrics.reference.reference_id``) + the feature network's weights + the 8-bit rounding (half up since the
    rounding changed from half-to-even, so statistics cached before are not reused)."""
    text = f"reference={reference_id}\nnetwork={network_identity}\nquantize_uint8={'half_up' if quantize else False}"
    return hashlib.sha1(text.encode()).hexdigest()


class FIDReference:
    """The reference side of FID for one test set: Gaussian statistics of its ground-truth features, loaded from the
    cache or accumulated once, then shared by every FID metric scoring a method on that test set.

    Args:
        dim: feature dimension; network_identity: the feature network's ``identity`` (part of the cache key).
        cache_dir: folder of cached statistics (``fid_ref_<sha1>.npz``); None: no caching.
        reference_id: a string that changes whenever the reference images change (``metrics.reference``); with
            cache_dir it keys the cache together with the network identity and the rounding.
        quantize: whether images are rounded to 8 bits before the network (part of the cache key).
    Each FID metric tells ``add`` where its targets start in the test set: a batch already added by another
    metric (several methods scored on the same test set, in the same order) is skipped, so the reference
    features are computed once. ``finish`` writes new statistics to the cache and reads them back, so this run
    computes the very numbers a later run reads from the cache.
    """

    def __init__(self, dim: int, network_identity: str, cache_dir: str | os.PathLike | None = None,
                 reference_id: str | None = None, quantize: bool = True) -> None:
        self.dim, self.network_identity, self.quantize = int(dim), str(network_identity), quantize
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.reference_id = reference_id
        self.reset()

    @property
    def cache_path(self) -> Path | None:
        if self.cache_dir is None or self.reference_id is None:
            return None
        key = reference_key(self.reference_id, self.network_identity, self.quantize)
        return self.cache_dir / f"fid_ref_{key}.npz"

    def reset(self) -> None:
        """Forget what was accumulated; load the cached statistics if there are any (``complete`` then)."""
        self.stats = GaussianStats(self.dim)
        self.complete = False
        path = self.cache_path
        if path is not None and path.is_file():
            with np.load(path) as data:
                self.stats = GaussianStats.from_moments(data["mu"], data["sigma"], int(data["n"]))
            self.complete = True

    def add(self, images: Tensor, start: int, features) -> None:
        """Reference images ``start .. start + N - 1`` of the test set; ``features``: images -> (N,D) features,
        called only for images not added yet."""
        if self.complete or start + len(images) <= self.stats.n:
            return
        if start != self.stats.n:
            raise ValueError(f"FID reference: images from {start} given, but {self.stats.n} accumulated so far "
                             "(every method must see the test set in the same order)")
        self.stats.update(features(images))

    def save(self) -> Path | None:
        """Write the statistics to the cache (atomically); returns the path, None without a cache or images."""
        path = self.cache_path
        if path is None or self.stats.n < 2:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            np.savez(f, mu=self.stats.mu, sigma=self.stats.sigma, n=np.int64(self.stats.n),
                     reference_id=np.str_(self.reference_id), network=np.str_(self.network_identity))
        os.replace(tmp, path)
        return path

    def finish(self) -> None:
        """The test set is through: cache new statistics and read them back (then ``complete``)."""
        if not self.complete and self.save() is not None:
            self.reset()

    def merge(self, other: FIDReference) -> None:
        if other is not self and not self.complete:
            self.stats.merge(other.stats)


class FID(Metric):
    """Frechet Inception Distance between predictions and references, streamed.

    Args:
        feature_net: callable images (N,3,H,W) [0,1] -> (N,D) with attributes ``dim``, ``pretrained``, ``identity``;
            default ``FIDInception(weights_path, seed)``.
        weights_path, seed, key: passed to FIDInception when feature_net is None.
        cache_dir, reference_id: of the reference statistics (see FIDReference) when ``reference`` is None.
        reference: a FIDReference shared with other FID metrics on the same test set (``MetricContext``); default:
            one of this metric's own.
        device: where the feature network runs.
        batch_size: images per forward pass of the feature network.
        quantize: round images to 8 bits first (``metrics.base.quantize``: floor(255 x + 0.5) / 255, half up), as if
            saved to PNG and read back, which is what pytorch-fid's file-based tool sees.
    Use: ``update(pred, target)`` per batch (or ``update_pred`` / ``update_reference``); when the reference statistics
    are known (loaded from the cache, or these targets added by another metric sharing the reference), targets are
    ignored and their features are not computed. ``compute()`` -> {"fid": value}; it first finishes the reference
    (``FIDReference.finish``). Only two (D,) means and two (D,D) second moments are kept, in float64.
    """

    name = "fid"
    kind = "image"
    higher_is_better = False

    def __init__(self, feature_net: nn.Module | None = None, weights_path: str | os.PathLike | None = None,
                 seed: int = 0, key: str = "fid inception weights", cache_dir: str | os.PathLike | None = None,
                 reference_id: str | None = None, device: str | torch.device = "cpu", batch_size: int = 32,
                 quantize: bool = True, reference: FIDReference | None = None) -> None:
        self.device = torch.device(device)
        self.net = feature_net if feature_net is not None else FIDInception(weights_path, seed=seed, key=key)
        if isinstance(self.net, nn.Module):
            self.net = self.net.to(self.device).eval()
        self.batch_size = batch_size
        self.quantize = quantize
        self.reference = reference if reference is not None else FIDReference(
            int(self.net.dim), str(self.net.identity), cache_dir, reference_id, quantize)
        if (self.reference.dim, self.reference.network_identity, self.reference.quantize) != \
                (int(self.net.dim), str(self.net.identity), quantize):
            raise ValueError("FID: the shared reference was made with another feature network or rounding")
        self.reset()

    @classmethod
    def from_context(cls, ctx) -> FID:
        return cls(feature_net=ctx.fid_inception, reference=ctx.fid_reference, device=ctx.device)

    @property
    def comparable(self) -> bool:
        return bool(getattr(self.net, "pretrained", False))

    @property
    def cache_path(self) -> Path | None:
        return self.reference.cache_path

    @property
    def ref_stats(self) -> GaussianStats:
        return self.reference.stats

    @property
    def has_reference(self) -> bool:
        return self.reference.complete

    def reset(self) -> None:
        """Forget the predictions (the reference, of the test set, is kept)."""
        self.pred_stats = GaussianStats(int(self.net.dim))
        self._targets_seen = 0

    @torch.no_grad()
    def features(self, images: Tensor) -> np.ndarray:
        """images (N,3,H,W) in [0,1] -> (N,D) float64 features."""
        out = []
        for chunk in images.split(self.batch_size):
            x = chunk.to(self.device, torch.float32)
            if self.quantize:
                x = quantize(x)
            out.append(self.net(x).to("cpu", torch.float64).numpy())
        return np.concatenate(out) if out else np.zeros((0, int(self.net.dim)))

    def update_pred(self, images: Tensor) -> None:
        self.pred_stats.update(self.features(images))

    def update_reference(self, images: Tensor) -> None:
        self.reference.add(images, self._targets_seen, self.features)
        self._targets_seen += len(images)

    def update(self, pred: Tensor, target: Tensor | None = None, mask: Tensor | None = None,
               landmarks: Tensor | None = None) -> None:
        """pred, target: (N,3,H,W) in [0,1]; target may be None (or is skipped) once the reference is known."""
        self.update_pred(pred)
        if target is not None:
            self.update_reference(target)

    def merge(self, other: FID) -> None:
        self.pred_stats.merge(other.pred_stats)
        self.reference.merge(other.reference)

    def compute(self) -> dict[str, float]:
        """{"fid": distance}; NaN when either side has fewer than 2 images."""
        if self.pred_stats.n < 2 or self.ref_stats.n < 2:
            return {self.name: math.nan}
        self.reference.finish()
        ref = self.ref_stats
        value = frechet_distance(self.pred_stats.mu, self.pred_stats.sigma, ref.mu, ref.sigma)
        return {self.name: value}
