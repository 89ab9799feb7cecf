"""Masked-pair synthesis speed: pairs per second on one CPU core at 256 x 256.

    python scripts/bench_synth.py [--quick] [--size 256]

Images are already decoded tensors with landmarks given (posed canonical faces with yaw/roll/mouth variation); the
library cache is filled before timing, so this measures the steady state a training data loader sees.
"""

from __future__ import annotations

import argparse
import json

from tasks.speed import synthesis_speed


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args(argv)
    res = synthesis_speed(args.quick, args.size)
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
