"""Repeat-factor sampling, as the released code does it (``train.sampler: repeat_factor``).

Class c's frequency is f_c = n_c / Σ_k n_k (its positives over all class positives); its repeat
factor r_c = max(1, sqrt(t / f_c)) with t = 0.01; an image repeats round(min(10, max_c r_c)) times
per epoch, the maximum over the classes it shows (1 for an image without findings). The repeats
are deterministic: the epoch's list of rows holds each image that many times, and the trainer's
seeded permutation shuffles that list (:class:`trcgl.train.EpochRows`). ``round`` is Python's
(halves to even), as ``numpy.round``.
"""
from __future__ import annotations

import numpy as np


def class_repeat_factors(counts, threshold: float = 0.01) -> np.ndarray:
    """r_c = max(1, sqrt(t / f_c)), f_c = n_c / Σ n (a class with no count: infinite, capped later)."""
    n = np.asarray(counts, dtype=np.float64)
    f = n / n.sum()
    with np.errstate(divide="ignore"):
        return np.maximum(1.0, np.sqrt(threshold / f))


def image_repeats(Y: np.ndarray, counts=None, threshold: float = 0.01, max_repeats: int = 10) -> np.ndarray:
    """How many times each image (row of Y) appears per epoch: round(min(max_repeats, max_{c ∈ image} r_c)).

    ``counts`` are the class counts the factors come from (default: Y's own column sums)."""
    Y = np.asarray(Y) > 0
    r = class_repeat_factors(Y.sum(0) if counts is None else counts, threshold)
    per_image = np.where(Y, r[None, :], 1.0).max(axis=1, initial=1.0)
    return np.round(np.minimum(max_repeats, per_image)).astype(np.int64)
