"""Controllability of a trained N_G on held-out SyntheticFaces: edit fidelity and edit transfer per edit
(ground-truth and N_3D prior) and prior reliance (definitions: metrics/control.py).

    python scripts/measure_control.py --checkpoint runs/inpaint_demo/inpaint.pt --n 32 [--edits open_mouth,smile]
        [--unseen masked,lower_face_id] [--ceiling 32]

--unseen adds priors that are the ground truth with coefficients the masked input does not show set to the mean
(tasks.control.unseen_groups; `masked` = what a mask hides, the visible-GT prior of evaluate.py): what this N_G
gives with an N_3D that knows all it can. --ceiling N adds the information ceiling (no N_G involved): the
fidelity of the per-pixel median over N draws of the hidden coefficients (tasks.control.SyntheticControl).

Same definitions, masks (seed 2024) and held-out faces (offset 2000000) as `evaluate.py --config
configs/eval/demo.yaml`, whose first `extra_images` faces it re-measures with its own count.
"""

import argparse
import json
import sys
from pathlib import Path


def measure(checkpoint: str, n: int = 32, edits=("open_mouth", "smile", "neutral", "pucker", "brighter"),
            n3d_checkpoint: str | None = None, offset: int = 2_000_000, batch_size: int = 16,
            device: str = "cpu", image_size: int | None = None, unseen=(), ceiling_draws: int = 0) -> dict[str, float]:
    """Controllability of RUN/inpaint.pt on `n` held-out SyntheticFaces (the demo's test offset and mask seed),
    at the generator's size unless `image_size` is given. -> SyntheticControl.compute()."""
    from engine.config import build_dataclass
    from tasks.common import iterate
    from tasks.control import SyntheticControl, synthetic_faces_of
    from tasks.evaluation import EvalExperiment, as_exported, build_testset
    from tasks.removal import MaskRemover

    remover = MaskRemover.from_checkpoints(checkpoint, n3d_checkpoint, device, key="--checkpoint")
    cfg = build_dataclass(EvalExperiment, {"test": {
        "image_size": image_size or remover.image_size, "mask_library": None,
        "faces": [{"kind": "synthetic", "num": int(n), "offset": int(offset)}]}})
    testset = build_testset(cfg, remover.model)
    control = SyntheticControl(synthetic_faces_of(testset), edits, unseen=unseen, ceiling_draws=ceiling_draws)
    for bi, batch in enumerate(iterate(testset, batch_size, device=device)):
        control.update(remover, as_exported(batch), seed=bi)  # the inputs evaluate.py gives the model
    return control.compute()


def main(argv=None) -> int:
    from engine.run import fail_fast

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="RUN/inpaint.pt")
    p.add_argument("--n3d-checkpoint", default=None, help="default: the N_3D recorded in the inpainting export")
    p.add_argument("--n", type=int, default=32, help="held-out faces")
    p.add_argument("--edits", default="open_mouth,smile,neutral,pucker,brighter", help="comma-separated presets")
    p.add_argument("--offset", type=int, default=2_000_000, help="first held-out SyntheticFaces item")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--unseen", default="", help="comma-separated unseen groups (tasks.control.unseen_groups) "
                   "for priors without them; 'masked' = what a mask hides, 'all' = every group")
    p.add_argument("--ceiling", type=int, default=0, help="draws of the hidden coefficients for the information "
                   "ceiling (0 = not measured)")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    if args.n <= 0:
        print(f"error: --n must be > 0, got {args.n}")
        return 2
    edits = [e.strip() for e in args.edits.split(",") if e.strip()]
    unseen = [u.strip() for u in args.unseen.split(",") if u.strip()]
    from tasks.control import unseen_groups

    bad = [u for u in unseen if u not in unseen_groups()]
    if bad:
        print(f"error: --unseen: unknown group(s) {', '.join(bad)}; valid: {', '.join(unseen_groups())}")
        return 2
    res = fail_fast(measure, args.checkpoint, args.n, edits, args.n3d_checkpoint, args.offset, args.batch_size,
                    args.device, None, unseen, args.ceiling)
    print(f"{args.checkpoint} on {args.n} held-out SyntheticFaces")
    print(f"prior reliance {res['prior_reliance']:.3f}  (L1 hole: GT prior {res['l1_hole_gt_prior']:.4f}, "
          f"grey I_3D {res['l1_hole_grey_prior']:.4f}; N_3D prior {res['l1_hole_n3d_prior']:.4f})")
    print(f"{'':<14} {'edit fidelity':^21}   {'edit transfer':^21}")
    print(f"{'edit':<14} {'GT prior':>10} {'N_3D prior':>10}   {'GT prior':>10} {'N_3D prior':>10}")
    for e in dict.fromkeys(e for e in edits if e != "keep"):
        print(f"{e:<14} " + " ".join(f"{res[f'edit_fidelity_{p}/{e}']:>10.3f}" for p in ("gt", "n3d")) + "   "
              + " ".join(f"{res[f'edit_transfer_{p}/{e}']:>10.3f}" for p in ("gt", "n3d")))
    if args.ceiling > 0:
        print(f"{'ceiling':<14} " + " ".join(f"{res[f'edit_fidelity_ceiling/{e}']:>10.3f}"
                                             for e in dict.fromkeys(edits) if e != "keep")
              + "   (information ceiling, no N_G: per-pixel median over the hidden coefficients)")
    if unseen:
        print("\npriors without what the input does not show (ground truth with the group at the mean)")
        print(f"{'prior':<26} {'L1 hole':>8} " + " ".join(f"{e:>12}" for e in dict.fromkeys(edits) if e != "keep"))
        for u in dict.fromkeys(unseen):
            p = f"gt_no_{u}"
            print(f"{p:<26} {res[f'l1_hole_{p}_prior']:>8.4f} " + " ".join(
                f"{res[f'edit_fidelity_{p}/{e}']:>12.3f}" for e in dict.fromkeys(edits) if e != "keep"))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
