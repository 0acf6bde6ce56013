"""Metrics for long-tailed multi-label classification (paper Sec. 4.3, Eq. 26-30).

Per class: average precision (Eq. 30, scikit-learn's ``average_precision_score``), ROC AUC and F1
at a threshold, computed for all classes at once and equal to scikit-learn's (``tests/test_metrics.py``). Means over all classes and over the head / medium / tail groups. A class with no
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
from sklearn.metrics import precision_recall_curve

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
    """AP, AUC and F1 of each column; NaN where a class has no positive (AP, AUC: or no negative).
    AP and AUC are scikit-learn's (:class:`RankedScores`), F1 is ``f1_score(y, p >= threshold,
    zero_division=0)`` (all three checked against scikit-learn in ``tests/test_metrics.py``)."""
    Y, P = np.asarray(Y).astype(bool), np.asarray(P, dtype=float)
    thr = np.broadcast_to(np.asarray(threshold, dtype=float), (Y.shape[1],))
    ap, auc = class_scores_fast(Y, P)
    predicted = P >= thr
    tp = (predicted & Y).sum(0)
    wrong = (predicted & ~Y).sum(0) + (~predicted & Y).sum(0)
    f1 = np.divide(2.0 * tp, 2 * tp + wrong, out=np.zeros(Y.shape[1]), where=2 * tp + wrong > 0)
    positives = Y.sum(0)
    return pd.DataFrame({"positives": positives.astype(int), "AP": ap, "AUC": auc,
                         "F1": np.where(positives > 0, f1, np.nan)})


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
    return {k: float(v) for k, v in group_means(scores, groups).items()}


def group_means(scores: dict, groups: Sequence[str]) -> dict:
    """:func:`_group_means` for arrays whose last axis is the classes (e.g. runs x classes): each
    metric's mean over all classes and each group, NaN classes ignored, NaN where none is defined."""
    g = np.asarray(groups)
    out = {}
    for name, sel in [("all", np.ones(len(g), dtype=bool))] + [(x, g == x) for x in GROUPS]:
        suffix = "" if name == "all" else f" {name}"
        for metric, values in scores.items():
            v = np.asarray(values, dtype=float)[..., sel]
            finite = np.isfinite(v)
            count = finite.sum(-1)
            total = np.where(finite, v, 0.0).sum(-1)
            out[f"{metric}{suffix}"] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out


