"""Command-line scripts: extract_coeffs.py and remove_mask.py on real and bad inputs."""

import numpy as np
import torch
import yaml

from engine.config import build_dataclass
from tests.helpers import tiny_data


def test_extract_coeffs_writes_one_file_per_face(n3d_export, tmp_path):
    from scripts.extract_coeffs import main
    from tasks.recon3d import load_n3d

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": tiny_data(n_train=5), "model": {"backbone": "resnet18"},
                                   "loss": {"w_id": 0.0}}))
    assert main(["--config", str(cfg), "--n3d", str(n3d_export), "--out", str(tmp_path / "c")]) == 0
    files = sorted((tmp_path / "c").glob("*.npy"))
    assert len(files) == 5
    coeffs = np.load(files[0])
    assert coeffs.shape == (257,) and coeffs.dtype == np.float32
    net, _, _ = load_n3d(n3d_export, torch.device("cpu"))
    from tasks.common import build_faces
    from tasks.recon3d import Recon3DExperiment

    faces = build_faces(build_dataclass(Recon3DExperiment, yaml.safe_load(cfg.read_text())).data.train, 32, "x")
    with torch.no_grad():
        expect = net(faces[0]["image"][None])["coeffs"][0].numpy()
    assert np.allclose(np.load(tmp_path / "c" / f"{faces[0]['name']}.npy"), expect, atol=1e-5)


def test_remove_mask_on_a_real_photo(inpaint_export, tmp_path, capsys):
    from skimage import data as skdata

    from data.io import read_image, write_image
    from scripts.remove_mask import main

    photo = tmp_path / "astronaut.jpg"
    write_image(photo, torch.from_numpy(skdata.astronaut()).permute(2, 0, 1).float() / 255)
    rc = main(["--image", str(photo), "--checkpoint", str(inpaint_export), "--variations", "2", "--edit",
               "exp[3]=+1.5", "--out", str(tmp_path / "out")])
    assert rc == 0
    assert "1 face(s)" in capsys.readouterr().out  # the face-like mission patch (dlib score ~0.1) is not a face
    outs = sorted(p.name for p in (tmp_path / "out").glob("astronaut_*.png"))
    assert "astronaut_grid.png" in outs and len(outs) == 4  # 2 presets + 1 edit + grid
    res = read_image(tmp_path / "out" / "astronaut_0_keep.png")
    orig = read_image(photo)
    assert res.shape == orig.shape
    changed = (res - orig).abs().amax(0) > 0.02
    assert 0 < changed.float().mean() < 0.2  # only the face region changes


def test_remove_mask_bad_inputs(inpaint_export, tmp_path, capsys):
    from data.io import write_image
    from scripts.remove_mask import main

    noise = tmp_path / "noise.png"
    write_image(noise, torch.rand(3, 96, 96))
    assert main(["--image", str(noise), "--checkpoint", str(inpaint_export), "--out", str(tmp_path / "o")]) == 1
    assert "no face found" in capsys.readouterr().err
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert main(["--image", str(bad), "--checkpoint", str(inpaint_export), "--out", str(tmp_path / "o")]) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert main(["--image", str(noise), "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert main(["--image", str(noise), "--checkpoint", str(inpaint_export), "--edit", "grin",
                 "--out", str(tmp_path / "o")]) == 2
    assert "unknown edit" in capsys.readouterr().err
