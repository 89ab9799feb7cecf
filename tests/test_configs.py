"""Every shipped YAML (configs/**/*.yaml) parses into its experiment's dataclass: known keys, right types, the
__post_init__ checks; its dataset sections are the kinds' config classes, and its synthetic ones build."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from data.config import DATASET_CONFIGS, SynthesizerConfig, SyntheticConfig
from data.pairs import build_faces
from engine.config import ConfigError, iter_path_fields, load_config, load_yaml, to_dict
from tasks.evaluation import EvalExperiment
from tasks.inpaint import InpaintExperiment
from tasks.recon3d import Recon3DExperiment
from tasks.release import ReleaseConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# configs/base/ holds fragments that experiments extend (`base:`), not experiments
SHIPPED = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name != "base")
FRAGMENTS = sorted((CONFIGS / "base").glob("*.yaml"))
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


def test_nested_base_extends_a_mapping_and_leaves_other_base_keys_alone(tmp_path):
    (tmp_path / "frag").mkdir()
    (tmp_path / "frag" / "inner.yaml").write_text("lm: inner\nalign: true\n")
    (tmp_path / "frag" / "face.yaml").write_text("base: inner.yaml\nkind: ffhq\nroot: a\n")
    (tmp_path / "top.yaml").write_text("data:\n  train: [{base: frag/face.yaml, root: b, split: train}]\n"
                                       "ablations: {base: runs/x/inpaint.pt}\n")
    assert load_yaml(tmp_path / "top.yaml") == {
        "data": {"train": [{"lm": "inner", "align": True, "kind": "ffhq", "root": "b", "split": "train"}]},
        "ablations": {"base": "runs/x/inpaint.pt"}}  # not a .yaml: an ablation called "base", kept
    (tmp_path / "frag" / "inner.yaml").write_text("base: face.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_yaml(tmp_path / "top.yaml")


# The dataset sections as the paper configs spelled them out before configs/base/ held the framing keys once (and the
# landmark cache, added to base/ffhq.yaml since).
_DENG = {"align": True, "framing": "deng", "lm3d_path": "BFM/similarity_Lm3D_all.mat"}
_FFHQ = {"kind": "ffhq", "root": "data/ffhq", "landmarks_json": "data/ffhq/ffhq-dataset-v2.json",
         "landmarks_cache": "data/ffhq/ffhq-dataset-v2.landmarks.npz", **_DENG}
_CELEBA = {"kind": "celebamask_hq", "root": "data/CelebAMask-HQ", "landmarks_dir": "data/CelebAMask-HQ/landmarks",
           **_DENG}
_INLINE = {
    "3d/paper.yaml": {"data.train": [{**_FFHQ, "coeffs_dir": "data/ffhq/coeffs", "split": "train"},
                                     {**_CELEBA, "coeffs_dir": "data/CelebAMask-HQ/coeffs"}],
                      "data.val": [{**_FFHQ, "coeffs_dir": "data/ffhq/coeffs", "split": "test"}]},
    "inpaint/paper.yaml": {"data.train": [{**_FFHQ, "split": "train"}, _CELEBA],
                           "data.val": [{**_FFHQ, "split": "test"}]},
    "inpaint/gt_prior.yaml": {"data.train": [{**_FFHQ, "split": "train", "coeffs_dir": "data/ffhq/coeffs"}],
                              "data.val": [{**_FFHQ, "split": "test", "coeffs_dir": "data/ffhq/coeffs"}]},
    "eval/ffhq1000.yaml": {"test.faces": [{**_FFHQ, "split": "test"}]},
}


@pytest.mark.parametrize("name", sorted(_INLINE))
def test_shipped_configs_resolve_as_their_inline_spelling(tmp_path, name):
    """Extending configs/base/ fragments gives the same resolved config as writing the keys out in full."""
    shipped = to_dict(load_config(CLASSES[name.split("/")[0]], CONFIGS / name))
    inline = load_yaml(CONFIGS / name)
    for key, sections in _INLINE[name].items():
        a, b = key.split(".")
        inline[a][b] = sections
    flat = tmp_path / "flat.yaml"
    flat.write_text(yaml.safe_dump(inline))
    assert to_dict(load_config(CLASSES[name.split("/")[0]], flat)) == shipped


def test_release_preset_gets_the_reference_landmarks_from_the_fragment():
    assert load_config(ReleaseConfig, CONFIGS / "release.yaml").lm3d_path == "BFM/similarity_Lm3D_all.mat"


def test_every_fragment_is_used_and_the_framing_keys_are_written_once():
    texts = {p: p.read_text() for p in CONFIGS.rglob("*.yaml")}
    for frag in FRAGMENTS:
        assert any(f"base/{frag.name}" in t or f"base: {frag.name}" in t for p, t in texts.items() if p != frag), frag
    assert sum(t.count("lm3d_path:") for t in texts.values()) == 1
