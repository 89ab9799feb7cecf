"""Config sections of the data: one dataclass per dataset kind, the masked-pair synthesiser's options, and the two
sections that hold them: ``DataConfig`` (training: data.train and data.val) and ``TestSetConfig`` (evaluation:
test.faces). ``data.pairs.build_pairs`` builds the masked pairs of all three splits from them.

A YAML dataset entry maps onto its kind's dataclass field by field (``kind`` picks the class, engine.config
dispatches on it): every constructor option of data.photos / data.synthetic is a field here with the constructor's
default, except the options the code fills in itself (deliberately internal):
    image_size   from the section's ``image_size`` (data.image_size / test.image_size), shared by every member
    config_key   the dotted key of the entry, for one-line errors
    model        SyntheticFaces' MorphableModel, built from the ``morphable`` section
tests/test_datasets.py checks both directions against the constructors' signatures.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from data.photos import CELEBAMASK_FACE_PARTS
from engine.config import path_field

__all__ = [
    "PhotoDataConfig",
    "FFHQConfig",
    "CelebAMaskHQConfig",
    "FolderConfig",
    "SyntheticConfig",
    "FaceDataConfig",
    "DATASET_CONFIGS",
    "SynthesizerConfig",
    "INTERNAL_OPTIONS",
    "DataConfig",
    "TestSetConfig",
]

# constructor options filled in by the code, never from YAML (module doc)
INTERNAL_OPTIONS = ("image_size", "config_key", "model")



@dataclass(kw_only=True)
class PhotoDataConfig:
    """Options shared by the photo datasets (data.photos.FaceImageDataset; module doc of data.photos)."""

    root: str | None = path_field(kind="dir", required=True)
    landmarks_dir: str | None = path_field(kind="dir")  # per-image <stem>.npy / .txt (68 x 2, original pixels)
    detector: str | dict[str, Any] | None = None  # landmark fallback: dlib | dlib_cnn | insightface | {name: .., **kw}
    align: bool = False
    align_scale: float = 1.0  # with align: > 1 widens the crop
    align_template: list[list[float]] | None = None  # with align, ffhq framing: 5 x [x, y] fractions of the side
    framing: str = "ffhq"  # with align: ffhq | deng (Deng et al.'s align_img) | release (116/s at 256)
    lm3d_path: str | None = path_field(kind="file")  # deng / release framing: BFM/similarity_Lm3D_all.mat
    coeffs_dir: str | None = path_field(kind="dir")  # per-image <stem>.npy (257,) ground-truth coefficients
    strict: bool = False  # raise on a bad item instead of skipping it

    def __post_init__(self):
        if self.align_template is not None and (len(self.align_template) != 5
                                                or any(len(p) != 2 for p in self.align_template)):
            raise ValueError(f"align_template: expected 5 points [x, y], got {self.align_template}")


@dataclass(kw_only=True)
class FFHQConfig(PhotoDataConfig):
    kind: Literal["ffhq"] = "ffhq"
    landmarks_json: str | None = path_field(kind="file")  # ffhq-dataset-v2.json
    landmarks_cache: str | None = None  # .npz cache of the json's landmarks (written on first use)
    indices: list[int] | None = None  # image numbers; or split
    split: str | None = None  # train | test | all (data.splits)


@dataclass(kw_only=True)
class CelebAMaskHQConfig(PhotoDataConfig):
    kind: Literal["celebamask_hq"] = "celebamask_hq"
    indices: list[int] | None = None  # image numbers (default: all found)
    face_parts: list[str] = field(default_factory=lambda: list(CELEBAMASK_FACE_PARTS))  # parts forming M


@dataclass(kw_only=True)
class FolderConfig(PhotoDataConfig):
    kind: Literal["folder"] = "folder"
    face_masks_dir: str | None = path_field(kind="dir")  # <stem>.png face-region maps
    recursive: bool = True


@dataclass(kw_only=True)
class SyntheticConfig:
    """data.synthetic.SyntheticFaces: faces rendered from random coefficients (its docstring for the sampling)."""

    kind: Literal["synthetic"] = "synthetic"
    num: int  # number of faces
    seed: int = 0
    offset: int = 0  # first item number (train and held-out sets use disjoint offsets)
    id_sigma: float = 1.0
    exp_sigma: float = 0.4
    tex_sigma: float = 1.0
    yaw_deg: float = 30.0
    pitch_deg: float = 12.0
    roll_deg: float = 8.0
    light_sigma: float = 1.0
    trans_sigma: float = 0.03
    backend: str = "torch"  # rasterizer of the renders
    cache: bool = True  # keep the renders in memory
    chunk: int = 64  # items rendered per batch
    device: str = "cpu"  # where to render


FaceDataConfig = FFHQConfig | CelebAMaskHQConfig | FolderConfig | SyntheticConfig
DATASET_CONFIGS: dict[str, type] = {c.kind: c for c in (FFHQConfig, CelebAMaskHQConfig, FolderConfig, SyntheticConfig)}


@dataclass
class SynthesizerConfig:
    """data.synth.MaskedPairSynthesizer's options (its docstring); the mask library is the section's
    ``mask_library``."""

    shape_jitter: float = 0.02
    colour_jitter: float = 0.1
    lighting: tuple[float, float] = (0.3, 1.0)
    grain: float = 0.02
    feather: float = 0.8
    reg: float = 0.03

    def kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass
class DataConfig:
    """The training data (section ``data``): masked pairs for training (new masks every epoch) and validation."""

    image_size: int = 224
    train: list[FaceDataConfig] = field(default_factory=lambda: [SyntheticConfig(num=4000)])
    # lists, so that a config extending another replaces the dataset list instead of merging keys into it
    val: list[FaceDataConfig] = field(default_factory=lambda: [SyntheticConfig(num=64, offset=1_000_000)])
    mask_library: str | None = path_field(kind="dir")  # scripts/make_masks.py output; None = procedural library
    mask_seed: int = 0  # training masks: item i of epoch e uses seed (mask_seed, e, i)
    val_mask_seed: int = 777  # held-out masks: item i always uses seed (val_mask_seed, i)
    synth: SynthesizerConfig = field(default_factory=SynthesizerConfig)  # how the masks are put on the faces

    def __post_init__(self):
        if self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32, got {self.image_size}")


@dataclass
class TestSetConfig:
    """The evaluation's test set (section ``test``): a fixed mask per image."""

    image_size: int = 256
    faces: list[FaceDataConfig] = field(default_factory=lambda: [FFHQConfig(split="test")])
    mask_library: str | None = path_field(kind="dir")
    mask_seed: int = 2024  # test image i is always masked with seed (mask_seed, i)
    synth: SynthesizerConfig = field(default_factory=SynthesizerConfig)  # how the masks are put on the faces
    limit: int | None = None  # evaluate the first `limit` images only
