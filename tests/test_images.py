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
    images, kept, report = skipping.read_many([("abc", "a.png"), ("0", "a.png"), (None, "b.png"), ("inf", "a.png")])
    assert kept.tolist() == [False, True, False, False] and len(images) == 1
    assert (report.read, len(report.missing), len(report.unreadable)) == (1, 0, 3)
    assert "ImageDir 'abc'" in report.unreadable[0]


def test_reading_no_image_at_all_is_an_error_even_when_skipping(padchest_root):
    reader = PadChestImages(padchest_root, size=16, on_missing="skip")
    with pytest.raises(DataError, match=r"none of the 2 PadChest images could be read .*\(1 missing, 1 unreadable"):
        reader.read_many([("0", "nope.png"), ("7", "broken.png")])


@pytest.mark.parametrize("how", ["dot-dot", "absolute", "symlink-file", "symlink-folder"])
def test_a_label_row_cannot_make_the_reader_open_a_file_outside_the_image_folder(tmp_path, how, caplog):
    """``<root>/<ImageDir>/<ImageID>`` with ``../``, an absolute path or a symbolic link leads out of
    PADCHEST_ROOT: one clear error, or with on_missing='skip' a counted, logged unreadable row;
    never the pixels of a file elsewhere. A link that stays inside the folder is fine."""
    from trcgl.data.images import UnreadableImage

    root, outside = tmp_path / "padchest", tmp_path / "outside.png"
    (root / "0").mkdir(parents=True)
    (root / "1").mkdir()
    Image.fromarray((np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)).save(outside)
    Image.fromarray(np.full((8, 8), 500, np.uint16)).save(root / "0" / "ok.png")
    (root / "1" / "inside.png").symlink_to(root / "0" / "ok.png")
    image_id = {"dot-dot": "../../outside.png", "absolute": str(outside), "symlink-file": "link.png",
                "symlink-folder": "away/outside.png"}[how]
    (root / "0" / "link.png").symlink_to(outside)
    (root / "0" / "away").symlink_to(tmp_path, target_is_directory=True)
    assert (root / "0" / image_id).is_file()                  # the row really names a readable file
    reader = PadChestImages(root, 8)
    with pytest.raises(UnreadableImage, match=rf"leads to {outside}, outside the image folder {root}: an ImageID"):
        reader.read_many([("0", "ok.png"), ("0", image_id)])
    with caplog.at_level(logging.WARNING):
        images, kept, report = PadChestImages(root, 8, on_missing="skip").read_many(
            [("0", "ok.png"), ("0", image_id), ("1", "inside.png")])
    assert kept.tolist() == [True, False, True] and len(images) == 2
    assert (report.read, len(report.missing), len(report.unreadable)) == (2, 0, 1)
    assert "skipped 1 of 3 (0 missing, 1 unreadable)" in caplog.text


def _gray_image() -> np.ndarray:
    """A smooth gray image with noise (8-bit levels 40..255): every level range is used."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:48, 0:40]
    return np.clip(40 + 3 * yy + 2 * xx + rng.normal(0, 8, (48, 40)), 0, 255).astype(np.uint8)


def _saved_as(mode: str, gray: np.ndarray) -> Image.Image:
    """``gray`` in one of the modes a PNG carries (as Pillow writes and reads them)."""
    L = Image.fromarray(gray, "L")
    alpha = Image.fromarray(np.random.default_rng(2).integers(0, 256, gray.shape).astype(np.uint8), "L")
    if mode == "1":
        return L.point(lambda v: 255 if v >= 128 else 0).convert("1")
    if mode in ("P", "P+transparency"):
        im = L.convert("RGB").quantize(64)                     # an adaptive 64-colour palette
        if mode == "P+transparency":                           # Pillow reads a palette with alpha so
            im.info["transparency"] = 5
        return im
    if mode == "I;16":
        return Image.fromarray(gray.astype(np.uint16) * 257)   # 16-bit, as PadChest stores its PNGs
    if mode == "I;16-12bit":
        return Image.fromarray(gray.astype(np.uint16) * 16)    # 12 bits of levels in a 16-bit PNG
    return {"L": L, "LA": Image.merge("LA", [L, alpha]), "RGB": L.convert("RGB"),
            "RGBA": Image.merge("RGBA", [L, L, L, alpha])}[mode]


PNG_MODES = ["1", "L", "LA", "P", "P+transparency", "RGB", "RGBA", "I;16", "I;16-12bit"]


@pytest.mark.parametrize("mode", PNG_MODES)
def test_every_png_mode_reads_as_the_same_gray_levels(tmp_path, mode):
    """The same gray image saved in each mode a PNG can carry reads back to the same gray levels:
    a palette image through its palette (it was read as palette indices: a max difference of 0.98),
    alpha ignored (LA was averaged with its alpha), 16-bit gray by its bit depth. A palette and 1-bit
    image are compared with the gray levels they really hold (their palette's, black and white) and
    a palette image with the original within its 64 colours' quantisation."""
    gray = _gray_image()
    (tmp_path / "0").mkdir()
    image = _saved_as(mode, gray)
    image.save(tmp_path / "0" / "x.png")
    with Image.open(tmp_path / "0" / "x.png") as im:
        assert im.mode == {"P+transparency": "P", "I;16-12bit": "I;16"}.get(mode, mode) and np.asarray(im).size
    holds = np.asarray(image.convert("RGB").convert("L")) if mode in ("1", "P", "P+transparency") else gray
    Image.fromarray(holds, "L").save(tmp_path / "0" / "reference.png")
    reader = PadChestImages(tmp_path, size=24)
    read, reference = reader.load("0", "x.png"), reader.load("0", "reference.png")
    assert np.abs(read - reference).max() < 1e-6
    if mode.startswith("P"):
        Image.fromarray(gray, "L").save(tmp_path / "0" / "original.png")
        assert np.abs(read - reader.load("0", "original.png")).max() < 0.08


@pytest.mark.parametrize("mode", ["I", "F", "PA", "LA"])
def test_modes_only_a_decoder_makes_read_as_gray_levels(mode):
    """``I`` (Pillow < 10 reads a 16-bit PNG so), ``F`` and ``PA`` do not come out of Pillow's PNG
    writer; the conversion still maps each to the image's gray levels in [0, 1]."""
    from trcgl.data.images import gray_levels

    gray = _gray_image()
    L = Image.fromarray(gray, "L")
    image = {"I": Image.fromarray(gray.astype(np.int32) * 257, "I"), "F": Image.fromarray(gray / 255.0).convert("F"),
             "PA": L.convert("RGB").quantize(64).convert("PA"), "LA": Image.merge("LA", [L, L.point(lambda v: 0)])}[mode]
    assert image.mode == mode
    levels = gray_levels(image)
    expected = np.asarray(image.convert("RGB").convert("L")) / 255.0 if mode == "PA" else gray / 255.0
    assert levels.dtype == np.float32 and np.abs(levels - expected).max() < 1e-6
