"""`make demo`: the whole pipeline on the embedded synthetic default, end to end, on a CPU in minutes.

Stages (each a normal command a researcher would run; outputs under runs/):
  1. assets    synthetic morphable model samples (scripts/render_samples.py) and a masked-pair preview
               (scripts/make_masks.py --preview)
  2. N_3D      python train_3d.py --config configs/3d/demo.yaml                 -> runs/3d_demo/
  3. N_G/N_D   python train_inpaint.py --config configs/inpaint/demo.yaml       -> runs/inpaint_demo/
               and the no_3d_prior ablation at the same budget (configs/inpaint/demo_no_3d_prior.yaml),
               side by side on one core each
  4. evaluate  python evaluate.py --config configs/eval/demo.yaml               -> runs/eval_demo/
  5. photo     python scripts/remove_mask.py on a held-out synthetic face       -> runs/demo/remove_mask/
               and its --animate clip (the web editor's animation: the mouth opens and closes behind the mask)
  6. report    runs/demo/report.md (tables + images)

Re-running resumes: finished trainings are not redone (delete runs/ to start over).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "demo"
# the steps run this checkout's code, whichever checkout the venv has installed
PYTHONPATH = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
ANIMATION = ["--animate", "keep>open_mouth>keep", "--frames", "24", "--fps", "12"]  # as docs/editor_animation.gif


def stage(title: str, cmd: list[str], timings: dict) -> None:
    print(f"\n=== {title}: {' '.join(cmd)}", flush=True)
    t = time.time()
    # The stages run one at a time, so spinning OpenMP threads starve nobody and save each op's wake-up: ACTIVE
    # trains 60 N_3D steps in 35 s against 54 s with the Makefile's PASSIVE (the numbers are the same either way).
    env = {**os.environ, "PYTHONPATH": PYTHONPATH,
           "OMP_WAIT_POLICY": os.environ.get("DEMO_OMP_WAIT_POLICY", "ACTIVE")}
    r = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env)
    timings[title] = time.time() - t
    if r.returncode != 0:
        raise SystemExit(f"demo: stage '{title}' failed (exit {r.returncode}); see the output above")
    print(f"=== {title}: done in {timings[title]:.0f} s", flush=True)


def stages_side_by_side(titles_cmds: list[tuple[str, list[str]]], timings: dict) -> None:
    """Independent stages at once, one core each (OMP_NUM_THREADS=1): on 2 cores two 1-thread trainings take about
    the time of one 2-thread training (a small network's ops do not parallelise well). Their output goes to
    runs/demo/logs/<n>.log; a failure prints that log's end."""
    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": PYTHONPATH,
           "OMP_WAIT_POLICY": os.environ.get("DEMO_OMP_WAIT_POLICY", "ACTIVE")}
    t = time.time()
    procs = []
    for title, cmd in titles_cmds:
        log = logs / f"{cmd[-1].replace('/', '_').removesuffix('.yaml')}.log"
        print(f"\n=== {title} (side by side; log {log.relative_to(ROOT)}): {' '.join(cmd)}", flush=True)
        with open(log, "w") as fh:
            procs.append((title, log, subprocess.Popen([sys.executable, *cmd], cwd=ROOT, env=env, stdout=fh,
                                                       stderr=subprocess.STDOUT)))
    failed = []
    for title, log, proc in procs:
        if proc.wait() != 0:
            failed.append((title, log, proc.returncode))
    elapsed = time.time() - t
    timings[" + ".join(t for t, _ in titles_cmds) + " (side by side)"] = elapsed
    for title, log, code in failed:
        print(log.read_text()[-3000:], flush=True)
        raise SystemExit(f"demo: stage '{title}' failed (exit {code}); its log: {log}")
    print(f"=== {', '.join(t for t, _ in titles_cmds)}: done in {elapsed:.0f} s (side by side)", flush=True)


def held_out_photo() -> tuple[Path, Path]:
    """A masked synthetic face that no training or test stage has seen, as a PNG + landmark file."""
    from data.io import write_image
    from data.landmarks import save_landmarks_file
    from data.pairs import MaskedPairs
    from data.synth import MaskedPairSynthesizer
    from data.synthetic import SyntheticFaces

    faces = SyntheticFaces(1, 128, offset=3_000_000)
    item = MaskedPairs(faces, MaskedPairSynthesizer(), seed=99, fixed=True)[0]
    folder = OUT / "photo"
    folder.mkdir(parents=True, exist_ok=True)
    write_image(folder / "held_out_face.png", item["masked_image"])
    write_image(folder / "held_out_face_truth.png", item["image"])
    save_landmarks_file(folder / "held_out_face.txt", item["landmarks"])
    return folder / "held_out_face.png", folder / "held_out_face.txt"


def last_metrics(run_dir: Path) -> dict:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").is_file() else []
    return json.loads(lines[-1]) if lines else {}


