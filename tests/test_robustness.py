"""No lost work, no silent bad state: bad files are one line; stops, resumes and NaNs are handled right."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    atomic_save,
    load_inference,
    load_module_state,
    remove_stale_tmp,
    safe_load,
)
from engine.config import ConfigError, load_config
from engine.files import FileReadError, read_torch
from engine.logging import read_jsonl
from engine.loop import StepContext, TrainConfig, Trainer
from engine.run import fail_fast
from tests.helpers import run_script, tiny_data, tiny_train
from tests.test_engine import Outer, run_toy, toy_config

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(r, code):
    """The run ended with `code` and said why in one line, without a traceback."""
    out = r.stdout + r.stderr
    assert r.returncode == code, out
    assert "Traceback" not in out, out
    return out


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def state(step, value=1.0):
    return {"step": step, "modules": {"net": {"w": torch.full((3,), value)}}}


# ------------------------------------------------------------------------------------------------ never lose work
def test_unreadable_checkpoints_never_count_toward_pruning(tmp_path):
    m = CheckpointManager(tmp_path, keep_last=2)
    m.dir.mkdir(parents=True)
    for step in (50, 60):  # unreadable leftovers numbered above the new run's steps
        m.path_for(step).write_bytes(b"")
    for step in (1, 2, 3):
        m.save(state(step), step)
    names = sorted(p.name for p in m.dir.iterdir() if p.is_file())
    assert names == ["ckpt_000000002.pt", "ckpt_000000003.pt", "ckpt_000000050.pt", "ckpt_000000060.pt"]


def test_unreadable_newer_checkpoints_are_moved_to_corrupt(tmp_path):
    m = CheckpointManager(tmp_path, keep_last=5)
    for step in (1, 2, 3):
        m.save(state(step), step)
    m.path_for(3).write_bytes(b"")  # zero bytes
    data = m.path_for(2).read_bytes()
    m.path_for(2).write_bytes(data[: len(data) // 2])  # truncated
    loaded = m.load_latest(quarantine=True)
    assert loaded["step"] == 1 and m.loaded == m.path_for(1)
    assert sorted(p.name for p in (m.dir / "corrupt").iterdir()) == ["ckpt_000000002.pt", "ckpt_000000003.pt"]
    assert [p.name for p in m.list()] == ["ckpt_000000001.pt"]


def test_all_checkpoints_unreadable_stops_and_keeps_them(tmp_path):
    m = CheckpointManager(tmp_path)
    m.dir.mkdir(parents=True)
    m.path_for(16).write_bytes(b"")
    m.path_for(8).write_bytes(b"PK\x03\x04partial")
    with pytest.raises(CheckpointError, match="none of the 2 checkpoints .* is readable.*--restart") as e:
        m.load_latest(quarantine=True)
    assert "\n" not in str(e.value)
    assert len(m.list()) == 2  # left in place: the next run stops here again instead of starting over


@pytest.mark.slow
def test_run_with_only_unreadable_checkpoints_stops_and_restart_starts_over(tmp_path):
    cfg = toy_config(tmp_path, steps=20)
    run_toy(cfg, tmp_path / "r")
    mgr = CheckpointManager(tmp_path / "r")
    for p in mgr.list():
        p.write_bytes(b"")
    out = one_line_error(run_toy(cfg, tmp_path / "r", check=False), 2)
    assert "none of the 2 checkpoints" in out and "--restart" in out and "is empty" in out
    assert len(mgr.list()) == 2
    r = run_toy(cfg, tmp_path / "r", "--restart")
    assert "resumed" not in r.stdout and "restarted_0" in r.stdout
    assert sorted(p.name for p in (mgr.dir / "restarted_0").iterdir()) == [
        "ckpt_000000010.pt", "ckpt_000000020.pt"]
    assert mgr.load_latest()["step"] == 20


@pytest.mark.slow
def test_resume_names_the_file_it_loaded_and_quarantines_the_corrupt_one(tmp_path):
    cfg = toy_config(tmp_path)
    run_toy(cfg, tmp_path / "r", "--kill-at-step", "25", check=False)  # checkpoints 10, 20
    mgr = CheckpointManager(tmp_path / "r")
    mgr.path_for(20).write_bytes(b"")
    # a writer killed mid-write left its temp file (dead pid); a live writer's file is not touched
    stale = mgr.dir / f".ckpt_000000030.pt.tmp{dead_pid()}"
    stale_export = tmp_path / "r" / f".n3d.pt.tmp{dead_pid()}"
    live = mgr.dir / f".ckpt_000000040.pt.tmp{os.getpid()}"
    for p in (stale, stale_export, live):
        p.write_bytes(b"x" * 100)
    r = run_toy(cfg, tmp_path / "r")
    assert f"resumed from {mgr.path_for(10)} (step 10)" in r.stdout
    assert (mgr.dir / "corrupt" / "ckpt_000000020.pt").is_file() and mgr.load_latest()["step"] == 30
    assert not stale.exists() and not stale_export.exists() and live.exists()


def test_remove_stale_tmp_only_removes_dead_writers(tmp_path):
    dead, alive = tmp_path / f".ckpt_1.pt.tmp{dead_pid()}", tmp_path / f".ckpt_2.pt.tmp{os.getpid()}"
    other = tmp_path / "notes.tmp1"
    for p in (dead, alive, other):
        p.write_text("x")
    assert remove_stale_tmp(tmp_path) == [dead]
    assert alive.exists() and other.exists()


# ------------------------------------------------------------------------------------------ an early stop is not done
@pytest.mark.slow
@pytest.mark.parametrize("signame,code", [("sigterm", 143), ("sigint", 130)])
def test_signal_saves_a_checkpoint_and_exits_nonzero(tmp_path, signame, code):
    cfg = toy_config(tmp_path)
    r = run_toy(cfg, tmp_path / "s", f"--{signame}-at-step", "13", "--weights-out", str(tmp_path / "w"),
                check=False)
    out = one_line_error(r, code)
    assert "stopped early at step 13" in out and "nothing exported" in out
    assert CheckpointManager(tmp_path / "s").load_latest()["step"] == 13
    assert not (tmp_path / "w.rank0.pt").exists()  # nothing after run_training ran


def write_yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_stopped_n3d_phase_is_never_the_prior_and_a_rerun_resumes_it(tmp_path, n3d_export):
    n3d_cfg = {"data": tiny_data(), "model": {"backbone": "resnet18"}, "loss": {"w_id": 0.0},
               "train": tiny_train(steps=3, ckpt_every=3, max_minutes=1e-9)}  # stops after its first step
    n3d_yaml = write_yaml(tmp_path / "n3d.yaml", n3d_cfg)
    n3d_dir = tmp_path / "n3d_run"
    inp = write_yaml(tmp_path / "inp.yaml", {
        "data": tiny_data(), "prior": {"n3d_checkpoint": str(n3d_dir / "n3d.pt"), "n3d_config": str(n3d_yaml)},
        "model": {"base_channels": 8, "n_res": 2, "d_base_channels": 8, "d_max_channels": 32},
        "loss": {"w_id": 0.0}, "train": tiny_train(steps=2)})
    out = one_line_error(run_script("train_inpaint.py", "--config", inp, "--run-dir", tmp_path / "inp",
                                    check=False), 124)
    assert "stopped early at step 1" in out
    assert not (n3d_dir / "n3d.pt").exists() and not (tmp_path / "inp" / "checkpoints").exists()
    assert CheckpointManager(n3d_dir).load_latest()["step"] == 1
    # an older version exported the stopped N_3D anyway: that file must not be taken as the prior either
    (n3d_dir / "n3d.pt").write_bytes(Path(n3d_export).read_bytes())
    n3d_cfg["train"]["max_minutes"] = 0.0
    write_yaml(n3d_yaml, n3d_cfg)
    r = run_script("train_inpaint.py", "--config", inp, "--run-dir", tmp_path / "inp")
    assert "did not finish" in r.stdout and f"resumed from {n3d_dir / 'checkpoints' / 'ckpt_000000001.pt'}" in r.stdout
    assert CheckpointManager(n3d_dir).load_latest()["step"] == 3
    assert (tmp_path / "inp" / "inpaint.pt").is_file()


# --------------------------------------------------------------------------------------------------------- NaN safety
@pytest.mark.slow
def test_nonfinite_weights_are_never_checkpointed(tmp_path):
    # step 10's loss is finite but its update turns the weights NaN; step 10 is a checkpoint step
    cfg = toy_config(tmp_path, ckpt_every=5)
    out = one_line_error(run_toy(cfg, tmp_path / "n", "--nan-grad-at-step", "10", check=False), 3)
    mgr = CheckpointManager(tmp_path / "n")
    assert "non-finite weights at step 10" in out
    assert f"the last good checkpoint (verified finite) is {mgr.path_for(5)}" in out
    assert [p.name for p in mgr.list()] == ["ckpt_000000005.pt"]


def test_last_good_checkpoint_is_verified_finite(tmp_path):
    m = CheckpointManager(tmp_path)
    m.save(state(1), 1)
    atomic_save(state(2, float("nan")), m.path_for(2))  # written by an older version
    assert m.last_good() == m.path_for(1)


def test_nonfinite_gradient_step_is_skipped_like_gradscaler():
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ctx = StepContext(TrainConfig(), torch.device("cpu"), skip_nonfinite=True)
    ctx.optimize(net(torch.ones(2, 3)).sum() * float("inf"), opt)
    assert ctx.step_skipped and not opt.state  # Adam never stepped: no moments, weights unchanged
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    ctx.step_skipped = False
    ctx.optimize(net(torch.ones(2, 3)).sum(), opt)
    assert not ctx.step_skipped and not torch.equal(before["weight"], net.weight)


class _NanGradTask:
    """ToyTask whose listed steps have non-finite gradients, with GradScaler-like skipping on (as under AMP)."""

    def __new__(cls, cfg, bad_steps):
        from tests.toy_train import ToyTask

        task = ToyTask(cfg, torch.device("cpu"))
        step = task.train_step

        def train_step(batch, ctx):
            ctx.skip_nonfinite = True
            if ctx.step + 1 in bad_steps:
                task.nan_at = ctx.step + 1
            return step(batch, ctx)

        task.train_step = train_step
        return task


def _toy_trainer(tmp_path, bad_steps, **train):
    from tests.toy_train import ToyConfig, ToyData

    cfg = load_config(ToyConfig, None, [f"train.{k}={v}" for k, v in
                                        {"steps": 10, "batch_size": 8, "log_every": 5, "ckpt_every": 10,
                                         "val_every": 0, "image_every": 0, **train}.items()])
    return Trainer(_NanGradTask(cfg, bad_steps), ToyData(), cfg.train, str(tmp_path))


def test_amp_nonfinite_steps_are_skipped_counted_and_logged(tmp_path):
    trainer = _toy_trainer(tmp_path, {3, 7})
    trainer.run()
    assert trainer.step == 10 and trainer.skipped_steps == 2
    state = CheckpointManager(tmp_path).load_latest()
    assert all(torch.isfinite(v).all() for v in state["modules"]["net"].values())
    logs = [r for r in read_jsonl(tmp_path / "log.jsonl") if r["split"] == "train"]
    assert [r["skipped_steps"] for r in logs] == [1, 2] and all(np.isfinite(r["loss"]) for r in logs)


def test_amp_too_many_skipped_steps_in_a_row_stop(tmp_path):
    from engine.loop import NonFiniteLossError

    trainer = _toy_trainer(tmp_path, set(range(2, 11)), max_skipped_steps=4)
    with pytest.raises(NonFiniteLossError, match="4 steps in a row"):
        trainer.run()


# ---------------------------------------------------------------------------------------------- one reader, one line
def test_torch_reader_names_what_is_wrong(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(100)}, good)
    data = good.read_bytes()
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("hello")
    cases = {"empty.pt": "is empty", "cut.pt": "truncated", "text.pt": "not a torch file"}
    for name, words in cases.items():
        with pytest.raises(FileReadError, match=words) as e:
            read_torch(tmp_path / name, "model.imagenet_weights")
        assert str(e.value).startswith(f"model.imagenet_weights: {tmp_path / name}") and "\n" not in str(e.value)


def test_zero_byte_checkpoint_is_one_line(tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        safe_load(tmp_path / "ckpt.pt")


class Evil:
    """Unpickling this would need code from the file's author."""


