"""Real PadChest images: the same interface as the phantom source, reading 16-bit PNGs.

``PADCHEST_ROOT`` (or ``paths.padchest_root``) points at the PadChest image folder in its
published layout, ``<root>/<ImageDir>/<ImageID>``. A missing or unreadable file is either one
clear error (``on_missing="error"``, the default) or a counted, logged skip (``"skip"``); it is
never replaced by another image. The two cases are two exception types, :class:`MissingImage`
and :class:`UnreadableImage` (a file that does not decode, or a row whose ``ImageDir`` is not a
folder number). Reading none of the rows is always an error.
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

    def path(self, image_dir, image_id: str) -> Path:
        """``<root>/<ImageDir>/<ImageID>``; :class:`UnreadableImage` when ImageDir is not a folder number."""
        try:
            folder = int(float(image_dir))
        except (TypeError, ValueError):
            folder = None
        if folder is None or folder < 0 or not isinstance(image_id, str) or not image_id.strip():
            raise UnreadableImage(f"the label row of image {image_id!r} has ImageDir {image_dir!r}, "
                                  f"not a PadChest folder number (0, 1, ...): no file to read under {self.root}")
        return self.root / str(folder) / image_id

    def load(self, image_dir, image_id: str) -> np.ndarray:
        """One image; raises :class:`MissingImage` or :class:`UnreadableImage`."""
        path = self.path(image_dir, image_id)
        if not path.is_file():
            raise MissingImage(f"missing PadChest image {path}")
        try:
            with Image.open(path) as im:
                arr = np.asarray(im, dtype=np.float32)
        except Exception as err:  # PIL raises many types for a broken file
            reason = " ".join(str(err).split())[:120]
            raise UnreadableImage(f"unreadable PadChest image {path}: {type(err).__name__}: {reason}") from err
        if arr.ndim == 3:
            arr = arr[..., :3].mean(-1)
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
