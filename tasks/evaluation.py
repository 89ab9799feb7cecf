"""Evaluation: the paper's Table 2 (L1, PSNR, SSIM, ArcFace cosine, FID) and more, for our model, ablations,
OpenCV baselines and external predictions, on a deterministic masked test set.

One scoring path for every row: the test items are taken as export_testset.py writes them (8-bit, rounded half up,
``metrics.quantize``) and every method's output, ours, OpenCV's or a --predictions folder's, is rounded the same way
before any metric. Conventions: images in [0,1] at the test set's size; L1 = mean |diff| over pixels and channels;
PSNR with data range 1, per image capped at ``psnr_max_db`` (identical pairs are infinite; their count is reported);
SSIM under ``ssim_convention`` (default Wang et al.'s: Gaussian window 11 / sigma 1.5, 'valid' filtering, averaged
over channels; see metrics.image.SSIM_CONVENTIONS). Each row names the mask it was composited with: the baselines and
--predictions get the ground-truth occlusion map, our model its own N_3D map (as at test time) and, in the row
``ours_gt_mask``, the ground-truth map (as LaFIn and Pluralistic are scored in the paper). Diversity is the mean
pairwise LPIPS over ``diversity_seeds`` noise seeds for the same input and prior; edit spread the same over the K
coefficient ``edits``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from data.config import FFHQConfig, TestSetConfig
from data.pairs import MaskedPairs, build_pairs
from engine.config import ConfigError, to_dict
from metrics import DEFAULT_PSNR_MAX_DB, as_exported, score_batch
from metrics.context import FeatureWeights, MetricContext
from models.generator import composite
from tasks.baselines import OPENCV_METHODS, opencv_inpaint
from tasks.common import (
    MorphableConfig,
    build_morphable,
    iterate,
    resize,
    resize_square,
)
from tasks.report import conventions, json_safe, write_results


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
    n3d_metrics: list[str] = field(default_factory=lambda: ["mask_iou", "landmark_nme"])  # of N_3D's mask, landmarks
    weights: FeatureWeights = field(default_factory=FeatureWeights)
    ssim_convention: str = "wang"  # wang | skimage | edgeconnect (metrics.image.SSIM_CONVENTIONS)
    psnr_max_db: float = DEFAULT_PSNR_MAX_DB  # per-image PSNR cap: an identical pair (inf dB) makes the mean inf
    gt_mask_row: bool = True  # also score ours with the ground-truth mask (row ours_gt_mask), as LaFIn is scored
    diversity_seeds: int = 4  # noise seeds per input for diversity (mean pairwise LPIPS); below 2: not measured
    edits: list[str] = field(default_factory=lambda: ["neutral", "smile", "open_mouth", "pucker", "brighter"])
    control_edits: list[str] = field(default_factory=lambda: ["open_mouth", "smile"])
    extra_images: int = 16  # images used for diversity and controllability
    # synthetic test sets: draws of the hidden coefficients for the information ceiling of edit fidelity (0 = off)
    control_ceiling_draws: int = 32
    area_edges: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 1.0])
    batch_size: int = 8
    device: str = "cpu"
    grid_images: int = 6
    fid_cache_dir: str = ".cache/fid"


def build_testset(cfg: EvalExperiment, model=None):
    """The deterministic masked test set (fixed mask per image): ``data.pairs.build_pairs(cfg.test, "test")``."""
    return build_pairs(cfg.test, "test", model)


def item_names(dataset) -> list[str]:
    """The names of a test set's items in order, from the photo datasets' records where they keep them (no image is
    decoded); other datasets' items are loaded."""
    if isinstance(dataset, torch.utils.data.Subset):
        names = item_names(dataset.dataset)
        return [names[i] for i in dataset.indices]
    if isinstance(dataset, MaskedPairs):
        return item_names(dataset.faces)
    if getattr(dataset, "datasets", None) is not None:
        return [n for part in dataset.datasets for n in item_names(part)]
    recs = getattr(dataset, "records", None)
    if recs is not None:
        return [r.name for r in recs]
    return [dataset[i]["name"] for i in range(len(dataset))]


