"""evaluate.py --predictions through its command line: a missing prediction is one line up front, only the
predictions are scored unless --rescore, and every stage shows progress."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalcli")
    cfg = tmp / "eval.yaml"
    cfg.write_text(json.dumps({"test": {"image_size": 32, "faces": [{"kind": "synthetic", "num": 5,
                                                                     "offset": 2_000_000}]},
                               "metrics": ["l1", "psnr"], "baselines": ["telea"], "batch_size": 2}))
    r = _run(ROOT / "scripts" / "export_testset.py", "--config", cfg, "--out", tmp / "ts", cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert "export" in r.stderr and "5/5" in r.stderr  # a progress bar
    return tmp, cfg


def test_missing_prediction_is_one_line_up_front(exported, tmp_path):
    tmp, cfg = exported
    pred = tmp_path / "pred"
    shutil.copytree(tmp / "ts" / "gt", pred)
    names = json.loads((tmp / "ts" / "index.json").read_text())["names"]
    (pred / f"{names[3]}.png").unlink()
    r = _run(ROOT / "evaluate.py", "--config", cfg, "--predictions", pred, "--run-dir", tmp_path / "run", cwd=tmp)
    assert r.returncode == 2
    err = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert err == [f"error: --predictions: 1 of 5 test items have no image in {pred}, first: {names[3]}.png "
                   "(the names of export_testset.py's masked/ folder)"]
    assert not (tmp_path / "run" / "results.json").exists()


def test_predictions_alone_unless_rescore(exported, tmp_path):
    tmp, cfg = exported
    pred = tmp / "ts" / "gt"
    r = _run(ROOT / "evaluate.py", "--config", cfg, "--predictions", pred, "--run-dir", tmp_path / "a", cwd=tmp)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert set(res["methods"]) == {"predictions"} and res["methods"]["predictions"]["l1"] == 0
    assert "predictions: metrics" in r.stderr  # the scoring after the per-image pass has its own bar
    r = _run(ROOT / "evaluate.py", "--config", cfg, "--predictions", pred, "--rescore", "--run-dir", tmp_path / "b",
             cwd=tmp)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert set(res["methods"]) == {"predictions", "telea"}
