"""Where the time goes: data, rendering, N_3D and N_G/N_D training, inference; FLOPs and projected hours.

    python scripts/benchmark.py [--device cpu|cuda] [--quick] [--batch N] [--max-batch] [--workers N]
                                [--compile [MODE]] [--only SECTION ...] [--out benchmarks.json]

Sections (each also a function):
  synth       masked-pair synthesis, pairs/s per CPU core at 256 px (image decoded, landmarks given)
  loader      DataLoader throughput of masked pairs (SyntheticFaces, 256 px) with 0 and N workers, library cold/warm
  renderer    ms per 224 px face, BFM-sized mesh, batch 8, each available backend
  n3d         N_3D training step at the paper's settings (ResNet-50, 224 px, batch 8, renderer + ArcFace)
  inpaint     N_G + N_D training step (256 px, batch 8, base 64, 6 residual blocks, R1, frozen N_3D prior)
  inference   mask removal (N_3D + render + N_G) images/s at 256 px
  editor      one slider change of the web editor at 256 px (render, N_G, paste-back, encoding), demo and
              paper-size N_G
  evaluation  evaluate.py's loop (test-set masking, removal, every metric, FID features, N_3D metrics) images/s,
              its fixed part (FID statistics, edits) timed apart, and the projected time of a 1000-image test set
  detectors   the photo detectors (dlib, dlib_cnn, masked) on a 4000 x 3000 phone-sized photo (scikit-image's
              astronaut enlarged): seconds and peak memory, each in a fresh process (models loaded included)
--max-batch adds n3d_max / inpaint_max (CUDA only): the training sections again at the largest batch that fits,
doubling from 16 until the GPU runs out of memory (or 1024: the synthetic batch itself is built on the CPU).
FLOPs per training image are counted from the executed operators' shapes (torch.utils.flop_counter), and divided
by a GPU's bf16 rate to give the floor next to the measured time. Figures go to BENCHMARKS.md by hand, with machine,
date and commit. Networks have random weights (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch

from engine.loop import COMPILE_MODES
from tasks import benchmarks as B


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda or cuda:N (default: cuda when there is one)")
    p.add_argument("--quick", action="store_true", help="fewer repeats (a CPU run then takes a few minutes)")
    p.add_argument("--only", nargs="*", default=None, help="sections to run (default all)")
    p.add_argument("--batch", type=int, default=None,
                   help="training/inference batch (default: the paper's 8 on CUDA, 2 on CPU to keep it short)")
    p.add_argument("--max-batch", action="store_true",
                   help="CUDA: also run the training sections at the largest batch that fits (n3d_max, inpaint_max)")
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1),
                   help="loader workers to measure besides 0 (default: the cores, at most 16)")
    p.add_argument("--compile", nargs="?", const="default", default=None, choices=COMPILE_MODES, metavar="MODE",
                   help="train.compile for the two training sections, with torch.compile's MODE (default: "
                        "default; reduce-overhead adds CUDA graphs)")
    p.add_argument("--out", default="benchmarks.json")
    args = p.parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        p.error(f"--device: not a device: {args.device!r} (cpu, cuda or cuda:N)")
    if device.type not in ("cpu", "cuda"):
        p.error(f"--device: {args.device!r} is not benchmarked here (cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device on this B.machine")
    if args.max_batch and device.type != "cuda":
        p.error("--max-batch needs --device cuda (on a CPU, running out of memory means swapping, not an error)")
    if args.workers < 1:
        p.error(f"--workers must be >= 1 (got {args.workers})")
    batch = args.batch or (B.PAPER_BATCH if device.type == "cuda" else 2)
    sections = {
        "synth": lambda: B.bench_synth(args.quick),
        "loader": lambda: B.bench_loader(args.quick, args.workers),
        "renderer": lambda: B.bench_renderer(device),
        "n3d": lambda: B.bench_train("n3d", device, args.quick, batch, args.compile),
        "inpaint": lambda: B.bench_train("inpaint", device, args.quick, batch, args.compile),
        "inference": lambda: B.bench_inference(device, args.quick, batch),
        "evaluation": lambda: B.bench_evaluation(device, args.quick, batch),
        "detectors": B.bench_detectors,
        "editor": lambda: B.bench_editor(device, args.quick),
        "video": lambda: B.bench_video(args.quick),
    }
    if args.max_batch:
        for stage in ("n3d", "inpaint"):
            sections[f"{stage}_max"] = (lambda st: lambda: B.largest_batch(
                lambda b: B.bench_train(st, device, True, b, args.compile)))(stage)
    unknown = sorted(set(args.only or ()) - set(sections))
    if unknown:
        p.error(f"--only: unknown section(s) {', '.join(unknown)}; valid: {', '.join(sections)}")
    results = {"B.machine": B.machine(), "device": str(device)}
    out, failed = Path(args.out), []
    for name, fn in sections.items():
        if args.only and name not in args.only:
            continue
        print(f"[{name}] ...", flush=True)
        t = time.perf_counter()
        try:
            results[name] = fn()
        except Exception as e:  # one broken section (a backend, a compile mode) must not cost the others' figures
            results[name] = {"error": f"{type(e).__name__}: {e}"}
            failed.append(name)
        print(f"[{name}] {json.dumps(results[name], default=float)} ({time.perf_counter() - t:.0f} s)", flush=True)
        results["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        out.write_text(json.dumps(results, indent=2, default=float) + "\n")  # a run cut off keeps what it measured
    print_table(results)
    if failed:
        print(f"benchmark: section(s) failed: {', '.join(failed)} (errors in {out})", file=sys.stderr)
    return 1 if failed else 0


def print_table(results: dict) -> None:
    rows = [(f"{k} FAILED", v["error"]) for k, v in results.items() if isinstance(v, dict) and "error" in v]
    r = {k: v for k, v in results.items() if isinstance(v, dict) and "error" not in v}
    if "synth" in r:
        rows.append(("pair synthesis, 256 px", f"{r['synth'].get('pairs_per_s', 0):.0f} pairs/s/core"))
    if "loader" in r:
        rows += [(f"loader {k}", f"{v:.0f} items/s") for k, v in r["loader"].items()]
    if "renderer" in r:
        rr = r["renderer"]
        for name, b in rr.get("backends", {}).items():
            text = b.get("skipped") or (f"{b['forward_ms_per_face']:.1f} ms/face forward, "
                                        f"{b['forward_backward_ms_per_face']:.1f} ms/face forward+backward")
            rows.append((f"renderer {name} ({rr.get('triangles')} tris, {rr.get('image_size')} px)", text))
    for stage in ("n3d", "inpaint", "n3d_max", "inpaint_max"):
        if stage in r:
            s = r[stage]
            flops = f"{s['gflops_per_image']:.1f} GFLOP/img, " if "gflops_per_image" in s else "compiled, "
            mem = f", peak {s['peak_mem_gib']:.1f} GiB" if "peak_mem_gib" in s else ""
            rows.append((f"{stage} training (batch {s['batch']})", f"{s['images_per_s']:.2f} img/s, {flops}"
                         f"paper schedule {s['paper_hours']:.1f} h{mem}"))
    if "inference" in r:
        rows.append(("inference 256 px", f"{r['inference']['images_per_s']:.2f} img/s"))
    if "evaluation" in r:
        e = r["evaluation"]
        rows.append(("evaluation 256 px", f"{e['images_per_s']:.2f} img/s + {e['fixed_s']:.0f} s fixed (FID, edits); "
                                          f"{B.PAPER_TEST_IMAGES} test images: {e['paper_test_set_min']:.1f} min"))
    for name, d in r.get("detectors", {}).items():
        text = d.get("error") or (f"{d['seconds']:.1f} s ({d['cpu_seconds']:.1f} s CPU), peak "
                                  f"{d['peak_rss_gib']:.2f} GiB, {d['faces']} face(s)")
        rows.append((f"detector {name} on 4000 x 3000", text))
    if "editor" in r:
        for name in B.EDITOR_MODELS:
            e = r["editor"].get(name)
            if e:
                rows.append((f"editor slider change, {name} model ({e['model_size']} px), "
                             f"{r['editor']['image_size']} px photo",
                             f"{e['ms']:.0f} ms on 1 thread (render {e['render_ms']:.0f}, "
                             f"N_G {e['ng_ms']:.0f}, paste-back "
                             f"{e['paste_ms']:.0f}, PNG encoding {e['encode_ms']:.0f}); {e['wall_ms']:.0f} ms wall"))
    width = max(len(a) for a, _ in rows) if rows else 10
    print("\n".join(f"{a:<{width}}  {b}" for a, b in rows))


if __name__ == "__main__":
    sys.exit(main())
