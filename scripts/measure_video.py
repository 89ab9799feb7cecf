"""Measure the video path on a synthetic video with exact truth: temporal smoothing against independent per-frame
processing with the same model (flicker, hole L1, PSNR, SSIM, throughput with its split, resident memory).

    python -m scripts.measure_video --checkpoint runs/inpaint_demo/inpaint.pt --video talking --frames 96 \
        --size 256 --out runs/video_measure [--json runs/video_measure/scores.json]

The video (data.synthetic_video: ``talking`` or ``photo``) is written as H.264 (crf 12), run through
tasks.video.VideoRemover twice (temporal, then ``--baseline`` per-frame) and the decoded outputs scored against the
truth (tasks.video_eval). Both runs start from the first frame's true landmarks (as ``--landmarks`` would give);
the detector's cost is not in the loop.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/inpaint_demo/inpaint.pt")
    p.add_argument("--video", default="talking", choices=["talking", "photo"])
    p.add_argument("--frames", type=int, default=96)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--align", default="meanface", help="crop framing (tasks.photo.ALIGN_CHOICES)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fuse", type=float, default=None, help="the temporal run's fusion weight (tasks.fusion; "
                                                                "default 0.3, 1 = none)")
    p.add_argument("--no-baseline", action="store_true", help="skip the per-frame baseline run")
    p.add_argument("--out", default="runs/video_measure")
    p.add_argument("--json", default=None, help="write the figures here (default OUT/scores.json)")
    p.add_argument("--gif", default=None, help="also write a before/after GIF here (masked | temporal | per-frame | "
                                                "truth, the first 48 frames)")
    args = p.parse_args(argv)

    from data.synthetic_video import get_synthetic_video
    from tasks.photo import load_remover, photo_framing
    from tasks.video import VideoOptions
    from tasks.video_eval import (
        before_after_gif,
        flicker_references,
        rss_slope,
        run_video,
        score_video,
        write_masked_video,
    )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    synth = get_synthetic_video(args.video, n_frames=args.frames, size=args.size, seed=args.seed)
    src = write_masked_video(synth, out / f"{args.video}_masked.mp4")
    remover = load_remover(args.checkpoint)
    framing = photo_framing(remover, args.align)
    first = synth.frame(0).landmarks
    rows = {}
    for name, temporal in [("temporal", True)] + ([] if args.no_baseline else [("per_frame", False)]):
        opts = VideoOptions(seed=args.seed, first_landmarks=first, temporal=temporal,
                            **({} if args.fuse is None else {"fuse": args.fuse}))
        dst = out / f"{args.video}_{name}.mp4"
        run = run_video(remover, src, dst, opts, n_frames=args.frames, framing=framing)
        scores = score_video(dst, synth)
        rows[name] = {**scores, "fps": run["fps"], "split_ms": run["split_ms"], "rss_mb_end": run["rss"][-1][1],
                      "rss_mb_per_frame": rss_slope(run["rss"]), "tracks": run["stats"].tracks,
                      "frames_without_face": run["stats"].frames_without_face}
        print(f"{name:10s} flicker {scores['flicker']:.4f}  hole L1 {scores['l1_hole']:.4f}  PSNR {scores['psnr']:.2f}"
              f"  SSIM {scores['ssim']:.4f}  flow flicker {scores['flow_flicker']:.4f} (floor "
              f"{scores['flow_floor']:.4f})  {run['fps']:.2f} frames/s  "
              + " ".join(f"{k} {v:.0f}" for k, v in run["split_ms"].items()) + " ms/frame", flush=True)
    if "per_frame" in rows:
        t, b = rows["temporal"], rows["per_frame"]
        rows["ratios"] = {"flicker": t["flicker"] / b["flicker"], "l1_hole": t["l1_hole"] / b["l1_hole"],
                          "flow_flicker": t["flow_flicker"] / b["flow_flicker"]}
        print("temporal / per-frame: " + ", ".join(f"{k} {v:.3f}" for k, v in rows["ratios"].items()))
    rows["references"] = flicker_references(synth, out)
    print("flicker of references (tasks.video_eval.flicker_references): "
          + ", ".join(f"{k} {v:.4f}" for k, v in rows["references"].items()))
    Path(args.json or out / "scores.json").write_text(json.dumps(rows, indent=1))
    if args.gif:
        names = [n for n in ("temporal", "per_frame") if n in rows]
        before_after_gif(args.gif, synth, [out / f"{args.video}_{n}.mp4" for n in names])
        print(f"wrote {args.gif} (masked | {' | '.join(names)} | truth)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
