"""Masked-pair synthesis speed: pairs per second on one CPU core at 256 x 256.

    python scripts/bench_synth.py [--quick] [--size 256]

Images are already decoded tensors with landmarks given (posed canonical faces with yaw/roll/mouth variation); the
library cache is filled before timing, so this measures the steady state a training data loader sees.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.masks.canonical import posed_landmarks  # noqa: E402
from data.masks.library import MaskLibrary  # noqa: E402
from data.synth import MaskedPairSynthesizer  # noqa: E402


def run(quick: bool = False, size: int = 256, library: MaskLibrary | None = None) -> dict:
    """Time ``MaskedPairSynthesizer.synth`` -> {"pairs_per_s", "ms_per_pair", "library_load_s", ...}."""
    cv_threads, threads = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    try:
        n_shapes, n_tex = (60, 60) if quick else (900, 800)
        t0 = time.perf_counter()
        lib = library if library is not None else MaskLibrary.procedural(0, n_shapes, n_tex).preload()
        load_s = time.perf_counter() - t0
        synth = MaskedPairSynthesizer(lib)
        rng = np.random.default_rng(0)
        n_faces = 16
        faces = []
        for _ in range(n_faces):
            lm = posed_landmarks(yaw=rng.uniform(-30, 30), roll=rng.uniform(-15, 15),
                                 mouth_open=rng.uniform(0, 0.2), size=size)
            img = torch.from_numpy(rng.uniform(0.2, 0.8, (3, size, size)).astype(np.float32))
            faces.append((img, torch.from_numpy(lm)))
        for k in range(20):  # warm-up
            synth.synth(*faces[k % n_faces], k)
        # rounds of different pairs: the median is the figure, the best shows what a quiet core does (single runs
        # on a shared VM vary by 10-30 %)
        rounds, per_round = (2, 100) if quick else (4, 500)
        times = []
        for r in range(rounds):
            t0 = time.perf_counter()
            for k in range(per_round):
                synth.synth(*faces[k % n_faces], 1000 + r * per_round + k)
            times.append((time.perf_counter() - t0) / per_round)
    finally:
        cv2.setNumThreads(cv_threads)
        torch.set_num_threads(threads)
    med, best = float(np.median(times)), min(times)
    res = {"pairs_per_s": round(1 / med, 1), "ms_per_pair": round(med * 1000, 3),
           "best_pairs_per_s": round(1 / best, 1), "size": size, "pairs": rounds * per_round, "rounds": rounds,
           "library": repr(lib), "library_load_s": round(load_s, 2), "threads": 1}
    print(f"bench_synth: {res['pairs_per_s']} pairs/s per core at {size}x{size} ({res['ms_per_pair']} ms/pair, "
          f"median of {rounds} rounds; best {res['best_pairs_per_s']}; library {lib!r} loaded in "
          f"{res['library_load_s']} s)")
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args(argv)
    res = run(args.quick, args.size)
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
