"""Evaluation: the paper's Table 2 (L1, PSNR, SSIM, ArcFace cosine, FID) and more, for our model, ablations,
OpenCV baselines and external predictions, on a deterministic masked test set.

Conventions: images in [0,1] at the test set's size; L1 = mean |diff| over pixels and channels; PSNR with data
range 1; SSIM with data range 1, Gaussian window 11 / sigma 1.5, 'valid' filtering, averaged over channels (as
scikit-image with gaussian_weights=True, use_sample_covariance=False). Baselines get the ground-truth occlusion map
(the favourable case for them); our model uses its own N_3D map, as at test time.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.config import path_field, to_dict
from tasks.common import (
    FaceDataConfig,
    MorphableConfig,
    build_faces,
    build_morphable,
    build_synthesizer,
    iterate,
    resize_square,
)
from tasks.inpaint import telea

PAPER_TABLE2 = {  # published numbers (their FFHQ test set), for reference only
    "Zheng et al.": {"l1": 0.020, "psnr": 24.709, "ssim": 0.893, "arcface_cos": 0.506, "fid": 12.808},
    "LaFIn": {"l1": 0.018, "psnr": 25.569, "ssim": 0.897, "arcface_cos": 0.543, "fid": 12.465},
    "Din et al.": {"psnr": 26.19, "ssim": 0.864, "fid": 3.548},
    "Yin & Chen (paper)": {"l1": 0.014, "psnr": 27.230, "ssim": 0.912, "arcface_cos": 0.654, "fid": 9.744},
}
COLUMNS = [  # (key, header, higher is better)
    ("l1", "L1", False), ("psnr", "PSNR", True), ("ssim", "SSIM", True), ("arcface_cos", "Cos ID", True),
    ("fid", "FID", False), ("lpips", "LPIPS", False), ("l1_hole", "L1 hole", False), ("mask_iou", "mask IoU", True),
    ("landmark_nme", "LM NME", False), ("diversity", "Diversity", True), ("prior_reliance", "Prior rel.", True),
]


@dataclass
class TestSetConfig:
    image_size: int = 256
    faces: list[FaceDataConfig] = field(default_factory=lambda: [FaceDataConfig(kind="ffhq", split="test")])
    mask_library: str | None = path_field(kind="dir")
    mask_seed: int = 2024  # test image i is always masked with seed (mask_seed, i)
    limit: int | None = None  # evaluate the first `limit` images only


@dataclass
class EvalWeights:
    fid_inception: str | None = path_field(kind="file")  # pytorch-fid's pt_inception-2015-12-05-6726825d.pth
    lpips_backbone: str | None = path_field(kind="file")  # torchvision alexnet-owt-7be5be79.pth (or vgg16)
    lpips_net: str = "alex"
    arcface: str | None = path_field(kind="file")  # arcface_torch backbone.pth
    arcface_arch: str = "r50"


@dataclass
class EvalExperiment:
    test: TestSetConfig = field(default_factory=TestSetConfig)
    morphable: MorphableConfig = field(default_factory=MorphableConfig)  # for synthetic test faces
    checkpoint: str | None = None  # RUN/inpaint.pt of train_inpaint.py (or --checkpoint)
    n3d_checkpoint: str | None = None  # default: the N_3D recorded in the inpainting export
    ablations: dict[str, str] = field(default_factory=dict)  # row name -> another RUN/inpaint.pt
    baselines: list[str] = field(default_factory=lambda: ["telea", "navier_stokes"])
    metrics: list[str] = field(default_factory=lambda: ["l1", "l1_hole", "psnr", "ssim", "arcface_cos", "fid",
                                                        "lpips"])
    weights: EvalWeights = field(default_factory=EvalWeights)
    edits: list[str] = field(default_factory=lambda: ["neutral", "smile", "open_mouth", "pucker", "brighter"])
    control_edits: list[str] = field(default_factory=lambda: ["open_mouth", "smile"])
    extra_images: int = 16  # images used for diversity and controllability
    area_edges: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 1.0])
    batch_size: int = 8
    device: str = "cpu"
    grid_images: int = 6
    fid_cache_dir: str = ".cache/fid"


def build_testset(cfg: EvalExperiment, model=None):
    """The deterministic masked test set (fixed mask per image)."""
    from data.faces import MaskedPairs

    t = cfg.test
    faces = build_faces(t.faces, t.image_size, "test.faces", model)
    pairs = MaskedPairs(faces, build_synthesizer(t), seed=t.mask_seed, fixed=True)
    if t.limit is not None and t.limit < len(pairs):
        pairs = torch.utils.data.Subset(pairs, range(t.limit))
    return pairs


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else resize_square(x, size).clamp(0, 1)


class ModelMethod:
    """Our pipeline (or an ablation) as an evaluation row."""

    def __init__(self, remover):
        self.remover = remover
        self.last = None  # the last batch's Removal: its N_3D outputs feed the mask and landmark metrics

    def __call__(self, batch: dict, index: int) -> torch.Tensor:
        self.last = self.remover(batch["masked_image"], ["keep"], seed=index)
        return resize(self.last.images[:, 0], batch["image"].shape[-1])


class OpenCVMethod:
    def __init__(self, method: str):
        self.method = method

    def __call__(self, batch: dict, index: int) -> torch.Tensor:
        return telea(batch["masked_image"], batch["mask"], "telea" if self.method == "telea" else "ns")


class PredictionsMethod:
    """Images written by another method for the exported test set: DIR/<name>.png (any size)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"--predictions: folder not found: {self.folder}")

    def __call__(self, batch: dict, index: int) -> torch.Tensor:
        from data.io import read_image

        outs = []
        for name in batch["name"]:
            p = next((self.folder / f"{name}{ext}" for ext in (".png", ".jpg", ".jpeg")
                      if (self.folder / f"{name}{ext}").is_file()), None)
            if p is None:
                raise FileNotFoundError(f"--predictions: no image for test item {name} in {self.folder}")
            outs.append(resize(read_image(p)[None], batch["image"].shape[-1])[0])
        return torch.stack(outs)


