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

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from data.config import FaceDataConfig, FFHQConfig, SynthesizerConfig
from data.pairs import MaskedPairs, build_faces
from engine.config import ConfigError, path_field, to_dict
from models.generator import composite
from tasks.common import (
    MorphableConfig,
    build_morphable,
    build_synthesizer,
    iterate,
    resize,
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
    ("landmark_nme", "LM NME", False), ("diversity", "Diversity", True), ("edit_spread", "Edit spread", True),
    ("prior_reliance", "Prior rel.", True),
]
L1_CONVENTION = ("mean |output - truth| over pixels and RGB channels in [0,1] (EdgeConnect's script reports "
                 "sum |diff| / sum (output + truth) on grey images instead)")


@dataclass
class TestSetConfig:
    image_size: int = 256
    faces: list[FaceDataConfig] = field(default_factory=lambda: [FFHQConfig(split="test")])
    mask_library: str | None = path_field(kind="dir")
    mask_seed: int = 2024  # test image i is always masked with seed (mask_seed, i)
    synth: SynthesizerConfig = field(default_factory=SynthesizerConfig)  # how the masks are put on the faces
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
    ssim_convention: str = "wang"  # wang | skimage | edgeconnect (metrics.image.SSIM_CONVENTIONS)
    psnr_max_db: float = 100.0  # per-image PSNR cap: an identical pair (inf dB) would make the mean infinite
    gt_mask_row: bool = True  # also score ours with the ground-truth mask (row ours_gt_mask), as LaFIn is scored
    diversity_seeds: int = 4  # noise seeds per input for diversity (mean pairwise LPIPS); below 2: not measured
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
    t = cfg.test
    faces = build_faces(t.faces, t.image_size, "test.faces", model)
    pairs = MaskedPairs(faces, build_synthesizer(t.mask_library, t.synth), seed=t.mask_seed, fixed=True)
    if t.limit is not None and t.limit < len(pairs):
        pairs = torch.utils.data.Subset(pairs, range(t.limit))
    return pairs


def as_exported(batch: dict) -> dict:
    """The test batch as scripts/export_testset.py writes it: image and masked_image rounded to 8 bits (half up, as
    the PNG writer), so our model sees exactly the inputs another method reads from the exported folder."""
    from metrics import quantize

    return {**batch, "image": quantize(batch["image"]), "masked_image": quantize(batch["masked_image"])}


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
        self.method = method

    def __call__(self, batch: dict, index: int) -> torch.Tensor:
        return telea(batch["masked_image"], batch["mask"], "telea" if self.method == "telea" else "ns")


class PredictionsMethod:
    """Images written by another method for the exported test set: DIR/<name>.png (any size; resized to the test
    size), composited with the ground-truth mask like the baselines (outside it the input's pixels are kept)."""

    mask_source = "ground truth"

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
        return composite(torch.stack(outs).to(batch["mask"].device), batch["masked_image"], batch["mask"])


