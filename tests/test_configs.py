"""Every shipped YAML (configs/**/*.yaml) parses into its experiment's dataclass: known keys, right types, the
__post_init__ checks; its dataset sections are the kinds' config classes, and its synthetic ones build."""

from __future__ import annotations

from pathlib import Path

import pytest

from data.config import DATASET_CONFIGS, SynthesizerConfig, SyntheticConfig
from data.pairs import build_faces
from engine.config import ConfigError, iter_path_fields, load_config
from tasks.evaluation import EvalExperiment
from tasks.inpaint import InpaintExperiment
from tasks.recon3d import Recon3DExperiment
from tasks.release import ReleaseConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(CONFIGS.rglob("*.yaml"))
# configs/<folder>/*.yaml -> the dataclass its entry script reads it into (a new folder must be added here)
CLASSES = {"3d": Recon3DExperiment, "inpaint": InpaintExperiment, "eval": EvalExperiment, "configs": ReleaseConfig}


def _sections(cfg) -> list[tuple[str, list]]:
    """(key, dataset list) of a config's data sections."""
    if isinstance(cfg, EvalExperiment):
        return [("test.faces", cfg.test.faces)]
    if hasattr(cfg, "data"):
        return [("data.train", cfg.data.train), ("data.val", cfg.data.val)]
    return []


def test_every_shipped_config_is_covered():
    assert len(SHIPPED) >= 10 and {p.parent.name for p in SHIPPED} <= set(CLASSES)


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(CONFIGS)) for p in SHIPPED])
def test_shipped_config_parses_and_validates(path):
    cfg = load_config(CLASSES[path.parent.name], path)
    for key, value, _kind, _ in iter_path_fields(cfg):  # paths are relative to the checkout, so configs travel
        assert value is None or not Path(value).is_absolute(), key
    for key, faces in _sections(cfg):
        assert faces, key
        for i, f in enumerate(faces):
            assert isinstance(f, tuple(DATASET_CONFIGS.values())), f"{key}[{i}]"
        if all(isinstance(f, SyntheticConfig) for f in faces):  # buildable here: no dataset files needed
            small = [SyntheticConfig(**{**vars(f), "num": 2}) for f in faces]
            assert build_faces(small, 32, key)[0]["image"].shape == (3, 32, 32)
    section = cfg.test if isinstance(cfg, EvalExperiment) else getattr(cfg, "data", None)
    if section is not None:
        assert isinstance(section.synth, SynthesizerConfig)


def test_a_mistyped_dataset_key_in_a_shipped_config_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {CONFIGS / 'inpaint' / 'demo.yaml'}\n"
                   "data: {train: [{kind: synthetic, num: 4, ofset: 3}]}\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'data.train\[0\].ofset' \(valid keys under "
                                          r"'data.train\[0\]': kind, num, seed, offset"):
        load_config(InpaintExperiment, bad)