def strip_labels(path: Path) -> list[str]:
    """The edit strip's column and row labels as report lines."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    cols = [x[len("columns: "):] for x in lines if x.startswith("columns: ")]
    rows = [x[len("row: "):].split(": ", 1)[-1] for x in lines if x.startswith("row: ")]
    kinds = list(dict.fromkeys(rows))
    return [f"Columns: {cols[0] if cols else '?'}. Rows, for each of {len(rows) // max(1, len(kinds))} held-out "
            f"faces: {'; '.join(kinds)}. N_G fills the occlusion map only: outside it the input is kept, so a "
            "whole-face edit (brighter) shows inside the hole alone."]


def write_report(timings: dict) -> Path:
    runs = ROOT / "runs"
    m3d, minp = last_metrics(runs / "3d_demo"), last_metrics(runs / "inpaint_demo")
    results_md = (runs / "eval_demo" / "results.md").read_text()
    img = OUT / "img"
    img.mkdir(parents=True, exist_ok=True)
    copies = {"samples.png": OUT / "assets" / "samples.png", "masks_preview.png": OUT / "assets" / "preview.png",
              "eval_grid.png": runs / "eval_demo" / "grid.png", "edit_strip.png": runs / "eval_demo" / "edit_strip.png",
              "remove_mask_grid.png": OUT / "remove_mask" / "held_out_face_grid.png",
              "animation.gif": OUT / "remove_mask" / "held_out_face_animation.gif"}
    for name, src in copies.items():
        if src.is_file():
            shutil.copyfile(src, img / name)
    rows = (runs / "eval_demo" / "grid_rows.txt").read_text().split() if (runs / "eval_demo" / "grid_rows.txt") \
        .is_file() else []
    lines = [
        "# Demo report (embedded synthetic default, CPU)", "",
        "Everything here was trained and measured on synthetic faces rendered from the embedded procedural "
        "morphable model, with procedural masks, at 64 px, in minutes on a CPU. Feature networks without their "
        "published weights (ArcFace, Inception for FID, AlexNet for LPIPS) run with random weights: those columns "
        "(marked †) compare the rows of this table only and are NOT comparable with the paper's numbers.", "",
        "## Timings", "", "| stage | seconds |", "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in timings.items()],
        f"| total | {sum(timings.values()):.0f} |", "",
        "## N_3D (last validation, held-out synthetic faces)", "",
        f"mask IoU {m3d.get('mask_iou', float('nan')):.3f}; landmark NME {m3d.get('lm_nme', float('nan')):.4f} "
        f"(mean face: {m3d.get('lm_nme_meanface', float('nan')):.4f}) at step {m3d.get('step')}", "",
        "## N_G / N_D (last validation)", "",
        f"L1 in the hole {minp.get('l1_hole', float('nan')):.4f} "
        f"(Telea {minp.get('telea_l1_hole', float('nan')):.4f}); "
        f"PSNR {minp.get('psnr', float('nan')):.2f} dB (Telea {minp.get('telea_psnr', float('nan')):.2f} dB) at step "
        f"{minp.get('step')}", "",
        "## Evaluation (held-out test faces; evaluate.py)", "", results_md.replace("\n## ", "\n### "), "",
        "![evaluation grid](img/eval_grid.png)", "", f"Grid rows: {', '.join(rows)}.", "",
        "## Edits against their exact ground truth (evaluate.py's edit_strip.png)", "",
        "![edit strip](img/edit_strip.png)", "", *strip_labels(runs / "eval_demo" / "edit_strip.txt"), "",
        "## Mask removal with edits (scripts/remove_mask.py on a held-out face)", "",
        "![remove_mask](img/remove_mask_grid.png)", "",
        "Columns: input, then keep, neutral, smile, open_mouth (N_3D's coefficients with the edit applied).", "",
        "The same face animated (`remove_mask.py " + " ".join(ANIMATION) + "`, the web editor's animation: the "
        "coefficients eased keep -> open_mouth -> keep, the same noise in every frame):", "",
        "![animation](img/animation.gif)", "",
        "## Assets", "", "Synthetic faces (identity, expression, pose, lighting; landmarks drawn):", "",
        "![samples](img/samples.png)", "", "Masked pairs from the procedural mask library:", "",
        "![masks](img/masks_preview.png)", "",
    ]
    report = OUT / "report.md"
    report.write_text("\n".join(lines))
    return report


def main() -> int:
    t0 = time.time()
    OUT.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    assets = OUT / "assets"
    stage("assets: face samples", ["scripts/render_samples.py", "--out", str(assets / "samples.png"), "--n", "8",
                                   "--size", "128"], timings)
    stage("assets: mask preview", ["scripts/make_masks.py", "--shapes", "16", "--textures", "16", "--seed", "0",
                                   "--out", str(assets / "masks"), "--preview"], timings)
    preview = assets / "masks" / "preview.png"
    if preview.is_file():
        shutil.copyfile(preview, assets / "preview.png")
    stage("N_3D training", ["train_3d.py", "--config", "configs/3d/demo.yaml"], timings)
    stages_side_by_side([("N_G/N_D training", ["train_inpaint.py", "--config", "configs/inpaint/demo.yaml"]),
                         ("N_G/N_D ablation: no 3D prior",
                          ["train_inpaint.py", "--config", "configs/inpaint/demo_no_3d_prior.yaml"])], timings)
    stage("evaluation", ["evaluate.py", "--config", "configs/eval/demo.yaml"], timings)
    photo, lms = held_out_photo()
    stage("remove_mask", ["scripts/remove_mask.py", "--image", str(photo), "--landmarks", str(lms), "--align",
                          "meanface", "--variations", "4", "--out", str(OUT / "remove_mask")], timings)
    stage("animation", ["scripts/remove_mask.py", "--image", str(photo), "--landmarks", str(lms), "--align",
                        "meanface", *ANIMATION, "--out", str(OUT / "remove_mask" / "held_out_face_animation.gif")],
          timings)
    report = write_report(timings)
    print(f"\ndemo finished in {time.time() - t0:.0f} s: report at {report.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
