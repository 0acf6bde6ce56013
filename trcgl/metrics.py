"""Metrics for long-tailed multi-label classification (paper Sec. 4.3, Eq. 26-30).

Per class: average precision (Eq. 30, scikit-learn's ``average_precision_score``), ROC AUC and F1
at a threshold. Means over all classes and over the head / medium / tail groups. A class with no
positive (or no negative) in the evaluated split has no defined AP / AUC: by default it is
reported and left out of the means (``empty="exclude"``); ``empty="released"`` reproduces the
released code's convention (AP 0, AUC 0.5, kept in the mean) so the two can be compared.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, roc_auc_score

GROUPS = ("head", "medium", "tail")


@dataclass
class Evaluation:
    per_class: pd.DataFrame                 # index class: group, positives, AP, AUC, F1
    means: dict                             # mAP, mAUC, macro-F1 overall and per group
    excluded: list = field(default_factory=list)   # classes without positives or negatives

    def summary(self) -> pd.Series:
        return pd.Series(self.means)


def per_class_scores(Y: np.ndarray, P: np.ndarray, threshold: float | np.ndarray = 0.5) -> pd.DataFrame:
    """AP, AUC and F1 of each column; NaN where a class has no positive or no negative."""
    Y, P = np.asarray(Y), np.asarray(P)
    thr = np.broadcast_to(np.asarray(threshold, dtype=float), (Y.shape[1],))
    rows = []
    for c in range(Y.shape[1]):
        y, p = Y[:, c], P[:, c]
        defined = 0 < y.sum() < len(y)
        rows.append({
            "positives": int(y.sum()),
            "AP": average_precision_score(y, p) if defined else np.nan,
            "AUC": roc_auc_score(y, p) if defined else np.nan,
            "F1": f1_score(y, p >= thr[c], zero_division=0) if y.sum() > 0 else np.nan,
        })
    return pd.DataFrame(rows)


def evaluate(Y: np.ndarray, P: np.ndarray, classes: Sequence[str], groups: Sequence[str],
             threshold: float | np.ndarray = 0.5, empty: str = "exclude") -> Evaluation:
    """Per-class scores and their means, overall and per group."""
    if empty not in ("exclude", "released"):
        raise ValueError(f"empty must be 'exclude' or 'released', got {empty!r}")
    table = per_class_scores(Y, P, threshold)
    table.insert(0, "group", list(groups))
    table.index = pd.Index(list(classes), name="class")
    excluded = list(table.index[table["AP"].isna()])
    if empty == "released":
        table = table.fillna({"AP": 0.0, "AUC": 0.5, "F1": 0.0})
    means = _group_means({"mAP": table["AP"].to_numpy(float), "mAUC": table["AUC"].to_numpy(float),
                          "macro-F1": table["F1"].to_numpy(float)}, groups)
    return Evaluation(table, means, excluded)


def _group_means(scores: dict, groups: Sequence[str]) -> dict:
    """Per metric, the mean over all classes and over each group, ignoring undefined (NaN) classes."""
    g = np.asarray(groups)
    out = {}
    for name, sel in [("all", np.ones(len(g), dtype=bool))] + [(x, g == x) for x in GROUPS]:
        suffix = "" if name == "all" else f" {name}"
        for metric, values in scores.items():
            v = values[sel]
            out[f"{metric}{suffix}"] = float(np.nanmean(v)) if np.isfinite(v).any() else np.nan
    return out


def best_f1_thresholds(Y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Per class, the threshold that maximises F1 on (Y, P): chosen on validation, labelled as such."""
    out = np.full(Y.shape[1], 0.5)
    for c in range(Y.shape[1]):
        if Y[:, c].sum() == 0:
            continue
        prec, rec, thr = precision_recall_curve(Y[:, c], P[:, c])
        f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
        out[c] = thr[int(np.argmax(f1[:-1]))]
    return out


def _ap_fast(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision exactly as scikit-learn defines it (ties grouped), without its input checks."""
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y[order]
    last_of_tie = np.r_[np.diff(ps) != 0, True]
    tps = np.cumsum(ys)[last_of_tie]
    fps = np.cumsum(1 - ys)[last_of_tie]
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _auc_fast(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic with average ranks for ties (= scikit-learn's)."""
    from scipy.stats import rankdata

    pos = y == 1
    n_pos, n_neg = pos.sum(), len(y) - pos.sum()
    ranks = rankdata(p)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _means_fast(Y: np.ndarray, P: np.ndarray, groups: Sequence[str]) -> dict:
    """mAP and mAUC, overall and per group, with the fast AP / AUC (classes without both labels left out)."""
    ap, auc = np.full(Y.shape[1], np.nan), np.full(Y.shape[1], np.nan)
    for c in range(Y.shape[1]):
        n = Y[:, c].sum()
        if 0 < n < len(Y):
            ap[c], auc[c] = _ap_fast(Y[:, c], P[:, c]), _auc_fast(Y[:, c], P[:, c])
    return _group_means({"mAP": ap, "mAUC": auc}, groups)


def bootstrap_means(Y: np.ndarray, P: np.ndarray, classes, groups, n: int = 1000, seed: int = 0,
                    level: float = 0.95) -> pd.DataFrame:
    """Percentile confidence intervals of mAP and mAUC (overall and per group) by resampling images.

    A resample in which a class has no positive leaves that class out of that resample's mean. The
    resamples use a fast AP / AUC that equals scikit-learn's (``tests/test_metrics.py``).
    """
    Y, P = np.asarray(Y), np.asarray(P, dtype=float)
    rng = np.random.default_rng(seed)
    draws = [_means_fast(Y[idx], P[idx], groups) for idx in (rng.integers(0, len(Y), len(Y)) for _ in range(n))]
    df = pd.DataFrame(draws)
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    point = evaluate(Y, P, classes, groups).means
    return pd.DataFrame({"value": pd.Series({k: point[k] for k in df.columns}), "low": df.quantile(lo),
                         "high": df.quantile(hi)})


def bootstrap_auc(y: np.ndarray, p: np.ndarray, n: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """ROC AUC of one class with a percentile interval: ``(AUC, low, high)``.

    Positives and negatives are resampled separately (a stratified bootstrap), so every resample
    has the class's own number of positives and an AUC is always defined; NaNs where the class has
    no positive or no negative.
    """
    y, p = np.asarray(y).astype(bool), np.asarray(p, dtype=float)
    pos, neg = p[y], p[~y]
    if len(pos) == 0 or len(neg) == 0:
        return np.nan, np.nan, np.nan
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)]
    draws = [_auc_fast(labels, np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]) for _ in range(n)]
    lo, hi = np.quantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2]) if n else (np.nan, np.nan)
    return _auc_fast(labels, np.r_[pos, neg]), float(lo), float(hi)


def aggregate_seeds(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean over seeds with a t-interval (``n`` seeds; no interval for one seed)."""
    from scipy import stats

    v = np.asarray([x for x in values if not np.isnan(x)], dtype=float)
    if len(v) == 0:
        return {"mean": np.nan, "low": np.nan, "high": np.nan, "n": 0}
    mean = float(v.mean())
    if len(v) < 2:
        return {"mean": mean, "low": np.nan, "high": np.nan, "n": 1}
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": int(len(v))}
