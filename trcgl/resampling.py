"""Resampling for intervals (chapters 1, 3-7): test label rows, and seeds, drawn with replacement.

A rare label row of the test split is rendered several times on fresh anatomy (``data.test_repeats``):
its images are not independent, so a resample draws **label rows** (clusters), and every image of
a drawn row comes with it, as often as the row was drawn. A resample is returned as a weight per
image (how many times it is in the resample), which :class:`trcgl.metrics.RankedScores` turns
into AP and AUC without sorting again. The tables' intervals also draw the seeds with replacement
in the same resample (:func:`resamples`), so that two rows scored on one resample are paired.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


def _clusters(clusters) -> tuple[int, np.ndarray]:
    ids, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    return len(ids), inverse.ravel()


def _draw_rows(rng: np.random.Generator, k: int, inverse: np.ndarray) -> np.ndarray:
    return np.bincount(rng.integers(0, k, k), minlength=k)[inverse].astype(float)


def row_weights(clusters, n: int, seed: int = 0) -> Iterator[np.ndarray]:
    """``n`` resamples of the clusters, each as the number of times every row is drawn (a row
    carries its cluster's count; ``clusters = arange(N)`` resamples single rows)."""
    k, inverse = _clusters(clusters)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield _draw_rows(rng, k, inverse)


def resamples(clusters, seeds: Sequence[int], n: int, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``n`` joint resamples of the seeds and the clusters: (how often each of ``seeds`` is drawn,
    the rows' weights). The same arguments give the same resamples, so every statistic computed
    from them (the tables' intervals and differences, the fraction of the ideal gain) is paired."""
    k, inverse = _clusters(clusters)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        drawn = rng.integers(0, len(seeds), len(seeds))
        yield np.bincount(drawn, minlength=len(seeds)).astype(float), _draw_rows(rng, k, inverse)
