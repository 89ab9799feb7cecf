"""The one helper each for 8-bit conversion, pixel-centre rescaling, drawing points and tiling grids."""

import numpy as np
import torch

from data.draw import draw_points, tile_grid
from data.io import read_image, to_uint8, to_uint8_hwc, write_image
from data.landmarks import rescale_points
from metrics import quantize


def test_to_uint8_rounds_halves_up_for_arrays_and_tensors_as_quantize():
    halves = np.array([0.5, 1.5, 2.5, 127.5, 254.5], np.float64) / 255  # np.round would give 0, 2, 2, 128, 254
    assert to_uint8(halves).tolist() == [1, 2, 3, 128, 255]
    assert to_uint8(torch.from_numpy(halves)).tolist() == [1, 2, 3, 128, 255]
    assert to_uint8(np.array([-0.2, 1.7])).tolist() == [0, 255]  # clipped
    x = torch.rand(2, 3, 9, 7)
    assert torch.equal(to_uint8(x).float() / 255, quantize(x))
    assert torch.equal(torch.from_numpy(to_uint8(x.numpy())), to_uint8(x))


def test_to_uint8_hwc_is_what_write_image_writes(tmp_path):
    x = torch.rand(3, 10, 12)
    u8 = to_uint8_hwc(x)
    assert u8.shape == (10, 12, 3) and u8.dtype == np.uint8 and u8.flags["C_CONTIGUOUS"]
    write_image(tmp_path / "x.png", x)
    assert torch.equal(read_image(tmp_path / "x.png"), torch.from_numpy(u8).permute(2, 0, 1).float() / 255)
    assert to_uint8_hwc(np.zeros((4, 5))).shape == (4, 5, 1)


def test_rescale_points_keeps_pixel_centres_and_round_trips():
    # the centre of a 4 px image (1.5) is the centre of its 8 px copy (3.5); the first pixel's centre 0 -> 0.5
    assert rescale_points(np.array([[1.5, 0.0]]), 2).tolist() == [[3.5, 0.5]]
    pts = torch.rand(2, 68, 2, dtype=torch.float64) * 64
    assert torch.allclose(rescale_points(rescale_points(pts, 0.25), 4), pts)
    assert rescale_points(np.array([[0.0, 0.0]]), (2, 3)).tolist() == [[0.5, 1.0]]  # (sx, sy)
    assert rescale_points(pts.float(), 2).dtype == torch.float32


def test_draw_points_marks_the_nearest_pixel_and_skips_non_finite():
    img = np.zeros((9, 9, 3), np.uint8)
    draw_points(img, [[2.4, 6.6], [np.nan, 1.0]], (255, 0, 0), radius=0, antialias=False)
    assert img[7, 2].tolist() == [255, 0, 0] and img.sum() == 255


def test_tile_grid_places_tiles_row_by_row_and_fills_the_rest():
    tiles = [np.full((2, 3, 3), v, np.uint8) for v in (10, 20, 30)]
    sheet = tile_grid(tiles, cols=2, fill=255)
    assert sheet.shape == (4, 6, 3)
    assert sheet[0, 0, 0] == 10 and sheet[0, 3, 0] == 20 and sheet[2, 0, 0] == 30 and sheet[2, 3, 0] == 255