class ModelMethod:
    """Our pipeline (or an ablation) as an evaluation row, composited with N_3D's predicted mask."""

    def __init__(self, remover):
        self.remover = remover
        self.mask_source = "N_3D" if remover.composite else "none"
        self.last = None  # the last batch's Removal: its N_3D outputs feed the mask and landmark metrics
        self.last_index = None

    def __call__(self, batch: dict, index: int) -> torch.Tensor:
        if self.remover.framing is not None:  # e.g. the authors' release: aligned into its own crop and back
            self.last = self.remover.in_frame(batch["masked_image"], batch["landmarks"], ["keep"], seed=index)
        else:
            self.last = self.remover(batch["masked_image"], ["keep"], seed=index)
        self.last_index = index
        return resize(self.last.images[:, 0], batch["image"].shape[-1])


class GTMaskMethod:
    """Our pipeline given the ground-truth occlusion map (noise, N_G's mask input and compositing), as LaFIn and
    Pluralistic are scored in the paper. N_3D's coefficients come from `source`'s removal of the same batch (the
    N_3D-mask row runs first), so N_3D is not run again; the noise seed is the same."""

    def __init__(self, source: ModelMethod):
        self.source = source
        self.mask_source = "ground truth" if source.remover.composite else "none"

    def __call__(self, batch: dict, index: int) -> torch.Tensor:
        if self.source.last_index != index:
            raise RuntimeError("the ground-truth-mask row must run after its N_3D-mask row on the same batch")
        r = self.source.remover
        m = (resize_square(batch["mask"], r.image_size) > 0.5).float()
        out = r(batch["masked_image"], ["keep"], seed=index, coeffs=self.source.last.base_coeffs, m=m)
        return resize(out.images[:, 0], batch["image"].shape[-1])


class OpenCVMethod:
    mask_source = "ground truth"  # cv2.inpaint changes the ground-truth mask's pixels only

    def __init__(self, method: str):
        self.method = method  # a key of tasks.baselines.OPENCV_METHODS

    def __call__(self, batch: dict, index: int) -> torch.Tensor:
        return opencv_inpaint(batch["masked_image"], batch["mask"], self.method)


class PredictionsMethod:
    """Images written by another method for the exported test set: DIR/<name>.png (any size; resized to the test
    size), composited with the ground-truth mask like the baselines (outside it the input's pixels are kept)."""

    mask_source = "ground truth"

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"--predictions: folder not found: {self.folder}")

    def path(self, name: str) -> Path | None:
        """DIR/<name>.png (or .jpg, .jpeg); None when there is none."""
        return next((self.folder / f"{name}{ext}" for ext in (".png", ".jpg", ".jpeg")
                     if (self.folder / f"{name}{ext}").is_file()), None)

    def check(self, names: list[str]) -> None:
        """Every test item has its image, before any scoring: else one FileNotFoundError line naming the first."""
        missing = [n for n in names if self.path(n) is None]
        if missing:
            raise FileNotFoundError(f"--predictions: {len(missing)} of {len(names)} test items have no image in "
                                    f"{self.folder}, first: {missing[0]}.png (the names of export_testset.py's "
                                    "masked/ folder)")

    def __call__(self, batch: dict, index: int) -> torch.Tensor:
        from data.io import read_image

        outs = []
        for name in batch["name"]:
            p = self.path(name)
            if p is None:
                raise FileNotFoundError(f"--predictions: no image for test item {name} in {self.folder}")
            outs.append(resize(read_image(p)[None], batch["image"].shape[-1])[0])
        return composite(torch.stack(outs).to(batch["mask"].device), batch["masked_image"], batch["mask"])


def _check_scoring(cfg: EvalExperiment) -> None:
    """One-line errors for the scoring settings, before any checkpoint is loaded."""
    from metrics.image import SSIM_CONVENTIONS

    if cfg.ssim_convention not in SSIM_CONVENTIONS:
        raise ConfigError(f"ssim_convention: unknown {cfg.ssim_convention!r}; valid: {', '.join(SSIM_CONVENTIONS)}")
    if not cfg.psnr_max_db > 0:
        raise ConfigError(f"psnr_max_db: must be > 0 dB, got {cfg.psnr_max_db}")