class Evaluator:
    """Runs every method over the test set, streaming the metrics; writes results.json / results.md / grid."""

    def __init__(self, cfg: EvalExperiment, out_dir: str | Path, predictions: str | None = None):
        from tasks.removal import MaskRemover

        self.cfg, self.out_dir = cfg, Path(out_dir)
        self.device = torch.device(cfg.device)
        self.methods: dict[str, object] = {}
        self.removers = {}
        if cfg.checkpoint:
            self.removers["ours"] = MaskRemover.from_checkpoints(cfg.checkpoint, cfg.n3d_checkpoint, self.device,
                                                                 key="checkpoint")
        for name, path in cfg.ablations.items():
            self.removers[name] = MaskRemover.from_checkpoints(path, None, self.device, key=f"ablations.{name}")
        for name, r in self.removers.items():
            self.methods[name] = ModelMethod(r)
        for b in cfg.baselines:
            if b not in ("telea", "navier_stokes"):
                raise ValueError(f"baselines: unknown baseline {b!r}; valid: telea, navier_stokes")
            self.methods[b] = OpenCVMethod(b)
        if predictions:
            self.methods["predictions"] = PredictionsMethod(predictions)
        if not self.methods:
            raise ValueError("nothing to evaluate: give --checkpoint, ablations, baselines or --predictions")
        model = self.removers["ours"].model if "ours" in self.removers else build_morphable(cfg.morphable)
        self.testset = build_testset(cfg, model)
        self._build_metrics()

    # ------------------------------------------------------------------------------------------ metrics
    def _build_metrics(self):
        from metrics import FIDInception, LPIPSMetric, get_metric
        from models.arcface import ArcFace
        from tasks.control import build_control

        cfg, w = self.cfg, self.cfg.weights
        valid = {"l1", "l1_hole", "psnr", "ssim", "arcface_cos", "fid", "lpips"}
        for name in cfg.metrics:
            if name not in valid:
                raise ValueError(f"metrics: unknown metric {name!r}; valid: {', '.join(sorted(valid))}")
        need_lpips = "lpips" in cfg.metrics or self.removers
        self.lpips = LPIPSMetric(w.lpips_net, w.lpips_backbone, device=self.device,
                                 key="weights.lpips_backbone") if need_lpips else None
        self.arcface = None
        if "arcface_cos" in cfg.metrics:
            with torch.random.fork_rng():  # without weights: the same random network in every run
                torch.manual_seed(0)
                self.arcface = ArcFace(w.arcface_arch, w.arcface, what="weights.arcface").to(self.device)
        self.inception = FIDInception(w.fid_inception, key="weights.fid_inception").to(self.device) \
            if "fid" in cfg.metrics else None
        ref_id = json.dumps(to_dict(cfg.test), sort_keys=True)
        self.fid_ref = get_metric("fid", feature_net=self.inception, cache_dir=cfg.fid_cache_dir,
                                  reference_id=ref_id, device=self.device) if self.inception is not None else None

        def make(name):
            if name == "lpips":
                return LPIPSMetric(model=self.lpips.model, device=self.device)
            if name == "arcface_cos":
                return get_metric("arcface_cos", embed=self.arcface)
            if name == "fid":
                return get_metric("fid", feature_net=self.inception, device=self.device)
            return get_metric(name)

        self.metrics = {m: {name: make(name) for name in cfg.metrics} for m in self.methods}
        self.n3d_metrics = {m: {"mask_iou": get_metric("mask_iou"), "landmark_nme": get_metric("landmark_nme")}
                            for m in self.removers}
        # controllability: edit fidelity and prior reliance (synthetic test sets) or dlib mouth landmarks
        self.control = {m: build_control(self.testset, cfg.edits, cfg.control_edits) for m in self.removers}

    # ---------------------------------------------------------------------------------------------- run
    @torch.no_grad()
    def run(self, progress=None) -> dict:
        grid_rows: dict[str, list[torch.Tensor]] = {"input": [], **{m: [] for m in self.methods}, "ground truth": []}
        n_grid = 0
        for bi, batch in enumerate(iterate(self.testset, self.cfg.batch_size, device=self.device)):
            gt, m, lm = batch["image"], batch["mask"], batch["landmarks"]
            if self.fid_ref is not None:
                self.fid_ref.update_reference(gt)
            take = max(0, min(self.cfg.grid_images - n_grid, gt.shape[0]))
            if take:
                grid_rows["input"].append(batch["masked_image"][:take].cpu())
                grid_rows["ground truth"].append(gt[:take].cpu())
            for name, method in self.methods.items():
                out = method(batch, bi)
                for metric in self.metrics[name].values():
                    if metric.name == "fid":
                        metric.update_pred(out)
                    else:
                        metric.update(out, gt, mask=m, landmarks=lm)
                if take:
                    grid_rows[name].append(out[:take].cpu())
            for name, remover in self.removers.items():
                self._n3d_metrics(name, remover, self.methods[name].last, batch)
            n_grid += take
            if progress:
                progress(gt.shape[0])
        results = self._collect()
        self._write(results, grid_rows)
        return results

    def _n3d_metrics(self, name: str, remover, removal, batch: dict) -> None:
        """Mask IoU and landmark NME of N_3D's outputs for this batch (taken from the removal, not run again)."""
        scale = batch["image"].shape[-1] / remover.image_size
        self.n3d_metrics[name]["mask_iou"].update(resize(removal.m, batch["image"].shape[-1]).round(), batch["mask"])
        lm = remover.prior.renderer.landmarks(removal.base_coeffs) * scale
        self.n3d_metrics[name]["landmark_nme"].update(lm, batch["landmarks"])

    @torch.no_grad()
    def edit_metrics(self, name: str, remover) -> dict:
        """Diversity (mean pairwise LPIPS over the K edits) and controllability (tasks.control) on the first
        `extra_images`."""
        from metrics import DiversityMetric

        cfg = self.cfg
        div = DiversityMetric(lpips_metric=self.lpips)
        control = self.control[name]
        for bi, batch in enumerate(iterate(self.testset, cfg.batch_size, cfg.extra_images, self.device)):
            masked = resize(batch["masked_image"], remover.image_size)
            res = remover(masked, cfg.edits, seed=bi)
            div.update(res.images)
            if control is not None:
                control.update(remover, batch, seed=bi, base=(res.base_coeffs, res.m))  # N_3D ran once
        return {"diversity": div.compute()["diversity"], **(control.compute() if control is not None else {})}

    def _collect(self) -> dict:
        from metrics import bin_metrics

        methods, comparable, bins = {}, {}, {}
        fid_ref_stats = None
        if self.fid_ref is not None:
            if not self.fid_ref.has_reference and self.fid_ref.save_reference() is not None:
                self.fid_ref.reset()  # read back what was cached, so a later run computes the very same numbers
            fid_ref_stats = self.fid_ref.ref_stats
        for name, ms in self.metrics.items():
            row = {}
            for metric in ms.values():
                if metric.name == "fid":
                    metric.ref_stats, metric.has_reference = fid_ref_stats, True
                row[metric.name] = metric.compute()[metric.name]
                comparable[metric.name] = bool(metric.comparable)
            if name in self.removers:
                for metric in self.n3d_metrics[name].values():
                    row[metric.name] = metric.compute()[metric.name]
                row.update(self.edit_metrics(name, self.removers[name]))
                comparable["diversity"] = bool(self.lpips.comparable)
            per_image = [m for m in ms.values() if hasattr(m, "values") and m.name in ("l1", "psnr", "ssim",
                                                                                         "l1_hole")]
            if per_image:
                bins[name] = bin_metrics(per_image, self.cfg.area_edges)
            methods[name] = row
        n = len(self.testset)
        return {"n_images": n, "test_set": to_dict(self.cfg.test), "methods": _finite(methods),
                "comparable": comparable, "bins": _finite(bins),
                "checkpoints": {k: _sha1(v) for k, v in self._checkpoints().items()}}

    def _checkpoints(self) -> dict:
        paths = {"ours": self.cfg.checkpoint, **self.cfg.ablations}
        return {k: v for k, v in paths.items() if v}

    # --------------------------------------------------------------------------------------------- write
    def _write(self, results: dict, grid_rows: dict) -> None:
        from torchvision.utils import save_image

        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        (self.out_dir / "results.md").write_text(results_markdown(results))
        rows = [torch.cat(v) for v in grid_rows.values() if v]
        if rows:
            n = rows[0].shape[0]
            save_image(torch.cat(rows), self.out_dir / "grid.png", nrow=n, padding=2)
            (self.out_dir / "grid_rows.txt").write_text("\n".join(k for k, v in grid_rows.items() if v) + "\n")