def test_weight_files_one_line_errors_and_numpy_metadata(tmp_path):
    from models.weights import load_state_dict_file

    pth = tmp_path / "epoch_20.pth"
    torch.save({"net_recon": {"module.fc.weight": torch.ones(2, 2), "step": np.int64(7)},
                "epoch": np.int64(20), "lr": np.float64(1e-4)}, pth)
    sd = load_state_dict_file(pth, "--deng-checkpoint", inner_key="net_recon")
    assert list(sd) == ["fc.weight"]  # the numpy counter is read safely and left out
    with pytest.raises(ValueError, match=r"--deng-checkpoint: .* has no 'net_recon_x' entry \(keys: epoch, lr, "
                                         r"net_recon\)"):
        load_state_dict_file(pth, "--deng-checkpoint", inner_key="net_recon_x")
    torch.save({"model": Evil()}, tmp_path / "evil.pkl")
    (tmp_path / "empty.pth").write_bytes(b"")
    for name, words in {"evil.pkl": "refused .* pickled objects", "empty.pth": "is empty"}.items():
        with pytest.raises(ValueError, match=words) as e:
            load_state_dict_file(tmp_path / name, "model.arcface_weights")
        assert str(e.value).startswith("model.arcface_weights: ") and "\n" not in str(e.value)
    from metrics.fid import FIDInception

    with pytest.raises(ValueError, match=r"weights\.fid_inception: .*empty\.pth is empty"):
        FIDInception(tmp_path / "empty.pth", key="weights.fid_inception")


