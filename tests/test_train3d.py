"""N_3D training task and train_3d.py: losses, overfitting, dry-run, torchrun, exact resume."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.data import default_collate

from engine.config import ConfigError, build_dataclass, to_dict
from engine.loop import StepContext
from tasks.recon3d import Recon3DExperiment, Recon3DTask, load_n3d
from tests.helpers import free_port, script_env, tiny_data, tiny_train

ROOT = Path(__file__).resolve().parents[1]


def make_cfg(**train):
    return build_dataclass(Recon3DExperiment, {"data": tiny_data(), "model": {"backbone": "resnet18"},
                                               "loss": {"w_id": 0.0}, "train": tiny_train(**train)})


def test_step_logs_every_term_and_overfits_one_batch():
    torch.manual_seed(0)
    cfg = make_cfg(lr=1e-3)
    task = Recon3DTask(cfg, torch.device("cpu"))
    batch = default_collate([task.train_set()[i] for i in range(4)])
    ctx = StepContext(cfg.train, torch.device("cpu"))
    first = task.train_step(batch, ctx)
    assert {"loss", "bce", "bce_aux", "coef", "photo", "lm"} <= set(first)
    for _ in range(40):
        last = task.train_step(batch, ctx)
    assert last["loss"] < 0.5 * first["loss"]
    assert last["bce"] < first["bce"] and last["coef"] < first["coef"]


def test_validation_metrics_and_export_roundtrip(tmp_path):
    task = Recon3DTask(make_cfg(), torch.device("cpu"))
    val = task.validate(0)
    assert set(val) == {"mask_iou", "lm_nme", "lm_nme_meanface"}
    # an untrained network predicts exactly the mean face (zero-initialised head)
    assert val["lm_nme"] == pytest.approx(val["lm_nme_meanface"], rel=1e-5)
    path = task.export(tmp_path / "n3d.pt")
    net, morph_cfg, size = load_n3d(path, torch.device("cpu"))
    assert size == 32 and morph_cfg.bfm_path is None
    x = torch.rand(2, 3, 32, 32)
    task.net.eval()
    assert torch.equal(net(x)["coeffs"], task.net(x)["coeffs"])


def test_head_scale_multiplies_each_group_and_survives_export(tmp_path):
    """model.head_scale: the head's outputs times a per-group factor; same state-dict keys as the raw head (so
    Deng's and the release's files load), and the export rebuilds the scale."""
    from renderer.morphable import CoeffLayout

    torch.manual_seed(0)
    cfg = build_dataclass(Recon3DExperiment, {"data": tiny_data(), "model": {
        "backbone": "resnet18", "head_scale": {"trans": 0.05, "gamma": 0.1}}, "loss": {"w_id": 0.0},
        "train": tiny_train()})
    task = Recon3DTask(cfg, torch.device("cpu"))
    raw = build_dataclass(Recon3DExperiment, {**to_dict(cfg), "model": {"backbone": "resnet18"}})
    raw_net = Recon3DTask(raw, torch.device("cpu")).net
    assert task.net.state_dict().keys() == raw_net.state_dict().keys()
    torch.nn.init.normal_(task.net.coeff_head.weight, std=0.1)
    torch.nn.init.normal_(task.net.coeff_head.bias, std=0.1)
    raw_net.load_state_dict(task.net.state_dict())
    task.net.eval(), raw_net.eval()
    x = torch.rand(2, 3, 32, 32)
    scaled, unscaled = task.net(x)["coeffs"], raw_net(x)["coeffs"]
    lay = CoeffLayout()
    factor = {"trans": 0.05, "gamma": 0.1, "id": 1.0, "exp": 1.0, "tex": 1.0, "angle": 1.0}
    for name, f in factor.items():
        assert torch.allclose(lay.split(scaled)[name], lay.split(unscaled)[name] * f, atol=1e-6), name
    net, _, _ = load_n3d(task.export(tmp_path / "n3d.pt"), torch.device("cpu"))
    assert torch.equal(net(x)["coeffs"], scaled)
    with pytest.raises(ConfigError, match="model.head_scale: unknown coefficient group.*light"):
        build_dataclass(Recon3DExperiment, {"model": {"head_scale": {"light": 0.1}}, "loss": {"w_id": 0.0}})
    with pytest.raises(ConfigError, match="model.head_scale: factors must be > 0"):
        build_dataclass(Recon3DExperiment, {"model": {"head_scale": {"trans": 0.0}}, "loss": {"w_id": 0.0}})


def test_identity_loss_needs_weights():
    with pytest.raises(Exception, match="arcface_weights"):
        build_dataclass(Recon3DExperiment, {"loss": {"w_id": 0.1}})


def write_cfg(tmp_path, **train):
    cfg = {"data": tiny_data(), "model": {"backbone": "resnet18"}, "loss": {"w_id": 0.0}, "train": tiny_train(**train)}
    path = tmp_path / "tiny3d.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(args, check=True, torchrun=False):
    env = script_env()
    cmd = [sys.executable, str(ROOT / "train_3d.py"), *args]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               *cmd[1:]]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=ROOT)
    if check and r.returncode != 0:
        raise AssertionError(f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def test_dry_run_prints_resolved_config():
    r = run(["--config", "configs/3d/demo.yaml", "--set", "train.steps=7", "--dry-run"])
    cfg = yaml.safe_load(r.stdout)
    assert cfg["train"]["steps"] == 7 and cfg["model"]["backbone"] == "resnet18" and cfg["data"]["image_size"] == 64
    r = run(["--config", "configs/3d/paper.yaml", "--dry-run"], check=False)
    assert r.returncode == 2 and "data.train[0].root" in r.stderr and yaml.safe_load(r.stdout)["train"]["steps"]


def final_weights(run_dir):
    from engine.checkpoint import CheckpointManager

    return CheckpointManager(run_dir).load_latest()["modules"]["n3d"]


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted(tmp_path):
    import signal
    import time

    from engine.checkpoint import CheckpointManager

    cfg = write_cfg(tmp_path, steps=10, ckpt_every=2)
    run(["--config", str(cfg), "--run-dir", str(tmp_path / "full")])
    env = script_env()
    cmd = [sys.executable, str(ROOT / "train_3d.py"), "--config", str(cfg), "--run-dir", str(tmp_path / "cut")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mgr = CheckpointManager(tmp_path / "cut")
    deadline = time.time() + 240
    while mgr.latest() is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # killed right after its first checkpoint
    proc.wait()
    assert mgr.load_latest()["step"] < 10
    r = run(["--config", str(cfg), "--run-dir", str(tmp_path / "cut")])
    assert "resumed from" in r.stdout
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "cut")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "cut" / "n3d.pt").is_file()


@pytest.mark.slow
def test_torchrun_two_ranks_hold_identical_weights(tmp_path):
    """Images (rank 0 only) and validation on, at logging steps as in the paper configs: neither may run a collective
    on one rank (the ranks deadlock)."""
    cfg = write_cfg(tmp_path, steps=4, ckpt_every=4, batch_size=2, image_every=2, val_every=2)
    r = run(["--config", str(cfg), "--run-dir", str(tmp_path / "ddp")], torchrun=True)
    assert "all 2 ranks hold identical weights" in r.stdout
    from engine.logging import read_jsonl

    assert [m["step"] for m in read_jsonl(tmp_path / "ddp" / "metrics.jsonl")] == [2, 4]
    assert list((tmp_path / "ddp" / "tb").glob("events.out.tfevents.*"))
    assert final_weights(tmp_path / "ddp") is not None


@pytest.mark.slow
def test_workers_cross_epochs_after_validations_with_opencv_used_first(tmp_path):
    """Loader workers are forked anew each epoch; once the main process has used OpenCV's thread pool (here first
    thing, then validation's warps), a worker that calls into OpenCV's pool hangs forever. Three epochs of 4 steps,
    validations at steps 4 and 8, images at 5: the run must finish (a hang fails at the timeout)."""
    cfg = write_cfg(tmp_path, steps=10, num_workers=2, val_every=4, image_every=5, ckpt_every=5)
    warm_cv2 = ("import cv2, numpy, runpy, sys; a = numpy.random.rand(512, 512, 3).astype('float32'); "
                "[cv2.warpAffine(a, numpy.float32([[0.9, 0.1, 1], [0, 0.9, 2]]), (512, 512)) for _ in range(3)]; "
                "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    env = script_env()
    r = subprocess.run([sys.executable, "-c", warm_cv2, str(ROOT / "train_3d.py"), "--config", str(cfg),
                        "--run-dir", str(tmp_path / "w")], capture_output=True, text=True, env=env, timeout=240,
                       cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "step 8:" in r.stdout and (tmp_path / "w" / "n3d.pt").is_file()
    from engine.logging import read_jsonl

    assert [m["step"] for m in read_jsonl(tmp_path / "w" / "metrics.jsonl")] == [4, 8, 10]
