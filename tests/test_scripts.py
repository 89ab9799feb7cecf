"""Command-line scripts: extract_coeffs.py and remove_mask.py on real and bad inputs; the benchmark scripts."""

import json

import numpy as np
import pytest
import torch
import yaml

from engine.config import build_dataclass
from tests.helpers import cli, script_module, tiny_data


def test_extract_coeffs_writes_one_file_per_face(n3d_export, tmp_path):
    main = cli("scripts/extract_coeffs.py")
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
    from data.pairs import build_faces
    from tasks.recon3d import Recon3DExperiment

    faces = build_faces(build_dataclass(Recon3DExperiment, yaml.safe_load(cfg.read_text())).data.train, 32, "x")
    with torch.no_grad():
        expect = net(faces[0]["image"][None])["coeffs"][0].numpy()
    assert np.allclose(np.load(tmp_path / "c" / f"{faces[0]['name']}.npy"), expect, atol=1e-5)


def test_remove_mask_on_a_real_photo(inpaint_export, tmp_path, capsys):
    from skimage import data as skdata

    from data.io import read_image, write_image
    main = cli("scripts/remove_mask.py")

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
    main = cli("scripts/remove_mask.py")

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


def test_prepare_images_resizes_resumes_and_rescales_landmarks(tmp_path, capsys):
    import cv2

    from data.io import read_image_uint8, write_image
    from data.landmarks import load_landmarks_file, save_landmarks_file
    main = cli("scripts/prepare_images.py")

    src, dst, lm_in, lm_out = (tmp_path / n for n in ("src", "dst", "lm", "lm_out"))
    rng = np.random.default_rng(0)
    square = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    write_image(src / "00000" / "00001.png", square)
    wide = np.zeros((48, 80, 3), np.uint8)
    wide[30:33, 60:63] = 255  # a bright 3x3 dot centred on pixel (x 61, y 31)
    write_image(src / "00002.jpg", wide)
    write_image(src / "small.png", square[:20, :20])
    (src / "broken.png").write_bytes(b"not an image")
    lm = np.tile(np.array([[61.0, 31.0]], np.float32), (68, 1))
    save_landmarks_file(lm_in / "00002.txt", lm)
    args = [str(src), str(dst), "--size", "32", "--workers", "1", "--landmarks-dir", str(lm_in),
            "--landmarks-out", str(lm_out)]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "3 written, 0 already done, 1 unreadable" in out.out and "broken.png" in out.err
    small = read_image_uint8(dst / "00000" / "00001.png")
    assert small.shape == (32, 32, 3)
    assert np.abs(small.astype(int) - cv2.resize(square, (32, 32), interpolation=cv2.INTER_AREA)).max() <= 1
    assert read_image_uint8(dst / "00002.png").shape == (32, 53, 3)  # shorter side 32, aspect kept
    assert read_image_uint8(dst / "small.png").shape == (20, 20, 3)  # never enlarged
    # the rescaled landmark sits on the resized dot (pixel-centre convention)
    moved = load_landmarks_file(lm_out / "00002.txt")[0]
    dot = read_image_uint8(dst / "00002.png")[..., 0].astype(float)
    ys, xs = np.mgrid[:32, :53]
    centroid = np.array([(xs * dot).sum(), (ys * dot).sum()]) / dot.sum()
    assert np.abs(moved - centroid).max() < 0.25
    assert main(args) == 0  # resumable: nothing to do the second time
    assert "0 written, 3 already done" in capsys.readouterr().out
    assert main([str(src), str(src / "small"), "--size", "8", "--workers", "1"]) == 0  # DST inside SRC
    assert main([str(src), str(src / "small"), "--size", "8", "--workers", "1"]) == 0
    assert "0 written, 3 already done, 1 unreadable" in capsys.readouterr().out  # its own outputs are not inputs
    assert main([str(src), str(src)]) == 2 and "must differ" in capsys.readouterr().err
    assert main([str(tmp_path / "nothere"), str(dst)]) == 2 and "not found" in capsys.readouterr().err


def test_bench_synth_reports_median_and_best():
    from data.masks import MaskLibrary
    from tasks.speed import synthesis_speed

    res = synthesis_speed(quick=True, size=64, library=MaskLibrary.procedural(0, 8, 8))
    assert res["pairs"] == 200 and res["rounds"] == 2 and res["threads"] == 1
    assert 0 < res["pairs_per_s"] <= res["best_pairs_per_s"]
    assert abs(res["ms_per_pair"] - 1000 / res["pairs_per_s"]) < 0.01


def test_largest_batch_doubles_until_out_of_memory():
    from tasks.benchmarks import largest_batch

    tried = []

    def run(batch):
        tried.append(batch)
        if batch > 48:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return {"batch": batch, "images_per_s": 10.0 * batch}

    assert largest_batch(run, 8) == {"batch": 32, "images_per_s": 320.0, "oom_at": 64}
    assert tried == [8, 16, 32, 64]
    assert largest_batch(run, 8, limit=16)["oom_at"] is None  # the limit, not the memory, ended the search
    with pytest.raises(torch.OutOfMemoryError):
        largest_batch(run, 64)  # not even the first batch fits: the error, not an empty result


def test_benchmark_cli_keeps_each_section_and_reports_failures(tmp_path, monkeypatch, capsys):
    from tasks import benchmarks

    bench = script_module("scripts/benchmark.py")

    def broken(quick):
        raise RuntimeError("no such backend")

    monkeypatch.setattr(benchmarks, "bench_synth", broken)
    monkeypatch.setattr(benchmarks, "bench_renderer", lambda device: {"triangles": 70984, "image_size": 224,
                        "backends": {"torch": {"forward_ms_per_face": 9.0, "forward_backward_ms_per_face": 19.0}}})
    out = tmp_path / "b.json"
    assert bench.main(["--device", "cpu", "--only", "synth", "renderer", "--out", str(out)]) == 1
    res = json.loads(out.read_text())
    assert res["synth"] == {"error": "RuntimeError: no such backend"}  # the failure is recorded, the rest still ran
    assert res["renderer"]["backends"]["torch"]["forward_ms_per_face"] == 9.0 and res["peak_rss_gib"] > 0
    printed = capsys.readouterr()
    assert "synth FAILED" in printed.out and "9.0 ms/face forward" in printed.out and "synth" in printed.err
    for bad, why in ((["--only", "sinth"], "unknown section"), (["--max-batch"], "needs --device cuda"),
                     (["--workers", "0"], "--workers"), (["--device", "gpu"], "not a device"),
                     (["--device", "meta"], "not benchmarked")):
        with pytest.raises(SystemExit):
            bench.main(["--device", "cpu", *bad, "--out", str(out)])
        assert why in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            bench.main(["--device", "cuda", "--out", str(out)])
        assert "no CUDA device" in capsys.readouterr().err


def test_bench_evaluation_times_the_loop_and_the_fixed_part(inpaint_export):
    from tasks.benchmarks import bench_evaluation

    res = bench_evaluation(torch.device("cpu"), True, batch=2, n_images=3, checkpoint=inpaint_export,
                           metrics=["l1", "psnr", "lpips"])
    assert res["images"] == 3 and res["images_per_s"] > 0 and res["fixed_s"] > 0
    # 1000 images at the measured rate plus the fixed part once
    assert res["paper_test_set_min"] == pytest.approx((1000 / res["images_per_s"] + res["fixed_s"]) / 60)
