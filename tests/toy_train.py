"""A toy training script on the shared engine, used by tests/test_engine.py (runs as a subprocess).

--kill-at-step N        SIGKILL this process right after step N (simulates a crash mid-training)
--kill-in-ckpt-write N  SIGKILL in the middle of writing the checkpoint of step N
--nan-at-step N         the loss becomes NaN at step N
--sigterm-at-step N     send SIGTERM to this process after step N (graceful stop)
--sigint-at-step N      the same with SIGINT (Ctrl-C)
--signal-group          send those signals to the whole process group (loader workers too), as a terminal's Ctrl-C
--nan-grad-at-step N    the loss of step N stays finite but its gradient is NaN (the weights turn NaN)
--disk-full-at-step N   writing the checkpoint of step N fails as on a full disk (/dev/full)
--bad-every K           every K-th item is unreadable and skipped (flagged in `dataset.skipped_flags`, as data.photos)
"""

import os
import signal
from dataclasses import dataclass, field

import torch

from engine import checkpoint as ckpt_mod
from engine import dist
from engine.config import cli_config, to_dict
from engine.loop import TrainConfig, make_adam, run_training
from engine.run import start_run
from engine.task import Task


@dataclass
class ModelConfig:
    hidden: int = 16
    dropout: float = 0.1


@dataclass
class ToyConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    note: str = ""


class ToyData(torch.utils.data.Dataset):
    def __init__(self, n=64, bad_every=0):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
        self.bad_every = bad_every
        self.skipped_flags = torch.zeros(n, dtype=torch.bool).share_memory_()  # seen by loader workers, as data/
        self.index_report = [f"{n} of {n + 3} toy items usable (3 left out); using those"]  # as data.photos

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if self.bad_every and i % self.bad_every == 0:  # as data.photos: skip to the next item, count the file
            self.skipped_flags[i] = True
            i = (i + 1) % len(self)
        return {"x": self.x[i], "y": self.y[i]}


class ToyTask(Task):
    def __init__(self, cfg: ToyConfig, device, nan_at=-1, nan_grad_at=-1):
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, cfg.model.hidden), torch.nn.Tanh(),
                                       torch.nn.Dropout(cfg.model.dropout), torch.nn.Linear(cfg.model.hidden, 1))
        self.net.to(device)
        self.ddp = dist.wrap_ddp(self.net, device)
        self.modules = {"net": self.net}
        self.optimizers = {"opt": make_adam(self.net.parameters(), cfg.train)}
        self.nan_at = nan_at
        self.nan_grad_at = nan_grad_at

    def train_step(self, batch, ctx):
        with ctx.autocast():
            pred = self.ddp(batch["x"]).squeeze(-1)
            noise = torch.randn_like(pred) * 0.01  # global RNG use: resume must restore it
            loss = ((pred + noise - batch["y"]) ** 2).mean()
        if ctx.step + 1 == self.nan_at:
            loss = loss * float("nan")
        if ctx.step + 1 == self.nan_grad_at:  # value + 0, gradient 0 * inf = NaN
            loss = loss + 0.0 * torch.sqrt(pred.sum() * 0.0)
        ctx.optimize(loss, self.optimizers["opt"], "net")
        return {"loss": loss.detach()}

    def validate(self, step):
        with torch.no_grad():
            return {"weight_norm": float(sum(p.norm() for p in self.net.parameters()))}


def main():
    def add(p):
        p.add_argument("--kill-at-step", type=int, default=-1)
        p.add_argument("--kill-in-ckpt-write", type=int, default=-1)
        p.add_argument("--nan-at-step", type=int, default=-1)
        p.add_argument("--sigterm-at-step", type=int, default=-1)
        p.add_argument("--sigint-at-step", type=int, default=-1)
        p.add_argument("--nan-grad-at-step", type=int, default=-1)
        p.add_argument("--disk-full-at-step", type=int, default=-1)
        p.add_argument("--bad-every", type=int, default=0)
        p.add_argument("--signal-group", action="store_true")
        p.add_argument("--weights-out", default="")

    cfg, args = cli_config(ToyConfig, description="toy", extra_args=add, training=True)
    device = start_run(cfg, args.run_dir, cfg.train, args.restart)
    task = ToyTask(cfg, device, nan_at=args.nan_at_step, nan_grad_at=args.nan_grad_at_step)

    if args.kill_at_step > 0 or args.sigterm_at_step > 0 or args.sigint_at_step > 0:
        orig = task.train_step

        def step_then_die(batch, ctx):
            out = orig(batch, ctx)
            if ctx.step + 1 == args.kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)
            send = (lambda sig: os.killpg(0, sig)) if args.signal_group else (lambda sig: os.kill(os.getpid(), sig))
            if ctx.step + 1 == args.sigterm_at_step:
                send(signal.SIGTERM)
            if ctx.step + 1 == args.sigint_at_step:
                send(signal.SIGINT)
            return out

        task.train_step = step_then_die
    if args.kill_in_ckpt_write > 0:
        orig_write = ckpt_mod._write_bytes

        def write_then_die(tmp, state):
            if state["step"] == args.kill_in_ckpt_write:
                with open(tmp, "wb") as f:  # half a file, then death
                    f.write(b"PK\x03\x04partial")
                    f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            orig_write(tmp, state)

        ckpt_mod._write_bytes = write_then_die
    if args.disk_full_at_step > 0:
        orig_write = ckpt_mod._write_bytes

        def write_to_full_disk(tmp, state):
            if state["step"] != args.disk_full_at_step:
                return orig_write(tmp, state)
            open(tmp, "wb").close()  # the temp file exists, as when a real write starts
            with open("/dev/full", "wb") as f:  # every write fails with ENOSPC
                torch.save(state, f)
                f.flush()

        ckpt_mod._write_bytes = write_to_full_disk
    run_training(task, ToyData(bad_every=args.bad_every), cfg.train, args.run_dir, to_dict(cfg), device,
                 restart=args.restart)
    if args.weights_out:
        torch.save({k: v.cpu() for k, v in task.net.state_dict().items()},
                   f"{args.weights_out}.rank{dist.get_rank()}.pt")
    dist.cleanup()


if __name__ == "__main__":
    main()
