"""Helpers shared by the tests: tiny CPU configs (32 px, resnet18, a few synthetic faces), free ports."""

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_data(image_size=32, n_train=16, n_val=8):
    return {
        "image_size": image_size,
        "train": [{"kind": "synthetic", "num": n_train, "offset": 0}],
        "val": [{"kind": "synthetic", "num": n_val, "offset": 1_000_000}],
    }


def tiny_train(**kw):
    base = {"steps": 4, "batch_size": 4, "lr": 1e-3, "device": "cpu", "log_every": 2, "image_every": 0,
            "val_every": 0, "ckpt_every": 2, "deterministic": True}
    base.update(kw)
    return base