def test_empty_weight_file_in_a_config_is_one_line(tmp_path):
    (tmp_path / "resnet.pth").write_bytes(b"")
    cfg = write_yaml(tmp_path / "c.yaml", {"data": tiny_data(), "loss": {"w_id": 0.0}, "train": tiny_train(),
                                           "model": {"backbone": "resnet18",
                                                     "imagenet_weights": str(tmp_path / "resnet.pth")}})
    out = one_line_error(run_script("train_3d.py", "--config", cfg, "--run-dir", tmp_path / "r", check=False), 2)
    assert f"imagenet_weights: {tmp_path / 'resnet.pth'} is empty" in out


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  steps: 10\n  lr: [1e-4\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+:\d+: YAML syntax error") as e:
        load_config(Outer, p)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="--set train.lr=.*YAML syntax error"):
        load_config(Outer, None, ["train.lr=[1"])


def test_yaml_syntax_error_from_the_command_line_is_one_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  steps: 10\n   log_every: 2\n")
    out = one_line_error(run_toy(p, tmp_path / "x", check=False), 2)
    assert "config error:" in out and "bad.yaml:3:" in out


def test_code_bearing_or_wrong_kind_export_is_one_line(tmp_path, inpaint_export, capsys):
    from tasks.recon3d import load_n3d

    torch.save({"modules": {"n3d": Evil()}}, tmp_path / "evil.pt")
    with pytest.raises(SystemExit) as e:
        fail_fast(load_n3d, tmp_path / "evil.pt", torch.device("cpu"), "prior.n3d_checkpoint")
    assert e.value.code == 2
    assert "prior.n3d_checkpoint: refused to load" in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="is an inpainting export .*, expected an N_3D export"):
        load_n3d(inpaint_export, torch.device("cpu"), "prior.n3d_checkpoint")
    with pytest.raises(CheckpointError, match="is an N_3D export"):
        load_inference(_n3d_like(tmp_path), expect="g_ema")


