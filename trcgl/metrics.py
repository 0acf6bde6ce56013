"""Metrics for long-tailed multi-label classification (paper Sec. 4.3, Eq. 26-30).

Per class: average precision (Eq. 30, scikit-learn's ``average_precision_score``), ROC AUC and F1
at a threshold. Means over all classes and over the head / medium / tail groups. A class with no
positive (or no negative) in the evaluated split has no defined AP / AUC: by default it is
reported and left out of the means (``empty="exclude"``); ``empty="released"`` reproduces the
released code's convention so the two can be compared: a class without positives scores AP 0,
AUC 0.5 and F1 0, a class whose labels are all positive AP 1 (scikit-learn's value there) and
AUC 0.5, and both stay in the means. The released code also reads F1 at 0.2
(``eval.f1_threshold``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, roc_auc_score

GROUPS = ("head", "medium", "tail")
EMPTY_CONVENTIONS = ("exclude", "released")


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
    _check_empty(empty)
    table = per_class_scores(Y, P, threshold)
    table.insert(0, "group", list(groups))
    table.index = pd.Index(list(classes), name="class")
    excluded = list(table.index[table["AP"].isna()])
    if empty == "released":
        table["AP"], table["AUC"] = _released_fill(table["AP"].to_numpy(float), table["AUC"].to_numpy(float),
                                                   table["positives"].to_numpy(), len(Y))
        table = table.fillna({"F1": 0.0})
    means = _group_means({"mAP": table["AP"].to_numpy(float), "mAUC": table["AUC"].to_numpy(float),
                          "macro-F1": table["F1"].to_numpy(float)}, groups)
    return Evaluation(table, means, excluded)


def _check_empty(empty: str) -> None:
    if empty not in EMPTY_CONVENTIONS:
        raise ValueError(f"empty must be one of {EMPTY_CONVENTIONS}, got {empty!r}")


def _released_fill(ap: np.ndarray, auc: np.ndarray, positives: np.ndarray, n: int):
    """The released convention for undefined classes: no positive AP 0, all positive AP 1; AUC 0.5."""
    ap, auc = ap.copy(), auc.copy()
    undefined = np.isnan(ap)
    ap[undefined] = np.where(positives[undefined] == n, 1.0, 0.0)
    auc[np.isnan(auc)] = 0.5
    return ap, auc


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


def _means_fast(Y: np.ndarray, P: np.ndarray, groups: Sequence[str], empty: str = "exclude") -> dict:
    """mAP and mAUC, overall and per group, with the fast AP / AUC (classes without both labels left
    out, or filled as the released code does with ``empty="released"``)."""
    ap, auc = np.full(Y.shape[1], np.nan), np.full(Y.shape[1], np.nan)
    positives = Y.sum(0)
    for c in range(Y.shape[1]):
        if 0 < positives[c] < len(Y):
            ap[c], auc[c] = _ap_fast(Y[:, c], P[:, c]), _auc_fast(Y[:, c], P[:, c])
    if empty == "released":
        ap, auc = _released_fill(ap, auc, positives, len(Y))
    return _group_means({"mAP": ap, "mAUC": auc}, groups)


def class_scores_fast(Y: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AP and ROC AUC of every column at once, exactly as scikit-learn defines them (ties grouped
    for AP, average ranks for AUC); NaN where a class lacks positives or negatives."""
    from scipy.stats import rankdata

    Y = np.asarray(Y).astype(bool)
    P = np.asarray(P, dtype=float)
    n = len(Y)
    pos = Y.sum(0)
    defined = (pos > 0) & (pos < n)
    ranks = rankdata(P, axis=0)
    auc = (np.where(Y, ranks, 0).sum(0) - pos * (pos + 1) / 2) / np.maximum(pos * (n - pos), 1)
    order = np.argsort(-P, axis=0, kind="mergesort")
    ps = np.take_along_axis(P, order, 0)
    ys = np.take_along_axis(Y, order, 0).astype(float)
    last_of_tie = np.vstack([np.diff(ps, axis=0) != 0, np.ones((1, P.shape[1]), bool)])
    tps, fps = np.cumsum(ys, 0), np.cumsum(1 - ys, 0)
    at_end = np.where(last_of_tie, tps, 0.0)
    prev = np.vstack([np.zeros((1, P.shape[1])), np.maximum.accumulate(at_end, axis=0)[:-1]])
    precision = tps / np.maximum(tps + fps, 1)
    ap = np.where(last_of_tie, (tps - prev) * precision, 0.0).sum(0) / np.maximum(pos, 1)
    return np.where(defined, ap, np.nan), np.where(defined, auc, np.nan)


def bootstrap_means(Y: np.ndarray, P: np.ndarray, classes, groups, n: int = 1000, seed: int = 0,
                    level: float = 0.95, empty: str = "exclude") -> pd.DataFrame:
    """Percentile confidence intervals of mAP and mAUC (overall and per group) by resampling images.

    A resample in which a class has no positive leaves that class out of that resample's mean
    (``empty="released"``: scores it as the released code does, see :func:`evaluate`). The
    resamples use a fast AP / AUC that equals scikit-learn's (``tests/test_metrics.py``).
    """
    _check_empty(empty)
    Y, P = np.asarray(Y), np.asarray(P, dtype=float)
    rng = np.random.default_rng(seed)
    draws = [_means_fast(Y[idx], P[idx], groups, empty) for idx in (rng.integers(0, len(Y), len(Y)) for _ in range(n))]
    df = pd.DataFrame(draws)
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    point = evaluate(Y, P, classes, groups, empty=empty).means
    return pd.DataFrame({"value": pd.Series({k: point[k] for k in df.columns}), "low": df.quantile(lo),
                         "high": df.quantile(hi)})


def aggregate_seeds(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean over seeds with a t-interval (scipy's ``ttest_1samp(...).confidence_interval``;
    ``n`` seeds; no interval for one seed)."""
    from scipy import stats

    v = np.asarray([x for x in values if not np.isnan(x)], dtype=float)
    if len(v) == 0:
        return {"mean": np.nan, "low": np.nan, "high": np.nan, "n": 0}
    mean = float(v.mean())
    if len(v) < 2:
        return {"mean": mean, "low": np.nan, "high": np.nan, "n": 1}
    ci = stats.ttest_1samp(v, 0.0).confidence_interval(confidence_level=level)
    return {"mean": mean, "low": float(ci.low), "high": float(ci.high), "n": int(len(v))}