def _check_scoring(cfg: EvalExperiment) -> None:
    """One-line errors for the scoring settings, before any checkpoint is loaded."""
    from metrics.image import SSIM_CONVENTIONS, ssim_window

    if cfg.ssim_convention not in SSIM_CONVENTIONS:
        raise ConfigError(f"ssim_convention: unknown {cfg.ssim_convention!r}; valid: {', '.join(SSIM_CONVENTIONS)}")
    win = ssim_window(cfg.ssim_convention)
    if "ssim" in cfg.metrics and cfg.test.image_size < win:
        raise ConfigError(f"ssim_convention {cfg.ssim_convention}: its {win}x{win} window needs test.image_size >= "
                         f"{win}, got {cfg.test.image_size}")
    if not cfg.psnr_max_db > 0:
        raise ConfigError(f"psnr_max_db: must be > 0 dB, got {cfg.psnr_max_db}")


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
        for name, r in self.removers.items():
            self.methods[name] = ModelMethod(r)
            if name == "ours" and cfg.gt_mask_row and r.framing is None:  # a re-framed model's crop differs
                self.methods["ours_gt_mask"] = GTMaskMethod(self.methods["ours"])
        for b in cfg.baselines:
            if b not in ("telea", "navier_stokes"):
                raise ConfigError(f"baselines: unknown baseline {b!r}; valid: telea, navier_stokes")
            self.methods[b] = OpenCVMethod(b)
        if predictions:
            self.methods["predictions"] = PredictionsMethod(predictions)
        if not self.methods:
            raise ConfigError("nothing to evaluate: give --checkpoint, ablations, baselines or --predictions")
        model = self.removers["ours"].model if "ours" in self.removers else build_morphable(cfg.morphable)
        self.testset = build_testset(cfg, model)
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
        from metrics import FIDInception, LPIPSMetric, get_metric
        from models.arcface import ArcFace
        from tasks.control import build_control

        cfg, w = self.cfg, self.cfg.weights
        valid = {"l1", "l1_hole", "psnr", "ssim", "arcface_cos", "fid", "lpips"}
        for name in cfg.metrics:
            if name not in valid:
                raise ConfigError(f"metrics: unknown metric {name!r}; valid: {', '.join(sorted(valid))}")
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
        self.fid_ref = get_metric("fid", feature_net=self.inception, cache_dir=cfg.fid_cache_dir,
                                  reference_id=self.fid_reference_id(), device=self.device) \
            if self.inception is not None else None

        def make(name):
            if name == "lpips":
                return LPIPSMetric(model=self.lpips.model, device=self.device)
            if name == "arcface_cos":
                return get_metric("arcface_cos", embed=self.arcface)
            if name == "fid":
                return get_metric("fid", feature_net=self.inception, device=self.device)
            if name == "psnr":
                return get_metric("psnr", max_db=cfg.psnr_max_db)
            if name == "ssim":
                return get_metric("ssim", convention=cfg.ssim_convention)
            return get_metric(name)

        self.metrics = {m: {name: make(name) for name in cfg.metrics} for m in self.methods}
        self.n3d_metrics = {m: {"mask_iou": get_metric("mask_iou"), "landmark_nme": get_metric("landmark_nme")}
                            for m in self.removers}
        # controllability: edit fidelity and prior reliance (synthetic test sets) or dlib mouth landmarks
        self.control = {m: build_control(self.testset, cfg.edits, cfg.control_edits) for m in self.removers}

    def fid_reference_id(self) -> str:
        """What the reference (ground-truth) images depend on: test-set config, image size, the image files with
        sizes and mtimes, files naming landmarks, and the morphable model when faces are synthetic."""
        from metrics.reference import dataset_files, module_fingerprint, reference_id

        t = self.cfg.test
        synthetic = any(f.kind == "synthetic" for f in t.faces)
        return reference_id(to_dict(t), t.image_size, dataset_files(self.testset),
                            [f.landmarks_json for f in t.faces if isinstance(f, FFHQConfig) and f.landmarks_json],
                            module_fingerprint(self.face_model) if synthetic else None)

    # ---------------------------------------------------------------------------------------------- run
    @torch.no_grad()
    def run(self, progress=None) -> dict:
        grid_rows: dict[str, list[torch.Tensor]] = {"input": [], **{m: [] for m in self.methods}, "ground truth": []}
        n_grid = 0
        from metrics import quantize

        for bi, batch in enumerate(iterate(self.testset, self.cfg.batch_size, device=self.device)):
            batch = as_exported(batch)
            gt, m, lm = batch["image"], batch["mask"], batch["landmarks"]
            if self.fid_ref is not None:
                self.fid_ref.update_reference(gt)
            take = max(0, min(self.cfg.grid_images - n_grid, gt.shape[0]))
            if take:
                grid_rows["input"].append(batch["masked_image"][:take].cpu())
                grid_rows["ground truth"].append(gt[:take].cpu())
            for name, method in self.methods.items():
                out = quantize(method(batch, bi))  # every row rounded alike, as if written to PNG
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
        self.n3d_metrics[name]["mask_iou"].update(resize(removal.m, batch["image"].shape[-1]).round(), batch["mask"])
        self.n3d_metrics[name]["landmark_nme"].update(removal.landmarks, batch["landmarks"])

    @torch.no_grad()
    def edit_metrics(self, name: str, remover) -> dict:
        """On the first `extra_images`: diversity (mean pairwise LPIPS among `diversity_seeds` results for the same
        input and prior, differing only in the noise seed: the pluralistic-inpainting definition), edit spread (the
        same among the K `edits`, one seed) and controllability (tasks.control). A measurement that needs 2 results
        and has 1 is left out (NaN; the reason is in `self.notes`)."""
        from metrics import DiversityMetric, quantize

        cfg = self.cfg
        div, spread = DiversityMetric(lpips_metric=self.lpips), DiversityMetric(lpips_metric=self.lpips)
        n_seeds = cfg.diversity_seeds
        control = self.control[name]
        for bi, batch in enumerate(iterate(self.testset, cfg.batch_size, cfg.extra_images, self.device)):
            batch = as_exported(batch)
            masked = resize(batch["masked_image"], remover.image_size)
            res = remover(masked, cfg.edits, seed=bi)
            if len(cfg.edits) >= 2:
                spread.update(quantize(res.images))
            if n_seeds >= 2:  # N_3D's outputs reused: only the noise differs between the samples
                samples = [remover(masked, ["keep"], seed=bi * n_seeds + s, coeffs=res.base_coeffs, m=res.m).images
                           for s in range(n_seeds)]
                div.update(quantize(torch.cat(samples, 1)))
            if control is not None:  # N_3D's outputs reused
                control.update(remover, batch, seed=bi, base=(res.base_coeffs, res.m))
        out = {"diversity": div.compute()["diversity"], "edit_spread": spread.compute()["diversity"]}
        return {**out, **(control.compute() if control is not None else {})}

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
                row.update(metric.compute())  # psnr adds psnr_exact: the count of identical pairs
                comparable[metric.name] = bool(metric.comparable)
            if name in self.removers:
                for metric in self.n3d_metrics[name].values():
                    row[metric.name] = metric.compute()[metric.name]
                row.update(self.edit_metrics(name, self.removers[name]))
                comparable["diversity"] = comparable["edit_spread"] = bool(self.lpips.comparable)
            per_image = [m for m in ms.values() if hasattr(m, "values") and m.name in ("l1", "psnr", "ssim",
                                                                                         "l1_hole")]
            if per_image:
                bins[name] = bin_metrics(per_image, self.cfg.area_edges)
            methods[name] = row
        n = len(self.testset)
        return {"n_images": n, "test_set": to_dict(self.cfg.test), "methods": _finite(methods),
                "comparable": comparable, "bins": _finite(bins),
                "checkpoints": {k: _sha1(v) for k, v in self._checkpoints().items()},
                "row_masks": {k: m.mask_source for k, m in self.methods.items()}, "notes": list(self.notes),
                "conventions": self._conventions()}

    def _conventions(self) -> dict:
        from metrics.image import SSIM_CONVENTIONS

        cfg = self.cfg
        return {"quantization": "test items and every output rounded to 8 bits, half up (as PNG), before any metric",
                "l1": L1_CONVENTION,
                "psnr": f"per image, data range 1, capped at {cfg.psnr_max_db:g} dB (identical pairs are infinite; "
                        "psnr_exact counts them)",
                "ssim": f"{cfg.ssim_convention}: {SSIM_CONVENTIONS[cfg.ssim_convention][0]}",
                "diversity": f"mean pairwise LPIPS among {cfg.diversity_seeds} noise seeds for the same input and "
                             f"prior, first {cfg.extra_images} images",
                "edit_spread": f"mean pairwise LPIPS among the {len(cfg.edits)} edits {cfg.edits}, one noise seed"}

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
        strip = getattr(self.control.get("ours"), "strip", lambda: None)()
        if strip is not None:  # synthetic test sets: edits of ours beside their exact edited ground truth
            images, row_labels, col_labels = strip
            save_image(images, self.out_dir / "edit_strip.png", nrow=len(col_labels), padding=2)
            (self.out_dir / "edit_strip.txt").write_text(f"columns: {', '.join(col_labels)}\n"
                                                         + "".join(f"row: {r}\n" for r in row_labels))


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
    masks = results.get("row_masks")  # the mask each row was composited with (absent in older results)
    cols = [(k, h, hib) for k, h, hib in COLUMNS if any(k in r for r in results["methods"].values())]
    head = [f"{h}{'†' if comp.get(k) is False else ''} {'↑' if hib else '↓'}" for k, h, hib in cols]
    head = ["Mask", *head] if masks else head
    lines = [f"Test set: {results['n_images']} images.", "", "| Method | " + " | ".join(head) + " |",
             "|---" * (len(head) + 1) + "|"]
    for name, row in results["methods"].items():
        cells = [_fmt(row.get(k), k) for k, _, _ in cols]
        lines.append(f"| {name} | " + " | ".join([masks.get(name, "–"), *cells] if masks else cells) + " |")
    if any(v is False for v in comp.values()):
        lines += ["", "† computed with a feature network without its published weights (none were given): useful "
                      "to compare rows of this table, NOT comparable with published numbers."]
    lines += ["", "Mask: the occlusion map each row was composited with (N_3D = our model's own prediction, as at "
                  "test time; ground truth = the test set's map, given to the baselines, to --predictions and to "
                  "ours_gt_mask, as LaFIn and Pluralistic are scored in the paper). Diversity: mean pairwise LPIPS "
                  "among results for one input and prior that differ only in the noise seed; Edit spread: the same "
                  "among the coefficient edits."]
    lines += control_markdown(results["methods"])
    exact = {k: r["psnr_exact"] for k, r in results["methods"].items() if r.get("psnr_exact") is not None}
    if any(exact.values()):
        lines += ["", "Identical output/truth pairs (PSNR capped): "
                  + ", ".join(f"{k} {v}" for k, v in exact.items()) + "."]
    if results.get("conventions"):
        lines += ["", "## Conventions", ""] + [f"- {k}: {v}" for k, v in results["conventions"].items()]
    if results.get("notes"):
        lines += ["", *[f"Note: {n}" for n in results["notes"]]]
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
