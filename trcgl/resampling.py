"""Resampling for intervals (chapters 1, 3-7): test label rows, and seeds, drawn with replacement.

A rare label row of the test split is rendered several times on fresh anatomy (``data.test_repeats``):
its images are not independent, so a resample draws **label rows** (clusters), and every image of
a drawn row comes with it, as often as the row was drawn. A resample is returned as a weight per
image (how many times it is in the resample), which :class:`trcgl.metrics.RankedScores` turns
into AP and AUC without sorting again. The tables' intervals also draw the seeds with replacement
in the same resample (:func:`resamples`), so that two rows scored on one resample are paired.
:func:`interval` reads a two-sided interval from the resampled values (``eval.interval``): the
bias-corrected percentile (BC) by default, since resampled AP sits above the point value on few
positives and a percentile interval would carry that bias; BCa's jackknife over thousands of label
rows costs more than the resamples themselves and moved no bound by more than 0.002 on a
cpu-sized table (the measurement is in the commit that chose it).
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


# ----------------------------------------------------------------------------- intervals from resamples

INTERVAL_METHODS = ("percentile", "basic", "bc", "bca")
INTERVAL_NAMES = {"percentile": "percentile", "basic": "basic (reverse-percentile)",
                  "bc": "bias-corrected percentile (BC)", "bca": "bias-corrected and accelerated (BCa)"}


def acceleration(jackknife: Sequence[np.ndarray]) -> float:
    """BCa's acceleration from leave-one-out values of the statistic, one array per resampled
    factor (e.g. seeds, test label rows), summed over the factors as ``scipy.stats.bootstrap``
    does for several samples (Efron & Tibshirani 1993, Eq. 14.15)."""
    nums = dens = 0.0
    for values in jackknife:
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if len(v) < 2:
            continue
        n = float(len(v))
        u = (n - 1) * (v.mean() - v)
        nums += (u ** 3).sum() / n ** 3
        dens += (u ** 2).sum() / n ** 2
    return float(nums / dens ** 1.5 / 6) if dens > 0 else 0.0


def interval(draws, point: float, method: str = "bc", level: float = 0.95,
             jackknife: Sequence[np.ndarray] | None = None) -> tuple[float, float]:
    """A two-sided ``level`` interval for ``point`` from its resampled values ``draws`` (NaN draws,
    resamples where the statistic is undefined, left out), with the formulas of
    ``scipy.stats.bootstrap`` (quantiles interpolated linearly; ``tests/test_resampling.py``):

    - ``percentile``: the draws' quantiles (α/2, 1 − α/2); sits where the draws sit, so a statistic
      whose resamples are biased (AP on few positives: biased upwards) gets a shifted interval;
    - ``basic`` (reverse percentile): 2·point − those quantiles, reversed;
    - ``bc``: bias-corrected percentile, the quantiles at Φ(2·z0 ± z) with z0 = Φ⁻¹(the share of
      draws below the point, ties counted half): BCa without the acceleration, no jackknife;
    - ``bca``: bias-corrected and accelerated, the acceleration from ``jackknife`` (leave-one-out
      values of the statistic per resampled factor, :func:`acceleration`).

    NaN when no draw or the point is undefined."""
    from scipy.special import ndtr, ndtri

    if method not in INTERVAL_METHODS:
        raise ValueError(f"interval method must be one of {INTERVAL_METHODS}, got {method!r}")
    d = np.asarray(draws, dtype=float)
    d = d[np.isfinite(d)]
    if not len(d) or not np.isfinite(point):
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    if method in ("percentile", "basic"):
        low, high = np.quantile(d, [alpha, 1 - alpha])
        return (float(low), float(high)) if method == "percentile" else (float(2 * point - high), float(2 * point - low))
    z0 = ndtri(((d < point).sum() + (d <= point).sum()) / (2 * len(d)))
    if method == "bca":
        if jackknife is None:
            raise ValueError("the BCa interval needs the statistic's jackknife values")
        a = acceleration(jackknife)
    else:
        a = 0.0
    z = ndtri(alpha)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = [ndtr(z0 + (z0 + s) / (1 - a * (z0 + s))) for s in (z, -z)]
    if not np.all(np.isfinite(q)):
        return float("nan"), float("nan")
    low, high = np.quantile(d, q)
    return float(low), float(high)
