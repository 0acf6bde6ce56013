"""Real PadChest images: the same interface as the phantom source, reading 16-bit PNGs.

``PADCHEST_ROOT`` (or ``paths.padchest_root``) points at the PadChest image folder in its
published layout, ``<root>/<ImageDir>/<ImageID>``. A missing or unreadable file is either one
clear error (``on_missing="error"``, the default) or a counted, logged skip (``"skip"``); it is
never replaced by another image. The two cases are two exception types, :class:`MissingImage`
and :class:`UnreadableImage` (a file that does not decode, a row whose ``ImageDir`` is not a
folder number, or a row whose ``ImageID`` leads outside the image folder: ``../``, an absolute
path, a symbolic link to elsewhere). Reading none of the rows is always an error.

A PNG's pixels are read as gray levels whatever its mode (:func:`gray_levels`): 16-bit gray as
PadChest stores it, 8-bit gray, palette, RGB, with or without alpha, 1-bit.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from .padchest import DataError

log = logging.getLogger(__name__)


class MissingImage(DataError):
    """An image file that is not there."""


class UnreadableImage(DataError):
    """An image that is there but does not decode, or a row that names no valid file."""


@dataclass
class ReadReport:
    read: int = 0
    missing: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.missing) + len(self.unreadable)


#: 16-bit gray modes as Pillow reads them (``I``: Pillow before 10.x reads 16-bit PNGs so)
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def gray_levels(im: Image.Image) -> np.ndarray:
    """An image's gray levels in [0, 1] (float32), whatever mode its file stores.

    16-bit gray (``I;16``, or ``I`` from an older Pillow; a PNG holds at most 16 bits) is divided by
    65535, 8-bit gray by 255, 1-bit is 0 or 1; ``F`` is taken as it is. A palette image (``P``,
    ``PA``) is looked up in its palette, not read as palette indices; colour (``RGB``...) becomes
    luma (ITU-R 601-2, Pillow's ``convert("L")``), exactly the gray level for R = G = B. Alpha is
    ignored: an X-ray's transparency carries no density."""
    mode = im.mode
    if mode in SIXTEEN_BIT:
        return np.asarray(im, dtype=np.float32) / 65535.0
    if mode == "F":
        return np.asarray(im, dtype=np.float32)
    if mode in ("P", "PA"):
        im = im.convert("RGBA")             # through the palette (and its transparency)
    if im.mode != "L":
        im = im.convert("L")
    return np.asarray(im, dtype=np.float32) / 255.0


class PadChestImages:
    """Reads ``<root>/<ImageDir>/<ImageID>`` as float32 in [0, 1], resized to ``size``."""

    def __init__(self, root: str | Path, size: int, on_missing: str = "error"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"PadChest image folder not found: {self.root} (set PADCHEST_ROOT or "
                            "paths.padchest_root to the folder that holds the ImageDir sub-folders)")
        if on_missing not in ("error", "skip"):
            raise DataError(f"unknown data.on_missing {on_missing!r}: choose one of error, skip")
        self.size = int(size)
        self.on_missing = on_missing
        self._real_root = self.root.resolve()

    def path(self, image_dir, image_id: str) -> Path:
        """``<root>/<ImageDir>/<ImageID>``; :class:`UnreadableImage` when ImageDir is not a folder
        number, or when the path, with symbolic links followed, is not inside the image folder (a
        label table must not make the reader open files elsewhere)."""
        try:
            folder = int(float(image_dir))
        except (TypeError, ValueError, OverflowError):
            folder = None
        if folder is None or folder < 0 or not isinstance(image_id, str) or not image_id.strip():
            raise UnreadableImage(f"the label row of image {image_id!r} has ImageDir {image_dir!r}, "
                                  f"not a PadChest folder number (0, 1, ...): no file to read under {self.root}")
        path = self.root / str(folder) / image_id
        real = path.resolve()
        if not real.is_relative_to(self._real_root):
            raise UnreadableImage(f"the label row of image {image_id!r} (ImageDir {image_dir!r}) leads to {real}, "
                                  f"outside the image folder {self.root}: an ImageID must name a file inside "
                                  "PADCHEST_ROOT/<ImageDir>/ (no '..', no absolute path, no symbolic link out of "
                                  "the folder); fix the label table, or point PADCHEST_ROOT at the real image folder")
        return path

    def load(self, image_dir, image_id: str) -> np.ndarray:
        """One image; raises :class:`MissingImage` or :class:`UnreadableImage`."""
        path = self.path(image_dir, image_id)
        if not path.is_file():
            raise MissingImage(f"missing PadChest image {path}")
        try:
            with Image.open(path) as im:
                arr = gray_levels(im)
        except Exception as err:  # PIL raises many types for a broken file
            reason = " ".join(str(err).split())[:120]
            raise UnreadableImage(f"unreadable PadChest image {path}: {type(err).__name__}: {reason}") from err
        lo, hi = np.percentile(arr, [0.5, 99.5])
        arr = np.clip((arr - lo) / max(hi - lo, 1e-6), 0, 1)
        out = Image.fromarray(arr.astype(np.float32), mode="F").resize((self.size, self.size), Image.BILINEAR)
        return np.asarray(out, dtype=np.float32)

    def read_many(self, rows: Iterable[tuple]) -> tuple[np.ndarray, np.ndarray, ReadReport]:
        """Read ``(image_dir, image_id)`` rows; returns images (N', H, W), a kept mask (N,) and a report.

        ``on_missing="error"``: the first missing or unreadable image is the error. ``"skip"``: each
        is counted (``report.missing`` / ``report.unreadable``), logged and left out. Reading no
        image at all is an error in both modes."""
        images, kept, report = [], [], ReadReport()
        for image_dir, image_id in rows:
            try:
                images.append(self.load(image_dir, image_id))
                kept.append(True)
                report.read += 1
            except (MissingImage, UnreadableImage) as err:
                if self.on_missing == "error":
                    raise type(err)(f"{err} (to skip such files and count them instead, use "
                                    "on_missing='skip'; check that PADCHEST_ROOT is the folder "
                                    "that holds the numbered ImageDir sub-folders)") from None
                try:
                    where = str(self.path(image_dir, image_id))
                except UnreadableImage:
                    where = f"ImageDir {image_dir!r}, ImageID {image_id!r}"
                (report.missing if isinstance(err, MissingImage) else report.unreadable).append(where)
                kept.append(False)
        if report.skipped:
            log.warning("PadChest images: skipped %d of %d (%d missing, %d unreadable)",
                        report.skipped, report.skipped + report.read, len(report.missing), len(report.unreadable))
        if kept and not report.read:
            raise DataError(f"none of the {len(kept)} PadChest images could be read under {self.root} "
                            f"({len(report.missing)} missing, {len(report.unreadable)} unreadable, e.g. "
                            f"{(report.missing + report.unreadable)[0]}): check that PADCHEST_ROOT is the "
                            "folder that holds the numbered ImageDir sub-folders")
        stack = np.stack(images) if images else np.zeros((0, self.size, self.size), np.float32)
        return stack, np.asarray(kept, dtype=bool), report
