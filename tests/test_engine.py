"""The shared engine on a toy task: configs, checkpoints, resume, torchrun, non-finite losses."""

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from engine.checkpoint import CheckpointError, CheckpointManager, atomic_save, safe_load
from engine.config import ConfigError, load_config, path_field, validate_paths
from engine.dist import ResumableSampler
from engine.logging import read_jsonl
from engine.loop import TrainConfig, lr_factor
from tests.helpers import free_port, script_env

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "toy_train.py"


@dataclass
class Inner:
    width: int = 4
    scale: float = 1.0
    name: str = "a"
    flag: bool = False
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    weights: str | None = path_field(None, kind="file")


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    train: TrainConfig = field(default_factory=TrainConfig)


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_key_names_key_and_valid_keys(tmp_path):
    p = write(tmp_path / "c.yaml", {"inner": {"widht": 3}})
    with pytest.raises(ConfigError) as e:
        load_config(Outer, p)
    msg = str(e.value)
    assert "inner.widht" in msg and "width" in msg and "\n" not in msg


def test_wrong_type_names_key(tmp_path):
    p = write(tmp_path / "c.yaml", {"train": {"lr": "fast"}})
    with pytest.raises(ConfigError, match=r"train\.lr: expected float"):
        load_config(Outer, p)
    with pytest.raises(ConfigError, match=r"inner\.width: expected int"):
        load_config(Outer, write(tmp_path / "d.yaml", {"inner": {"width": [1]}}))


def test_overrides_convert_types(tmp_path):
    p = write(tmp_path / "c.yaml", {})
    cfg = load_config(Outer, p, ["train.lr=1e-5", "inner.width=7", "inner.flag=true", "inner.sizes=[3,4]",
                                 "inner.scale=2", "train.betas=[0.5,0.9]"])
    assert cfg.train.lr == pytest.approx(1e-5) and isinstance(cfg.train.lr, float)
    assert cfg.inner.width == 7 and cfg.inner.flag is True and cfg.inner.sizes == [3, 4]
    assert isinstance(cfg.inner.scale, float) and cfg.train.betas == (0.5, 0.9)
    with pytest.raises(ConfigError, match="inner.nope"):
        load_config(Outer, p, ["inner.nope=1"])


def test_base_inheritance(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "paper.yaml", {"inner": {"width": 64, "name": "paper"}, "train": {"steps": 500000}})
    write(tmp_path / "sub" / "demo.yaml", {"base": "../paper.yaml", "train": {"steps": 10}})
    cfg = load_config(Outer, tmp_path / "sub" / "demo.yaml")
    assert cfg.inner.width == 64 and cfg.inner.name == "paper" and cfg.train.steps == 10


@dataclass
class WithList:
    items: list[Inner] = field(default_factory=list)


def test_missing_path_in_a_list_names_key(tmp_path):
    cfg = load_config(WithList, write(tmp_path / "c.yaml", {"items": [{}, {"weights": str(tmp_path / "x.pth")}]}))
    with pytest.raises(ConfigError, match=r"items\[1\]\.weights: file not found"):
        validate_paths(cfg)


def test_missing_path_names_key(tmp_path):
    cfg = load_config(Outer, write(tmp_path / "c.yaml", {"inner": {"weights": str(tmp_path / "none.pth")}}))
    with pytest.raises(ConfigError, match=r"inner\.weights: file not found"):
        validate_paths(cfg)


def test_lr_schedule_drops_at_midpoint():
    cfg = TrainConfig(steps=100)
    assert lr_factor(49, cfg) == 1.0 and lr_factor(50, cfg) == pytest.approx(0.1)


def test_sampler_shards_cover_dataset_and_resume_mid_epoch():
    shards = [list(ResumableSampler(10, seed=3, rank=r, world=2)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(10))
    s = ResumableSampler(10, seed=3, rank=0, world=1)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=4)
    assert list(s) == full[4:]


class Evil:
    """A non-tensor object: unpickling it could run code, so weights_only loading must refuse it."""


def test_pickled_checkpoint_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        safe_load(path)
    atomic_save({"w": torch.ones(2), "step": 3}, tmp_path / "ok.pt")
    assert safe_load(tmp_path / "ok.pt")["step"] == 3


def test_keep_last(tmp_path):
    m = CheckpointManager(tmp_path, keep_last=2)
    for s in (1, 2, 3):
        m.save({"step": s}, s)
    assert [int(p.stem.split("_")[1]) for p in m.list()] == [2, 3]


# ------------------------------------------------------------------------------------------ subprocess runs
def toy_config(tmp_path, steps=30, **train):
    cfg = {"train": {"steps": steps, "batch_size": 8, "ckpt_every": 10, "log_every": 5, "val_every": 10,
                     "deterministic": True, "image_every": 0, **train}}
    return write(tmp_path / "toy.yaml", cfg)


