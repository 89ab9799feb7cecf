"""Reporting of evaluation results: results.json (JSON-safe) and results.md (the paper's Table 2 layout plus our
columns, the controllability section, the conventions, scores by mask-area bin and the published Table 2).

Everything here works on the results dict that ``tasks.evaluation.Evaluator`` collects: method -> {metric key:
value}, plus "comparable" (metric key -> whether published feature weights were used), "row_masks", "notes",
"conventions" and "bins". No model, no metric object.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

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


def conventions(psnr_max_db: float, ssim_convention: str, diversity_seeds: int, extra_images: int,
                edits: list[str]) -> dict[str, str]:
    """How each number was computed, one line per key (results.json "conventions", results.md's section)."""
    from metrics.image import SSIM_CONVENTIONS

    return {"quantization": "test items and every output rounded to 8 bits, half up (as PNG), before any metric",
            "l1": L1_CONVENTION,
            "psnr": f"per image, data range 1, capped at {psnr_max_db:g} dB (identical pairs are infinite; "
                    "psnr_exact counts them)",
            "ssim": f"{ssim_convention}: {SSIM_CONVENTIONS[ssim_convention][0]}",
            "diversity": f"mean pairwise LPIPS among {diversity_seeds} noise seeds for the same input and "
                         f"prior, first {extra_images} images",
            "edit_spread": f"mean pairwise LPIPS among the {len(edits)} edits {edits}, one noise seed"}


def write_results(out_dir: str | Path, results: dict) -> None:
    """OUT/results.json (sorted keys) and OUT/results.md; ``results`` already JSON-safe (``json_safe``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    (out_dir / "results.md").write_text(results_markdown(results))


def json_safe(obj):
    """JSON-safe: NaN / inf -> None."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.floating | np.integer):
        return json_safe(obj.item())
    return obj


def _fmt(v, key: str) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if key in ("psnr", "fid") else f"{v:.4f}"


_EDIT_COLUMNS = {  # key prefix -> header of the per-edit table
    "edit_fidelity_gt": "fidelity, GT prior ↑", "edit_fidelity_gt_no_masked": "fidelity, visible-GT prior ↑",
    "edit_fidelity_n3d": "fidelity, N_3D prior ↑", "edit_fidelity_ceiling": "fidelity ceiling ↑",
    "edit_transfer_gt": "transfer, GT prior ↑", "edit_transfer_n3d": "transfer, N_3D prior ↑",
    "lm_edit_fidelity": "fidelity, dlib mouth ↑",
}
_RELIANCE_COLUMNS = {"prior_reliance": "prior reliance ↑", "l1_hole_gt_prior": "L1 hole, GT prior ↓",
                     "l1_hole_grey_prior": "L1 hole, grey I_3D ↓",
                     "l1_hole_gt_no_masked_prior": "L1 hole, visible-GT prior ↓",
                     "l1_hole_n3d_prior": "L1 hole, N_3D prior ↓"}


def _table(head: list[str], rows: list[list]) -> list[str]:
    cell = lambda v: v if isinstance(v, str) else "–" if v is None else f"{v:.3f}"  # noqa: E731
    return ["| " + " | ".join(head) + " |", "|---" * len(head) + "|",
            *("| " + " | ".join(cell(v) for v in r) + " |" for r in rows), ""]


def control_markdown(row_by_method: dict[str, dict]) -> list[str]:
    """The controllability section of results.md: prior reliance per method, then one row per (method, edit)."""
    edits = {name: list(dict.fromkeys(k.split("/")[1] for k in r if k.split("/")[0] in _EDIT_COLUMNS))
             for name, r in row_by_method.items()}
    edits = {name: e for name, e in edits.items() if e}
    if not edits:
        return []
    lines = ["", "## Controllability", ""]
    reliance = [n for n in edits if "prior_reliance" in row_by_method[n]]
    if reliance:
        rcols = [k for k in _RELIANCE_COLUMNS if any(k in row_by_method[n] for n in reliance)]
        lines += _table(["Method", *(_RELIANCE_COLUMNS[k] for k in rcols)],
                        [[n, *(row_by_method[n].get(k) for k in rcols)] for n in reliance])
    cols = [c for c in _EDIT_COLUMNS if any(f"{c}/{e}" in row_by_method[n] for n, es in edits.items() for e in es)]
    lines += _table(["Method", "edit", *(_EDIT_COLUMNS[c] for c in cols)],
                    [[n, e, *(row_by_method[n].get(f"{c}/{e}") for c in cols)] for n, es in edits.items() for e in es])
    if reliance:
        lines += ["Edit fidelity of edit e = 1 - L1_hole(out_e, truth_e) / L1_hole(out_keep, truth_e), truth_e = the "
                  "edited ground truth rendered exactly (1 = exact, 0 = edit ignored); edit transfer = 1 - "
                  "L1_hole(out_e - out_keep, truth_e - truth_keep) / L1_hole(0, truth_e - truth_keep) (the change "
                  "alone, whatever the reconstruction error). GT prior: ground-truth coefficients and occlusion map; "
                  "visible-GT prior: the same with what the mask hides (lower-face identity, lip and cheek colour, "
                  "the expression) at the mean, the most any N_3D can know; N_3D prior: N_3D's. Fidelity ceiling "
                  "(no N_G involved): the per-pixel median of the renders over draws of the hidden coefficients, "
                  "everything else exact, what a method that sees only the masked face can expect to reach. Prior "
                  "reliance = L1_hole with a constant grey I_3D / L1_hole with the ground-truth I_3D (1 = the prior "
                  "is ignored)."]
    else:
        lines += ["Edit fidelity from landmarks = 1 - sum|d_det - d_req| / sum|d_req| over the 20 mouth landmarks "
                  "(d = edited - unedited; det = dlib on the outputs, req = the requested 3D faces; N_3D prior): "
                  "1 = exact, 0 = edit ignored."]
    return lines

def results_markdown(results: dict) -> str:
    """Table 2's layout plus the extra columns, one row per method; non-comparable metrics marked with †."""
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
