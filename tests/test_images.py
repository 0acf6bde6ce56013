"""The real-image reader, on a small fixture in PadChest's ImageDir/ImageID layout."""
import logging

import numpy as np
import pytest
from PIL import Image

from trcgl.data.images import PadChestImages
from trcgl.data.padchest import DataError


@pytest.fixture
def padchest_root(tmp_path):
    rng = np.random.default_rng(0)
    for image_dir, image_id in ((0, "a.png"), (0, "b.png"), (7, "c.png")):
        folder = tmp_path / str(image_dir)
        folder.mkdir(exist_ok=True)
        arr = (rng.random((40, 30)) * 4095).astype(np.uint16)  # 12 bits stored in 16, as in PadChest
        arr[:5, :5] = 0
        arr[-5:, -5:] = 4095
        Image.fromarray(arr).save(folder / image_id)
    (tmp_path / "7" / "broken.png").write_bytes(b"not a png")
    return tmp_path


def test_reads_16bit_pngs_resized_and_scaled(padchest_root):
    reader = PadChestImages(padchest_root, size=16)
    with Image.open(padchest_root / "0" / "a.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit image
    img = reader.load("0", "a.png")
    assert img.shape == (16, 16) and img.dtype == np.float32
    assert 0.0 <= img.min() < 0.1 and 0.9 < img.max() <= 1.0
    assert reader.path("7.0", "c.png") == padchest_root / "7" / "c.png"  # ImageDir read as a float string


def test_missing_file_is_one_clear_error(padchest_root):
    reader = PadChestImages(padchest_root, size=16)
    with pytest.raises(DataError, match=r"missing PadChest image .*nope\.png[\s\S]*on_missing='skip'"):
        reader.read_many([("0", "a.png"), ("0", "nope.png")])


def test_skip_mode_counts_and_logs_and_never_substitutes(padchest_root, caplog):
    reader = PadChestImages(padchest_root, size=16, on_missing="skip")
    rows = [("0", "a.png"), ("0", "nope.png"), ("7", "broken.png"), ("7", "c.png")]
    with caplog.at_level(logging.WARNING):
        images, kept, report = reader.read_many(rows)
    assert kept.tolist() == [True, False, False, True]
    assert images.shape == (2, 16, 16)
    assert (report.read, len(report.missing), len(report.unreadable)) == (2, 1, 1)
    assert "skipped 2 of 4" in caplog.text
    assert np.array_equal(images[1], reader.load("7", "c.png"))


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="PADCHEST_ROOT"):
        PadChestImages(tmp_path / "nowhere", size=16)


def test_missing_and_unreadable_are_two_types_and_a_bad_image_dir_is_unreadable(padchest_root):
    from trcgl.data.images import MissingImage, UnreadableImage

    reader = PadChestImages(padchest_root, size=16)
    with pytest.raises(MissingImage):
        reader.load("0", "nope.png")
    with pytest.raises(UnreadableImage, match="broken.png"):
        reader.load("7", "broken.png")
    with pytest.raises(UnreadableImage, match="ImageDir 'abc', not a PadChest folder number"):
        reader.read_many([("abc", "a.png")])
    skipping = PadChestImages(padchest_root, size=16, on_missing="skip")
    images, kept, report = skipping.read_many([("abc", "a.png"), ("0", "a.png"), (None, "b.png")])
    assert kept.tolist() == [False, True, False] and len(images) == 1
    assert (report.read, len(report.missing), len(report.unreadable)) == (1, 0, 2)
    assert "ImageDir 'abc'" in report.unreadable[0]


def test_reading_no_image_at_all_is_an_error_even_when_skipping(padchest_root):
    reader = PadChestImages(padchest_root, size=16, on_missing="skip")
    with pytest.raises(DataError, match=r"none of the 2 PadChest images could be read .*\(1 missing, 1 unreadable"):
        reader.read_many([("0", "nope.png"), ("7", "broken.png")])
