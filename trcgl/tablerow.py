"""One row of a table: a configuration, optionally extra training images (an :class:`Extra`), or
the reason it cannot run here. The table modules build rows (:mod:`trcgl.tables`, and
:mod:`trcgl.released` for the text-vs-released comparison); :func:`trcgl.stages.table` turns them
into stage requests. A module of its own, below both, so neither imports the other for it.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Extra:
    """Extra training images: one or more parts, each ``(kind, weight override, progressive flag)``
    (``None`` keeps the part's own weight / leaves PIL's default: every row scheduled)."""

    parts: tuple = ()

    @staticmethod
    def of(kind: str, weight: float | None = None, progressive: bool | None = None) -> "Extra":
        return Extra(((kind, weight, progressive),))

    def __add__(self, other: "Extra") -> "Extra":
        return Extra(self.parts + other.parts)


@dataclass
class Row:
    """One row of a table: a configuration, optionally extra training images, or the reason it
    cannot run here (then it shows that reason instead of numbers)."""

    name: str
    cfg: object = None
    extra: Extra | None = None
    unavailable: str | None = None
    meta: dict = field(default_factory=dict)