def _check_crops(cfg: EvalExperiment, removers: dict) -> None:
    """A model that takes its input as framed (no re-alignment) must see test faces in the crop it was trained on
    (recorded in its export): one line naming both otherwise, never a silent run in another framing."""
    from tasks.exports import crop_of

    test = (crop_of(cfg.test.faces) or {}).get("crop")
    for name, r in removers.items():
        crop = r.inference.crop
        if r.framing is None and crop and test and crop != test:
            key = "checkpoint" if name == "ours" else f"ablations.{name}"
            raise ConfigError(f"{key}: the model was trained on {crop} crops but test.faces are {test} crops: frame "
                              f"the test faces as the model's training data (test.faces[*].align / framing / "
                              f"lm3d_path)")


class Evaluator:
    """Runs every method over the test set, streaming the metrics; writes results.json / results.md / grid."""

    def __init__(self, cfg: EvalExperiment, out_dir: str | Path, predictions: str | None = None):
        from tasks.removal import MaskRemover

        self.cfg, self.out_dir = cfg, Path(out_dir)
        _check_scoring(cfg)
        self.device = torch.device(cfg.device)
        self.methods: dict[str, object] = {}
        self.removers = {}
        if cfg.checkpoint:
            self.removers["ours"] = MaskRemover.from_checkpoints(cfg.checkpoint, cfg.n3d_checkpoint, self.device,
                                                                 key="checkpoint")
        for name, path in cfg.ablations.items():
            self.removers[name] = MaskRemover.from_checkpoints(path, None, self.device, key=f"ablations.{name}")
        _check_crops(cfg, self.removers)
        for name, r in self.removers.items():
            self.methods[name] = ModelMethod(r)
            if name == "ours" and cfg.gt_mask_row and r.framing is None:  # a re-framed model's crop differs
                self.methods["ours_gt_mask"] = GTMaskMethod(self.methods["ours"])
        for b in cfg.baselines:
            if b not in OPENCV_METHODS:
                raise ConfigError(f"baselines: unknown baseline {b!r}; valid: {', '.join(OPENCV_METHODS)}")
            self.methods[b] = OpenCVMethod(b)
        if predictions:
            self.methods["predictions"] = PredictionsMethod(predictions)
        if not self.methods:
            raise ConfigError("nothing to evaluate: give --checkpoint, ablations, baselines or --predictions")
        model = self.removers["ours"].model if "ours" in self.removers else build_morphable(cfg.morphable)
        self.testset = build_testset(cfg, model)
        if "predictions" in self.methods:
            self.methods["predictions"].check(item_names(self.testset))
        self.face_model = model  # renders synthetic test faces: part of the FID reference cache key
        self.notes = self._skipped_notes()
        self._build_metrics()

    def _skipped_notes(self) -> list[str]:
        """One line per measurement this config cannot make (written to results.md instead of failing)."""
        cfg, notes = self.cfg, []
        if self.removers and len(cfg.edits) < 2:
            notes.append(f"Edit spread not measured: `edits` has {len(cfg.edits)} entry (K = {len(cfg.edits)}; "
                         "a spread needs 2 or more).")
        if self.removers and cfg.diversity_seeds < 2:
            notes.append(f"Diversity not measured: `diversity_seeds` is {cfg.diversity_seeds} (needs 2 or more).")
        return notes

    # ------------------------------------------------------------------------------------------ metrics
    def _build_metrics(self):
        """Every row's metrics from one MetricContext: the configured names only, checked by what they score."""
        from metrics import DiversityMetric, available, build_metric, metric_class
        from tasks.control import build_control

        cfg = self.cfg
        for section, kinds in (("metrics", ("image",)), ("n3d_metrics", ("mask", "landmarks"))):
            for name in getattr(cfg, section):
                if name not in available() or metric_class(name).kind not in kinds:
                    valid = sorted(n for k in kinds for n in available(k))
                    raise ConfigError(f"{section}: unknown metric {name!r}; valid: {', '.join(valid)}")
        self.context = MetricContext(self.device, cfg.weights, cache_dir=cfg.fid_cache_dir,
                                     test_set_id=self.fid_reference_id(), image_size=cfg.test.image_size,
                                     psnr_max_db=cfg.psnr_max_db, ssim_convention=cfg.ssim_convention)
        self.metrics = {m: {name: build_metric(name, self.context) for name in cfg.metrics} for m in self.methods}
        self.n3d_metrics = {m: {name: build_metric(name, self.context) for name in cfg.n3d_metrics}
                            for m in self.removers}
        # diversity and edit spread (edit_metrics) measure with LPIPS: built now, a bad weights path fails before work
        self.variations = DiversityMetric.from_context(self.context) if self.removers else None
        # controllability: edit fidelity and prior reliance (synthetic test sets) or dlib mouth landmarks
        self.control = {m: build_control(self.testset, cfg.edits, cfg.control_edits,
                                         ceiling_draws=cfg.control_ceiling_draws) for m in self.removers}

    def fid_reference_id(self) -> str:
        """The test set's identity (keys FID's cached reference statistics): what the ground-truth images depend
        on: test-set config, image size, the image files with sizes and mtimes, files naming landmarks, and the
        morphable model when faces are synthetic."""
        from metrics.reference import dataset_files, module_fingerprint, reference_id

        t = self.cfg.test
        synthetic = any(f.kind == "synthetic" for f in t.faces)
        return reference_id(to_dict(t), t.image_size, dataset_files(self.testset),
                            [f.landmarks_json for f in t.faces if isinstance(f, FFHQConfig) and f.landmarks_json],
                            module_fingerprint(self.face_model) if synthetic else None)

    # ---------------------------------------------------------------------------------------------- run
    @torch.no_grad()
    def run(self, progress=None, stage=None) -> dict:
        """Score every method over the test set -> results (also written to out_dir).

        progress(n): called after each batch of n test images; stage(total, desc): returns a progress object with
        ``update(n)`` and ``close()`` for the passes after it (diversity, edits and controllability per model, FID's
        statistics), so that no stage runs silently.
        """
        self._stage = stage
        grid_rows: dict[str, list[torch.Tensor]] = {"input": [], **{m: [] for m in self.methods}, "ground truth": []}
        n_grid = 0
        for bi, batch in enumerate(iterate(self.testset, self.cfg.batch_size, device=self.device)):
            batch = as_exported(batch)
            gt = batch["image"]
            take = max(0, min(self.cfg.grid_images - n_grid, gt.shape[0]))
            if take:
                grid_rows["input"].append(batch["masked_image"][:take].cpu())
                grid_rows["ground truth"].append(gt[:take].cpu())
            for name, method in self.methods.items():
                out = score_batch(self.metrics[name].values(), method(batch, bi), batch)  # rounded like a PNG
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
        """N_3D's outputs for this batch (taken from the removal, not run again) against the truth: its occlusion
        map for the metrics of kind "mask" (mask IoU), its landmarks for those of kind "landmarks" (NME)."""
        pairs = {"mask": (resize(removal.m, batch["image"].shape[-1]).round(), batch["mask"]),
                 "landmarks": (removal.landmarks, batch["landmarks"])}
        for metric in self.n3d_metrics[name].values():
            metric.update(*pairs[metric.kind])

    @torch.no_grad()
    def edit_metrics(self, name: str, remover) -> dict:
        """On the first `extra_images`: diversity (mean pairwise LPIPS among `diversity_seeds` results for the same
        input and prior, differing only in the noise seed: the pluralistic-inpainting definition), edit spread (the
        same among the K `edits`, one seed) and controllability (tasks.control). A measurement that needs 2 results
        and has 1 is left out (NaN; the reason is in `self.notes`)."""
        from metrics import DiversityMetric, quantize

        cfg = self.cfg
        div, spread = DiversityMetric.from_context(self.context), DiversityMetric.from_context(self.context)
        n_seeds = cfg.diversity_seeds
        control = self.control[name]
        shared = control.removal_edits if control is not None else []
        n_extra = min(cfg.extra_images, len(self.testset))
        bar = self._progress(n_extra, f"{name}: diversity, edits, control")
        for bi, batch in enumerate(iterate(self.testset, cfg.batch_size, cfg.extra_images, self.device)):
            bar.update(batch["image"].shape[0])
            batch = as_exported(batch)
            masked = resize(batch["masked_image"], remover.image_size)
            # one N_3D-prior pass (same seed) for the edit spread and the controllability's N_3D prior
            res = remover(masked, list(dict.fromkeys([*shared, *cfg.edits])), seed=bi)
            if len(cfg.edits) >= 2:
                spread.update(quantize(res.pick(cfg.edits).images))
            if n_seeds >= 2:  # N_3D's outputs reused: only the noise differs between the samples
                samples = [remover(masked, ["keep"], seed=bi * n_seeds + s, coeffs=res.base_coeffs, m=res.m).images
                           for s in range(n_seeds)]
                div.update(quantize(torch.cat(samples, 1)))
            if control is not None:
                control.update(remover, batch, seed=bi, n3d=res)
        bar.close()
        out = {"diversity": div.compute()["diversity"], "edit_spread": spread.compute()["diversity"]}
        return {**out, **(control.compute() if control is not None else {})}

    def _progress(self, total: int, desc: str):
        """A progress object from run's ``stage`` (a silent one without)."""
        stage = getattr(self, "_stage", None)
        return stage(total, desc) if stage is not None else _Silent()

    def _collect(self) -> dict:
        from metrics import bin_metrics
        from metrics.reference import file_sha1

        cfg, methods, comparable, bins = self.cfg, {}, {}, {}
        for name, ms in self.metrics.items():
            row = {}
            bar = self._progress(len(ms), f"{name}: metrics (FID statistics)")
            for metric in ms.values():
                row.update(metric.compute())  # psnr adds psnr_exact: the count of identical pairs
                comparable[metric.name] = bool(metric.comparable)
                bar.update(1)
            bar.close()
            if name in self.removers:
                for metric in self.n3d_metrics[name].values():
                    row[metric.name] = metric.compute()[metric.name]
                row.update(self.edit_metrics(name, self.removers[name]))
                comparable["diversity"] = comparable["edit_spread"] = bool(self.variations.comparable)
            per_image = [m for m in ms.values() if m.by_area]
            if per_image:
                bins[name] = bin_metrics(per_image, cfg.area_edges)
            methods[name] = row
        return json_safe({
            "n_images": len(self.testset), "test_set": to_dict(cfg.test), "methods": methods,
            "comparable": comparable, "bins": bins,
            "checkpoints": {k: file_sha1(v)[:12] for k, v in self._checkpoints().items()},
            "row_masks": {k: m.mask_source for k, m in self.methods.items()}, "notes": list(self.notes),
            "conventions": conventions(cfg.psnr_max_db, cfg.ssim_convention, cfg.diversity_seeds, cfg.extra_images,
                                       cfg.edits)})

    def _checkpoints(self) -> dict:
        paths = {"ours": self.cfg.checkpoint, **self.cfg.ablations}
        return {k: v for k, v in paths.items() if v}

    # --------------------------------------------------------------------------------------------- write
    def _write(self, results: dict, grid_rows: dict) -> None:
        from torchvision.utils import save_image

        write_results(self.out_dir, results)
        rows = [torch.cat(v) for v in grid_rows.values() if v]
        if rows:
            n = rows[0].shape[0]
            save_image(torch.cat(rows), self.out_dir / "grid.png", nrow=n, padding=2)
            (self.out_dir / "grid_rows.txt").write_text("\n".join(k for k, v in grid_rows.items() if v) + "\n")
        strip = getattr(self.control.get("ours"), "strip", lambda: None)()
        if strip is not None:  # synthetic test sets: edits of ours beside their exact edited ground truth
            images, row_labels, col_labels = strip
            save_image(images, self.out_dir / "edit_strip.png", nrow=len(col_labels), padding=2)
            (self.out_dir / "edit_strip.txt").write_text(f"columns: {', '.join(col_labels)}\n"
                                                         + "".join(f"row: {r}\n" for r in row_labels))


class _Silent:
    """A progress object that shows nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
