"""Format-exact stand-ins for the assets of the README's "Reproducing the paper" recipe, written into a folder laid
out as the paper configs expect (FORMATS.md): tiny in size, exact in layout.

    data/ffhq/images1024x1024/{idx - idx % 1000:05d}/{idx:05d}.png + data/ffhq/ffhq-dataset-v2.json
    data/CelebAMask-HQ/CelebA-HQ-img/<idx>.jpg + CelebAMask-HQ-mask-anno/<idx // 2000>/<idx:05d>_<part>.png
    BFM/BFM_model_front.mat (the synthetic morphable model in BFM's layout), BFM/similarity_Lm3D_all.mat
    weights/epoch_20.pth (Deng et al.'s checkpoint dict), resnet50-0676ba61.pth (torchvision),
    ms1mv3_arcface_r50_fp16/backbone.pth (arcface_torch iresnet50), pt_inception-2015-12-05-6726825d.pth
    (pytorch-fid), alexnet-owt-7be5be79.pth (torchvision): seeded random weights.

The faces are renders of the synthetic model (exact landmarks), and for CelebAMask-HQ also scikit-image's astronaut
(a real photo): its landmarks come from the recipe's own detection step.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.io import savemat

FFHQ_TRAIN = (0, 1, 2, 3, 1000, 1001)  # two FFHQ thousand-folders
FFHQ_TEST = (69000, 69001, 69002, 69003)
CELEBA = (0, 1, 2)
FFHQ_SIDE = 256  # the real images are 1024 px; the json's landmarks refer to 1024 (pixel_size), as the real ones


def write_bfm(path: Path, model) -> None:
    """A MorphableModel as Deng et al.'s BFM_model_front.mat: (1, 3N) mean shape / texture, bases (3N, K),
    1-based tri and keypoints (stored as double), skinmask (1, N)."""
    n = model.n_vertices
    savemat(str(path), {
        "meanshape": model.mean_shape.numpy().reshape(1, -1),
        "idBase": model.id_base.numpy(),
        "exBase": model.exp_base.numpy(),
        "meantex": model.mean_tex.numpy().reshape(1, -1),
        "texBase": model.tex_base.numpy(),
        "tri": (model.triangles.numpy() + 1).astype(np.float64),
        "keypoints": (model.landmark_idx.numpy() + 1).astype(np.float64).reshape(1, 68),
        "point_buf": np.zeros((n, 8), np.float64),
        "frontmask2_idx": (np.arange(n) + 1).reshape(-1, 1).astype(np.float64),
        "skinmask": model.skin_mask.numpy().astype(np.float64).reshape(1, n),
    })


def _u8(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray((t.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))


def _to_1024(lm: np.ndarray, side: int) -> list:
    return ((np.asarray(lm, np.float64) + 0.5) * (1024 / side) - 0.5).tolist()


def _hull_mask(lm: np.ndarray, side: int, out: int = 512) -> np.ndarray:
    pts = np.round((np.asarray(lm) + 0.5) * (out / side) - 0.5).astype(np.int32)
    m = np.zeros((out, out, 3), np.uint8)
    cv2.fillConvexPoly(m, cv2.convexHull(pts), (255, 255, 255))
    return m


def seeded(module: torch.nn.Module, seed: int) -> dict:
    """A module's state dict with every float tensor drawn from one seed (BatchNorm variances kept positive)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in module.state_dict().items():
        if v.is_floating_point():
            r = torch.rand(v.shape, generator=g)
            v = 0.5 + r if k.endswith("running_var") else 0.05 * (2 * r - 1)
        out[k] = v.clone()
    return out


def write_weights(root: Path) -> None:
    import torchvision

    from metrics.fid import build_fid_inception_v3
    from models.arcface import IRESNET_LAYERS, IResNet
    from tests.test_coeffs import deng_layout_net, save_deng_checkpoint

    w = root / "weights"
    (w / "ms1mv3_arcface_r50_fp16").mkdir(parents=True, exist_ok=True)
    save_deng_checkpoint(deng_layout_net(seed=0), w / "epoch_20.pth")
    torch.save(seeded(torchvision.models.resnet50(weights=None), 1), w / "resnet50-0676ba61.pth")
    torch.save(seeded(IResNet(IRESNET_LAYERS["r50"]), 2), w / "ms1mv3_arcface_r50_fp16" / "backbone.pth")
    torch.save(seeded(build_fid_inception_v3(), 3), w / "pt_inception-2015-12-05-6726825d.pth")
    torch.save(seeded(torchvision.models.alexnet(weights=None), 4), w / "alexnet-owt-7be5be79.pth")


def write_standins(root: Path) -> dict:
    """Every asset of the recipe under ``root`` (see the module doc); returns what a test checks against."""
    from skimage import data as skdata

    from data.align import align_face
    from data.detectors import DlibDetector
    from data.io import write_image
    from data.synthetic import SyntheticFaces
    from renderer.morphable import MorphableModel

    root = Path(root)
    (root / "BFM").mkdir(parents=True, exist_ok=True)
    model = MorphableModel.synthetic(seed=0)
    write_bfm(root / "BFM" / "BFM_model_front.mat", model)
    savemat(str(root / "BFM" / "similarity_Lm3D_all.mat"), {"lm": model.mean_shape[model.landmark_idx].numpy()})
    faces = SyntheticFaces(len(FFHQ_TRAIN) + len(FFHQ_TEST) + len(CELEBA), FFHQ_SIDE, model=model, offset=3_000_000)

    ffhq = root / "data" / "ffhq"
    meta = {}
    for k, idx in enumerate(FFHQ_TRAIN + FFHQ_TEST):
        item = faces[k]
        rel = f"images1024x1024/{idx - idx % 1000:05d}/{idx:05d}.png"
        write_image(ffhq / rel, item["image"])
        meta[str(idx)] = {
            "category": "training" if idx < 60000 else "validation",
            "metadata": {"photo_url": "", "photo_title": "", "author": "", "license": ""},
            "image": {"file_url": "", "file_path": rel, "file_size": 0, "file_md5": "", "pixel_size": [1024, 1024],
                      "pixel_md5": "", "face_landmarks": _to_1024(item["landmarks"].numpy(), FFHQ_SIDE)},
            "thumbnail": {"file_url": "", "file_path": f"thumbnails128x128/{idx - idx % 1000:05d}/{idx:05d}.png",
                          "file_size": 0, "file_md5": "", "pixel_size": [128, 128], "pixel_md5": ""},
            "in_the_wild": {},
        }
    (ffhq / "ffhq-dataset-v2.json").write_text(json.dumps(meta))

    celeba = root / "data" / "CelebAMask-HQ"
    photo = skdata.astronaut()
    astro = align_face(photo, DlibDetector().detect(photo)[0], 512, scale=1.3).image
    views = [(astro, DlibDetector().detect(astro)[0], 512)]
    for k in range(len(CELEBA) - 1):
        item = faces[len(FFHQ_TRAIN) + len(FFHQ_TEST) + k]
        views.append((_u8(item["image"]), item["landmarks"].numpy(), FFHQ_SIDE))
    for idx, (img, lm, side) in zip(CELEBA, views):
        write_image(celeba / "CelebA-HQ-img" / f"{idx}.jpg", img)
        parts = celeba / "CelebAMask-HQ-mask-anno" / str(idx // 2000)
        parts.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(parts / f"{idx:05d}_skin.png"), _hull_mask(lm, side))
    write_weights(root)
    return {"model": model, "ffhq_train": FFHQ_TRAIN, "ffhq_test": FFHQ_TEST, "celeba": CELEBA}
