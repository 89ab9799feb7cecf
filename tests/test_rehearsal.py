"""Dress rehearsal: the README's "Reproducing the paper" recipe, command by command, through the command lines, on
format-exact stand-ins of every asset (tests/standins.py) at a tiny size, with loader workers on.

The commands are read from the README's fenced recipe block (one place: the README and this test cannot drift
apart); the only changes are the tiny-size options appended to each (``TINY``: later options override earlier
ones, ``--set`` overrides config keys), ``python`` -> this interpreter and ``torchrun`` -> ``python -m
torch.distributed.run``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dlib")
pytest.importorskip("skimage")

ROOT = Path(__file__).resolve().parents[1]

_TRAIN = ["train.device=cpu", "train.amp=false", "train.channels_last=false", "train.num_workers=2",
          "train.batch_size=2", "train.steps=4", "train.log_every=1", "train.image_every=2", "train.val_every=2",
          "train.ckpt_every=2", "data.image_size=64"]
# per script: options appended to the README's command (tiny sizes; the CPU)
TINY = {
    "prepare_images.py": ["--workers", "2"],
    "detect_landmarks.py": ["--workers", "2"],
    "make_masks.py": ["--shapes", "6", "--textures", "6", "--quiet"],
    "extract_coeffs.py": ["--batch-size", "3", "--set", "train.device=cpu", "--set", "data.image_size=64"],
    "train_3d.py": [a for kv in _TRAIN for a in ("--set", kv)],
    "train_inpaint.py": [a for kv in _TRAIN + ["model.base_channels=8", "model.n_res=1", "model.d_base_channels=8",
                                               "model.d_max_channels=16"] for a in ("--set", kv)],
    "evaluate.py": [a for kv in ["device=cpu", "test.image_size=64", "extra_images=2", "batch_size=2",
                                 "diversity_seeds=2"] for a in ("--set", kv)],
}


def recipe_commands(readme: Path = ROOT / "README.md") -> list[list[str]]:
    """The commands of the first fenced block after the "Reproducing the paper" heading: continuation lines
    joined, comments dropped, split as a shell would."""
    text = readme.read_text()
    section = text[text.index("## Reproducing the paper"):]
    block = re.search(r"^```[^\n]*\n(.*?)^```", section, re.S | re.M).group(1)
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            commands.append(shlex.split(line))
    return commands


def script_of(cmd: list[str]) -> str:
    return next(Path(a).name for a in cmd if a.endswith(".py"))


def runnable(cmd: list[str]) -> list[str]:
    """The README's command as this test runs it: this interpreter, torchrun as a module, the tiny options."""
    if cmd[0] == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", *cmd[1:]]
    elif cmd[0] == "python":
        cmd = [sys.executable, *cmd[1:]]
    return cmd + TINY.get(script_of(cmd), [])


def test_recipe_block_is_found_and_every_step_has_its_tiny_options():
    cmds = recipe_commands()
    scripts = [script_of(c) for c in cmds]
    assert scripts[-1] == "evaluate.py" and "extract_coeffs.py" in scripts and "train_3d.py" in scripts
    assert set(scripts) <= set(TINY), sorted(set(scripts) - set(TINY))


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """A working folder with the repository's configs and entry points linked in and every asset stand-in."""
    from tests.standins import write_standins

    root = tmp_path_factory.mktemp("rehearsal")
    for name in ("configs", "scripts", "train_3d.py", "train_inpaint.py", "evaluate.py"):
        (root / name).symlink_to(ROOT / name)
    facts = write_standins(root)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return root, facts, env


def _run(cmd, root, env, timeout=900):
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{shlex.join(cmd)}\n-- stdout --\n{r.stdout[-3000:]}\n-- stderr --\n{r.stderr[-5000:]}"
    return r


def test_extract_coeffs_as_the_readme_says(stage):
    """The README's extract_coeffs command fills both configured folders, every image; a partial folder is resumed
    with each missing file written for its own image."""
    root, facts, env = stage
    cmds = recipe_commands()
    at = next(k for k, c in enumerate(cmds) if script_of(c) == "extract_coeffs.py" and "train" in c)
    for before in cmds[:at]:  # the steps it builds on (CelebAMask-HQ's landmarks)
        _run(runnable(before), root, env)
    cmd = runnable(cmds[at])
    _run(cmd, root, env)
    ffhq, celeba = root / "data" / "ffhq" / "coeffs", root / "data" / "CelebAMask-HQ" / "coeffs"
    assert sorted(p.stem for p in ffhq.glob("*.npy")) == [f"{i:05d}" for i in facts["ffhq_train"]]
    assert sorted(p.stem for p in celeba.glob("*.npy")) == sorted(str(i) for i in facts["celeba"])
    first = {p.name: p.read_bytes() for p in ffhq.glob("*.npy")}
    for name in ("00001.npy", "01000.npy", "01001.npy"):  # a partial folder: resumed, not substituted
        (ffhq / name).unlink()
    r = _run(cmd, root, env)
    assert "already done" in r.stdout
    assert {p.name: p.read_bytes() for p in ffhq.glob("*.npy")} == first
    # an unreadable image: every other file is written, the run fails naming it
    bad = root / "data" / "ffhq" / "images1024x1024" / "00000" / "00002.png"
    good = bad.read_bytes()
    try:
        bad.write_bytes(good[:100])
        (ffhq / "00002.npy").unlink()
        (ffhq / "00003.npy").unlink()
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 1 and "1 images could not be read" in r.stderr and "00002 (" in r.stderr, r.stderr
        assert (ffhq / "00003.npy").read_bytes() == first["00003.npy"] and not (ffhq / "00002.npy").exists()
    finally:
        bad.write_bytes(good)
        _run(cmd, root, env)


def test_make_masks_refuses_the_source_package(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_masks.py"), "--shapes", "1", "--textures", "1",
                        "--out", str(ROOT / "data" / "masks")], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and "is a Python package folder" in r.stderr
    assert not (ROOT / "data" / "masks" / "shapes").exists()


def test_the_recipe_runs_in_order(stage):
    root, facts, env = stage
    for cmd in recipe_commands():
        _run(runnable(cmd), root, env)
    # what each step leaves behind
    assert len(list((root / "data" / "ffhq256").rglob("*.png"))) == len(facts["ffhq_train"]) + len(facts["ffhq_test"])
    lms = sorted((root / "data" / "CelebAMask-HQ" / "landmarks").glob("*.npy"))
    assert lms and np.load(lms[0]).shape == (68, 2)
    assert (root / "assets" / "masks" / "contact_sheet.png").is_file()
    assert len(list((root / "data" / "ffhq" / "coeffs").glob("*.npy"))) == len(facts["ffhq_train"]) + \
        len(facts["ffhq_test"])
    assert (root / "runs" / "3d_paper" / "n3d.pt").is_file()
    assert (root / "runs" / "inpaint_paper" / "inpaint.pt").is_file()
    res = json.loads((root / "runs" / "eval_ffhq1000" / "results.json").read_text())
    assert res["n_images"] == len(facts["ffhq_test"]) and "ours" in res["methods"]
