"""Uploads to the editor: limits, non-images, corrupt and truncated files, every pixel mode, EXIF orientation."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from data.upload import UploadError, read_upload


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_uploads_get_one_line_messages(tmp_path):
    rgb = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (48, 1, 3)))
    cases = {
        "notes.txt": (b"hello, not an image", "not an image"),
        "empty.png": (b"", "empty"),
        "truncated.jpg": (_save(rgb, "JPEG")[:200], "corrupt or truncated"),
        "truncated.png": (_save(rgb, "PNG")[:-40], "corrupt or truncated"),
        "garbage.jpg": (b"\xff\xd8\xff\xe0" + bytes(300), "not an image|corrupt"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UploadError, match=message) as e:
            read_upload(tmp_path / name)
        assert "\n" not in str(e.value) and name in str(e.value)
    big = tmp_path / "big.png"
    big.write_bytes(_save(Image.new("L", (8100, 10)), "PNG"))
    with pytest.raises(UploadError, match="8000 px"):
        read_upload(big)
    heavy = tmp_path / "heavy.bin"
    heavy.write_bytes(bytes(1024))
    with pytest.raises(UploadError, match="over the 0 MB limit"):
        read_upload(heavy, max_bytes=100)


def test_uploads_in_every_mode_become_rgb(tmp_path):
    base = np.zeros((40, 60, 3), np.uint8)
    base[:, :30] = (200, 40, 10)
    rgb = Image.fromarray(base)
    files = {
        "cmyk.jpg": (_save(rgb.convert("CMYK"), "JPEG", quality=95), "CMYK"),
        "grey.png": (_save(rgb.convert("L"), "PNG"), "greyscale"),
        "grey16.png": (_save(Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257), "PNG"),
                       "16-bit"),
        "rgba.png": (_save(Image.fromarray(np.dstack([base, np.full((40, 60), 255, np.uint8)])), "PNG"),
                     "transparency"),
        "plain.png": (_save(rgb, "PNG"), None),
    }
    for name, (data, note) in files.items():
        (tmp_path / name).write_bytes(data)
        image, notes = read_upload(tmp_path / name)
        assert image.shape == (3, 40, 60) and image.dtype == torch.float32, name
        assert (note is None and not notes) or any(note in n for n in notes), (name, notes)
        grey_expected = np.asarray(rgb.convert("L"), np.float32) / 255
        if name in ("grey.png", "grey16.png"):
            assert np.abs(image[0].numpy() - grey_expected).max() < 1.5 / 255
        if name in ("plain.png", "rgba.png"):
            assert np.array_equal((image * 255).round().byte().permute(1, 2, 0).numpy(), base)
        if name == "cmyk.jpg":
            assert abs(float(image[0, 20, 10]) - 200 / 255) < 0.1 and float(image[0, 20, 50]) < 0.1


def test_upload_exif_orientation_is_honoured(tmp_path):
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:10, :20] = 255  # a white block at the top left of the stored pixels
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # stored rotated: display = stored turned 90 degrees clockwise
    (tmp_path / "phone.jpg").write_bytes(_save(img, "JPEG", exif=exif, quality=95))
    image, notes = read_upload(tmp_path / "phone.jpg")
    assert image.shape == (3, 60, 40) and any("EXIF" in n for n in notes)
    assert float(image[:, :20, -10:].mean()) > 0.8  # the block is now at the top right