def run_toy(cfg_path, run_dir, *extra, torchrun=False, check=True, new_session=False):
    env = script_env()
    cmd = [sys.executable, str(TOY), "--config", str(cfg_path), "--run-dir", str(run_dir), *extra]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               f"--master_port={free_port()}", *cmd[1:]]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, start_new_session=new_session)
    if check and r.returncode != 0:
        raise AssertionError(f"exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def weights(prefix, rank=0):
    return torch.load(f"{prefix}.rank{rank}.pt", weights_only=True)


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_killed_runs_resume_to_identical_weights(tmp_path):
    cfg = toy_config(tmp_path)
    run_toy(cfg, tmp_path / "full", "--weights-out", str(tmp_path / "full_w"))
    # killed mid-training (after step 17: last checkpoint is step 10)
    r = run_toy(cfg, tmp_path / "a", "--kill-at-step", "17", check=False)
    assert r.returncode != 0
    run_toy(cfg, tmp_path / "a", "--weights-out", str(tmp_path / "a_w"))
    assert_same(weights(tmp_path / "full_w"), weights(tmp_path / "a_w"))
    # killed in the middle of writing the step-20 checkpoint: step 10 stays readable
    r = run_toy(cfg, tmp_path / "b", "--kill-in-ckpt-write", "20", check=False)
    assert r.returncode != 0
    mgr = CheckpointManager(tmp_path / "b")
    assert mgr.latest().name == "ckpt_000000010.pt" and mgr.load_latest()["step"] == 10
    run_toy(cfg, tmp_path / "b", "--weights-out", str(tmp_path / "b_w"))
    assert_same(weights(tmp_path / "full_w"), weights(tmp_path / "b_w"))
    steps = [m["step"] for m in read_jsonl(tmp_path / "full" / "metrics.jsonl")]
    assert steps == [10, 20, 30]


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_matches(tmp_path):
    cfg = toy_config(tmp_path)
    run_toy(cfg, tmp_path / "full", "--weights-out", str(tmp_path / "full_w"))
    r = run_toy(cfg, tmp_path / "t", "--sigterm-at-step", "13", check=False)
    assert r.returncode == 143 and "stopped early at step 13" in r.stdout
    assert CheckpointManager(tmp_path / "t").load_latest()["step"] == 13
    run_toy(cfg, tmp_path / "t", "--weights-out", str(tmp_path / "t_w"))
    assert_same(weights(tmp_path / "full_w"), weights(tmp_path / "t_w"))


@pytest.mark.slow
def test_torchrun_two_ranks_identical(tmp_path):
    cfg = toy_config(tmp_path, steps=6, ckpt_every=6)
    r = run_toy(cfg, tmp_path / "ddp", "--weights-out", str(tmp_path / "w"), torchrun=True)
    assert_same(weights(tmp_path / "w", 0), weights(tmp_path / "w", 1))
    assert r.stdout.count("training data: 64 of 67 toy items usable (3 left out); using those") == 1  # rank 0


@pytest.mark.slow
def test_nonfinite_loss_stops_cleanly(tmp_path):
    cfg = toy_config(tmp_path)
    r = run_toy(cfg, tmp_path / "nan", "--nan-at-step", "14", check=False)
    assert r.returncode == 3
    assert "non-finite loss" in r.stdout + r.stderr and "Traceback" not in r.stderr
    state = CheckpointManager(tmp_path / "nan").load_latest()
    assert state["step"] == 10
    assert all(torch.isfinite(v).all() for v in state["modules"]["net"].values())


def test_cli_errors_and_dry_run(tmp_path):
    cfg = toy_config(tmp_path)
    r = run_toy(cfg, tmp_path / "x", "--set", "train.stepz=3", check=False)
    assert r.returncode == 2 and "train.stepz" in r.stderr and "Traceback" not in r.stderr
    r = run_toy(cfg, tmp_path / "x", "--set", "train.steps=77", "--dry-run")
    assert yaml.safe_load(r.stdout)["train"]["steps"] == 77
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signame,code", [("sigterm", 143), ("sigint", 130)])
def test_signal_to_the_process_group_stops_a_run_with_workers_cleanly(tmp_path, signame, code):
    """A terminal's Ctrl-C and a scheduler's SIGTERM reach the loader workers too: the run still stops at a step
    boundary with a checkpoint and one line, and resumes to the weights of an uninterrupted run."""
    cfg = toy_config(tmp_path, num_workers=2)
    run_toy(cfg, tmp_path / "full", "--weights-out", str(tmp_path / "full_w"))
    r = run_toy(cfg, tmp_path / "s", f"--{signame}-at-step", "13", "--signal-group", check=False, new_session=True)
    assert r.returncode == code, r.stderr[-2000:]
    assert "stopped early at step 13" in r.stdout and "Traceback" not in r.stderr and "Error" not in r.stderr
    assert CheckpointManager(tmp_path / "s").load_latest()["step"] == 13
    run_toy(cfg, tmp_path / "s", "--weights-out", str(tmp_path / "s_w"))
    assert_same(weights(tmp_path / "full_w"), weights(tmp_path / "s_w"))


def test_more_workers_than_cpus_is_said_once(tmp_path, monkeypatch, capsys):
    """torch warns at every epoch's loader; the trainer says it once, before training."""
    import warnings

    import torch.utils.data.dataloader as dl_mod

    from engine.loop import Trainer
    from tests.toy_train import ToyConfig, ToyData, ToyTask

    monkeypatch.setattr(dl_mod.torch._utils, "cpu_count", lambda: 1)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    cfg = TrainConfig(steps=24, batch_size=8, num_workers=2, log_every=8, val_every=8, ckpt_every=100,
                      image_every=0)
    task = ToyTask(ToyConfig(train=cfg), torch.device("cpu"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(task, ToyData(), cfg, str(tmp_path / "run")).run()  # 3 epochs of 8 steps
    assert not [w for w in caught if "worker processes" in str(w.message)]
    assert capsys.readouterr().out.count("train.num_workers=2 loader processes share the 1 CPUs") == 1


def test_override_reaches_one_list_item(tmp_path):
    p = write(tmp_path / "c.yaml", {"items": [{"width": 1}, {"width": 2, "name": "b"}]})
    cfg = load_config(WithList, p, ["items[1].width=9", "items[0].sizes=[5]", "items[-1].name=z"])
    assert [i.width for i in cfg.items] == [1, 9] and cfg.items[0].sizes == [5] and cfg.items[1].name == "z"
    assert yaml.safe_load(p.read_text())["items"][1]["width"] == 2  # the YAML's data is not mutated
    with pytest.raises(ConfigError, match=r"index 2 out of range: items has 2 items \(valid: 0\.\.1\)"):
        load_config(WithList, p, ["items[2].width=3"])
    with pytest.raises(ConfigError, match=r"items\[1\]\.widht"):  # unknown keys inside an item still fail
        load_config(WithList, p, ["items[1].widht=3"])
    with pytest.raises(ConfigError, match=r"inner is not a list"):
        load_config(Outer, write(tmp_path / "d.yaml", {"inner": {"width": 1}}), ["inner[0].width=2"])
    with pytest.raises(ConfigError, match="cannot read key part"):
        load_config(WithList, p, ["items[x].width=1"])


def test_override_of_a_paper_config_dataset_root():
    from tasks.recon3d import Recon3DExperiment

    cfg = load_config(Recon3DExperiment, ROOT / "configs/3d/paper.yaml",
                      ["data.train[0].root=/data/ffhq256", "data.train[1].coeffs_dir=/c"])
    assert cfg.data.train[0].root == "/data/ffhq256" and cfg.data.train[1].coeffs_dir == "/c"
    assert cfg.data.train[0].kind == "ffhq" and cfg.data.train[1].kind == "celebamask_hq"


@pytest.mark.slow
def test_restart_sets_the_old_logs_aside(tmp_path):
    cfg = toy_config(tmp_path, steps=20)
    run_toy(cfg, tmp_path / "r")
    old_events = sorted(p.name for p in (tmp_path / "r" / "tb").iterdir())
    r = run_toy(toy_config(tmp_path, steps=10), tmp_path / "r", "--restart")
    assert "restarted_0" in r.stdout
    assert [m["step"] for m in read_jsonl(tmp_path / "r" / "metrics.jsonl")] == [10]  # only the new run's
    assert max(e["step"] for e in read_jsonl(tmp_path / "r" / "log.jsonl")) == 10
    aside = tmp_path / "r" / "restarted_0"
    assert [m["step"] for m in read_jsonl(aside / "metrics.jsonl")] == [10, 20]
    assert sorted(p.name for p in (aside / "tb").iterdir()) == old_events
    assert not set(old_events) & {p.name for p in (tmp_path / "r" / "tb").iterdir()}


def test_a_task_lacking_the_protocol_is_one_line():
    from engine.loop import Trainer
    from tests.toy_train import ToyData

    class Bare:
        modules, optimizers = {}, {}

        def train_step(self, batch, ctx):
            return {}

    with pytest.raises(TypeError, match="Bare is not an engine.task.Task: it lacks validate, images, state_dict"):
        Trainer(Bare(), ToyData(), TrainConfig(steps=1), "unused")