def _n3d_like(tmp_path):
    p = tmp_path / "n3d_like.pt"
    atomic_save({"modules": {"n3d": {"w": torch.ones(1)}}, "config": {}, "meta": {}}, p)
    return p


@pytest.mark.slow
def test_remove_mask_with_code_bearing_checkpoint_is_one_line(tmp_path):
    cv2.imwrite(str(tmp_path / "face.png"), np.zeros((64, 64, 3), np.uint8))
    torch.save({"modules": {"g_ema": Evil()}}, tmp_path / "evil.pt")
    r = run_script("scripts/remove_mask.py", "--image", tmp_path / "face.png", "--checkpoint", tmp_path / "evil.pt",
                   "--out", tmp_path / "out", check=False)
    out = one_line_error(r, 2)
    assert "--checkpoint: refused to load" in out


def test_shape_mismatch_names_the_first_differing_keys():
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Linear(16, 1))
    other = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Linear(32, 1)).state_dict()
    with pytest.raises(CheckpointError, match=r"shape mismatches .* first: 0\.weight \(32, 4\) vs \(16, 4\) here"):
        load_module_state(net, other, "ckpt.pt module 'net'")
    with pytest.raises(CheckpointError, match="1 keys missing from the file, first: 1.bias"):
        load_module_state(net, {k: v for k, v in net.state_dict().items() if k != "1.bias"}, "x")