def _finite(obj):
    """JSON-safe: NaN / inf -> None."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.floating | np.integer):
        return _finite(obj.item())
    return obj


def _sha1(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def _fmt(v, key: str) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if key in ("psnr", "fid") else f"{v:.4f}"


def results_markdown(results: dict) -> str:
    """Table 2's layout plus the extra columns, one row per method; non-comparable metrics marked with †."""
    from tasks.control import control_markdown

    comp = results["comparable"]
    cols = [(k, h, hib) for k, h, hib in COLUMNS if any(k in r for r in results["methods"].values())]
    head = [f"{h}{'†' if comp.get(k) is False else ''} {'↑' if hib else '↓'}" for k, h, hib in cols]
    lines = [f"Test set: {results['n_images']} images.", "", "| Method | " + " | ".join(head) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for name, row in results["methods"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(k), k) for k, _, _ in cols) + " |")
    if any(v is False for v in comp.values()):
        lines += ["", "† computed with a feature network without its published weights (none were given): useful "
                      "to compare rows of this table, NOT comparable with published numbers."]
    lines += ["", "Baselines (telea, navier_stokes) get the ground-truth occlusion map; our model uses N_3D's."]
    lines += control_markdown(results["methods"])
    if results.get("bins"):
        lines += ["", "## By mask area (fraction of the image occluded)", ""]
        for name, bins in results["bins"].items():
            keys = sorted({k for b in bins.values() for k in b if k != "count"})
            lines += [f"**{name}**", "", "| area | n | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
            for label, b in bins.items():
                lines.append(f"| {label} | {b.get('count', 0)} | " + " | ".join(_fmt(b.get(k), k) for k in keys)
                             + " |")
            lines.append("")
    lines += ["", "## Published Table 2 (paper, FFHQ test set; reference only)", "",
              "| Method | L1 ↓ | PSNR ↑ | SSIM ↑ | Cos ID ↑ | FID ↓ |", "|---|---|---|---|---|---|"]
    for name, row in PAPER_TABLE2.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(k), k) for k in ("l1", "psnr", "ssim", "arcface_cos",
                                                                                "fid")) + " |")
    return "\n".join(lines) + "\n"