def best_f1_thresholds(Y: np.ndarray, P: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per class, the threshold that maximises F1 on (Y, P): chosen on validation, labelled as such
    (``default`` for a class without positives there)."""
    Y = np.asarray(Y)
    out = np.full(Y.shape[1], float(default))
    for c in range(Y.shape[1]):
        if Y[:, c].sum() == 0:
            continue
        prec, rec, thr = precision_recall_curve(Y[:, c], P[:, c])
        f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
        out[c] = thr[int(np.argmax(f1[:-1]))]
    return out


#: ``eval.f1_thresholds``: how a run's per-class F1 thresholds are chosen, from the selection
#: split's labels and that run's selection probabilities and ``eval.f1_threshold``
F1_THRESHOLD_RULES = {
    "selection": lambda Y_select, P_select, fixed: best_f1_thresholds(Y_select, P_select, fixed),
    "fixed": lambda Y_select, P_select, fixed: np.full(np.asarray(Y_select).shape[1], float(fixed)),
}


def f1_thresholds(rule: str, Y_select: np.ndarray, P_select: np.ndarray, fixed: float) -> np.ndarray:
    """A run's per-class F1 thresholds under ``rule`` (:data:`F1_THRESHOLD_RULES`): the tables
    score F1 at these (chapters 3-7). The selection split chooses them, never the test split."""
    if rule not in F1_THRESHOLD_RULES:
        raise ValueError(f"eval.f1_thresholds must be one of {', '.join(F1_THRESHOLD_RULES)}, got {rule!r}")
    return np.asarray(F1_THRESHOLD_RULES[rule](Y_select, P_select, fixed), float)


class RankedScores:
    """AP and ROC AUC of many score columns under many row weightings: each column is sorted once,
    and :meth:`scores` with ``weights`` (a multiplicity per row, e.g. a bootstrap resample as the
    number of times each row was drawn) equals scikit-learn's ``average_precision_score`` and
    ``roc_auc_score`` on the rows repeated that often (ties grouped for AP, counted half for AUC;
    ``tests/test_metrics.py``). What makes the tables' intervals cheap: a resample is one gather and
    one cumulative sum of the weights in each column's order, then sums over the positives only
    (AP and AUC change only where a positive sits), not a sort."""

    def __init__(self, Y: np.ndarray, P: np.ndarray):
        Y, P = np.asarray(Y).astype(bool), np.asarray(P, dtype=float)
        N, K = Y.shape
        order = np.argsort(-P, axis=0, kind="mergesort")
        self.shape = (N, K)
        positive = np.take_along_axis(Y, order, 0)
        sorted_p = np.take_along_axis(P, order, 0)
        end = np.vstack([np.diff(sorted_p, axis=0) != 0, np.ones((1, K), bool)])      # last of each tie group
        start = np.vstack([np.ones((1, K), bool), end[:-1]])                             # first of each tie group
        index = np.arange(N)[:, None]
        last = np.minimum.accumulate(np.where(end, index, N)[::-1], 0)[::-1]            # a position's group end
        first = np.maximum.accumulate(np.where(start, index, 0), 0)                     # ... and group start
        cols, rows = np.nonzero(positive.T)                  # the positives, by column, then by rank
        self.cols = cols
        self.pos_row = order[rows, cols]                     # the positives' rows in the unsorted data
        self.order_t = np.ascontiguousarray(order.T.astype(np.int32 if N < 2**31 else np.int64))  # flat, by column
        # the cumulative weight of a column (flat, a zero in front) at its tie group's end, just before
        # the group's start, and at the column's start
        self.end_flat = cols * N + last[rows, cols] + 1
        self.before_flat = cols * N + first[rows, cols]
        self.base_flat = cols * N
        keys = cols * (N + 1) + rows
        self.col_start = np.searchsorted(keys, np.arange(K) * (N + 1))[cols]
        self.end_pos = np.searchsorted(keys, cols * (N + 1) + last[rows, cols], "right")     # positives up to the end
        self.before_pos = np.searchsorted(keys, cols * (N + 1) + first[rows, cols], "left")  # ... before the start

    def scores(self, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(AP, AUC) of every column; NaN where the weighted rows lack positives or negatives."""
        N, K = self.shape
        if weights is None:
            w = np.ones(N)
            total, a = float(N), np.ones(len(self.cols))
        else:
            w = np.asarray(weights, dtype=float)
            total, a = float(w.sum()), w[self.pos_row]                 # each positive's weight
        flat = np.empty(N * K + 1)
        flat[0] = 0.0
        np.cumsum(w[self.order_t].ravel(), out=flat[1:])
        base = flat[self.base_flat]
        all_end, all_before = flat[self.end_flat] - base, flat[self.before_flat] - base
        tp = np.concatenate([[0.0], np.cumsum(a)])
        tp_base = tp[self.col_start]
        tp_end, tp_before = tp[self.end_pos] - tp_base, tp[self.before_pos] - tp_base
        n_pos = np.bincount(self.cols, a, minlength=K)
        n_neg = total - n_pos
        precision = tp_end / np.maximum(all_end, 1e-300)
        fp_end, fp_before = all_end - tp_end, all_before - tp_before
        ap_sum = np.bincount(self.cols, a * precision, minlength=K)
        auc_sum = np.bincount(self.cols, a * (n_neg[self.cols] - 0.5 * (fp_end + fp_before)), minlength=K)
        defined = (n_pos > 0) & (n_neg > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap, auc = ap_sum / n_pos, auc_sum / (n_pos * n_neg)
        return np.where(defined, ap, np.nan), np.where(defined, auc, np.nan)


def class_scores_fast(Y: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AP and ROC AUC of every column at once, exactly as scikit-learn defines them (ties grouped
    for AP, average ranks for AUC); NaN where a class lacks positives or negatives."""
    return RankedScores(Y, P).scores()


def ranking_means(Y: np.ndarray, P: np.ndarray, groups: Sequence[str], empty: str = "exclude") -> dict:
    """mAP and mAUC, overall and per group, from :func:`class_scores_fast` (classes without both
    labels left out, or filled as the released code does with ``empty="released"``): the
    trainers' per-epoch selection score (no F1, no per-class table)."""
    _check_empty(empty)
    Y = np.asarray(Y)
    ap, auc = class_scores_fast(Y, P)
    if empty == "released":
        ap, auc = _released_fill(ap, auc, Y.sum(0), len(Y))
    return _group_means({"mAP": ap, "mAUC": auc}, groups)


def bootstrap_means(Y: np.ndarray, P: np.ndarray, classes, groups, n: int = 1000, seed: int = 0,
                    level: float = 0.95, empty: str = "exclude") -> pd.DataFrame:
    """Percentile confidence intervals of mAP and mAUC (overall and per group) by resampling images.

    A resample in which a class has no positive leaves that class out of that resample's mean
    (``empty="released"``: scores it as the released code does, see :func:`evaluate`). The
    resamples use a fast AP / AUC that equals scikit-learn's (``tests/test_metrics.py``).
    """
    _check_empty(empty)
    from .resampling import row_weights

    Y, P = np.asarray(Y), np.asarray(P, dtype=float)
    ranked = RankedScores(Y, P)
    draws = []
    for w in row_weights(np.arange(len(Y)), n, seed):
        ap, auc = ranked.scores(w)
        if empty == "released":
            ap, auc = _released_fill(ap, auc, (w[:, None] * Y).sum(0), w.sum())
        draws.append(_group_means({"mAP": ap, "mAUC": auc}, groups))
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