@pytest.mark.slow
def test_changed_model_config_on_resume_is_named_and_more_steps_allowed(tmp_path):
    cfg = toy_config(tmp_path, steps=10)
    run_toy(cfg, tmp_path / "r")
    out = one_line_error(run_toy(cfg, tmp_path / "r", "--set", "model.hidden=32", check=False), 2)
    assert "model.hidden: 16 -> 32" in out and "--restart" in out
    r = run_toy(cfg, tmp_path / "r", "--set", "train.steps=20")
    assert "resumed from" in r.stdout and CheckpointManager(tmp_path / "r").load_latest()["step"] == 20
    # without RUN/config.yaml the checkpoint itself is checked: one line naming the first differing key
    (tmp_path / "r" / "config.yaml").unlink()
    out = one_line_error(run_toy(cfg, tmp_path / "r", "--set", "model.hidden=32", "--set", "train.steps=30",
                                 check=False), 2)
    assert "module 'net': does not fit" in out and "first: 0.weight (16, 4) vs (32, 4) here" in out


@pytest.mark.slow
def test_disk_full_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    cfg = toy_config(tmp_path)
    out = one_line_error(run_toy(cfg, tmp_path / "d", "--disk-full-at-step", "20", check=False), 2)
    assert "no space left on device" in out
    mgr = CheckpointManager(tmp_path / "d")
    assert [p.name for p in mgr.dir.iterdir()] == ["ckpt_000000010.pt"]  # no temp file left either
    assert mgr.load_latest()["step"] == 10


def test_unreadable_landmark_and_coefficient_arrays_are_one_line(tmp_path):
    from data.io import read_array
    from data.landmarks import load_landmarks_file

    (tmp_path / "a.npy").write_bytes(b"")
    with pytest.raises(ValueError, match="landmark file .*a.npy.*empty"):
        load_landmarks_file(tmp_path / "a.npy")
    np.save(tmp_path / "c.npy", np.zeros(257, np.float32))
    data = (tmp_path / "c.npy").read_bytes()
    (tmp_path / "c.npy").write_bytes(data[:100])
    with pytest.raises(ValueError, match="truncated"):
        read_array(tmp_path / "c.npy")


# ----------------------------------------------------------------------------------------------- what the user is told
@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_skipped_image_total_on_console_and_in_log(tmp_path, workers):
    cfg = toy_config(tmp_path, steps=20, num_workers=workers)
    r = run_toy(cfg, tmp_path / "k", "--bad-every", "8")  # items 0, 8, ..., 56 of 64
    assert "step 10: 8 training images skipped so far" in r.stdout
    totals = [(e["step"], e["skipped_images"]) for e in read_jsonl(tmp_path / "k" / "log.jsonl")
              if e["split"] == "data"]
    assert totals == [(10, 8), (20, 8)]


def test_damaged_jpeg_data_is_detected(tmp_path, capfd):
    from data.io import CorruptImageError, read_image_uint8

    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    data = bytearray(buf.tobytes())
    (tmp_path / "good.jpg").write_bytes(bytes(data))
    mid = len(data) // 2
    data[mid: mid + 40] = b"\xab" * 40  # damaged scan data; the end-of-image marker is intact
    assert data[-2:] == b"\xff\xd9"
    (tmp_path / "bad.jpg").write_bytes(bytes(data))
    assert read_image_uint8(tmp_path / "good.jpg").shape == (64, 64, 3)
    with pytest.raises(CorruptImageError, match="damaged JPEG data: Corrupt JPEG data"):
        read_image_uint8(tmp_path / "bad.jpg")
    print("after", file=sys.stderr, flush=True)
    assert capfd.readouterr().err.strip() == "after"  # libjpeg's warning was taken in, stderr still works


def test_damaged_jpeg_is_skipped_and_counted_by_a_folder_dataset(tmp_path):
    from data.landmarks import save_landmarks_file
    from data.pairs import build_dataset

    rng = np.random.default_rng(1)
    (tmp_path / "img").mkdir()
    for name in ("a", "b"):
        cv2.imwrite(str(tmp_path / "img" / f"{name}.jpg"), (rng.random((64, 64, 3)) * 255).astype(np.uint8))
        save_landmarks_file(tmp_path / "lm" / f"{name}.txt", rng.random((68, 2)) * 40 + 10)
    data = bytearray((tmp_path / "img" / "a.jpg").read_bytes())
    data[len(data) // 2: len(data) // 2 + 40] = b"\xab" * 40
    (tmp_path / "img" / "a.jpg").write_bytes(bytes(data))
    ds = build_dataset({"kind": "folder", "root": str(tmp_path / "img"), "landmarks_dir": str(tmp_path / "lm")},
                       image_size=32)
    assert ds[0]["name"] == "b" and ds.skipped == 1


def test_fail_fast_turns_only_user_errors_into_one_line(capsys):
    """Config errors and missing / unreadable files: `error:` and exit 2; a programming error keeps its traceback."""
    for exc in (ConfigError("data.train[0].num: must be > 0"), FileNotFoundError("x.root: folder not found: y"),
                FileReadError("prior.n3d_checkpoint: z is empty")):
        def build(e=exc):
            raise e

        with pytest.raises(SystemExit) as e:
            fail_fast(build)
        assert e.value.code == 2 and capsys.readouterr().out == f"error: {exc.args[0]}\n"
    for bug in (KeyError("coeffs"), ValueError("too many values to unpack"), TypeError("x")):
        def broken(e=bug):
            raise e

        with pytest.raises(type(bug)):
            fail_fast(broken)
    assert fail_fast(lambda a, b=0: a + b, 2, b=3) == 5


def test_resume_accepts_a_key_added_since_with_its_default(tmp_path):
    """A run saved before a config key existed resumes when the key keeps its default; a real change still stops."""
    from engine.config import dump_yaml, to_dict
    from engine.run import check_resumable
    from tests.toy_train import ToyConfig

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt_000000010.pt").write_bytes(b"")
    saved = to_dict(ToyConfig())
    del saved["model"]["dropout"]  # the key did not exist when the run started
    (tmp_path / "config.yaml").write_text(dump_yaml(saved))
    check_resumable(ToyConfig(), tmp_path)  # the default: no conflict
    changed = ToyConfig()
    changed.model.dropout = 0.5
    with pytest.raises(SystemExit):
        check_resumable(changed, tmp_path)
